/**
 * Quantizers to the compressed-tensors weight types, following compressed-tensors' `calculate_qparams` and
 * `quantize` (read from its sources; facts in docs/spec/quantized-weights.md):
 * - the observed range always includes 0 (`min = min(min, 0)`, `max = max(max, 0)`);
 * - symmetric: `scale = max(|min|, |max|) / ((qmax - qmin) / 2)`: FP8 e4m3 `amax / 448`, INT8 `amax / 127.5`,
 *   INT4 `amax / 7.5`; asymmetric INT4: `scale = (max - min) / 15`, `zp = round(-8 - min / scale)` clamped to
 *   [-8, 7]; every scale clamped below by float32 epsilon (2^-23) so an all-zero row stays valid;
 * - integers: `q = round_half_even(clamp(x / scale + zp, qmin, qmax))`; FP8: `q = e4m3fn(clamp(x / scale))` (our
 *   satfinite encoder, round to nearest even). All arithmetic in float32.
 * @module
 */
import { encodeFp8Array } from '@kvq/fp8';

const fr = Math.fround;
/** float32 epsilon, compressed-tensors' lower clamp of scales. */
const F32_EPS = 2 ** -23;

/** Round half to even (torch.round). */
function roundEven(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function amaxOf(x: Float32Array, start: number, end: number): number {
  let a = 0;
  for (let i = start; i < end; i++) a = Math.max(a, Math.abs(x[i]!));
  return a;
}

/** Scale granularity of FP8 and INT8 weights: one per tensor (`[1]`) or one per output channel (`[rows]`). */
export type ScaleGranularity = 'tensor' | 'channel';

/** FP8 e4m3fn codes `[rows * cols]` and scales (`[1]` or `[rows]`), `scale = amax / 448`. */
export function quantizeFp8Weight(
  x: Float32Array,
  rows: number,
  cols: number,
  granularity: ScaleGranularity,
): { data: Uint8Array; scale: Float32Array } {
  const scale = new Float32Array(granularity === 'tensor' ? 1 : rows);
  for (let s = 0; s < scale.length; s++) {
    const a = granularity === 'tensor' ? amaxOf(x, 0, rows * cols) : amaxOf(x, s * cols, (s + 1) * cols);
    scale[s] = Math.max(fr(a / 448), F32_EPS);
  }
  const data = new Uint8Array(rows * cols);
  const scaled = new Float32Array(cols);
  for (let r = 0; r < rows; r++) {
    const s = scale[granularity === 'tensor' ? 0 : r]!;
    for (let i = 0; i < cols; i++) scaled[i] = x[r * cols + i]! / s; // rounded to float32 on store
    encodeFp8Array(scaled, 'e4m3fn', { saturation: 'satfinite', out: data.subarray(r * cols, (r + 1) * cols) });
  }
  return { data, scale };
}

/** Symmetric INT8 `[rows * cols]` and scales (`[1]` or `[rows]`), `scale = amax / 127.5`, `q` in [-128, 127]. */
export function quantizeInt8Weight(
  x: Float32Array,
  rows: number,
  cols: number,
  granularity: ScaleGranularity,
): { data: Int8Array; scale: Float32Array } {
  const scale = new Float32Array(granularity === 'tensor' ? 1 : rows);
  for (let s = 0; s < scale.length; s++) {
    const a = granularity === 'tensor' ? amaxOf(x, 0, rows * cols) : amaxOf(x, s * cols, (s + 1) * cols);
    scale[s] = Math.max(fr(a / 127.5), F32_EPS);
  }
  const data = new Int8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const s = scale[granularity === 'tensor' ? 0 : r]!;
    for (let i = 0; i < cols; i++) {
      data[r * cols + i] = roundEven(Math.min(127, Math.max(-128, fr(x[r * cols + i]! / s))));
    }
  }
  return { data, scale };
}

/**
 * Group-wise INT4 `[rows * cols / 2]` bytes (element `2j` low nibble, `2j + 1` high, each `q + 8`), scales
 * `[rows, cols / groupSize]` and, when asymmetric, zero points of the same shape.
 */
export function quantizeInt4Weight(
  x: Float32Array,
  rows: number,
  cols: number,
  groupSize: number,
  symmetric: boolean,
): { data: Uint8Array; scale: Float32Array; zeroPoint: Int8Array | undefined } {
  const groups = cols / groupSize;
  const scale = new Float32Array(rows * groups);
  const zeroPoint = symmetric ? undefined : new Int8Array(rows * groups);
  const data = new Uint8Array((rows * cols) / 2);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) {
      const start = r * cols + g * groupSize;
      let mn = 0;
      let mx = 0;
      for (let i = start; i < start + groupSize; i++) {
        mn = Math.min(mn, x[i]!);
        mx = Math.max(mx, x[i]!);
      }
      let s: number;
      let zp = 0;
      if (symmetric) {
        s = Math.max(fr(Math.max(-mn, mx) / 7.5), F32_EPS);
      } else {
        s = Math.max(fr(fr(mx - mn) / 15), F32_EPS);
        zp = roundEven(Math.min(7, Math.max(-8, fr(-8 - fr(mn / s)))));
        zeroPoint![r * groups + g] = zp;
      }
      scale[r * groups + g] = s;
      for (let i = start; i < start + groupSize; i++) {
        const q = roundEven(Math.min(7, Math.max(-8, fr(fr(x[i]! / s) + zp))));
        const byte = i >> 1;
        if ((i & 1) === 0) data[byte] = (data[byte]! & 0xf0) | (q + 8);
        else data[byte] = (data[byte]! & 0x0f) | ((q + 8) << 4);
      }
    }
  }
  return { data, scale, zeroPoint };
}
