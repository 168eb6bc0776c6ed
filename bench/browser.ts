/**
 * Part "browser": one training step of the d2l-shaped LSTM (a 2-worker share:
 * 16 rows x 35 steps, hidden 256, vocabulary 28) in a headless Chromium tab on
 * its WebGL2 (SwiftShader, the software GPU: no GPU on this machine) and on
 * wasm, next to the same step in Node on the runner's backend (run it with
 * --backend wasm for the Node wasm worker). Rounds are interleaved: each takes
 * `--steps` steps on every backend in turn. Also: the webgl gradient against
 * Node's, and the op count of one step (which dominates emulated WebGL).
 *
 *   node --import tsx bench/run.ts browser --backend wasm
 */
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { build } from 'esbuild';
import { chromium, type Page } from 'playwright-core';
import { createModel } from '../src/shared/model/registry.js';
import { initialParamsFor } from './browser/params.js';
import type { StepRequest } from './browser/step-page.js';
import type { BenchPart } from './lib/types.js';

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist', '--disable-quic', '--no-first-run'];

const median = (a: number[]) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function servePage(repoRoot: string): Promise<{ port: number; close: () => void }> {
  const r = await build({ entryPoints: [path.join(repoRoot, 'bench', 'browser', 'step-page.ts')], bundle: true, write: false, format: 'esm', platform: 'browser', minify: true, define: { 'process.env.NODE_ENV': '"production"' }, logLevel: 'error' });
  const js = r.outputFiles[0].contents;
  const wasmDir = path.join(path.dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist');
  const srv = http.createServer((req, res) => {
    const url = req.url ?? '/';
    if (url === '/step.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(js);
    else if (/^\/worker\/wasm\/tfjs-backend-wasm(-simd)?\.wasm$/.test(url)) res.writeHead(200, { 'content-type': 'application/wasm' }).end(fs.readFileSync(path.join(wasmDir, path.basename(url))));
    else res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><script type="module" src="/step.js"></script>');
  });
  await new Promise<void>((ok) => srv.listen(0, '127.0.0.1', ok));
  return { port: (srv.address() as { port: number }).port, close: () => srv.close() };
}

export const browserPart: BenchPart = {
  name: 'browser',
  title: 'Browser workers: one step in a tab on software WebGL and on wasm, next to the Node worker',
  summary: 'step time of the d2l-shaped LSTM share in headless Chromium (SwiftShader WebGL2, wasm) and in Node',
  flags: {
    rounds: { type: 'number', default: 5, describe: 'interleaved rounds' },
    steps: { type: 'number', default: 2, describe: 'timed steps per backend per round' },
    hidden: { type: 'number', default: 256, describe: 'LSTM hidden size' },
    rows: { type: 'number', default: 16, describe: 'rows (streams) in the step' },
  },
  async run(ctx) {
    const rounds = Number(ctx.flag("rounds"));
    const steps = Number(ctx.flag("steps"));
    const req: StepRequest = { backend: '', model: 'char-lstm', vocab: 28, hyper: { hidden: Number(ctx.flag("hidden")) }, rows: Number(ctx.flag("rows")), numSteps: 35, seed: 11 };
    const server = await servePage(ctx.repoRoot);
    const browser = await chromium.launch({ executablePath: process.env.DPTRAIN_TEST_CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS });
    try {
      const pages: Record<string, Page> = {};
      const inits: Record<string, { backend: string; device: string; grad: number[]; kernels: number; byOp: Record<string, number> }> = {};
      for (const b of ['webgl', 'wasm']) {
        const page = await browser.newPage();
        await page.goto(`http://127.0.0.1:${server.port}/`);
        await page.waitForFunction(() => 'dptrainInit' in window);
        inits[b] = await page.evaluate((q) => (window as unknown as { dptrainInit: (r: StepRequest) => Promise<(typeof inits)[string]> }).dptrainInit(q), { ...req, backend: b });
        pages[b] = page;
      }
      const model = createModel(req.model, req.vocab, req.hyper);
      const { params, x, y } = initialParamsFor(model.paramCount, req.vocab, req.rows, req.numSteps, req.seed);
      const stepper = model.stepper(params);
      const state = new Float32Array(req.rows * model.stateWidth);
      const ref = stepper.step({ x, y, rows: req.rows, numSteps: req.numSteps }, state);
      const nodeName = `node-${ctx.backend.name}`;
      const times: Record<string, number[]> = { webgl: [], wasm: [], [nodeName]: [] };
      const loads: number[][] = [];
      for (let r = 0; r < rounds; r++) {
        loads.push(os.loadavg());
        for (const b of ['webgl', 'wasm']) times[b].push(...(await pages[b].evaluate((n) => (window as unknown as { dptrainTime: (n: number) => number[] }).dptrainTime(n), steps)));
        for (let i = 0; i < steps; i++) {
          const t0 = performance.now();
          stepper.step({ x, y, rows: req.rows, numSteps: req.numSteps }, state);
          times[nodeName].push(performance.now() - t0);
        }
      }
      stepper.dispose();
      const rel = (g: number[]) => {
        let num = 0;
        let den = 0;
        for (let i = 0; i < g.length; i++) {
          num += (g[i] - ref.grad[i]) ** 2;
          den += ref.grad[i] ** 2;
        }
        return Math.sqrt(num / den);
      };
      const tokens = req.rows * req.numSteps;
      const rows = Object.entries(times).map(([b, t]) => ({ backend: b, medianMs: median(t), minMs: Math.min(...t), maxMs: Math.max(...t), tokensPerSecond: tokens / (median(t) / 1000), n: t.length }));
      const ops = inits.webgl.byOp;
      const result = {
        shape: { ...req, backend: undefined, tokens },
        device: { webgl: inits.webgl.device, wasm: inits.wasm.device, node: `${ctx.backend.name} (${ctx.backend.device})` },
        backendsInTabs: { webgl: inits.webgl.backend, wasm: inits.wasm.backend },
        rows,
        kernelsPerStep: inits.webgl.kernels,
        kernelsByOp: ops,
        gradRelativeError: { webgl: rel(inits.webgl.grad), wasm: rel(inits.wasm.grad) },
        loadAverages: loads,
      };
      const top = Object.entries(ops).slice(0, 4).map(([k, v]) => `${k} ${v}`).join(', ');
      const md = [
        `One training step of the LSTM (${req.rows} rows x ${req.numSteps} steps = ${tokens} tokens, hidden ${req.hyper.hidden}, vocabulary ${req.vocab}: one worker's share of the d2l batch of 32 in a 2-worker run), ${rounds} interleaved rounds of ${steps} steps per backend. Browser: headless Chromium with WebGL2 on SwiftShader (\`${inits.webgl.device}\`), a CPU emulation of a GPU, and wasm in the same browser (SIMD, one thread: the page is not cross-origin isolated). Node: the runner's backend (${ctx.backend.name}). Load averages during the rounds: ${loads.map((l) => l[0].toFixed(2)).join(', ')} (1 min). With more runnable processes than cores (the load averages above), every figure moves by a factor 2 to 3 between rounds (min and max columns): only the order of magnitude of webgl against the others, and of one run's medians, carry over.`,
        '',
        '| where | median step | min | max | tokens/s (median) |',
        '|---|---:|---:|---:|---:|',
        ...rows.map((r) => `| ${r.backend === 'webgl' ? 'tab, webgl (SwiftShader)' : r.backend === 'wasm' ? 'tab, wasm' : `Node worker, ${ctx.backend.name}`} | ${r.medianMs.toFixed(0)} ms | ${r.minMs.toFixed(0)} ms | ${r.maxMs.toFixed(0)} ms | ${Math.round(r.tokensPerSecond).toLocaleString('en-US')} |`),
        '',
        `One step is ${inits.webgl.kernels} tfjs kernels (${top}, ...): each is a shader dispatch, which SwiftShader runs on the CPU, so the webgl figure measures the emulation's per-dispatch cost and its software rasteriser, not a GPU; on a real GPU the same ${inits.webgl.kernels} dispatches are the floor and the matMuls (${ops.BatchMatMul ?? 0} of them) are cheap. The webgl backend runs with unpacked float32 textures (packed ones gave NaN gradients on SwiftShader, see README "Workers in a browser").`,
        '',
        `Gradient against the Node step: relative error ${rel(inits.webgl.grad).toExponential(1)} on webgl, ${rel(inits.wasm.grad).toExponential(1)} on wasm (one step, these parameters). Over a whole tiny run (test/browser-worker.test.ts), a worker process plus a webgl tab end within 1.8e-7 of the in-process loop; the test's bound is 1e-5, the one worker processes meet.`,
      ].join('\n');
      return { markdown: md, result };
    } finally {
      await browser.close();
      server.close();
    }
  },
};
