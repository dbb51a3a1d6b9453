/**
 * GGML's 8-bit activation quantization: what `linear({ activations: 'q8' })` does to `x` on GGML weights (see
 * `LinearArgs.activations`), bit-identical with csrc/act_q8.h. Facts from ggml-quants.c (`quantize_row_q8_0_ref`,
 * `quantize_row_q8_1_ref`, `quantize_row_q8_K_ref`); docs/spec/quantized-weights.md.
 * @module
 */
import { f16ToF32Table, f32ToF16Bits } from '@kvq/fp8';
import type { GgmlWeightDtype } from '../contract.js';

const fr = Math.fround;
const F16 = f16ToF32Table();

/** Elements per activation block for a GGML weight dtype: 256 (Q8_K) for the k-quants, 32 (Q8_0) otherwise. */
export function activationBlockQ8(dtype: GgmlWeightDtype): 32 | 256 {
  return dtype === 'q4_k' || dtype === 'q5_k' || dtype === 'q6_k' ? 256 : 32;
}

/** C `roundf`: half away from zero. */
function roundAway(v: number): number {
  return v < 0 ? -Math.floor(-v + 0.5) : Math.floor(v + 0.5);
}

/** ggml's `nearest_int`: half to even. */
function roundEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * Quantize one block of `n` (32 or 256) activations `x[xo, xo + n)` into `q[qo, qo + n)`; returns the block's
 * scale (Q8_0: `f16(amax / 127)`; Q8_K: `1 / (-127 / max)` in float32; NaN when the block holds a NaN or an
 * infinity), so that `x' = q * scale`. A block whose reciprocal scale overflows float32 (amax below ~3.7e-37) gets
 * codes 0 and scale 0.
 */
export function quantizeActivationBlockQ8(x: Float32Array, xo: number, n: 32 | 256, q: Int8Array, qo: number): number {
  let amax = 0;
  let max = 0;
  let finite = true;
  for (let j = 0; j < n; j++) {
    const v = x[xo + j]!;
    const a = Math.abs(v);
    if (!Number.isFinite(v)) finite = false;
    if (a > amax) {
      amax = a;
      max = v;
    }
  }
  if (!finite) {
    q.fill(0, qo, qo + n);
    return NaN;
  }
  if (n === 32) {
    const d = fr(amax / 127);
    let id = d !== 0 ? fr(1 / d) : 0;
    if (!Number.isFinite(id)) id = 0; // 1 / d overflowed float32 (amax below ~3.7e-37): codes 0, as the scale
    for (let j = 0; j < n; j++) q[qo + j] = roundAway(fr(x[xo + j]! * id));
    return F16[f32ToF16Bits(d)]!;
  }
  const iscale = amax !== 0 ? fr(-127 / max) : 0;
  if (iscale === 0 || !Number.isFinite(iscale)) {
    // A zero block, or -127 / max overflowed float32: codes 0, scale 0.
    q.fill(0, qo, qo + n);
    return 0;
  }
  for (let j = 0; j < n; j++) q[qo + j] = Math.min(127, roundEven(fr(iscale * x[xo + j]!)));
  return fr(1 / iscale);
}

/**
 * `x'`: `rows` rows of `cols` activations (cols a multiple of {@link activationBlockQ8}) rounded through GGML's
 * 8-bit blocks for weights of `dtype`, as float32 (`q * scale`, rounded once).
 */
export function roundTripActivationsQ8(x: Float32Array, rows: number, cols: number, dtype: GgmlWeightDtype): Float32Array {
  const n = activationBlockQ8(dtype);
  const out = new Float32Array(rows * cols);
  const q = new Int8Array(n);
  for (let o = 0; o < rows * cols; o += n) {
    const s = quantizeActivationBlockQ8(x, o, n, q, 0);
    for (let j = 0; j < n; j++) out[o + j] = fr(q[j]! * s);
  }
  return out;
}

/**
 * compressed-tensors W8A8 activation quantization of one row (vLLM `scaled_int8_quant`, symmetric; see
 * `LinearArgs.activations`): `cols` floats `x[xo, xo + cols)` into codes `q[qo, qo + cols)`; returns the row's scale
 * (dynamic: `amax / 127` in float32, 0 for a zero row; static: `staticScale`), so that `x' = q * scale`. A row with a
 * NaN or an infinity gets codes 0 and scale NaN. Bit-identical with csrc/act_q8.h `act_i8_quantize_row`.
 * @param staticScale the static activation scale (finite, > 0), or `undefined` for the dynamic per-row scale
 */
export function quantizeActivationRowInt8(x: Float32Array, xo: number, cols: number, q: Int8Array, qo: number, staticScale?: number): number {
  let amax = 0;
  for (let j = 0; j < cols; j++) {
    const v = x[xo + j]!;
    if (!Number.isFinite(v)) {
      q.fill(0, qo, qo + cols);
      return NaN;
    }
    amax = Math.max(amax, Math.abs(v));
  }
  const sat = (v: number) => Math.max(-128, Math.min(127, roundEven(v)));
  if (staticScale !== undefined) {
    const s = fr(staticScale);
    for (let j = 0; j < cols; j++) q[qo + j] = sat(fr(x[xo + j]! / s));
    return s;
  }
  // vLLM: inv_s = amax == 0 ? 0 : 127 / amax; scale = amax / 127 (both float32).
  const inv = amax === 0 ? 0 : fr(127 / amax);
  for (let j = 0; j < cols; j++) q[qo + j] = sat(fr(x[xo + j]! * inv));
  return fr(amax / 127);
}

/**
 * `x'` of `rows` rows of `cols` activations through {@link quantizeActivationRowInt8} (one scale per row: dynamic, or
 * `staticScale`), as float32 (`q * scale`, rounded once).
 */
export function roundTripActivationsInt8(x: Float32Array, rows: number, cols: number, staticScale?: number): Float32Array {
  const out = new Float32Array(rows * cols);
  const q = new Int8Array(cols);
  for (let r = 0; r < rows; r++) {
    const s = quantizeActivationRowInt8(x, r * cols, cols, q, 0, staticScale);
    for (let j = 0; j < cols; j++) out[r * cols + j] = fr(q[j]! * s);
  }
  return out;
}

/** Elements per block of the 16-bit activations of `linear({ activations: 'q16' })` (int4 weights). */
export const ACTIVATION_BLOCK_Q16 = 128;

/**
 * 16-bit activation quantization of one block (see `LinearArgs.activations`, `'q16'`): `n` (1..128) floats
 * `x[xo, xo + n)` into codes `q[qo, qo + n)`; returns the block's scale `amax / 32767` (float32; 0 for a zero block
 * or one so small that `32767 / amax` overflows float32; NaN for a block with a NaN or an infinity, its codes 0), so
 * that `x' = q * scale`. Codes are `sat(rne(x * (32767 / amax)))` in [-32767, 32767]. Bit-identical with
 * csrc/act_q8.h `act_q16_quantize_block`.
 */
export function quantizeActivationBlockQ16(x: Float32Array, xo: number, n: number, q: Int16Array, qo: number): number {
  let amax = 0;
  for (let j = 0; j < n; j++) {
    const v = x[xo + j]!;
    if (!Number.isFinite(v)) {
      q.fill(0, qo, qo + n);
      return NaN;
    }
    amax = Math.max(amax, Math.abs(v));
  }
  let inv = amax === 0 ? 0 : fr(32767 / amax);
  if (!Number.isFinite(inv)) inv = 0; // 32767 / amax overflowed float32: codes 0, scale 0
  for (let j = 0; j < n; j++) q[qo + j] = Math.max(-32767, Math.min(32767, roundEven(fr(x[xo + j]! * inv))));
  return inv === 0 ? 0 : fr(amax / 32767);
}

/**
 * `x'` of `rows` rows of `cols` activations through {@link quantizeActivationBlockQ16} (blocks of 128 from each row's
 * start; a row's last block may be shorter), as float32 (`q * scale`, rounded once).
 */
export function roundTripActivationsQ16(x: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  const q = new Int16Array(ACTIVATION_BLOCK_Q16);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c += ACTIVATION_BLOCK_Q16) {
      const n = Math.min(ACTIVATION_BLOCK_Q16, cols - c);
      const s = quantizeActivationBlockQ16(x, r * cols + c, n, q, 0);
      for (let j = 0; j < n; j++) out[r * cols + c + j] = fr(q[j]! * s);
    }
  }
  return out;
}
