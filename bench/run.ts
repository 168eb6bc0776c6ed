/**
 * Benchmark runner.
 *
 *   node --import tsx bench/run.ts <part...|all> [--backend auto|wasm|cpu|tensorflow]
 *        [--data-dir DIR] [--no-write] [part flags]
 *   node --import tsx bench/run.ts --help
 *
 * Parts run one after another in one process on one tfjs backend. Each
 * part's section in BENCHMARKS.md (between its markers) and its
 * bench/results/NAME.json are rewritten as soon as it finishes.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BACKEND_CHOICES, selectBackend, type BackendChoice, type BackendInfo } from '../src/shared/backend.js';
import { defaultDataDir } from '../src/shared/data/corpus-source.js';
import { collectEnv, envLine } from './lib/env.js';
import { writeResult, writeSection } from './lib/report.js';
import type { BenchContext, BenchPart, FlagSpec, FlagValue } from './lib/types.js';
import { PARTS } from './parts.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const RUNNER_FLAGS: Record<string, FlagSpec> = {
  backend: { type: 'string', default: 'auto', describe: `tfjs backend: ${BACKEND_CHOICES.join(', ')} (auto = best present)` },
  'data-dir': { type: 'string', describe: 'where corpora are cached (default $DPTRAIN_DATA_DIR or ./data)' },
  write: { type: 'boolean', default: true, describe: 'write BENCHMARKS.md and bench/results/ (--no-write: print only)' },
  help: { type: 'boolean', default: false, describe: 'show this help' },
};

class UsageError extends Error {}

interface Parsed {
  names: string[];
  /** Flags given on the command line, by name, as typed (coerced later). */
  given: Map<string, string | boolean>;
}

function parseArgs(argv: string[]): Parsed {
  const names: string[] = [];
  const given = new Map<string, string | boolean>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) {
      names.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    if (eq > 0) {
      given.set(a.slice(2, eq), a.slice(eq + 1));
    } else if (a.startsWith('--no-')) {
      given.set(a.slice(5), false);
    } else if (i + 1 < argv.length && !argv[i + 1].startsWith('--') && !isBooleanFlag(a.slice(2))) {
      given.set(a.slice(2), argv[++i]);
    } else {
      given.set(a.slice(2), true);
    }
  }
  return { names, given };
}

function allFlagSpecs(parts: readonly BenchPart[]): Map<string, FlagSpec> {
  const specs = new Map(Object.entries(RUNNER_FLAGS));
  for (const p of parts) for (const [k, v] of Object.entries(p.flags ?? {})) if (!specs.has(k)) specs.set(k, v);
  return specs;
}

function isBooleanFlag(name: string): boolean {
  return allFlagSpecs(PARTS).get(name)?.type === 'boolean';
}

function coerce(name: string, spec: FlagSpec, raw: string | boolean): FlagValue {
  if (spec.type === 'boolean') {
    if (typeof raw === 'boolean') return raw;
    if (/^(1|true|yes|on)$/i.test(raw)) return true;
    if (/^(0|false|no|off)$/i.test(raw)) return false;
    throw new UsageError(`--${name} is true or false, got '${raw}'`);
  }
  if (typeof raw === 'boolean') throw new UsageError(`--${name} needs a value`);
  if (spec.type === 'number') {
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got '${raw}'`);
    return n;
  }
  return raw;
}

function help(): string {
  const flagLines = (flags: Record<string, FlagSpec>) =>
    Object.entries(flags).map(([k, s]) => `    --${k}${s.type === 'boolean' ? '' : ` <${s.type}>`}  ${s.describe}${s.default !== undefined ? ` (default ${s.default})` : ''}`);
  return [
    'usage: node --import tsx bench/run.ts <part...|all> [flags]',
    '',
    'parts:',
    ...PARTS.flatMap((p) => [`  ${p.name}  ${p.summary}`, ...flagLines(p.flags ?? {})]),
    '',
    'runner flags:',
    ...flagLines(RUNNER_FLAGS),
  ].join('\n');
}

function selectParts(names: string[]): BenchPart[] {
  if (names.length === 0) throw new UsageError('name at least one part, or all');
  if (names.includes('all')) return [...PARTS];
  return names.map((n) => {
    const p = PARTS.find((q) => q.name === n);
    if (!p) throw new UsageError(`unknown part '${n}'; the parts are ${PARTS.map((q) => q.name).join(', ')} (or all)`);
    return p;
  });
}

function resolveFlags(parts: readonly BenchPart[], given: Map<string, string | boolean>): Map<string, FlagValue> {
  const specs = allFlagSpecs(parts);
  const values = new Map<string, FlagValue>();
  for (const [k, s] of specs) if (s.default !== undefined) values.set(k, s.default);
  for (const [k, raw] of given) {
    const spec = specs.get(k);
    if (!spec) throw new UsageError(`unknown flag --${k} for part(s) ${parts.map((p) => p.name).join(', ')}; see --help`);
    values.set(k, coerce(k, spec, raw));
  }
  const backend = values.get('backend') as string;
  if (!(BACKEND_CHOICES as readonly string[]).includes(backend)) throw new UsageError(`--backend must be one of ${BACKEND_CHOICES.join(', ')}, got '${backend}'`);
  return values;
}

/** The command that reproduces a part: its own flags as given, never paths. */
function commandFor(part: BenchPart, backend: BackendInfo, given: Map<string, string | boolean>): string {
  const own = Object.keys(part.flags ?? {});
  const flags = [...given].filter(([k]) => own.includes(k)).map(([k, v]) => (v === true ? `--${k}` : v === false ? `--no-${k}` : `--${k} ${v}`));
  return ['node --import tsx bench/run.ts', part.name, `--backend ${backend.name}`, ...flags].join(' ');
}

async function main(): Promise<number> {
  const { names, given } = parseArgs(process.argv.slice(2));
  if (given.get('help') === true || names.includes('help')) {
    console.log(help());
    return 0;
  }
  // The summary reads the others' results: it runs after them, wherever it is listed.
  const parts = selectParts(names).sort((a, b) => Number(a.name === 'summary') - Number(b.name === 'summary'));
  const values = resolveFlags(parts, given);
  const dataDir = values.has('data-dir') ? path.resolve(values.get('data-dir') as string) : defaultDataDir();
  const backend = await selectBackend({ backend: values.get('backend') as BackendChoice, log: (l) => console.error(l) });
  const order = PARTS.map((p) => p.name);
  let failed = 0;

  for (const part of parts) {
    const env = await collectEnv(repoRoot, backend);
    const ctx: BenchContext = {
      backend,
      env,
      repoRoot,
      dataDir,
      flag: <T extends FlagValue>(name: string): T => {
        if (!values.has(name)) throw new Error(`part ${part.name} read flag --${name}, which it does not declare`);
        return values.get(name) as T;
      },
      log: (line) => console.error(`[${part.name}] ${line}`),
    };
    console.error(`== ${part.name}: ${part.title}`);
    const t0 = performance.now();
    try {
      const section = await part.run(ctx);
      const seconds = (performance.now() - t0) / 1000;
      const command = commandFor(part, backend, given);
      const body = `## ${part.title}\n\n${envLine(env, seconds, command)}\n\n${section.markdown.trim()}\n`;
      if (values.get('write')) {
        writeSection(repoRoot, part.name, body, order);
        const file = writeResult(repoRoot, part.name, { part: part.name, title: part.title, command, env, wallSeconds: seconds, result: section.result });
        console.error(`== ${part.name}: done in ${seconds.toFixed(1)} s; wrote ${file} and its section of BENCHMARKS.md`);
      } else {
        console.log(body);
      }
    } catch (e) {
      failed++;
      console.error(`== ${part.name}: FAILED: ${(e as Error).stack ?? e}`);
    }
  }
  return failed > 0 ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    if (e instanceof UsageError) {
      console.error(`bench: ${e.message}`);
      process.exitCode = 2;
    } else {
      console.error(`bench: ${(e as Error).message ?? e}`);
      process.exitCode = 1;
    }
  },
);
