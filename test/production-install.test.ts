/**
 * The package installed the way the Docker images install it: built from
 * src/, then production dependencies only with the optional native packages
 * left out (deploy/docker/Dockerfile.cpu: `npm ci`, build,
 * `npm prune --omit=dev --omit=optional`), in a temporary copy that shares
 * nothing with the repository's node_modules (the build stage, tsc and the
 * browser bundle, runs with the repository's devDependencies). A runtime import of a
 * devDependency makes every command die there with ERR_MODULE_NOT_FOUND.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { builtinModules, createRequire } from 'node:module';
import path from 'node:path';
import { repoRoot, tmpDir } from './support/cluster.js';

interface PackageJson {
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
}
const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as PackageJson;

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

/** '@scope/name/sub' -> '@scope/name', 'name/sub' -> 'name'. */
function packageOf(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
}

/** Every bare module specifier src/ loads: static and dynamic imports, re-exports, require() and require.resolve(). */
function runtimeImports(): Map<string, string[]> {
  const found = new Map<string, string[]>();
  const patterns = [
    /^\s*import\s+(?!type\b)[^'";]*?\bfrom\s+['"]([^'"]+)['"]/gm,
    /^\s*import\s+['"]([^'"]+)['"]/gm,
    /^\s*export\s+(?!type\b)[^'";]*?\bfrom\s+['"]([^'"]+)['"]/gm,
    /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g,
    /\brequire(?:\.resolve)?\(\s*['"]([^'"]+)['"]\s*\)/g,
    /\.resolve\(\s*['"]([^'"]+)['"]\s*\)/g,
  ];
  for (const file of sourceFiles(path.join(repoRoot, 'src'))) {
    const text = fs.readFileSync(file, 'utf8');
    for (const re of patterns) {
      for (const m of text.matchAll(re)) {
        const spec = m[1];
        if (spec.startsWith('.') || spec.startsWith('node:') || builtinModules.includes(spec)) continue;
        const name = packageOf(spec);
        found.set(name, [...(found.get(name) ?? []), path.relative(repoRoot, file)]);
      }
    }
  }
  return found;
}

test('every package src/ loads at run time is a dependency (or an optional one), none a devDependency', () => {
  const imports = runtimeImports();
  assert.ok(imports.has('yaml') && imports.has('@tensorflow/tfjs') && imports.has('chart.js'), `the scan sees the imports: ${[...imports.keys()].join(', ')}`);
  const allowed = new Set([...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.optionalDependencies ?? {})]);
  for (const [name, files] of imports) {
    assert.ok(allowed.has(name), `${name} (imported by ${[...new Set(files)].join(', ')}) must be in "dependencies"${pkg.devDependencies?.[name] ? ', not "devDependencies"' : ''}`);
  }
});

test('installed with production dependencies only (optional native packages omitted), --help and a one-epoch --spawn 1 run work', (t) => {
  const root = tmpDir('dptrain-prod-');
  t.after(() => fs.rmSync(root, { recursive: true, force: true })); // ~350 MB of node_modules
  // Build stage: compile src/ with the repository's TypeScript into the copy.
  const tsc = spawnSync(process.execPath, [path.join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(repoRoot, 'tsconfig.json'), '--outDir', path.join(root, 'dist')], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  assert.ok(fs.existsSync(path.join(root, 'dist', 'cli.js')), `tsc emitted nothing:\n${tsc.stdout}${tsc.stderr}`);
  if (tsc.status !== 0) t.diagnostic(`tsc reported type errors (npm run typecheck is where they fail):\n${tsc.stdout}`);
  // The rest of `npm run build`: the browser worker's bundle, which the coordinator serves at /worker/worker.js.
  const bundle = path.join(root, 'dist', 'browser', 'worker.bundle.js');
  const esb = spawnSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'scripts', 'build-browser.ts'), bundle], { cwd: repoRoot, encoding: 'utf8', timeout: 120_000 });
  assert.ok(fs.existsSync(bundle), `the browser bundle was not built:\n${esb.stdout}${esb.stderr}`);
  for (const f of ['package.json', 'package-lock.json']) fs.copyFileSync(path.join(repoRoot, f), path.join(root, f));

  // Runtime stage: what the images keep. --ignore-scripts as the Dockerfiles (nothing left needs one).
  const ci = spawnSync('npm', ['ci', '--omit=dev', '--omit=optional', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], {
    cwd: root,
    encoding: 'utf8',
    timeout: 180_000,
    env: { ...process.env, npm_config_update_notifier: 'false' },
  });
  assert.equal(ci.status, 0, `npm ci --omit=dev --omit=optional failed:\n${ci.stdout}${ci.stderr}`);

  // The copy must be isolated: no devDependency or optional native package resolvable from it.
  const requireFromCopy = createRequire(path.join(root, 'dist', 'cli.js'));
  for (const name of [...Object.keys(pkg.devDependencies ?? {}).filter((n) => !n.startsWith('@types/')), ...Object.keys(pkg.optionalDependencies ?? {})]) {
    assert.throws(() => requireFromCopy.resolve(name), `${name} must not be installed (or reachable from a parent folder) in the production copy`);
  }
  for (const name of Object.keys(pkg.dependencies ?? {})) assert.ok(fs.existsSync(path.join(root, 'node_modules', name, 'package.json')), `${name} installed`);

  const env: NodeJS.ProcessEnv = { ...process.env, NODE_ENV: 'production', DPTRAIN_TOKEN: '' };
  delete env.NODE_PATH;
  delete env.NODE_OPTIONS;
  const cli = (args: string[], timeout = 60_000) => {
    const r = spawnSync(process.execPath, [path.join(root, 'dist', 'cli.js'), ...args], { cwd: root, encoding: 'utf8', timeout, env });
    return { code: r.status, signal: r.signal, out: `${r.stdout}${r.stderr}` };
  };

  for (const args of [['coordinator', 'start', '--help'], ['worker', 'join', '--help']]) {
    const r = cli(args);
    assert.equal(r.code, 0, `${args.join(' ')} exited ${r.code}:\n${r.out}`);
    assert.doesNotMatch(r.out, /ERR_MODULE_NOT_FOUND|Cannot find package/);
    assert.match(r.out, args[0] === 'coordinator' ? /--corpus/ : /--coordinator/);
  }

  // A YAML config file (yaml at run time), a local corpus, one local worker, one epoch.
  const words = ['call', 'me', 'ishmael', 'some', 'years', 'ago', 'never', 'mind', 'how', 'long', 'precisely', 'having', 'little', 'money'];
  let text = '';
  for (let i = 0; text.length < 3000; i++) text += words[(i * 5 + (i >> 2)) % words.length] + (i % 9 === 8 ? '.\n' : ' ');
  fs.writeFileSync(path.join(root, 'corpus.txt'), text);
  fs.writeFileSync(path.join(root, 'run.yaml'), 'hidden: 8\nbatch-size: 4\nnum-steps: 5\nepochs: 1\n');
  const run = cli(
    ['coordinator', 'start', '--config', 'run.yaml', '--corpus', 'corpus.txt', '--spawn', '1', '--host', '127.0.0.1', '--port', '0', '--metrics-port', '-1', '--log-every', '1', '--sample-every', '0'],
    150_000,
  );
  assert.equal(run.code, 0, `the one-epoch --spawn 1 run exited ${run.code} (${run.signal}):\n${run.out}`);
  assert.doesNotMatch(run.out, /ERR_MODULE_NOT_FOUND|Cannot find package/);
  // Without the optional native packages the backends fall back to wasm, whose .wasm files come from the copy.
  assert.match(run.out, /backend: wasm/);
  assert.match(run.out, /epoch 1\/1\b.*ppl/, 'one epoch trained and evaluated');
  assert.match(run.out, /hidden[ =:]+8\b|\b8 hidden/i, 'the YAML config was applied');
});
