/**
 * `@kvq/kernels-cpu`: the native CPU backend of kvq (node-addon-api C++; AVX-512 / AVX2+FMA+F16C / portable
 * scalar kernels chosen at run time; a persistent thread pool; FP8 dequantization fused into attention).
 * Implements the `@kvq/kernels` {@link KernelBackend} contract; `@kvq/kernels`' loader imports
 * {@link createBackend} from here.
 * @see ../README.md
 * @module
 */
import type { KernelBackend } from '@kvq/kernels';

export {
  backendName,
  cpuAvailability,
  createBackend,
  DEFAULT_SPIN_MICROS,
  type CpuAvailability,
  type CpuBackend,
  type CpuBackendOptions,
} from './backend.js';
export type { CpuFeatures, CpuIsa, NativeCpuInfo } from './addon-types.js';
export {
  currentTarget,
  platformPackage,
  PREBUILT_TRIPLES,
  type Libc,
  type PlatformPackage,
  type PrebuiltTriple,
  type ProcessTarget,
} from './platform.js';
export { toKernelError } from './errors.js';
export type { KernelBackend };
