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
import { KernelError, type KernelErrorCode } from '@kvq/kernels';

const CODES: readonly KernelErrorCode[] = [
  'SHAPE_MISMATCH',
  'WRONG_ARRAY_TYPE',
  'INVALID_ARGUMENT',
  'OUT_OF_RANGE',
  'INVALID_SCALE',
  'UNSUPPORTED',
  'BACKEND_UNAVAILABLE',
];

/**
 * Convert whatever the native addon threw into a {@link KernelError}: its `code` and `argument` are kept when
 * they are known codes; anything else becomes `UNSUPPORTED` with the original as `cause`.
 */
export function toKernelError(e: unknown, op: string): KernelError {
  if (e instanceof KernelError) return e;
  const err = e as { code?: unknown; argument?: unknown; message?: unknown } | null;
  const code = typeof err?.code === 'string' && (CODES as readonly string[]).includes(err.code) ? (err.code as KernelErrorCode) : 'UNSUPPORTED';
  const argument = typeof err?.argument === 'string' ? err.argument : undefined;
  const message = typeof err?.message === 'string' ? err.message : String(e);
  return new KernelError(code, `${op}: ${message}`, argument === undefined ? { cause: e } : { argument, cause: e });
}

/** The error `createBackend` throws when the GPU backend cannot run here; `message` says why and how to fix it. */
export function unavailable(packageName: string, reason: string, cause?: unknown): KernelError {
  return new KernelError('BACKEND_UNAVAILABLE', `${packageName} is unavailable: ${reason}`, cause === undefined ? {} : { cause });
}
