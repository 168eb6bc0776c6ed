/** A coordinator run as its own CLI process, as an operator would run it. */
import { spawn, type ChildProcess } from 'node:child_process';
import { cliPath, waitFor } from './cluster.js';

export interface CoordinatorProc {
  child: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves to the port once the coordinator logs that it listens. */
  listening(timeoutMs?: number): Promise<number>;
  /** The metrics port it logged (run it with --metrics-port 0). */
  metricsPort(timeoutMs?: number): Promise<number>;
}

export function startCoordinatorProc(args: string[], env: NodeJS.ProcessEnv = {}): CoordinatorProc {
  const child = spawn(process.execPath, ['--import', 'tsx', cliPath, 'coordinator', 'start', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, DPTRAIN_TOKEN: '', ...env },
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on('exit', (code, signal) => r({ code, signal })));
  const grab = async (re: RegExp, timeoutMs: number, what: string): Promise<number> => {
    await waitFor(() => re.test(out) || child.exitCode !== null, timeoutMs, what);
    const m = re.exec(out);
    if (!m) throw new Error(`coordinator exited before ${what}:\n${out}`);
    return Number(m[1]);
  };
  return {
    child,
    output: () => out,
    exited,
    listening: (timeoutMs = 30_000) => grab(/listening on wss?:\/\/[^:]+:(\d+)/, timeoutMs, 'listening'),
    metricsPort: (timeoutMs = 30_000) => grab(/metrics on http:\/\/[^:]+:(\d+)\/metrics/, timeoutMs, 'the metrics server'),
  };
}

export { freePort } from './proc.js';

/** One metric's value from a Prometheus text page. */
export async function scrape(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`no ${name} in /metrics`);
  return Number(m[1]);
}

/** Awaits p, but fails the test instead of hanging it when p takes longer than ms. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (t = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)))]);
  } finally {
    clearTimeout(t);
  }
}
