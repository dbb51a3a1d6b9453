/**
 * Errors of `@kvq/kernels-cpu`. The backend throws `@kvq/kernels`' {@link KernelError} (same codes and argument
 * names as every other backend, because the facade validates with the shared `validate*` helpers first); this
 * module turns the native addon's errors (plain `Error`s carrying `code` / `argument`) into the same class.
 * @module
 */
import { KernelError } from '@kvq/kernels';

/** Native addon errors as {@link KernelError}s (shared with every native backend). */
export { toKernelError } from '@kvq/kernels';

/** The error `createBackend` throws when the native addon cannot be used here; `message` says why and how to fix it. */
export function unavailable(reason: string, cause?: unknown): KernelError {
  return new KernelError('BACKEND_UNAVAILABLE', `@kvq/kernels-cpu is unavailable: ${reason}`, cause === undefined ? {} : { cause });
}
