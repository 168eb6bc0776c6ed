/**
 * Helpers for tests that run a real coordinator (in this process, on port 0)
 * with real worker processes on loopback.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveCoordinatorConfig, type CoordinatorConfig } from '../../src/shared/config.js';
import { Coordinator } from '../../src/coordinator/coordinator.js';
import { testBackend } from './tf.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const cliPath = path.join(repoRoot, 'src', 'cli.ts');

export function tmpDir(prefix = 'dptrain-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/**
 * A local .txt corpus: the first chapters of the bundled Moby-Dick (an npm dependency), so tests need
 * nothing outside the repository. About 30,000 characters of English prose.
 */
export function corpusFile(): string {
  const dir = tmpDir();
  const p = path.join(dir, 'corpus.txt');
  const chapters = path.join(repoRoot, 'node_modules', '@stdlib', 'datasets-moby-dick', 'data');
  const text = [1, 2, 3].map((k) => fs.readFileSync(path.join(chapters, `chapter_${k}.txt`), 'utf8')).join('\n');
  fs.writeFileSync(p, text);
  return p;
}

export const TOKEN = 'test-token-0123456789';

export function tinyCoordinatorConfig(over: Record<string, unknown> = {}): CoordinatorConfig {
  return resolveCoordinatorConfig(
    {
      corpus: corpusFile(),
      maxTokens: 2000,
      batchSize: 6,
      numSteps: 5,
      hidden: 16,
      epochs: 1,
      port: 0,
      host: '127.0.0.1',
      metricsPort: -1,
      logEvery: 1000,
      sampleEvery: 0,
      backend: 'cpu',
      heartbeatInterval: 1,
      ...over,
    },
    {},
  );
}

export async function startCoordinator(cfg: CoordinatorConfig, logs: string[] = []): Promise<Coordinator> {
  await testBackend();
  const c = new Coordinator(cfg, TOKEN, { log: (l) => logs.push(l), progress: null });
  await c.start();
  return c;
}

export interface WorkerProc {
  child: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function spawnWorker(url: string, extra: string[] = [], env: NodeJS.ProcessEnv = {}): WorkerProc {
  const child = spawn(process.execPath, ['--import', 'tsx', cliPath, 'worker', 'join', '--coordinator', url, '--backend', 'cpu', ...extra], {
    env: { ...process.env, DPTRAIN_TOKEN: TOKEN, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on('exit', (code, signal) => r({ code, signal })));
  return { child, output: () => out, exited };
}

export async function waitFor(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** ||a - b|| / ||b|| */
export function relativeError(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

export function killAll(ws: WorkerProc[]): void {
  for (const w of ws) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
}
