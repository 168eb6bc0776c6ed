/** README.md documents every flag as the option table defines it, and every error code. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from './support/cluster.js';
import { withFlagTables } from '../scripts/flag-tables.js';
import { closeCodeFor, ErrorCodes, exitCodeFor, isErrorCode } from '../src/shared/errors.js';

const readme = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');

test("README's flag tables are the option table's (regenerate with: node --import tsx scripts/flag-tables.ts)", () => {
  assert.equal(readme, withFlagTables(readme));
});

test('README documents every error code', () => {
  const section = readme.slice(readme.indexOf('## Error codes'));
  for (const code of Object.keys(ErrorCodes)) assert.match(section, new RegExp(`\`${code}\``), `README.md's Error codes section does not list ${code}`);
});

test("README's Error codes table agrees with the error table on close codes and exit codes", () => {
  const section = readme.slice(readme.indexOf('## Error codes'));
  let rows = 0;
  for (const m of section.matchAll(/^\| `(ERR_[A-Z_]+)` \| *(\d*) *\| (.*) \|$/gm)) {
    const [, code, close, meaning] = m;
    assert.ok(isErrorCode(code), `README lists ${code}, which src/shared/errors.ts does not have`);
    rows++;
    if (close !== '') assert.equal(Number(close), closeCodeFor(code), `${code}: README says close ${close}`);
    const exit = /\(exit (\d)\)/.exec(meaning);
    if (exit) assert.equal(Number(exit[1]), exitCodeFor(code), `${code}: README says exit ${exit[1]}`);
  }
  assert.equal(rows, Object.keys(ErrorCodes).length, 'one README row per code');
});
