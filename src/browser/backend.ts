/**
 * The tab's tfjs backend: `webgl` where the browser offers WebGL2 with float
 * render targets (EXT_color_buffer_float), else `wasm` (its .wasm files from
 * the coordinator, /worker/wasm/), else `cpu`. `?backend=wasm|cpu|webgl` asks for one.
 */
import * as tf from '@tensorflow/tfjs';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';

export type TabBackend = 'webgl' | 'wasm' | 'cpu';

export interface TabBackendInfo {
  name: TabBackend;
  /** The GPU as WebGL names it (often the software renderer), or wasm's flavour. */
  device: string;
  /** Why a faster backend was not taken, if one was not. */
  notes: string[];
}

/** WebGL2 with float colour buffers, and the renderer it runs on; null without. */
export function webgl2Float(): { renderer: string } | null {
  const canvas = document.createElement('canvas');
  const gl = canvas.getContext('webgl2');
  if (!gl) return null;
  try {
    if (!gl.getExtension('EXT_color_buffer_float')) return null;
    const dbg = gl.getExtension('WEBGL_debug_renderer_info');
    const renderer = String(dbg ? gl.getParameter(dbg.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER));
    return { renderer };
  } finally {
    gl.getExtension('WEBGL_lose_context')?.loseContext();
  }
}

async function tryWebgl(notes: string[]): Promise<TabBackendInfo | null> {
  const gl = webgl2Float();
  if (!gl) {
    notes.push('no WebGL2 with float render targets');
    return null;
  }
  // Full float32 textures: the step's sums must not be rounded to float16.
  tf.env().set('WEBGL_RENDER_FLOAT32_ENABLED', true);
  // Unpacked textures (one value per texel). With tfjs's default packed textures
  // (four values per texel), SwiftShader returned NaN in 16 of 3,275 gradient
  // entries of a 3-row shard after a few rounds; unpacked, the step matches the cpu backend (BENCHMARKS.md, part browser).
  tf.env().set('WEBGL_PACK', false);
  if (!(await tf.setBackend('webgl'))) {
    notes.push('tfjs webgl failed to initialise');
    return null;
  }
  if (tf.env().getNumber('WEBGL_VERSION') !== 2 || !tf.env().getBool('WEBGL_RENDER_FLOAT32_CAPABLE')) {
    notes.push('tfjs webgl found no WebGL2 float32 textures');
    return null;
  }
  return { name: 'webgl', device: gl.renderer.slice(0, 200), notes };
}

async function tryWasm(notes: string[]): Promise<TabBackendInfo | null> {
  setWasmPaths('/worker/wasm/');
  try {
    if (await tf.setBackend('wasm')) return { name: 'wasm', device: 'wasm', notes };
  } catch (e) {
    notes.push(`wasm: ${(e as Error).message}`);
    return null;
  }
  notes.push('wasm failed to initialise');
  return null;
}

export async function chooseBackend(asked: string | null): Promise<TabBackendInfo> {
  const notes: string[] = [];
  const order: TabBackend[] = asked === 'wasm' ? ['wasm', 'cpu'] : asked === 'cpu' ? ['cpu'] : ['webgl', 'wasm', 'cpu'];
  for (const name of order) {
    const info = name === 'webgl' ? await tryWebgl(notes) : name === 'wasm' ? await tryWasm(notes) : null;
    if (info) {
      await tf.ready();
      return info;
    }
    if (name === 'cpu') break;
  }
  await tf.setBackend('cpu');
  await tf.ready();
  return { name: 'cpu', device: 'cpu', notes };
}
