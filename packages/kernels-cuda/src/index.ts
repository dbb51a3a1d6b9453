/**
 * `@kvq/kernels-cuda`: the CUDA backend of kvq. Every op of the `@kvq/kernels` contract as CUDA kernels compiled
 * from one source that `@kvq/kernels-rocm` also builds with hipcc (csrc/vendor.h maps the CUDA names to HIP),
 * with the FP8 conversions shared with `@kvq/kernels-cpu` (csrc/fp8.h, proven bit-exact against CUDA's own).
 * Implements the {@link KernelBackend} contract; `@kvq/kernels`' loader imports {@link createBackend} from here.
 * The vendor-neutral GPU facade (`createGpuBackend(spec)`, probing, loading) is `@kvq/kernels-cuda/gpu`, what
 * `@kvq/kernels-rocm` builds on; the CUDA simulator and the GPU check are `@kvq/kernels-cuda/testing`.
 * @see ../README.md
 * @module
 */
import type { KernelBackend } from '@kvq/kernels';

export {
  backendName,
  createBackend,
  cudaAvailability,
  type AttentionBenchOptions,
  type BenchLinearOptions,
  type GpuAvailability,
  type GpuBackend,
  type GpuBackendOptions,
} from './backend.js';
export type {
  Fp8VendorCheckResult,
  GpuDeviceInfo,
  GpuVendor,
  NativeAttentionBenchResult,
  NativeProbe,
  TransferStats,
} from './addon-types.js';
export { CUDA_SPEC, type GpuVendorSpec } from './load.js';
export { toKernelError } from './errors.js';
export type { KernelBackend };
