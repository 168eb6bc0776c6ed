/**
 * Binding a server port, with the failures a user causes (a port in use, an
 * address this machine does not have, a privileged port) turned into one
 * sentence naming the flag, instead of Node's stack trace.
 */
import type { Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { DptrainError } from './errors.js';

export async function listenOn(server: Server, host: string, port: number, flags: { port: string; host: string }): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => reject(listenError(e, host, port, flags));
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

function listenError(e: NodeJS.ErrnoException, host: string, port: number, flags: { port: string; host: string }): Error {
  const where = `${host}:${port}`;
  switch (e.code) {
    case 'EADDRINUSE':
      return new DptrainError('ERR_PORT_IN_USE', `${flags.port} ${port} is already in use on ${host} (another dptrain, or another program); stop it or choose another port with ${flags.port}`);
    case 'EACCES':
      return new DptrainError('ERR_PORT_IN_USE', `${flags.port} ${port} on ${host} needs privileges this process does not have (ports below 1024); choose a port of 1024 or above with ${flags.port}`);
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new DptrainError('ERR_BAD_CONFIG', `${flags.host} ${host} is not an address of this machine (${e.code}); use 127.0.0.1, 0.0.0.0 or one of its own addresses`);
    default:
      return new DptrainError('ERR_PORT_IN_USE', `cannot listen on ${where} (${flags.host}/${flags.port}): ${e.code ?? e.message}`);
  }
}

/** A bind address as the host of a URL a person can open: the wildcard becomes loopback, IPv6 gets brackets. */
export function urlHost(host: string): string {
  if (host === '0.0.0.0' || host === '') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}
