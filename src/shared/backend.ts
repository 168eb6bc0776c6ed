/**
 * Backend selection: auto | tensorflow | wasm | cpu, and --gpu N.
 *
 * tfjs has no device placement API (tensorflow/tfjs#7586), so a GPU is chosen
 * by setting CUDA_VISIBLE_DEVICES before @tensorflow/tfjs-node-gpu loads
 * libtensorflow; inside the process that GPU is then device 0.
 * The native packages are optionalDependencies: their install step downloads
 * libtensorflow and is skipped where that fails, so each load is tried and a
 * missing package is reported by name together with the fallback taken.
 *
 * TensorFlow maps nearly all of a GPU's memory into its first process unless
 * TF_FORCE_GPU_ALLOW_GROWTH=true is set before libtensorflow loads
 * (tensorflow/tfjs#671), so a second worker on the same GPU would fail; it is
 * set here unless the user set it. A tfjs-node-gpu that loads but finds no
 * usable GPU (CUDA 12 without the CUDA 11 libraries: "Could not load dynamic
 * library 'libcudart.so.11.0'") would silently run on the CPU; that is refused.
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
  /** Loads a native package by name; defaults to require(). Tests inject a stand-in. */
  loadNative?: (pkg: string) => unknown;
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

/** What @tensorflow/tfjs-node-gpu 4.22 needs on the machine: it bundles libtensorflow 2.9.1, built for these. */
export const GPU_REQUIREMENT = 'an NVIDIA driver with the CUDA 11.2 and cuDNN 8.1 libraries (it bundles libtensorflow 2.9.1; on a CUDA 12 machine install the CUDA 11 runtime beside it, see README "GPU workers")';

/**
 * The environment a GPU worker's libtensorflow must see, set before it loads:
 * the GPU (tfjs has no device placement) and, unless the user chose otherwise,
 * on-demand GPU memory so that several workers can share one GPU.
 */
export function prepareGpuEnv(gpu: number, env: NodeJS.ProcessEnv = process.env): void {
  env.CUDA_VISIBLE_DEVICES = String(gpu);
  if (env.TF_FORCE_GPU_ALLOW_GROWTH === undefined) env.TF_FORCE_GPU_ALLOW_GROWTH = 'true';
}

async function useTensorflow(gpu: number | undefined, load: (pkg: string) => unknown, log: (line: string) => void): Promise<BackendInfo> {
  const pkg = gpu === undefined ? '@tensorflow/tfjs-node' : '@tensorflow/tfjs-node-gpu';
  if (gpu !== undefined) {
    prepareGpuEnv(gpu);
    log(`backend: CUDA_VISIBLE_DEVICES=${process.env.CUDA_VISIBLE_DEVICES} TF_FORCE_GPU_ALLOW_GROWTH=${process.env.TF_FORCE_GPU_ALLOW_GROWTH}`);
  }
  try {
    load(pkg);
  } catch (e) {
    const err = (e as Error).message.split('\n')[0];
    throw new DptrainError(
      'ERR_BACKEND_UNAVAILABLE',
      gpu === undefined
        ? `cannot load ${pkg} (${err}); install it where libtensorflow can be downloaded (npm install ${pkg}), or use --backend wasm or --backend cpu`
        : `cannot load ${pkg} (${err}); it needs ${GPU_REQUIREMENT}; install it where libtensorflow can be downloaded (npm install ${pkg}), or drop --gpu to fall back to tfjs-node, wasm or cpu`,
    );
  }
  if (!(await tf.setBackend('tensorflow'))) {
    throw new DptrainError('ERR_BACKEND_UNAVAILABLE', `${pkg} loaded but the 'tensorflow' backend failed to initialise`);
  }
  // tfjs-node's backend reports whether libtensorflow registered a GPU device;
  // without one it would train on the CPU under a gpu:N label.
  if (gpu !== undefined && (tf.backend() as { isUsingGpuDevice?: boolean }).isUsingGpuDevice === false) {
    throw new DptrainError(
      'ERR_BACKEND_UNAVAILABLE',
      `${pkg} loaded but TensorFlow found no usable GPU ${gpu} (CUDA_VISIBLE_DEVICES=${gpu}): it needs ${GPU_REQUIREMENT}; a "Could not load dynamic library" line above names the missing library`,
    );
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
  const load = opts.loadNative ?? ((pkg: string) => require(pkg));
  let info: BackendInfo;
  switch (opts.backend) {
    case 'tensorflow':
      info = await useTensorflow(opts.gpu, load, log);
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
        info = await useTensorflow(opts.gpu, load, log);
        break;
      }
      try {
        info = await useTensorflow(undefined, load, log);
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
