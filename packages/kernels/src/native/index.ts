/**
 * `@kvq/kernels/native`: the shared TypeScript side of the native backends (`@kvq/kernels-cpu`, `@kvq/kernels-cuda`,
 * `@kvq/kernels-rocm`). The op signatures their addons export (one declaration, matching csrc/napi_args.h), the
 * addon-to-{@link KernelBackend} adapter ({@link NativeKernelBackend}) and the addon loader ({@link tryLoadNative}).
 * For backend authors; applications use a backend package or `@kvq/kernels`' loader.
 * @module
 */
import type { KernelBackend } from '../contract.js';

export {
  DTYPE_CODE,
  envInt,
  FORMAT_CODE,
  NATIVE_ABI,
  NativeKernelBackend,
  scaleRuns,
  weightArgs,
  type EmbeddingNativeArgs,
  type EncodeFp8BitsOptions,
  type LinearNativeArgs,
  type NativeKernelOps,
  type NativePool,
  type NativeWeightData,
  type PagedAttentionNativeArgs,
  type StandardBackendOps,
  type StandardNativeOps,
  type WeightNativeArgs,
} from './ops.js';
export { firstLine, notLoadedReason, tryLoadNative, type NativeCandidate, type NativeLoad, type NativeTried, type TryLoadNativeOptions } from './load.js';
export type { KernelBackend };
