/**
 * Typed errors of `@kvq/kernels`. Every backend (reference, native CPU, GPU) throws these same errors
 * for the same bad input, because their facades share the `validate*` helpers of this package.
 * @module
 */

/**
 * Machine-readable error codes.
 * - `SHAPE_MISMATCH`: a buffer is too short for the stated dimensions, or two dimensions disagree.
 * - `WRONG_ARRAY_TYPE`: a buffer is not the typed-array kind its dtype needs (e.g. bf16 data not a `Uint16Array`).
 * - `INVALID_ARGUMENT`: a dimension or option is not a positive integer / not an allowed value.
 * - `OUT_OF_RANGE`: an index (token id, slot, block id, position) lies outside its table.
 * - `INVALID_SCALE`: a quantization scale is non-finite or `<= 0`, or has the wrong length.
 * - `UNSUPPORTED`: the combination is valid but this backend does not implement it.
 * - `BACKEND_UNAVAILABLE`: the loader could not load a backend that was explicitly requested.
 */
export type KernelErrorCode =
  | 'SHAPE_MISMATCH'
  | 'WRONG_ARRAY_TYPE'
  | 'INVALID_ARGUMENT'
  | 'OUT_OF_RANGE'
  | 'INVALID_SCALE'
  | 'UNSUPPORTED'
  | 'BACKEND_UNAVAILABLE';

/** Options of {@link KernelError}. */
export interface KernelErrorOptions {
  /** Name of the offending argument or field, e.g. `'slotMapping[3]'` or `'cache.kScale'`. */
  argument?: string;
  /** The underlying error (ES2022 `cause`). */
  cause?: unknown;
}

/** Error thrown by every kernel op, validator and the loader. `message` names the argument and value. */
export class KernelError extends Error {
  override readonly name = 'KernelError';
  /** Machine-readable code. */
  readonly code: KernelErrorCode;
  /** Name of the offending argument (or field path), when one is to blame. */
  readonly argument: string | undefined;

  constructor(code: KernelErrorCode, message: string, options: KernelErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.argument = options.argument;
  }
}

/** Type guard for {@link KernelError}, optionally for one code. */
export function isKernelError(e: unknown, code?: KernelErrorCode): e is KernelError {
  return e instanceof KernelError && (code === undefined || e.code === code);
}

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
 * Convert whatever a native addon threw into a {@link KernelError}: its `code` and `argument` are kept when
 * they are known codes; anything else becomes `UNSUPPORTED` with the original as `cause`. `op` prefixes the
 * message. Shared by the native backends (CPU, CUDA, ROCm).
 */
export function toKernelError(e: unknown, op: string): KernelError {
  if (e instanceof KernelError) return e;
  const err = e as { code?: unknown; argument?: unknown; message?: unknown } | null;
  const code = typeof err?.code === 'string' && (CODES as readonly string[]).includes(err.code) ? (err.code as KernelErrorCode) : 'UNSUPPORTED';
  const argument = typeof err?.argument === 'string' ? err.argument : undefined;
  const message = typeof err?.message === 'string' ? err.message : String(e);
  return new KernelError(code, `${op}: ${message}`, argument === undefined ? { cause: e } : { argument, cause: e });
}
