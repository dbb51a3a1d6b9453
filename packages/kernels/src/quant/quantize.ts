/**
 * `quantizeMatrix`: float32 weights to any quantized {@link WeightDtype}, in the stored form the kernels read
 * (what `kvq quantize` calls). Dispatches to `./quantize-ggml.ts` and `./quantize-compressed.ts`.
 * @see docs/spec/quantized-weights.md
 * @module
 */
import type { CompressedWeightDtype, GgmlWeightDtype, WeightMatrix } from '../contract.js';
import { KernelError } from '../errors.js';
import { describeValue } from '../validate.js';
import { colsMultiple, isCompressedDtype, isGgmlDtype } from './layout.js';
import { quantizeFp8Weight, quantizeInt4Weight, quantizeInt8Weight, type ScaleGranularity } from './quantize-compressed.js';
import { quantizeGgml } from './quantize-ggml.js';

/** Options of {@link quantizeMatrix}; each applies only to the dtypes named. */
export interface QuantizeOptions {
  /** `fp8_e4m3`, `int8`: one scale per tensor or per output row. Default `'channel'`. */
  readonly granularity?: ScaleGranularity | undefined;
  /**
   * `int4`: columns per scale group (a divisor of `cols`; `cols` itself = per channel). Default 128 when it divides
   * `cols`, else `cols`.
   */
  readonly groupSize?: number | undefined;
  /** `int4`: symmetric (no zero points, `scale = amax / 7.5`) or asymmetric (zero points). Default `true`. */
  readonly symmetric?: boolean | undefined;
}

/**
 * Quantize a row-major float32 matrix `values` `[rows, cols]` to `dtype`, returning a {@link WeightMatrix} in the
 * stored form (GGML blocks, FP8 codes + scales, int8 + scales, packed int4 + scales [+ zero points]).
 * Throws `KernelError` `INVALID_ARGUMENT` for an unknown or dense dtype, bad dims or options, a non-finite value,
 * or (GGML) a block whose f16 scale would overflow; `SHAPE_MISMATCH` when `cols` is not a multiple of the block or
 * group size, or `values` is shorter than `rows * cols`.
 * @see docs/spec/quantized-weights.md for the rounding of each format and the error bounds.
 */
export function quantizeMatrix(
  values: Float32Array,
  rows: number,
  cols: number,
  dtype: GgmlWeightDtype | CompressedWeightDtype,
  opts: QuantizeOptions = {},
): WeightMatrix {
  if (!isGgmlDtype(dtype) && !isCompressedDtype(dtype)) {
    throw new KernelError(
      'INVALID_ARGUMENT',
      `dtype must be a quantized weight dtype (q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, fp8_e4m3, int8, int4), got ${describeValue(dtype)}`,
      { argument: 'dtype' },
    );
  }
  for (const [name, v] of [
    ['rows', rows],
    ['cols', cols],
  ] as const) {
    if (!Number.isInteger(v) || v < 1) {
      throw new KernelError('INVALID_ARGUMENT', `${name} must be an integer >= 1, got ${describeValue(v)}`, {
        argument: name,
      });
    }
  }
  if (!(values instanceof Float32Array) || values.length < rows * cols) {
    throw new KernelError(
      'SHAPE_MISMATCH',
      `values must be a Float32Array of at least ${rows} x ${cols} = ${rows * cols} elements, got ${describeValue(values)}`,
      { argument: 'values' },
    );
  }
  const mult = colsMultiple(dtype);
  if (cols % mult !== 0) {
    throw new KernelError('SHAPE_MISMATCH', `cols (${cols}) must be a multiple of ${mult} for ${dtype}`, {
      argument: 'cols',
    });
  }
  for (let i = 0; i < rows * cols; i++) {
    if (!Number.isFinite(values[i]!)) {
      throw new KernelError('INVALID_ARGUMENT', `values[${i}] (row ${Math.floor(i / cols)}) must be finite, got ${values[i]}`, {
        argument: `values[${i}]`,
      });
    }
  }
  if (isGgmlDtype(dtype)) return { dtype, rows, cols, data: quantizeGgml(values, rows, cols, dtype) };
  const granularity = opts.granularity ?? 'channel';
  if (granularity !== 'tensor' && granularity !== 'channel') {
    throw new KernelError('INVALID_ARGUMENT', `granularity must be 'tensor' or 'channel', got ${describeValue(granularity)}`, {
      argument: 'granularity',
    });
  }
  if (dtype === 'fp8_e4m3') return { dtype, rows, cols, ...quantizeFp8Weight(values, rows, cols, granularity) };
  if (dtype === 'int8') return { dtype, rows, cols, ...quantizeInt8Weight(values, rows, cols, granularity) };
  const groupSize = opts.groupSize ?? (cols % 128 === 0 ? 128 : cols);
  if (!Number.isInteger(groupSize) || groupSize < 1 || cols % groupSize !== 0) {
    throw new KernelError('INVALID_ARGUMENT', `groupSize must be a positive divisor of cols (${cols}), got ${describeValue(groupSize)}`, {
      argument: 'groupSize',
    });
  }
  const symmetric = opts.symmetric ?? true;
  if (typeof symmetric !== 'boolean') {
    throw new KernelError('INVALID_ARGUMENT', `symmetric must be a boolean, got ${describeValue(symmetric)}`, {
      argument: 'symmetric',
    });
  }
  const q = quantizeInt4Weight(values, rows, cols, groupSize, symmetric);
  return q.zeroPoint === undefined
    ? { dtype, rows, cols, data: q.data, scale: q.scale, groupSize }
    : { dtype, rows, cols, data: q.data, scale: q.scale, zeroPoint: q.zeroPoint, groupSize };
}
