/**
 * Backend selection: auto | tensorflow | wasm | cpu, and --gpu N.
 *
 * tfjs has no device placement API (tensorflow/tfjs#7586), so a GPU is chosen
 * by setting CUDA_VISIBLE_DEVICES before @tensorflow/tfjs-node-gpu loads
 * libtensorflow; inside the process that GPU is then device 0.
 * The native packages are optionalDependencies: their install step downloads
 * libtensorflow and is skipped where that fails, so each load is tried and a
 * missing package is reported by name together with the fallback taken.
 */
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { DptrainError } from './errors.js';

export const BACKEND_CHOICES = ['auto', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];

export interface BackendOptions {
  backend: BackendChoice;
  /** GPU index; implies the tfjs-node-gpu package. */
  gpu?: number;
  log?: (line: string) => void;
}

export interface BackendInfo {
  /** tfjs backend name: 'tensorflow' | 'wasm' | 'cpu'. */
  name: string;
  /** npm package that provided it. */
  pkg: string;
  /** 'gpu:N', 'cpu' or 'wasm-simd'... a short human label for metrics and logs. */
  device: string;
}

const require = createRequire(import.meta.url);

function loadNative(pkg: string): string | null {
  try {
    require(pkg);
    return null;
  } catch (e) {
    return (e as Error).message.split('\n')[0];
  }
}

async function useTensorflow(gpu: number | undefined): Promise<BackendInfo> {
  const pkg = gpu === undefined ? '@tensorflow/tfjs-node' : '@tensorflow/tfjs-node-gpu';
  if (gpu !== undefined) process.env.CUDA_VISIBLE_DEVICES = String(gpu);
  const err = loadNative(pkg);
  if (err !== null) {
    throw new DptrainError(
      'ERR_BACKEND_UNAVAILABLE',
      `cannot load ${pkg} (${err}); install it where libtensorflow can be downloaded (npm install ${pkg}), ` +
        (gpu === undefined ? 'or use --backend wasm or --backend cpu' : 'or drop --gpu to fall back to tfjs-node, wasm or cpu'),
    );
  }
  if (!(await tf.setBackend('tensorflow'))) {
    throw new DptrainError('ERR_BACKEND_UNAVAILABLE', `${pkg} loaded but the 'tensorflow' backend failed to initialise`);
  }
  return { name: 'tensorflow', pkg, device: gpu === undefined ? 'cpu' : `gpu:${gpu}` };
}

async function useWasm(): Promise<BackendInfo> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  const dir = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json'));
  wasm.setWasmPaths(path.join(dir, 'dist') + path.sep);
  if (!(await tf.setBackend('wasm'))) {
    throw new DptrainError('ERR_BACKEND_UNAVAILABLE', 'the wasm backend failed to initialise');
  }
  return { name: 'wasm', pkg: '@tensorflow/tfjs-backend-wasm', device: 'cpu' };
}

async function useCpu(): Promise<BackendInfo> {
  await tf.setBackend('cpu');
  return { name: 'cpu', pkg: '@tensorflow/tfjs-backend-cpu', device: 'cpu' };
}

export async function selectBackend(opts: BackendOptions): Promise<BackendInfo> {
  const log = opts.log ?? ((l: string) => console.error(l));
  let info: BackendInfo;
  switch (opts.backend) {
    case 'tensorflow':
      info = await useTensorflow(opts.gpu);
      break;
    case 'wasm':
      if (opts.gpu !== undefined) throw new DptrainError('ERR_BAD_CONFIG', '--gpu needs --backend tensorflow or auto, not wasm');
      info = await useWasm();
      break;
    case 'cpu':
      if (opts.gpu !== undefined) throw new DptrainError('ERR_BAD_CONFIG', '--gpu needs --backend tensorflow or auto, not cpu');
      info = await useCpu();
      break;
    case 'auto':
      if (opts.gpu !== undefined) {
        // A GPU was asked for: falling back silently to a CPU would hide a broken install.
        info = await useTensorflow(opts.gpu);
        break;
      }
      try {
        info = await useTensorflow(undefined);
      } catch (e) {
        log(`backend: ${(e as Error).message}; falling back to wasm`);
        try {
          info = await useWasm();
        } catch (e2) {
          log(`backend: wasm unavailable (${(e2 as Error).message}); falling back to cpu`);
          info = await useCpu();
        }
      }
      break;
    default:
      throw new DptrainError('ERR_BAD_CONFIG', `unknown backend '${String(opts.backend)}'; expected one of ${BACKEND_CHOICES.join(', ')}`);
  }
  await tf.ready();
  log(`backend: ${info.name} (${info.pkg}, device ${info.device})`);
  return info;
}
