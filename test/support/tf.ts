/** Tests run on the pure-JS cpu backend unless DPTRAIN_TEST_BACKEND says otherwise. */
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../src/shared/backend.js';

let ready: Promise<string> | null = null;
export function testBackend(): Promise<string> {
  ready ??= selectBackend({ backend: (process.env.DPTRAIN_TEST_BACKEND as 'cpu' | 'wasm' | undefined) ?? 'cpu', log: () => {} }).then((b) => b.name);
  return ready;
}
export { tf };
