/**
 * README's flag tables, rendered from the option table (src/shared/options.ts).
 * `node --import tsx scripts/flag-tables.ts` rewrites them in place; test/readme.test.ts checks they match.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { COORDINATOR_OPTIONS, WORKER_OPTIONS, RELAY_OPTIONS, GENERATE_OPTIONS, EXPORT_OPTIONS, envVarFor, type OptionTable } from '../src/shared/options.js';

export const SECTIONS: [string, OptionTable][] = [
  ['### coordinator start', COORDINATOR_OPTIONS],
  ['### worker join', WORKER_OPTIONS],
  ['### dptrain relay', RELAY_OPTIONS],
  ['### dptrain generate', GENERATE_OPTIONS],
  ['### dptrain export', EXPORT_OPTIONS],
];

export function renderFlagTable(table: OptionTable): string {
  const rows = ['| flag | env | default | meaning |', '|---|---|---|---|'];
  for (const [flag, spec] of Object.entries(table)) {
    const def = spec.default === undefined ? '' : `\`${JSON.stringify(spec.default)}\``;
    const choices = spec.choices ? ` (${spec.choices.join(' \\| ')})` : '';
    rows.push(`| \`--${flag}\` | \`${envVarFor(flag)}\` | ${def} | ${spec.describe.replace(/\|/g, '\\|')}${choices} |`);
  }
  return rows.join('\n');
}

/** The README with each section's first table replaced by the rendered one. */
export function withFlagTables(readme: string): string {
  let out = readme;
  for (const [heading, table] of SECTIONS) {
    const at = out.indexOf(`\n${heading}\n`);
    if (at < 0) throw new Error(`README.md has no '${heading}' section`);
    const start = out.indexOf('\n| flag | env | default | meaning |', at);
    let end = start + 1;
    while (end < out.length && out[end] === '|') end = out.indexOf('\n', end) + 1;
    out = out.slice(0, start + 1) + renderFlagTable(table) + '\n' + out.slice(end);
  }
  return out;
}

const invoked = process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (invoked) {
  const file = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'README.md');
  fs.writeFileSync(file, withFlagTables(fs.readFileSync(file, 'utf8')));
}
