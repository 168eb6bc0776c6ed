#!/usr/bin/env node
/**
 * Command line: `coordinator start`, `worker join`, `relay`, `generate`, `export`.
 * `dptrain coordinator start` and `coordinator start` are the same command.
 * Flags only parse and wire; every value is validated by config.ts.
 * Exit codes: 0 done, 1 runtime failure, 2 bad flags, config or input.
 */
import yargs, { type Argv, type Options } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { pathToFileURL } from 'node:url';
import fs from 'node:fs';
import { COORDINATOR_OPTIONS, WORKER_OPTIONS, RELAY_OPTIONS, GENERATE_OPTIONS, EXPORT_OPTIONS, envVarFor, type OptionTable } from './shared/options.js';
import { resolveCoordinatorConfig, resolveRelayConfig, resolveWorkerConfig, resolveOptions } from './shared/config.js';
import { DptrainError, exitCodeFor } from './shared/errors.js';

/** Exit code 2 for mistakes in what the user gave us; 1 for failures while running. */

function yargsOptions(table: OptionTable): Record<string, Options> {
  const out: Record<string, Options> = {};
  for (const [flag, spec] of Object.entries(table)) {
    // No yargs defaults: config file and env must be able to override them (config.ts applies defaults).
    const def = spec.default === undefined ? '' : ` [default: ${JSON.stringify(spec.default)}]`;
    out[flag] = { type: spec.type, describe: `${spec.describe}${def} (env ${envVarFor(flag)})`, choices: spec.choices as string[] | undefined };
  }
  return out;
}

/**
 * A flag given without its value (`--hidden $UNSET --epochs 3`): yargs would drop it, or take '' for a
 * string, and the run would silently use the default. Booleans need no value.
 */
export function checkFlagValues(args: string[], table: OptionTable): void {
  for (let i = 0; i < args.length; i++) {
    const m = /^--([a-z][a-z0-9-]*)(=(.*))?$/.exec(args[i]);
    if (!m || !(m[1] in table) || table[m[1]].type === 'boolean') continue;
    const value = m[2] !== undefined ? m[3] : args[i + 1];
    if (value === undefined || value === '' || (m[2] === undefined && /^--?[a-zA-Z]/.test(value))) {
      throw new DptrainError('ERR_BAD_CONFIG', `--${m[1]} was given without a value${value === '' ? ' (an empty string)' : ''}; an unset shell variable? (see --help)`);
    }
  }
}

/** Flags the user actually typed, keyed by flag name. */
function given(argv: Record<string, unknown>, table: OptionTable): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const flag of Object.keys(table)) if (argv[flag] !== undefined) out[flag] = argv[flag];
  return out;
}

function fail(e: unknown): never {
  if (e instanceof DptrainError) {
    console.error(`error: ${e.message} (${e.code})`);
    process.exit(exitCodeFor(e.code));
  }
  console.error(`error: ${(e as Error)?.stack ?? String(e)}`);
  process.exit(1);
}

/** The arguments buildCli was given, for checkFlagValues. */
let rawArgs: string[] = [];

/** A command handler: its result is the exit code; any error goes through fail(). */
function run(table: OptionTable, fn: (argv: Record<string, unknown>) => Promise<number>): (argv: Record<string, unknown>) => Promise<void> {
  return async (argv) => {
    try {
      checkFlagValues(rawArgs, table);
      for (const [flag, spec] of Object.entries(table)) {
        if (spec.required && (argv[flag] === undefined || argv[flag] === '') && process.env[envVarFor(flag)] === undefined) throw new DptrainError('ERR_BAD_CONFIG', `--${flag} is required`);
      }
      process.exit(await fn(argv));
    } catch (e) {
      fail(e);
    }
  };
}

function coordinatorCommands(y: Argv): Argv {
  return y
    .command(
      'start',
      'start a coordinator: shard the corpus, average gradients, checkpoint, serve metrics',
      (b) => b.options(yargsOptions(COORDINATOR_OPTIONS)),
      run(COORDINATOR_OPTIONS, async (argv) => {
        const cfg = resolveCoordinatorConfig(given(argv, COORDINATOR_OPTIONS));
        const { startCoordinator } = await import('./coordinator/main.js');
        const summary = await startCoordinator(cfg);
        return summary.reason === 'done' || summary.reason === 'stopped' || summary.reason === 'finished' ? 0 : 1;
      }),
    )
    .demandCommand(1, 'say which: coordinator start');
}

function workerCommands(y: Argv): Argv {
  return y
    .command(
      'join',
      'join a coordinator and compute gradients on a shard of streams',
      (b) => b.options(yargsOptions(WORKER_OPTIONS)),
      run(WORKER_OPTIONS, async (argv) => {
        const cfg = resolveWorkerConfig(given(argv, WORKER_OPTIONS));
        const { joinWorker } = await import('./worker/main.js');
        const exit = await joinWorker(cfg);
        return exit === 'done' || exit === 'stopped' ? 0 : 1;
      }),
    )
    .demandCommand(1, 'say which: worker join');
}

export function buildCli(args: string[], scriptName = 'dptrain'): Argv {
  rawArgs = args;
  return yargs(args)
    .scriptName(scriptName)
    .command('coordinator', 'coordinator commands', (y) => coordinatorCommands(y))
    .command('worker', 'worker commands', (y) => workerCommands(y))
    .command(
      'relay',
      'join a coordinator as one member for the workers that join this relay; sum their gradients (hierarchical aggregation)',
      (b) => b.options(yargsOptions(RELAY_OPTIONS)),
      run(RELAY_OPTIONS, async (argv) => {
        const cfg = resolveRelayConfig(given(argv, RELAY_OPTIONS));
        const { startRelay } = await import('./relay/main.js');
        const exit = await startRelay(cfg);
        return exit === 'done' || exit === 'stopped' ? 0 : 1;
      }),
    )
    .command(
      'generate',
      'generate text from a checkpoint (d2l predict_ch8, or sampling with --temperature)',
      (b) => b.options(yargsOptions(GENERATE_OPTIONS)),
      run(GENERATE_OPTIONS, async (argv) => {
        const o = resolveOptions<{ checkpoint: string; prefix: string; length: number; temperature: number; seed: number; backend: 'auto' | 'tensorflow' | 'wasm' | 'cpu' }>(GENERATE_OPTIONS, given(argv, GENERATE_OPTIONS));
        const { generateFromCheckpoint } = await import('./shared/generate.js');
        console.log(await generateFromCheckpoint(o));
        return 0;
      }),
    )
    .command(
      'export',
      "export a checkpoint's weights in TF.js's Layers format (tf.loadLayersModel)",
      (b) => b.options(yargsOptions(EXPORT_OPTIONS)),
      run(EXPORT_OPTIONS, async (argv) => {
        const o = resolveOptions<{ checkpoint: string; out: string; overwrite: boolean }>(EXPORT_OPTIONS, given(argv, EXPORT_OPTIONS));
        if (!o.out) throw new DptrainError('ERR_BAD_CONFIG', '--out is required');
        const { exportCheckpoint } = await import('./shared/generate.js');
        console.log(await exportCheckpoint(o.checkpoint, o.out, { overwrite: o.overwrite }));
        return 0;
      }),
    )
    .demandCommand(1, 'say which command: coordinator start, worker join, relay, generate or export')
    .strict()
    .recommendCommands()
    .help()
    .version(false)
    .fail((msg, err, y) => {
      if (err) fail(err);
      console.error(`${y.help() && ''}error: ${msg} (ERR_BAD_CONFIG)\nrun with --help for the list of commands and flags`);
      process.exit(2);
    });
}

export async function main(argv = hideBin(process.argv), scriptName = 'dptrain'): Promise<void> {
  await buildCli(argv, scriptName).parseAsync();
}

const invoked = process.argv[1] && fs.existsSync(process.argv[1]) ? pathToFileURL(fs.realpathSync(process.argv[1])).href : '';
if (invoked === import.meta.url) void main();
