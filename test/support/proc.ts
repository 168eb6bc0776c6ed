/** Real `dptrain` processes for CLI-level tests: start one, read its output, wait for it to exit. */
import { spawn, type SpawnOptions } from 'node:child_process';
import net from 'node:net';
import { cliPath } from './cluster.js';

export interface Proc {
  pid: number;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill: (sig?: NodeJS.Signals) => void;
  /** null while it runs. */
  exitCode: () => number | null;
}

/** `dptrain ARGS` with DPTRAIN_* variables cleared; `env` adds to them. */
export function dptrain(args: string[], env: NodeJS.ProcessEnv = {}, opts: SpawnOptions = {}): Proc {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DPTRAIN_')));
  const child = spawn(process.execPath, ['--import', 'tsx', cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...base, ...env }, ...opts });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on('exit', (code, signal) => r({ code, signal })));
  return { pid: child.pid!, output: () => out, exited, kill: (sig = 'SIGTERM') => child.kill(sig), exitCode: () => child.exitCode };
}

export interface Ran {
  code: number | null;
  /** stdout and stderr as they interleaved. */
  out: string;
  stdout: string;
}

/** `dptrain ARGS` run to its end (killed with SIGKILL after timeoutMs): its exit code and output. */
export function runDptrain(args: string[], timeoutMs = 120_000, env: NodeJS.ProcessEnv = {}): Promise<Ran> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DPTRAIN_')));
  const child = spawn(process.execPath, ['--import', 'tsx', cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...base, ...env } });
  let out = '';
  let stdout = '';
  child.stdout.on('data', (d) => {
    out += d;
    stdout += d;
  });
  child.stderr.on('data', (d) => (out += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) =>
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, stdout });
    }),
  );
}

/** A port that was free a moment ago (for a coordinator that must come back on the same port). */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export const NO_STACK = /\n\s+at .+:\d+:\d+/;
