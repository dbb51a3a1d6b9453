import { Fp8Error } from './errors.js';
import { formatInfo, type Fp8Format, type Saturation } from './formats.js';
import { dequantizeScaled, quantizeScaled, type ScaleLayout, PER_TENSOR } from './scaled.js';

/** Error of a quantization round trip `x -> q -> x'`. */
export interface QuantizationErrorStats {
  /** Number of elements compared. */
  readonly count: number;
  /** max |x - x'| over finite pairs. */
  readonly maxAbsError: number;
  /** mean (x - x')^2 over finite pairs. */
  readonly meanSquaredError: number;
  /** Signal-to-quantization-noise ratio in dB: 10 log10(sum x^2 / sum (x - x')^2); Infinity when exact. */
  readonly sqnrDb: number;
  /** Elements whose |x / scale| exceeded the format's max finite value (clamped, or NaN/inf under `nosat`). */
  readonly saturatedCount: number;
  /** Nonzero finite elements that came back as zero. */
  readonly flushedToZeroCount: number;
  /** Pairs skipped because x or x' was not finite. */
  readonly nonFiniteCount: number;
}

/**
 * Compares a reference tensor with its approximation. `scaledInput` (x / scale per element) and `maxFinite`
 * are optional and only drive `saturatedCount`.
 */
export function errorStats(
  reference: ArrayLike<number>,
  approx: ArrayLike<number>,
  saturation?: { scaledMagnitude: (i: number) => number; maxFinite: number },
): QuantizationErrorStats {
  if (reference.length !== approx.length) {
    throw new Fp8Error('SHAPE_MISMATCH', `reference has ${reference.length} elements, approx has ${approx.length}`);
  }
  let maxAbs = 0;
  let sumSq = 0;
  let sumSig = 0;
  let saturated = 0;
  let flushed = 0;
  let nonFinite = 0;
  let finitePairs = 0;
  for (let i = 0; i < reference.length; i++) {
    const x = reference[i]!;
    const y = approx[i]!;
    if (saturation && Math.abs(saturation.scaledMagnitude(i)) > saturation.maxFinite) saturated++;
    if (!Number.isFinite(x) || !Number.isFinite(y)) {
      nonFinite++;
      continue;
    }
    finitePairs++;
    const e = x - y;
    const ae = e < 0 ? -e : e;
    if (ae > maxAbs) maxAbs = ae;
    sumSq += e * e;
    sumSig += x * x;
    if (x !== 0 && y === 0) flushed++;
  }
  return {
    count: reference.length,
    maxAbsError: maxAbs,
    meanSquaredError: finitePairs ? sumSq / finitePairs : 0,
    sqnrDb: sumSq === 0 ? Infinity : 10 * Math.log10(sumSig / sumSq),
    saturatedCount: saturated,
    flushedToZeroCount: flushed,
    nonFiniteCount: nonFinite,
  };
}

/** Options of {@link roundTripStats}. */
export interface RoundTripOptions {
  /** Scales (default a single 1.0) and their layout (default per-tensor). */
  scales?: ArrayLike<number> | number;
  layout?: ScaleLayout;
  saturation?: Saturation;
}

/**
 * Quantizes `x` with {@link quantizeScaled}, dequantizes it back, and reports the error statistics.
 * @example roundTripStats(keys, 'e4m3fn', { scales: kScale, layout: { granularity: 'head', numHeads, headSize } })
 */
export function roundTripStats(x: Float32Array, format: Fp8Format, options: RoundTripOptions = {}): QuantizationErrorStats {
  const layout = options.layout ?? PER_TENSOR;
  const scales = options.scales ?? 1;
  const q = quantizeScaled(x, scales, layout, format, options.saturation ? { saturation: options.saturation } : {});
  const back = dequantizeScaled(q, scales, layout, format);
  // Each element's scale, expanded through the same layout: dequantizing the code of 1.0 yields the scale exactly.
  const one = encodeOne(format);
  const perElementScale = dequantizeScaled(new Uint8Array(x.length).fill(one), scales, layout, format);
  const maxFinite = formatInfo(format).maxFinite;
  return errorStats(x, back, { scaledMagnitude: (i) => x[i]! / perElementScale[i]!, maxFinite });
}

/** Code of +1.0 in each format (exact). */
function encodeOne(format: Fp8Format): number {
  const f = formatInfo(format);
  return f.bias << f.mantissaBits;
}
