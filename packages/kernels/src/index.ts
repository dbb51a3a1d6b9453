/**
 * `@kvq/kernels`: the kernel backend contract, the backend loader and the pure-TypeScript reference backend.
 * @module
 */
export * from './contract.js';
export { DEVICE_ARRAY, HostMemory, hostArgs, isDeviceArray } from './device.js';
export { KernelError, isKernelError, toKernelError } from './errors.js';
export type { KernelErrorCode, KernelErrorOptions } from './errors.js';
export * from './validate.js';
export { mergeAttentionStates } from './merge-attention.js';
export {
  SAMPLE_BUCKETS,
  SAMPLE_BUCKETS_PER_NAT,
  SAMPLE_CHUNK,
  SAMPLE_MAX_NATS,
  sampleBucketIdsReference,
  sampleBucketsReference,
  sampleWeight,
  validateSampleBucketIds,
  validateSampleBuckets,
} from './sample-buckets.js';
export type { SampleBucketIdsArgs, SampleBucketsArgs, SampleBucketsResult } from './sample-buckets.js';
export { SAMPLE_SMALL_SET, sampleDrawReference, validateSampleDraw } from './sample-draw.js';
export type { SampleDrawArgs } from './sample-draw.js';
export type { MergeAttentionArgs } from './merge-attention.js';
export { buildRopeTable, ropeAttentionFactor, ropeInvFreq, ropeScalingFromHf, scaleFrequency } from './rope.js';
export type { HfRopeContext, RopeConfig, RopeScaling } from './rope.js';
export * from './quant/index.js';
export { createReferenceBackend, REFERENCE_INFO } from './reference/backend.js';
export { selfTest } from './self-test.js';
export { DEFAULT_CANDIDATES, KNOWN_BACKENDS, describeLoad, fallbackMessage, loadBackend } from './loader.js';
export type { BackendCandidate, LoadBackendOptions, LoadedBackend, RejectedBackend } from './loader.js';
