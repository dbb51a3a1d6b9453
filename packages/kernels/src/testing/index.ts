/**
 * `@kvq/kernels/testing`: the parity-test kit every backend uses to prove it matches the reference.
 *
 * - {@link parityCases} / {@link runParitySuite}: seeded cases for every op on awkward shapes, compared against
 *   the reference backend (float outputs with per-op tolerances, FP8 codes and 16-bit patterns bit-exact).
 * - {@link badInputCases} / {@link runBadInputSuite}: bad input every backend must reject with the same
 *   `KernelError` code and argument.
 * - Builders ({@link makeKvCache}, {@link buildAttentionBatch}, {@link randomWeight}, ...) for a backend's own tests.
 *
 * It has no test-runner dependency: the functions return reports; assert on them with your runner.
 * @example
 * import { runParitySuite, formatParityReport, runBadInputSuite } from '@kvq/kernels/testing';
 * const report = runParitySuite(nativeBackend);
 * expect(report.failures, formatParityReport(report)).toEqual([]);
 * expect(runBadInputSuite(nativeBackend)).toEqual([]);
 * @module
 */
export {
  AWKWARD_TOKENS,
  BLOCK_SIZES,
  DEFAULT_TOLERANCES,
  EXACT,
  FP8_FORMAT_LIST,
  GQA_RATIOS,
  HEAD_SIZES,
  KV_DTYPES,
  KV_QUANT_DTYPE_LIST,
  SENTINEL,
  SLACK,
  WEIGHT_DTYPES,
  parityCases,
} from './cases.js';
export type { ParityCase, ParityCaseOptions, ParityValue, Tolerance } from './cases.js';
export { compareOutput, formatParityReport, runParityCase, runParitySuite } from './compare.js';
export type { ParityFailure, ParityReport, ParitySuiteOptions } from './compare.js';
export { badInputCases, runBadInputSuite } from './bad-input.js';
export type { BadInputCase, BadInputFailure } from './bad-input.js';
export {
  attentionArgs,
  buildAttentionBatch,
  cloneKvCache,
  fillKvPools,
  makeKvCache,
  normal,
  permutation,
  randomF32,
  randomInts,
  randomWeight,
  rng,
  weightFrom,
} from './random.js';
export type { AttentionBatch, AttentionBatchSpec, KvCacheSpec, SeqSpec } from './random.js';
