/**
 * Error codes raised by `@kvq/cache-redis` when it is configured (runtime failures of the tier are `CacheError`s
 * with the tier codes of `@kvq/cache`, which the tiered store counts and treats as misses).
 *
 * - `INVALID_URL`: the store URL is not `redis://` / `rediss://` / `valkey://` / `valkeys://` with a host, a port in
 *   [1, 65535] and a database number in [0, 2^31); the message names the flag (or option) and the value.
 * - `INVALID_ARGUMENT`: another option is out of range (timeouts, TTL, key prefix, name).
 */
export type CacheRedisErrorCode = 'INVALID_URL' | 'INVALID_ARGUMENT';

/** The error class thrown by `@kvq/cache-redis`'s constructors and parsers; `code` says what is wrong. */
export class CacheRedisError extends Error {
  override readonly name = 'CacheRedisError';
  /** Machine-readable reason. */
  readonly code: CacheRedisErrorCode;
  /** The flag or option the bad value came from (e.g. `--kv-store`). */
  readonly field: string;

  constructor(code: CacheRedisErrorCode, field: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.field = field;
  }
}
