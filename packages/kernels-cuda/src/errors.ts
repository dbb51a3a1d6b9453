/**
 * Errors of `@kvq/kernels-cuda` (and `@kvq/kernels-rocm`, which reuses this facade). The backend throws
 * `@kvq/kernels`' {@link KernelError} (same codes and argument names as every other backend, because the facade
 * validates with the shared `validate*` helpers first); this module turns the native addon's errors (plain
 * `Error`s carrying `code` / `argument`) into the same class.
 *
 * | code | when |
 * |---|---|
 * | `BACKEND_UNAVAILABLE` | no addon / no driver / no device / the context was disposed / the device failed mid-op |
 * | `UNSUPPORTED` | out of device memory, a shape the GPU kernels do not support (head size > 8 x warp width) |
 * | others | bad input, exactly as `@kvq/kernels` validates it |
 * @module
 */
import { KernelError } from '@kvq/kernels';

/** Native addon errors as {@link KernelError}s (shared with every native backend). */
export { toKernelError } from '@kvq/kernels';

/** The error `createBackend` throws when the GPU backend cannot run here; `message` says why and how to fix it. */
export function unavailable(packageName: string, reason: string, cause?: unknown): KernelError {
  return new KernelError('BACKEND_UNAVAILABLE', `${packageName} is unavailable: ${reason}`, cause === undefined ? {} : { cause });
}
