/**
 * The other end of the fleet part's socket measurements (bench/lib/fleet-terms.ts):
 * one WebSocket to URL, in its own process so that the measuring process's CPU
 * time counts only its own end. Text commands from the server:
 *
 *   keep    the next binary frame is kept as the frame to send;
 *   send N  send the kept frame N times (unmasked, as the worker client sends);
 *   ack     answer `ack` (after every frame sent before it: the server's sends are done);
 *
 * other binary frames are dropped.  node --import tsx bench/lib/socket-peer.ts URL
 */
import WebSocket from 'ws';

const url = process.argv[2];
if (!url) {
  console.error('usage: socket-peer.ts URL');
  process.exit(2);
}
const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 1 << 30, generateMask: (m: Buffer) => m.fill(0) });
ws.binaryType = 'nodebuffer';
let keepNext = false;
let frame: Buffer = Buffer.alloc(0);
ws.on('message', (data: Buffer, isBinary: boolean) => {
  if (isBinary) {
    if (keepNext) frame = Buffer.from(data);
    keepNext = false;
    return;
  }
  const [cmd, arg] = data.toString().split(' ');
  if (cmd === 'keep') keepNext = true;
  else if (cmd === 'ack') ws.send('ack');
  else if (cmd === 'send') for (let i = 0; i < Number(arg); i++) ws.send(frame);
});
ws.on('error', (e) => console.error(`socket peer: ${e.message}`));
ws.on('close', () => process.exit(0));
