/**
 * @kvq/cache-redis: a shared KV block tier on Redis or Valkey for `@kvq/cache`'s `TieredKvStore`, so several kvq
 * replicas reuse each other's prefix-cache blocks. Kept out of `@kvq/cache` so that users of the cache do not pull a
 * network client.
 * @see ../README.md
 */
export { CacheRedisError, type CacheRedisErrorCode } from './errors.js';
export { RedisKvTier, parseRedisUrl, redisFailure, type RedisKvTierOptions, type RedisUrl } from './redis-tier.js';
