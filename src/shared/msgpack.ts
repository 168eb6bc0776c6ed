/**
 * Plain msgpack, shared by the wire protocol and the checkpoint file: no
 * msgpackr records or extensions (moreTypes: false keeps every typed array a
 * plain `bin`, encodeUndefinedAsNil keeps undefined out of the extension
 * space), so a peer or a tool in any language can read both.
 */
import { Packr, type Options } from 'msgpackr';

export function plainPackr(extra: Options = {}): Packr {
  return new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false, encodeUndefinedAsNil: true, ...extra });
}

export const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
