/**
 * Bundles the browser worker (src/browser/main.ts: the connection loop, the
 * shard compute and the model step of `worker join`, with tfjs and its webgl,
 * wasm and cpu backends) into one file the coordinator serves at
 * /worker/worker.js. Part of `npm run build` (and so of `prepare`); the
 * .wasm files are served from @tensorflow/tfjs-backend-wasm/dist as they are.
 *
 *   node --import tsx scripts/build-browser.ts [OUTFILE]   (default dist/browser/worker.bundle.js)
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const DEFAULT_BUNDLE = path.join(root, 'dist', 'browser', 'worker.bundle.js');

export async function buildBrowserWorker(outfile = DEFAULT_BUNDLE): Promise<{ bytes: number }> {
  const r = await build({
    entryPoints: [path.join(root, 'src', 'browser', 'main.ts')],
    outfile,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['chrome100', 'firefox100', 'safari15'],
    minify: true,
    legalComments: 'eof',
    metafile: true,
    logLevel: 'warning',
    // tfjs reads process.env only where `process` exists; the bundle must not ask.
    define: { 'process.env.NODE_ENV': '"production"' },
  });
  const bytes = Object.values(r.metafile.outputs).reduce((a, o) => a + o.bytes, 0);
  return { bytes };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = process.argv[2] ? path.resolve(process.argv[2]) : DEFAULT_BUNDLE;
  const { bytes } = await buildBrowserWorker(out);
  console.log(`browser worker: ${path.relative(process.cwd(), out)} (${(bytes / 1e6).toFixed(2)} MB)`);
}
