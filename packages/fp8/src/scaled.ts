import { decodeFp8Array, encodeFloat32Range, fp8DecodeTable, type EncodeOptions } from './codec.js';
import { Fp8Error } from './errors.js';
import type { Fp8Format } from './formats.js';

/**
 * How scales map onto a tensor laid out `[tokens, heads, headSize]` (row-major, flattened).
 * - `tensor`: one scale (`scales.length === 1`).
 * - `head`: one scale per head (`numHeads`), shared by all tokens (vLLM per-kv-head scales).
 * - `token`: one scale per token row of `tokenSize` elements (`x.length / tokenSize` scales).
 * - `token_head`: one scale per (token, head) (`numTokens * numHeads`, token-major).
 */
export type ScaleLayout =
  | { readonly granularity: 'tensor' }
  | { readonly granularity: 'head'; readonly numHeads: number; readonly headSize: number }
  | { readonly granularity: 'token'; readonly tokenSize: number }
  | { readonly granularity: 'token_head'; readonly numHeads: number; readonly headSize: number };

/** The per-tensor layout. */
export const PER_TENSOR: ScaleLayout = Object.freeze({ granularity: 'tensor' });

/**
 * Scales map onto contiguous runs: run r (elements [r*runLength, (r+1)*runLength)) uses
 * scale index `period ? r % period : r`.
 */
interface RunPlan {
  readonly runLength: number;
  readonly period: number;
  readonly numScales: number;
}

function positiveInt(value: number, name: string): number {
  if (!Number.isInteger(value) || value <= 0) {
    throw new Fp8Error('INVALID_ARGUMENT', `${name} must be a positive integer, got ${value}`);
  }
  return value;
}

function planRuns(length: number, layout: ScaleLayout): RunPlan {
  switch (layout.granularity) {
    case 'tensor':
      return { runLength: Math.max(length, 1), period: 1, numScales: 1 };
    case 'head': {
      const h = positiveInt(layout.numHeads, 'layout.numHeads');
      const d = positiveInt(layout.headSize, 'layout.headSize');
      if (length % (h * d) !== 0) {
        throw new Fp8Error('SHAPE_MISMATCH', `tensor length ${length} is not a multiple of numHeads*headSize = ${h}*${d}`);
      }
      return { runLength: d, period: h, numScales: h };
    }
    case 'token': {
      const t = positiveInt(layout.tokenSize, 'layout.tokenSize');
      if (length % t !== 0) {
        throw new Fp8Error('SHAPE_MISMATCH', `tensor length ${length} is not a multiple of tokenSize ${t}`);
      }
      return { runLength: t, period: 0, numScales: length / t };
    }
    case 'token_head': {
      const h = positiveInt(layout.numHeads, 'layout.numHeads');
      const d = positiveInt(layout.headSize, 'layout.headSize');
      if (length % (h * d) !== 0) {
        throw new Fp8Error('SHAPE_MISMATCH', `tensor length ${length} is not a multiple of numHeads*headSize = ${h}*${d}`);
      }
      return { runLength: d, period: 0, numScales: length / d };
    }
    default:
      throw new Fp8Error(
        'INVALID_ARGUMENT',
        `unknown scale granularity ${JSON.stringify((layout as { granularity?: unknown }).granularity)}`,
      );
  }
}

/**
 * Checks that `scales` has `expectedLength` entries, each finite and > 0 as a float32, and returns them as a
 * Float32Array (a copy unless `scales` already is one).
 * @param name argument name used in error messages (e.g. `"k_scale"`)
 * @throws Fp8Error `SCALE_SHAPE` (wrong length) or `INVALID_SCALE` (naming the index and value)
 */
export function validateScales(scales: ArrayLike<number> | number, expectedLength: number, name = 'scales'): Float32Array {
  const arr = typeof scales === 'number' ? Float32Array.of(scales) : scales;
  if (arr.length !== expectedLength) {
    throw new Fp8Error('SCALE_SHAPE', `${name} has ${arr.length} entries, expected ${expectedLength}`);
  }
  const f32 = arr instanceof Float32Array ? arr : Float32Array.from(arr);
  for (let i = 0; i < f32.length; i++) {
    const s = f32[i]!;
    if (!(s > 0) || s === Infinity) {
      const original = arr[i];
      throw new Fp8Error(
        'INVALID_SCALE',
        `${name}[${i}] = ${original} is not a finite positive float32 (scales must be finite and > 0)`,
      );
    }
  }
  return f32;
}

const CHUNK = 4096;
const scratchF = new Float32Array(CHUNK);
const scratchU = new Int32Array(scratchF.buffer);

/**
 * Scaled quantization as the KV cache does it: `q = encode(float32(x / scale))` (vLLM's convention:
 * quantize divides, dequantize multiplies; the scale is the dequantization factor amax / fp8max).
 * @param x float32 data laid out `[tokens, heads, headSize]`
 * @param scales float32 scales, shape per `layout`
 * @returns `options.out` or a new Uint8Array of FP8 codes (same length as `x`)
 */
export function quantizeScaled(
  x: Float32Array,
  scales: ArrayLike<number> | number,
  layout: ScaleLayout,
  format: Fp8Format,
  options: EncodeOptions = {},
): Uint8Array {
  const plan = planRuns(x.length, layout);
  const s = validateScales(scales, plan.numScales);
  const out = options.out ?? new Uint8Array(x.length);
  if (out.length < x.length) {
    throw new Fp8Error('OUTPUT_TOO_SMALL', `out has length ${out.length}, needs at least ${x.length}`);
  }
  const { runLength, period } = plan;
  let run = 0;
  for (let start = 0; start < x.length; start += runLength, run++) {
    const scale = s[period ? run % period : run]!;
    const runEnd = Math.min(start + runLength, x.length);
    for (let c = start; c < runEnd; c += CHUNK) {
      const n = Math.min(CHUNK, runEnd - c);
      // float32 / float32 in a double, then one rounding to float32: equals IEEE float32 division.
      for (let j = 0; j < n; j++) scratchF[j] = x[c + j]! / scale;
      encodeFloat32Range(format, options.saturation, scratchF, scratchU, 0, n, out, c);
    }
  }
  return out;
}

/**
 * Scaled dequantization: `x = float32(decode(q) * scale)` (an exact product rounded once, as CUDA's float
 * multiply). Per-tensor dequantization is a single 256-entry table lookup per element.
 * @returns `options.out` or a new Float32Array (same length as `q`)
 */
export function dequantizeScaled(
  q: Uint8Array,
  scales: ArrayLike<number> | number,
  layout: ScaleLayout,
  format: Fp8Format,
  options: { out?: Float32Array } = {},
): Float32Array {
  const plan = planRuns(q.length, layout);
  const s = validateScales(scales, plan.numScales);
  const out = options.out ?? new Float32Array(q.length);
  if (out.length < q.length) {
    throw new Fp8Error('OUTPUT_TOO_SMALL', `out has length ${out.length}, needs at least ${q.length}`);
  }
  const table = fp8DecodeTable(format);
  if (plan.numScales === 1 && s[0] === 1) return decodeFp8Array(q, format, { out });
  const scaled = new Float32Array(256);
  const { runLength, period } = plan;
  let run = 0;
  let lastScale = NaN;
  for (let start = 0; start < q.length; start += runLength, run++) {
    const scale = s[period ? run % period : run]!;
    if (scale !== lastScale) {
      for (let c = 0; c < 256; c++) scaled[c] = table[c]! * scale;
      lastScale = scale;
    }
    const end = Math.min(start + runLength, q.length);
    for (let i = start; i < end; i++) out[i] = scaled[q[i]!]!;
  }
  return out;
}
