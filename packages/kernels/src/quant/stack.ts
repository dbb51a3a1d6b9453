/**
 * Row stacking of weight matrices that read the same input (a layer's q/k/v projections, its gate/up projections):
 * one matrix whose rows are the parts' rows in order, so one `linear` call computes all their outputs (a decode step's
 * small GEMVs each pay a call's fixed costs and a short weight stream), and views of it standing in for the parts. The
 * stored form is kept: the bytes are copied, never dequantized.
 * @module
 */
import type { WeightMatrix } from '../contract.js';
import { rowDataLength } from './layout.js';

/** Scale (and zero-point) entries per row of `w`: its groups (int4), 1 (fp8 / int8 per channel), 0 (none). */
function scalesPerRow(w: WeightMatrix): number {
  if (w.dtype === 'int4') return w.cols / (w.groupSize ?? w.cols);
  return w.scale ? 1 : 0;
}

/**
 * Whether `parts` can be stacked: at least one part, the same dtype, `cols`, `groupSize` and data array type in every
 * part, and scales either absent everywhere or per row (per output channel, or per group of a row) everywhere (a
 * per-tensor scale `[1]` of a matrix of more than one row is not), zero points in every part or none.
 */
function canStackWeightRows(parts: readonly WeightMatrix[]): boolean {
  const first = parts[0];
  if (!first) return false;
  for (const w of parts) {
    if (w.dtype !== first.dtype || w.cols !== first.cols || w.groupSize !== first.groupSize) return false;
    if (w.data.constructor !== first.data.constructor) return false;
    if ((w.scale === undefined) !== (first.scale === undefined) || (w.zeroPoint === undefined) !== (first.zeroPoint === undefined)) return false;
    const per = scalesPerRow(w);
    if (w.scale && w.scale.length !== w.rows * per) return false;
    if (w.zeroPoint && w.zeroPoint.length !== w.rows * per) return false;
  }
  return true;
}

/** A new typed array of `like`'s type with `length` elements. */
function allocLike<T extends WeightMatrix['data'] | Float32Array | Int8Array>(like: T, length: number): T {
  return new (like.constructor as new (n: number) => T)(length);
}

/**
 * The stacked matrix `[sum of rows, cols]` of `parts` (see {@link canStackWeightRows}), in new arrays, and each part
 * as a row view of it (the same values as the part; `data`, `scale` and `zeroPoint` are subarrays of the stacked
 * ones), or `undefined` when the parts cannot be stacked.
 */
export function stackWeightRows(parts: readonly WeightMatrix[]): { stacked: WeightMatrix; views: WeightMatrix[] } | undefined {
  if (!canStackWeightRows(parts)) return undefined;
  const first = parts[0]!;
  const rows = parts.reduce((n, w) => n + w.rows, 0);
  const rowLength = rowDataLength(first.dtype, first.cols);
  const per = scalesPerRow(first);
  const data = allocLike(first.data, rows * rowLength);
  const scale = first.scale ? new Float32Array(rows * per) : undefined;
  const zeroPoint = first.zeroPoint ? new Int8Array(rows * per) : undefined;
  const views: WeightMatrix[] = [];
  let row = 0;
  for (const w of parts) {
    (data as Uint8Array).set(w.data as Uint8Array, row * rowLength);
    scale?.set(w.scale!, row * per);
    zeroPoint?.set(w.zeroPoint!, row * per);
    views.push({
      dtype: w.dtype,
      data: data.subarray(row * rowLength, (row + w.rows) * rowLength),
      rows: w.rows,
      cols: w.cols,
      ...(scale ? { scale: scale.subarray(row * per, (row + w.rows) * per) } : {}),
      ...(zeroPoint ? { zeroPoint: zeroPoint.subarray(row * per, (row + w.rows) * per) } : {}),
      ...(w.groupSize !== undefined ? { groupSize: w.groupSize } : {}),
    });
    row += w.rows;
  }
  const stacked: WeightMatrix = {
    dtype: first.dtype,
    data,
    rows,
    cols: first.cols,
    ...(scale ? { scale } : {}),
    ...(zeroPoint ? { zeroPoint } : {}),
    ...(first.groupSize !== undefined ? { groupSize: first.groupSize } : {}),
  };
  return { stacked, views };
}

/** Whether the arrays are consecutive views of one buffer, in order (`undefined` everywhere also counts). */
function consecutive(arrays: readonly (ArrayBufferView | undefined)[]): boolean {
  const first = arrays[0];
  if (first === undefined) return arrays.every((a) => a === undefined);
  let end = first.byteOffset;
  for (const a of arrays) {
    if (a === undefined || a.buffer !== first.buffer || a.byteOffset !== end) return false;
    end += a.byteLength;
  }
  return true;
}

/**
 * The stacked matrix of `parts` without copying, when they are already row views of one (as {@link stackWeightRows}
 * returns them: `data`, `scale` and `zeroPoint` each consecutive subarrays of one buffer, in order); else `undefined`.
 */
export function joinWeightRows(parts: readonly WeightMatrix[]): WeightMatrix | undefined {
  if (!canStackWeightRows(parts)) return undefined;
  if (!consecutive(parts.map((w) => w.data)) || !consecutive(parts.map((w) => w.scale)) || !consecutive(parts.map((w) => w.zeroPoint))) return undefined;
  const first = parts[0]!;
  const rows = parts.reduce((n, w) => n + w.rows, 0);
  const span = <T extends ArrayBufferView>(a: T, length: number): T => new (a.constructor as new (b: ArrayBufferLike, o: number, n: number) => T)(a.buffer, a.byteOffset, length);
  const per = scalesPerRow(first);
  return {
    dtype: first.dtype,
    data: span(first.data, rows * rowDataLength(first.dtype, first.cols)),
    rows,
    cols: first.cols,
    ...(first.scale ? { scale: span(first.scale, rows * per) } : {}),
    ...(first.zeroPoint ? { zeroPoint: span(first.zeroPoint, rows * per) } : {}),
    ...(first.groupSize !== undefined ? { groupSize: first.groupSize } : {}),
  };
}
