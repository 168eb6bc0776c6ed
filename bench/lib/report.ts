/**
 * Writes results: each part owns the text between its markers in
 * BENCHMARKS.md, so re-running one part leaves the others' sections alone,
 * and its raw numbers go to bench/results/NAME.json.
 */
import fs from 'node:fs';
import path from 'node:path';

export const BENCHMARKS_FILE = 'BENCHMARKS.md';

const DEFAULT_INTRO = `# Benchmarks

Regenerate with \`npm run bench\` (all parts), \`npm run bench:step\`, or one part at a time,
e.g. \`node --import tsx bench/run.ts d2l\`. Each part rewrites only its own section below;
raw numbers are in \`bench/results/NAME.json\`.
`;

export const startMarker = (name: string) => `<!-- bench:${name} -->`;
export const endMarker = (name: string) => `<!-- /bench:${name} -->`;

/**
 * Put `body` between the markers of `name`. A section that is not there yet
 * goes before the first section of a part that comes later in `order`, else
 * at the end, so the file follows the registry's order.
 */
export function replaceSection(doc: string, name: string, body: string, order: readonly string[]): string {
  const block = `${startMarker(name)}\n${body.trim()}\n${endMarker(name)}`;
  const start = doc.indexOf(startMarker(name));
  if (start >= 0) {
    const end = doc.indexOf(endMarker(name), start);
    if (end < 0) throw new Error(`${BENCHMARKS_FILE} has ${startMarker(name)} without ${endMarker(name)}; fix the file by hand`);
    return doc.slice(0, start) + block + doc.slice(end + endMarker(name).length);
  }
  for (const later of order.slice(order.indexOf(name) + 1)) {
    const at = doc.indexOf(startMarker(later));
    if (at >= 0) return `${doc.slice(0, at)}${block}\n\n${doc.slice(at)}`;
  }
  return `${doc.trimEnd()}\n\n${block}\n`;
}

function writeAtomically(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

export function writeSection(repoRoot: string, name: string, body: string, order: readonly string[]): void {
  const file = path.join(repoRoot, BENCHMARKS_FILE);
  // Read just before writing: another part may have finished meanwhile.
  const doc = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : DEFAULT_INTRO;
  writeAtomically(file, replaceSection(doc, name, body, order));
}

export function writeResult(repoRoot: string, name: string, data: unknown): string {
  const dir = path.join(repoRoot, 'bench', 'results');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.json`);
  writeAtomically(file, JSON.stringify(data, null, 2) + '\n');
  return path.relative(repoRoot, file);
}
