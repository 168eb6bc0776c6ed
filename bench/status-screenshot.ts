/**
 * The README's picture: runs `npm start`'s command (the flags of package.json's
 * "start" script, with a free metrics port and a temporary checkpoint
 * directory), photographs its status page in headless Chromium near the end of
 * the run, and prints the run's output (its closing lines hold the sample the
 * README quotes).
 *
 *   npm run build && node --import tsx bench/status-screenshot.ts [--out docs/status-page.png] [--at 0.95]
 *
 * --at is the share of the run (by epochs and batches) after which the picture
 * is taken; the page closes with the run, so it must be below 1. Chromium:
 * $DPTRAIN_TEST_CHROMIUM or /usr/bin/chromium, driven by playwright-core.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The words of a shell command line: plain words and '...' / "..." quoted ones (all npm's start script uses). */
export function shellWords(line: string): string[] {
  const out: string[] = [];
  for (const m of line.matchAll(/'([^']*)'|"((?:[^"\\]|\\.)*)"|(\S+)/g)) out.push(m[1] ?? m[2]?.replace(/\\(.)/g, '$1') ?? m[3]);
  return out;
}

function setFlag(args: string[], flag: string, value: string): void {
  const i = args.indexOf(flag);
  if (i >= 0) args[i + 1] = value;
  else args.push(flag, value);
}

async function main(argv: string[]): Promise<void> {
  let out = path.join(root, 'docs', 'status-page.png');
  let at = 0.95;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out') out = path.resolve(argv[++i]);
    else if (argv[i] === '--at') at = Number(argv[++i]);
  }
  if (!(at > 0 && at < 1)) throw new Error('--at must be between 0 and 1');
  const start: string = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).scripts.start;
  const words = shellWords(start);
  const cli = words.indexOf('dist/cli.js');
  if (words[0] !== 'node' || cli !== 1) throw new Error(`unexpected start script: ${start}`);
  const args = words.slice(2);
  setFlag(args, '--metrics-port', '0');
  setFlag(args, '--port', '0');
  setFlag(args, '--checkpoint-dir', fs.mkdtempSync(path.join(os.tmpdir(), 'dptrain-shot-')));

  console.error(`running: node dist/cli.js ${args.join(' ')}`);
  const child = spawn(process.execPath, [path.join(root, 'dist', 'cli.js'), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  let url: string | undefined;
  const gotUrl = new Promise<string>((resolve) => {
    const onData = (d: Buffer) => {
      log += d;
      const m = /status page on (http:\/\/\S+\/)/.exec(log);
      if (m && !url) resolve((url = m[1]));
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const page0 = await Promise.race([gotUrl, exited.then(() => undefined)]);
  if (!page0) throw new Error(`the run ended before it served a status page:\n${log}`);

  const browser = await chromium.launch({ executablePath: process.env.DPTRAIN_TEST_CHROMIUM ?? '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu'] });
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 780 }, deviceScaleFactor: 1 });
    await page.goto(page0, { waitUntil: 'load' });
    for (;;) {
      const s = await (await fetch(`${page0}status.json`)).json();
      const progress = (s.epoch + (s.batchesInEpoch > 0 ? s.batch / s.batchesInEpoch : 0)) / s.epochs;
      if (s.state === 'done' || child.exitCode !== null) throw new Error('the run ended before the picture was taken; lower --at');
      if (progress >= at && s.sample) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    // Two more polls of the page, so what it draws is current.
    await new Promise((r) => setTimeout(r, 2500));
    fs.mkdirSync(path.dirname(out), { recursive: true });
    await page.screenshot({ path: out, fullPage: true });
    console.error(`wrote ${path.relative(root, out)} (${fs.statSync(out).size} bytes)`);
  } finally {
    await browser.close();
  }
  const code = await exited;
  process.stdout.write(log.split('\n').filter((l) => !l.startsWith('[local-')).join('\n'));
  if (code !== 0) throw new Error(`the run exited with code ${code}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((e) => {
    console.error(`error: ${(e as Error).message}`);
    process.exitCode = 1;
  });
}
