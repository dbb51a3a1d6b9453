import { Fp8Error } from './errors.js';
import { formatInfo, type Fp8Format } from './formats.js';

/** Smallest scale produced from an all-zero amax: float32 machine epsilon, as compressed-tensors does. */
export const MIN_SCALE = 2 ** -23;

/** Options of {@link scaleFromAmax}. */
export interface ScaleFromAmaxOptions {
  /**
   * Multiplies amax before dividing (>= 1 leaves room for values beyond those observed); default 1.
   * vLLM's `calculate_kv_scales` is equivalent to dividing by 200 (q, k) or 100 (v) instead of 448.
   */
  headroom?: number;
  /** Overrides the format's effective max (default `FP8_FORMATS[format].scaleMax`: 448, 57344, 224, 57344). */
  maxValue?: number;
}

/**
 * The dequantization scale that maps `amax` onto the format's max: `float32(amax * headroom / max)`
 * (llm-compressor / compressed-tensors: scale = amax / 448 for e4m3; vLLM uses 224 for e4m3fnuz).
 * An amax of 0 yields {@link MIN_SCALE} (never 0, which would divide by zero).
 * @param amax max |x| observed, finite and >= 0
 * @throws Fp8Error `INVALID_ARGUMENT` for a negative or non-finite amax, headroom or maxValue
 */
export function scaleFromAmax(amax: number, format: Fp8Format, options: ScaleFromAmaxOptions = {}): number {
  const headroom = options.headroom ?? 1;
  const maxValue = options.maxValue ?? formatInfo(format).scaleMax;
  if (!Number.isFinite(amax) || amax < 0) {
    throw new Fp8Error('INVALID_ARGUMENT', `amax must be finite and >= 0, got ${amax}`);
  }
  if (!Number.isFinite(headroom) || headroom <= 0) {
    throw new Fp8Error('INVALID_ARGUMENT', `headroom must be finite and > 0, got ${headroom}`);
  }
  if (!Number.isFinite(maxValue) || maxValue <= 0) {
    throw new Fp8Error('INVALID_ARGUMENT', `maxValue must be finite and > 0, got ${maxValue}`);
  }
  const scale = Math.fround((amax * headroom) / maxValue);
  return scale > MIN_SCALE ? scale : MIN_SCALE;
}

/** {@link scaleFromAmax} applied to each entry of `amax` (e.g. per-head amax), as float32. */
export function scalesFromAmax(amax: ArrayLike<number>, format: Fp8Format, options: ScaleFromAmaxOptions = {}): Float32Array {
  const out = new Float32Array(amax.length);
  for (let i = 0; i < amax.length; i++) out[i] = scaleFromAmax(amax[i]!, format, options);
  return out;
}

/** max |x| over the whole tensor; NaN if any element is NaN (so a bad activation is never hidden). */
export function amaxTensor(x: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    const a = v < 0 ? -v : v;
    if (a > m) m = a;
    else if (a !== a) return NaN;
  }
  return m;
}

/**
 * max |x| per head for data laid out `[tokens, numHeads, headSize]` (reduced over tokens and head dims).
 * @returns Float32Array of `numHeads` entries (NaN for a head that saw a NaN)
 */
export function amaxPerHead(x: ArrayLike<number>, numHeads: number, headSize: number): Float32Array {
  if (!Number.isInteger(numHeads) || numHeads <= 0 || !Number.isInteger(headSize) || headSize <= 0) {
    throw new Fp8Error('INVALID_ARGUMENT', `numHeads and headSize must be positive integers, got ${numHeads}, ${headSize}`);
  }
  const row = numHeads * headSize;
  if (x.length % row !== 0) {
    throw new Fp8Error('SHAPE_MISMATCH', `tensor length ${x.length} is not a multiple of numHeads*headSize = ${row}`);
  }
  const out = new Float64Array(numHeads);
  for (let base = 0; base < x.length; base += row) {
    for (let h = 0; h < numHeads; h++) {
      let m = out[h]!;
      const start = base + h * headSize;
      for (let i = start; i < start + headSize; i++) {
        const v = x[i]!;
        const a = v < 0 ? -v : v;
        if (a > m || a !== a) m = a !== a ? NaN : a;
      }
      out[h] = m;
    }
  }
  return Float32Array.from(out);
}
