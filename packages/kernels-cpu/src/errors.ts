/**
 * Errors of `@kvq/kernels-cpu`. The backend throws `@kvq/kernels`' {@link KernelError} (same codes and argument
 * names as every other backend, because the facade validates with the shared `validate*` helpers first); this
 * module turns the native addon's errors (plain `Error`s carrying `code` / `argument`) into the same class.
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

/** The error `createBackend` throws when the native addon cannot be used here; `message` says why and how to fix it. */
export function unavailable(reason: string, cause?: unknown): KernelError {
  return new KernelError('BACKEND_UNAVAILABLE', `@kvq/kernels-cpu is unavailable: ${reason}`, cause === undefined ? {} : { cause });
}
