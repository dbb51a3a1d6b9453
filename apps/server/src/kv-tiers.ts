import { HostMemoryTier, type KvBlockTier } from '@kvq/cache';
import { CacheRedisError, RedisKvTier } from '@kvq/cache-redis';
import { ServerError } from './errors.js';

/** The KV tier flags of `kvq serve` (and the matching {@link ServerOptions}), as values. */
export interface KvTierFlags {
  /** `--kv-offload-memory`: bytes of the host-memory LRU tier (a positive integer). Absent: no host tier. */
  readonly kvOffloadMemory?: number | undefined;
  /** `--kv-store`: `redis://host:port/db` of a shared Redis / Valkey tier. Absent: no shared tier. */
  readonly kvStore?: string | undefined;
  /** Time limit of one Redis command, ms (ioredis `commandTimeout`). Default 500. */
  readonly kvStoreTimeoutMs?: number | undefined;
  /** Key prefix in the shared store. Default `'kvq:kv:'`. */
  readonly kvStoreKeyPrefix?: string | undefined;
}

/**
 * Builds the KV tiers the flags ask for, fastest first: host memory, then the shared store. Nothing connects
 * synchronously: an unreachable Redis only makes the tier miss (and count) until it is back.
 * @param names  How to name each value in errors (CLI flags, or option names by default).
 * @throws ServerError `INVALID_REQUEST` naming the flag and the value (a size that is not a positive integer, a bad URL).
 */
export function buildKvTiers(
  flags: KvTierFlags,
  names: { kvOffloadMemory: string; kvStore: string } = { kvOffloadMemory: 'kvOffloadMemory', kvStore: 'kvStore' },
): KvBlockTier[] {
  const tiers: KvBlockTier[] = [];
  const size = flags.kvOffloadMemory;
  if (size !== undefined) {
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 1) {
      throw new ServerError('INVALID_REQUEST', `${names.kvOffloadMemory} must be a positive number of bytes, got ${JSON.stringify(size)}`, { param: names.kvOffloadMemory });
    }
    tiers.push(new HostMemoryTier({ capacityBytes: size }));
  }
  if (flags.kvStore !== undefined) {
    try {
      tiers.push(
        new RedisKvTier({
          url: flags.kvStore,
          flag: names.kvStore,
          ...(flags.kvStoreTimeoutMs !== undefined ? { commandTimeoutMs: flags.kvStoreTimeoutMs } : {}),
          ...(flags.kvStoreKeyPrefix !== undefined ? { keyPrefix: flags.kvStoreKeyPrefix } : {}),
        }),
      );
    } catch (error) {
      if (error instanceof CacheRedisError) throw new ServerError('INVALID_REQUEST', error.message, { param: error.field, cause: error });
      throw error;
    }
  }
  return tiers;
}
