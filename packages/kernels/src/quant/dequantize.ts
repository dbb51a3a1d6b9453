/**
 * Row dequantization of every {@link WeightDtype}: the executable definition of what a stored weight means.
 *
 * Every value is computed with float32 operations in a fixed order (each `Math.fround` below is one float32
 * rounding), the same order as ggml's `dequantize_row_*` and gguf-py's numpy `dequantize_blocks` (no fused
 * multiply-add), so results are bit-exact with them (checked against gguf-py vectors in `./dequantize.test.ts`).
 * @see docs/spec/quantized-weights.md
 * @module
 */
import { f16ToF32Table, fp8DecodeTable } from '@kvq/fp8';
import type { WeightMatrix } from '../contract.js';
import { KernelError } from '../errors.js';
import { checkCount, checkF32, describeValue, validateWeight } from '../validate.js';
import { GGML_BLOCK, isGgmlDtype, rowDataLength } from './layout.js';

const fr = Math.fround;

let bf16Table: Float32Array | undefined;
function bf16Values(): Float32Array {
  if (bf16Table) return bf16Table;
  const t = new Float32Array(65536);
  const bits = new Uint32Array(t.buffer);
  for (let h = 0; h < 65536; h++) bits[h] = h << 16;
  bf16Table = t;
  return t;
}

/** The f16 at byte offset `o` of `b` (little endian) as a float32 value. */
function half(f16: Float32Array, b: Uint8Array, o: number): number {
  return f16[b[o]! | (b[o + 1]! << 8)]!;
}

/**
 * The K-quant 6-bit scale and min of sub-block `j` (0..7) from the 12 packed bytes at `b[o..o+12)` (ggml
 * `get_scale_min_k4`): for `j < 4` the low 6 bits of bytes `j` and `j + 4`; for `j >= 4` the low / high nibble of
 * byte `j + 4` completed by the top 2 bits of bytes `j - 4` / `j`. Writes `[scale, min]` into `sm`.
 */
export function kScaleMin(b: Uint8Array, o: number, j: number, sm: Int32Array | number[]): void {
  if (j < 4) {
    sm[0] = b[o + j]! & 63;
    sm[1] = b[o + j + 4]! & 63;
  } else {
    sm[0] = (b[o + j + 4]! & 0x0f) | ((b[o + j - 4]! >> 6) << 4);
    sm[1] = (b[o + j + 4]! >> 4) | ((b[o + j]! >> 6) << 4);
  }
}

function dequantQ8_0(f16: Float32Array, b: Uint8Array, o: number, y: Float32Array, p: number): void {
  const d = half(f16, b, o);
  for (let j = 0; j < 32; j++) y[p + j] = fr(((b[o + 2 + j]! << 24) >> 24) * d);
}

function dequantQ4(f16: Float32Array, b: Uint8Array, o: number, y: Float32Array, p: number, withMin: boolean): void {
  const d = half(f16, b, o);
  const m = withMin ? half(f16, b, o + 2) : 0;
  const qs = o + (withMin ? 4 : 2);
  for (let j = 0; j < 16; j++) {
    const byte = b[qs + j]!;
    if (withMin) {
      y[p + j] = fr(fr(d * (byte & 0x0f)) + m);
      y[p + j + 16] = fr(fr(d * (byte >> 4)) + m);
    } else {
      y[p + j] = fr(d * ((byte & 0x0f) - 8));
      y[p + j + 16] = fr(d * ((byte >> 4) - 8));
    }
  }
}

function dequantQ5(f16: Float32Array, b: Uint8Array, o: number, y: Float32Array, p: number, withMin: boolean): void {
  const d = half(f16, b, o);
  const m = withMin ? half(f16, b, o + 2) : 0;
  const h = o + (withMin ? 4 : 2);
  const qh = (b[h]! | (b[h + 1]! << 8) | (b[h + 2]! << 16) | (b[h + 3]! << 24)) >>> 0;
  const qs = h + 4;
  for (let j = 0; j < 16; j++) {
    const byte = b[qs + j]!;
    const lo = (byte & 0x0f) | (((qh >>> j) & 1) << 4);
    const hi = (byte >> 4) | (((qh >>> (j + 16)) & 1) << 4);
    if (withMin) {
      y[p + j] = fr(fr(d * lo) + m);
      y[p + j + 16] = fr(fr(d * hi) + m);
    } else {
      y[p + j] = fr(d * (lo - 16));
      y[p + j + 16] = fr(d * (hi - 16));
    }
  }
}

const sm = new Int32Array(2);

/** q4_k (`withHigh = false`) and q5_k (`withHigh = true`): 8 sub-blocks of 32 with 6-bit scales and mins. */
function dequantQK45(f16: Float32Array, b: Uint8Array, o: number, y: Float32Array, p: number, withHigh: boolean): void {
  const d = half(f16, b, o);
  const dmin = half(f16, b, o + 2);
  const scales = o + 4;
  const qh = o + 16;
  const qs = withHigh ? o + 48 : o + 16;
  for (let c = 0; c < 4; c++) {
    for (let half2 = 0; half2 < 2; half2++) {
      const s = 2 * c + half2;
      kScaleMin(b, scales, s, sm);
      const dl = fr(d * sm[0]!);
      const ml = fr(dmin * sm[1]!);
      const shift = half2 * 4;
      for (let l = 0; l < 32; l++) {
        let q = (b[qs + 32 * c + l]! >> shift) & 0x0f;
        if (withHigh) q |= ((b[qh + l]! >> s) & 1) << 4;
        y[p + 32 * s + l] = fr(fr(dl * q) - ml);
      }
    }
  }
}

function dequantQ6K(f16: Float32Array, b: Uint8Array, o: number, y: Float32Array, p: number): void {
  const ql = o;
  const qh = o + 128;
  const sc = o + 192;
  const d = half(f16, b, o + 208);
  for (let h = 0; h < 2; h++) {
    for (let k = 0; k < 4; k++) {
      const lowBase = ql + 64 * h + 32 * (k & 1);
      const lowShift = k >= 2 ? 4 : 0;
      for (let l = 0; l < 32; l++) {
        const e = 128 * h + 32 * k + l;
        const q = (((b[lowBase + l]! >> lowShift) & 0x0f) | (((b[qh + 32 * h + l]! >> (2 * k)) & 3) << 4)) - 32;
        const dl = fr(d * ((b[sc + (e >> 4)]! << 24) >> 24));
        y[p + e] = fr(dl * q);
      }
    }
  }
}

/**
 * Dequantize row `row` of `w` into `out[outOffset .. outOffset + w.cols)` as float32 (for any dtype, dense
 * included). Returns `out`.
 * - GGML types: ggml's formulas, bit-exact (see the module comment).
 * - `fp8_e4m3`: `fround(decode(q) * scale)`, `int8`: `fround(q * scale)`, `int4`: `fround((q - zp) * scale)`, with
 *   the row's (or the tensor's) scale and, for `int4`, the column's group scale and zero point.
 * Throws `KernelError`: anything `validateWeight` rejects (argument `weight...`), `OUT_OF_RANGE` for a `row` outside
 * `[0, w.rows)`, `INVALID_ARGUMENT` / `SHAPE_MISMATCH` for a bad `outOffset` or an `out` too short.
 * @see docs/spec/quantized-weights.md
 */
export function dequantizeRow(w: WeightMatrix, row: number, out: Float32Array, outOffset = 0): Float32Array {
  validateWeight('weight', w);
  if (!Number.isInteger(row) || row < 0 || row >= w.rows) {
    throw new KernelError('OUT_OF_RANGE', `row ${describeValue(row)} is outside the weight's [0, ${w.rows})`, { argument: 'row' });
  }
  checkCount('outOffset', outOffset, 0);
  checkF32('out', out, outOffset + w.cols);
  return dequantizeRowUnchecked(w, row, out, outOffset);
}

/**
 * {@link dequantizeRow} without argument checks, for callers that validated `w` (the reference backend's ops).
 * @internal
 */
export function dequantizeRowUnchecked(w: WeightMatrix, row: number, out: Float32Array, outOffset = 0): Float32Array {
  const { dtype, cols } = w;
  const rowLen = rowDataLength(dtype, cols);
  const start = row * rowLen;
  if (dtype === 'f32') {
    out.set((w.data as Float32Array).subarray(start, start + cols), outOffset);
    return out;
  }
  if (dtype === 'bf16' || dtype === 'f16') {
    const table = dtype === 'bf16' ? bf16Values() : f16ToF32Table();
    const src = w.data as Uint16Array;
    for (let i = 0; i < cols; i++) out[outOffset + i] = table[src[start + i]!]!;
    return out;
  }
  if (isGgmlDtype(dtype)) {
    const f16 = f16ToF32Table();
    const b = w.data as Uint8Array;
    const { blockElems, blockBytes } = GGML_BLOCK[dtype];
    const nb = cols / blockElems;
    for (let k = 0; k < nb; k++) {
      const o = start + k * blockBytes;
      const p = outOffset + k * blockElems;
      switch (dtype) {
        case 'q8_0':
          dequantQ8_0(f16, b, o, out, p);
          break;
        case 'q4_0':
          dequantQ4(f16, b, o, out, p, false);
          break;
        case 'q4_1':
          dequantQ4(f16, b, o, out, p, true);
          break;
        case 'q5_0':
          dequantQ5(f16, b, o, out, p, false);
          break;
        case 'q5_1':
          dequantQ5(f16, b, o, out, p, true);
          break;
        case 'q4_k':
          dequantQK45(f16, b, o, out, p, false);
          break;
        case 'q5_k':
          dequantQK45(f16, b, o, out, p, true);
          break;
        case 'q6_k':
          dequantQ6K(f16, b, o, out, p);
          break;
      }
    }
    return out;
  }
  const scale = w.scale!;
  if (dtype === 'fp8_e4m3' || dtype === 'int8') {
    const s = scale.length === 1 ? scale[0]! : scale[row]!;
    if (dtype === 'fp8_e4m3') {
      const table = fp8DecodeTable('e4m3fn');
      const src = w.data as Uint8Array;
      for (let i = 0; i < cols; i++) out[outOffset + i] = fr(table[src[start + i]!]! * s);
    } else {
      const src = w.data as Int8Array;
      for (let i = 0; i < cols; i++) out[outOffset + i] = fr(src[start + i]! * s);
    }
    return out;
  }
  // int4: two nibbles per byte, element 2j low, 2j + 1 high, stored as q + 8.
  const g = w.groupSize!;
  const groups = cols / g;
  const src = w.data as Uint8Array;
  const zp = w.zeroPoint;
  for (let i = 0; i < cols; i++) {
    const byte = src[start + (i >> 1)]!;
    const q = ((i & 1) === 0 ? byte & 0x0f : byte >> 4) - 8;
    const gi = row * groups + Math.floor(i / g);
    const z = zp ? zp[gi]! : 0;
    out[outOffset + i] = fr((q - z) * scale[gi]!);
  }
  return out;
}
