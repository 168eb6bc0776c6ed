/**
 * The one-command local mode: start N worker processes of this same program,
 * wired to this coordinator with a generated token passed through the
 * environment (never on the command line, where ps shows it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The CLI entry next to this build: dist/cli.js, or src/cli.ts when run from source. */
export function cliEntry(): { script: string; execArgv: string[] } {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const js = path.join(here, '..', 'cli.js');
  if (fs.existsSync(js)) return { script: js, execArgv: [] };
  return { script: path.join(here, '..', 'cli.ts'), execArgv: ['--import', 'tsx'] };
}

export interface SpawnOptions {
  count: number;
  url: string;
  token: string;
  backend: string;
  log: (line: string) => void;
  ca?: string;
}

export function spawnWorkers(o: SpawnOptions): ChildProcess[] {
  const { script, execArgv } = cliEntry();
  const children: ChildProcess[] = [];
  for (let k = 0; k < o.count; k++) {
    const args = [...execArgv, script, 'worker', 'join', '--coordinator', o.url, '--backend', o.backend, '--name', `local-${k}`, '--max-retries', '8'];
    if (o.ca) args.push('--ca', o.ca);
    // The children take their settings from these flags only, not from the coordinator's DPTRAIN_* variables.
    const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DPTRAIN_')));
    env.DPTRAIN_TOKEN = o.token;
    const child = spawn(process.execPath, args, {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const prefix = `[local-${k}] `;
    for (const stream of [child.stdout!, child.stderr!]) {
      let buf = '';
      stream.setEncoding('utf8');
      stream.on('data', (d: string) => {
        buf += d;
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line.trim() !== '' && !/TensorFlow\.js in Node\.js|tfjs-node for more details|^=+$/.test(line)) o.log(prefix + line);
        }
      });
    }
    child.on('exit', (code, signal) => {
      if (code !== 0) o.log(`${prefix}exited (${signal ?? `code ${code}`})`);
    });
    children.push(child);
  }
  return children;
}
