/** README.md documents every flag as the option table defines it, and every error code. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { repoRoot } from './support/cluster.js';
import { withFlagTables } from '../scripts/flag-tables.js';
import { ErrorCodes } from '../src/shared/errors.js';

const readme = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');

test("README's flag tables are the option table's (regenerate with: node --import tsx scripts/flag-tables.ts)", () => {
  assert.equal(readme, withFlagTables(readme));
});

test('README documents every error code', () => {
  const section = readme.slice(readme.indexOf('## Error codes'));
  for (const code of Object.keys(ErrorCodes)) assert.match(section, new RegExp(`\`${code}\``), `README.md's Error codes section does not list ${code}`);
});
