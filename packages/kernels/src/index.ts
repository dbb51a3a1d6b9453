/**
 * `@kvq/kernels`: the kernel backend contract, the backend loader and the pure-TypeScript reference backend.
 * @module
 */
export type {
  AddArgs,
  AmaxPerHeadArgs,
  AmaxTensorArgs,
  ArgmaxArgs,
  BackendCreateOptions,
  BackendInfo,
  BackendModule,
  DequantizeFp8Args,
  EmbeddingArgs,
  Fp8QueryOptions,
  KernelBackend,
  KernelOpName,
  KvDtype,
  KvLayerCache,
  LinearArgs,
  PagedAttentionArgs,
  QuantizeFp8Args,
  ReshapeAndCacheArgs,
  RmsNormArgs,
  RopeArgs,
  RopeStyle,
  RopeTable,
  SiluAndMulArgs,
  SoftmaxArgs,
  CompressedWeightDtype,
  DenseWeightDtype,
  GgmlWeightDtype,
  WeightDtype,
  WeightMatrix,
} from './contract.js';
export { KERNEL_OPS } from './contract.js';
export { KernelError, isKernelError, toKernelError } from './errors.js';
export type { KernelErrorCode, KernelErrorOptions } from './errors.js';
export {
  FP8_DTYPES,
  checkCount,
  checkF32,
  checkFinite,
  checkI32,
  checkNoOverlap,
  checkScales,
  checkU16,
  checkU8,
  describeValue,
  isFp8,
  qScalePerKvHead,
  scaleCountFor,
  validateAdd,
  validateAmaxPerHead,
  validateAmaxTensor,
  validateArgmax,
  validateDequantizeFp8,
  validateEmbedding,
  validateKvCache,
  validateLinear,
  validatePagedAttention,
  validateQuantizeFp8,
  validateReshapeAndCache,
  validateRmsNorm,
  validateRope,
  validateRopeTable,
  validateSiluAndMul,
  validateSoftmax,
  validateWeight,
} from './validate.js';
export type { KvCacheDims, PagedAttentionPlan } from './validate.js';
export { buildRopeTable, ropeAttentionFactor, ropeInvFreq, ropeScalingFromHf, scaleFrequency } from './rope.js';
export type { HfRopeContext, RopeConfig, RopeScaling } from './rope.js';
export * from './quant/index.js';
export { createReferenceBackend, REFERENCE_INFO } from './reference/backend.js';
export { selfTest } from './self-test.js';
export { DEFAULT_CANDIDATES, KNOWN_BACKENDS, describeLoad, fallbackMessage, loadBackend } from './loader.js';
export type { BackendCandidate, LoadBackendOptions, LoadedBackend, RejectedBackend } from './loader.js';
