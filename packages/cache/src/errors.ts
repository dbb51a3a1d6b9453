/**
 * Error codes raised by `@kvq/cache`.
 *
 * - `INVALID_ARGUMENT`: a size, count, index or option is out of range (negative, non-integer, too large).
 * - `NOT_POWER_OF_TWO`: a block size that must be a power of two is not.
 * - `UNKNOWN_SEQUENCE`: an operation named a sequence id the manager does not hold.
 * - `DUPLICATE_SEQUENCE`: a sequence id is added (or forked into) while already held.
 * - `DOUBLE_FREE`: a block or sequence is freed twice.
 * - `INVALID_STATE`: the operation is not allowed in the sequence's or pool's current state.
 * - `OUT_OF_BLOCKS`: more blocks were requested from the pool than are free.
 * - `INVALID_SCALE`: a scale is non-finite or not positive.
 * - `SCALE_SHAPE`: a scale array has the wrong length.
 * - `SHAPE_MISMATCH`: a data array's length does not match the declared shape.
 * - `SLOT_OUT_OF_RANGE`: a slot or block id lies outside the pool.
 * - `UNSUPPORTED_DTYPE`: an unknown KV storage dtype or cache-dtype string.
 * - `INVARIANT_VIOLATION`: an internal consistency check failed (a bug; please report it).
 * - `TIER_UNAVAILABLE`: a KV block tier's backing service cannot be reached (connection refused or lost).
 * - `TIER_TIMEOUT`: a KV block tier did not answer within its time limit.
 * - `TIER_FULL`: a KV block tier refused a write for lack of memory (e.g. Redis `maxmemory` with `noeviction`).
 * - `CORRUPT_BLOCK`: a serialized KV block is malformed (bad magic, truncated, checksum mismatch).
 * - `FOREIGN_BLOCK`: a serialized KV block is intact but describes another block, model, dtype, layout or scales.
 */
export type CacheErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_POWER_OF_TWO'
  | 'UNKNOWN_SEQUENCE'
  | 'DUPLICATE_SEQUENCE'
  | 'DOUBLE_FREE'
  | 'INVALID_STATE'
  | 'OUT_OF_BLOCKS'
  | 'INVALID_SCALE'
  | 'SCALE_SHAPE'
  | 'SHAPE_MISMATCH'
  | 'SLOT_OUT_OF_RANGE'
  | 'UNSUPPORTED_DTYPE'
  | 'INVARIANT_VIOLATION'
  | 'TIER_UNAVAILABLE'
  | 'TIER_TIMEOUT'
  | 'TIER_FULL'
  | 'CORRUPT_BLOCK'
  | 'FOREIGN_BLOCK';

/** The one error class thrown by `@kvq/cache`; `code` says what went wrong, `message` names the argument and value. */
export class CacheError extends Error {
  override readonly name = 'CacheError';
  /** Machine-readable reason. */
  readonly code: CacheErrorCode;

  constructor(code: CacheErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** Throw `INVALID_ARGUMENT` unless `value` is an integer in [min, max]. Returns the value. */
export function checkInt(name: string, value: unknown, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`;
    throw new CacheError('INVALID_ARGUMENT', `${name} must be an integer ${range}, got ${describe(value)}`);
  }
  return value;
}

/** Throw `NOT_POWER_OF_TWO` unless `value` is a positive power of two. */
export function checkPowerOfTwo(name: string, value: number): number {
  checkInt(name, value, 1);
  if ((value & (value - 1)) !== 0) {
    throw new CacheError('NOT_POWER_OF_TWO', `${name} must be a power of two, got ${value}`);
  }
  return value;
}

/** Short printable form of an arbitrary value for error messages. */
export function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === undefined || value === null) return String(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (ArrayBuffer.isView(value)) return `${value.constructor.name}(${(value as unknown as { length: number }).length})`;
  if (Array.isArray(value)) return `array(${value.length})`;
  return typeof value;
}
