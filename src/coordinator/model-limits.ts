/**
 * What cannot work is refused before anything starts: a model whose
 * parameters do not fit in one WebSocket frame a worker accepts, or in the
 * 32-bit memory of the wasm backend, would otherwise fail on every worker and
 * reconnect forever, or grow to gigabytes and crash.
 */
import { DptrainError } from '../shared/errors.js';
import { maxPayloadFor, WORKER_MAX_PAYLOAD } from '../shared/wire/protocol.js';

/**
 * wasm32 addresses at most 4 GiB and tfjs-backend-wasm grows its heap in one
 * block, so copies of the parameters beyond about 2 GiB fail ("memory access
 * out of bounds") rather than slow down.
 */
export const WASM_USABLE_BYTES = 2 * 1024 ** 3;
/** Float32 copies of the parameters a step or an optimizer update holds at once: params, gradient, transposes and optimizer slots. */
const PARAM_COPIES = 5;

/**
 * `sizeFlags` names the flags that size the model ('--hidden 256'), for the
 * message; `vocab` the vocabulary, which sizes the input and output layers
 * (a word vocabulary is the largest part of the model: --min-freq shrinks it).
 */
export function checkModelFits(o: {
  paramCount: number;
  stateCount: number;
  trainTokens: number;
  backend: string;
  sizeFlags: string;
  vocab?: { size: number; tokens: string; minFreq: number };
}): void {
  const frame = maxPayloadFor(o.paramCount + o.stateCount, o.trainTokens, 'float32');
  const mib = (b: number) => `${Math.round(b / 1024 ** 2)} MiB`;
  const v = o.vocab;
  const words = v !== undefined && v.tokens === 'word';
  const what = words ? `${o.sizeFlags} with a vocabulary of ${v.size.toLocaleString('en-US')} words (--min-freq ${v.minFreq})` : o.sizeFlags;
  const vocabHint = words ? ' or a higher --min-freq' : '';
  if (frame > WORKER_MAX_PAYLOAD) {
    throw new DptrainError(
      'ERR_MODEL_TOO_LARGE',
      `${what} gives ${o.paramCount.toLocaleString('en-US')} parameters: a ${mib(frame)} message, over the ${mib(WORKER_MAX_PAYLOAD)} a worker accepts in one WebSocket frame; use a smaller ${o.sizeFlags.split(' ')[0]}${vocabHint} (or --max-tokens for a huge corpus)`,
    );
  }
  const bytes = PARAM_COPIES * 4 * o.paramCount;
  if ((o.backend === 'wasm' || o.backend === 'cpu') && bytes > WASM_USABLE_BYTES) {
    throw new DptrainError(
      'ERR_MODEL_TOO_LARGE',
      `${what} gives ${o.paramCount.toLocaleString('en-US')} parameters, about ${mib(bytes)} for the ${o.backend} backend, over the ${mib(WASM_USABLE_BYTES)} it can hold; use a smaller ${o.sizeFlags.split(' ')[0]}${vocabHint} or the tensorflow backend (@tensorflow/tfjs-node)`,
    );
  }
}
