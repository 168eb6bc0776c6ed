/**
 * The layout's rules, read from the imports (docs/architecture.md): the model
 * and the data know no sockets, the wire knows no tfjs, src/shared knows
 * none of the processes, a relay reuses the coordinator's pieces but never the
 * worker's, nothing imports the relay, and a file over 350 lines says why at its top.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from './support/cluster.js';

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(repoRoot, dir), { withFileTypes: true })) {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(rel));
    else if (e.name.endsWith('.ts')) out.push(rel);
  }
  return out;
}

function imports(file: string): string[] {
  const text = fs.readFileSync(path.join(repoRoot, file), 'utf8');
  return [...text.matchAll(/^(?:import|export)[^;]*?from '([^']+)';/gms)].map((m) => m[1]);
}

const SOCKETS = /^(ws|node:net|node:http|node:https|node:tls|node:dgram)$|\/(wire|coordinator|worker|relay)\//;

test('model/ and data/ import no sockets, no wire and no process code', () => {
  const files = [...sources('src/shared/model'), ...sources('src/shared/data')];
  assert.ok(files.length > 10);
  for (const f of files) for (const i of imports(f)) assert.doesNotMatch(i, SOCKETS, `${f} imports ${i}`);
});

test('wire/ imports no tfjs and no model', () => {
  const files = sources('src/shared/wire');
  assert.ok(files.length >= 6);
  for (const f of files) for (const i of imports(f)) assert.doesNotMatch(i, /tensorflow|\/model\//, `${f} imports ${i}`);
});

test('src/shared imports nothing from the coordinator, the worker or the relay', () => {
  for (const f of sources('src/shared')) for (const i of imports(f)) assert.doesNotMatch(i, /(^|\/)(coordinator|worker|relay)\//, `${f} imports ${i}`);
});

test('the relay uses shared/ and the coordinator (membership, round, streams, ws-server), never the worker; nothing imports the relay', () => {
  const relay = sources('src/relay');
  assert.ok(relay.length >= 4);
  for (const f of relay) for (const i of imports(f)) assert.doesNotMatch(i, /(^|\/)worker\/|tensorflow/, `${f} imports ${i}`);
  for (const f of [...sources('src/coordinator'), ...sources('src/worker')]) for (const i of imports(f)) assert.doesNotMatch(i, /(^|\/)relay\//, `${f} imports ${i}`);
});

test('a source file over 350 lines states why at its top', () => {
  for (const f of sources('src')) {
    const lines = fs.readFileSync(path.join(repoRoot, f), 'utf8').split('\n');
    if (lines.length <= 351) continue;
    assert.match(lines.slice(0, 40).join('\n'), /Over 350 lines/, `${f} has ${lines.length} lines and no reason at its top`);
  }
});

/** What the browser bundle (scripts/build-browser.ts) pulls in from src/worker: no Node module may be among them. */
const BUNDLED_WORKER = ['src/worker/worker-client.ts', 'src/worker/shard-compute.ts', 'src/worker/socket.ts'];

test('src/browser and the worker files it bundles import no Node module and no ws; nothing imports src/browser', () => {
  const files = [...sources('src/browser'), ...BUNDLED_WORKER];
  assert.ok(files.length >= 6);
  for (const f of files) {
    // Type-only imports are erased from the bundle; every other one is bundled.
    const text = fs.readFileSync(path.join(repoRoot, f), 'utf8');
    const values = [...text.matchAll(/^(?:import|export)(?!\s+type\b)[^;]*?from '([^']+)';/gms)].map((m) => m[1]);
    for (const i of values) {
      assert.doesNotMatch(i, /^(node:|ws$|fs$|path$|os$)|\/coordinator\/|metrics\.js$|node-socket\.js$/, `${f} imports ${i}`);
      if (f.startsWith('src/browser/') && i.startsWith('.')) assert.match(path.join(path.dirname(f), i), /^src\/(browser|worker|shared)\//, `${f} imports ${i}`);
    }
  }
  for (const f of sources('src').filter((s) => !s.startsWith('src/browser/'))) for (const i of imports(f)) assert.doesNotMatch(i, /(^|\/)browser\//, `${f} imports ${i}`);
});
