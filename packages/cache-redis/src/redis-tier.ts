import { CacheError, type BlockHash, type KvBlockTier, type KvTierEntry } from '@kvq/cache';
import { Redis } from 'ioredis';
import { CacheRedisError } from './errors.js';

/** A parsed store URL (see {@link parseRedisUrl}). */
export interface RedisUrl {
  readonly host: string;
  readonly port: number;
  /** Logical database (`SELECT`), default 0. */
  readonly db: number;
  readonly username: string | undefined;
  readonly password: string | undefined;
  /** `rediss://` / `valkeys://`: TLS. */
  readonly tls: boolean;
}

const SCHEMES: Record<string, boolean> = { 'redis:': false, 'rediss:': true, 'valkey:': false, 'valkeys:': true };

/**
 * Parse `redis://[user[:password]@]host[:port][/db]` (also `rediss://` for TLS and the `valkey://` / `valkeys://`
 * spellings). Port default 6379, database default 0.
 * @param flag  What to name in errors (a CLI flag such as `--kv-store`, or an option name). Default `'url'`.
 * @throws CacheRedisError `INVALID_URL` naming `flag` and the value.
 */
export function parseRedisUrl(url: string, flag = 'url'): RedisUrl {
  const bad = (why: string, cause?: unknown): never => {
    throw new CacheRedisError('INVALID_URL', flag, `${flag} ${JSON.stringify(url)} is not a Redis URL (${why}); expected redis://host:port/db, e.g. redis://127.0.0.1:6379/0`, cause === undefined ? undefined : { cause });
  };
  if (typeof url !== 'string' || url.length === 0) bad('empty');
  let u: URL;
  try {
    u = new URL(url);
  } catch (cause) {
    return bad('unparsable', cause);
  }
  const tls = SCHEMES[u.protocol];
  if (tls === undefined) bad(`scheme ${u.protocol} is not redis:, rediss:, valkey: or valkeys:`);
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  if (host.length === 0) bad('no host');
  const port = u.port === '' ? 6379 : Number(u.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) bad(`port ${u.port} is outside [1, 65535]`);
  const path = u.pathname.replace(/^\//, '');
  const db = path === '' ? 0 : /^\d+$/.test(path) ? Number(path) : NaN;
  if (!Number.isInteger(db) || db < 0 || db >= 2 ** 31) bad(`database ${JSON.stringify(path)} is not a number in [0, 2^31)`);
  if (u.search !== '' || u.hash !== '') bad('query strings and fragments are not supported');
  return {
    host,
    port,
    db,
    username: u.username === '' ? undefined : decodeURIComponent(u.username),
    password: u.password === '' ? undefined : decodeURIComponent(u.password),
    tls: tls!,
  };
}

/** Options of {@link RedisKvTier}. */
export interface RedisKvTierOptions {
  /** `redis://host:port/db` (see {@link parseRedisUrl}); works with Valkey too. */
  readonly url: string;
  /** Named in configuration errors (e.g. `'--kv-store'`). Default `'url'`. */
  readonly flag?: string;
  /** Prefix of every key; the rest is the block's chained hash. Default `'kvq:kv:'`. */
  readonly keyPrefix?: string;
  /** Expire blocks after this many seconds (`SET ... EX`); default none: eviction is left to Redis (`maxmemory-policy allkeys-lru`). */
  readonly ttlSeconds?: number;
  /** A command that takes longer fails as `TIER_TIMEOUT` (ioredis `commandTimeout`), ms. Default 500. */
  readonly commandTimeoutMs?: number;
  /** Connection attempt limit, ms. Default 2000. */
  readonly connectTimeoutMs?: number;
  /** Tier name in metrics. Default `'redis'`. */
  readonly name?: string;
}

function positiveInt(field: string, value: unknown, fallback: number | undefined): number | undefined {
  const v = value ?? fallback;
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
    throw new CacheRedisError('INVALID_ARGUMENT', field, `${field} must be an integer >= 1, got ${String(v)}`);
  }
  return v;
}

/**
 * The {@link CacheError} a failed Redis call maps to: `TIER_TIMEOUT` (ioredis `commandTimeout`), `TIER_FULL`
 * (`OOM command not allowed`: `maxmemory` reached under `noeviction`), `TIER_UNAVAILABLE` (not connected, refused,
 * reset, closed); anything else is returned unchanged.
 */
export function redisFailure(error: unknown, tier: string): unknown {
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown } | null)?.code;
  if (/command timed out/i.test(message)) return new CacheError('TIER_TIMEOUT', `${tier}: ${message}`, { cause: error });
  if (/^OOM\b/.test(message)) return new CacheError('TIER_FULL', `${tier}: ${message}`, { cause: error });
  if (
    /stream isn't writeable|connection is closed|max(imum)? ?retries|ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|LOADING/i.test(message) ||
    (typeof code === 'string' && /^E[A-Z]+$/.test(code))
  ) {
    return new CacheError('TIER_UNAVAILABLE', `${tier}: ${message}`, { cause: error });
  }
  return error;
}

/**
 * A shared KV block tier on Redis or Valkey (ioredis): one key per full block, `keyPrefix + chained hash`, the
 * serialized block (`encodeKvBlock`) as the value. Reads are one `MGET`, writes one pipeline of `SET`s.
 *
 * NOTE: it never waits for a connection: commands while disconnected fail at once (`TIER_UNAVAILABLE`, no offline
 * queue), and the client reconnects in the background (every 0.1–2 s). Connection errors are kept from crashing the
 * process (ioredis `error` events are consumed); the last one is in {@link lastError}.
 */
export class RedisKvTier implements KvBlockTier {
  readonly name: string;
  /** The parsed URL. */
  readonly url: RedisUrl;
  /** Prefix of every key. */
  readonly keyPrefix: string;
  /** `SET ... EX` seconds, or undefined. */
  readonly ttlSeconds: number | undefined;
  /** The ioredis client (for tests and administration). */
  readonly client: Redis;
  private lastErrorValue: Error | undefined;

  /** @throws CacheRedisError `INVALID_URL` / `INVALID_ARGUMENT` (connection failures are never thrown here). */
  constructor(opts: RedisKvTierOptions) {
    if (typeof opts !== 'object' || opts === null) {
      throw new CacheRedisError('INVALID_ARGUMENT', 'options', `RedisKvTier needs { url }, got ${String(opts)}`);
    }
    const flag = opts.flag ?? 'url';
    this.url = parseRedisUrl(opts.url, flag);
    const prefix = opts.keyPrefix ?? 'kvq:kv:';
    if (typeof prefix !== 'string') throw new CacheRedisError('INVALID_ARGUMENT', 'keyPrefix', `keyPrefix must be a string, got ${String(prefix)}`);
    this.keyPrefix = prefix;
    const name = opts.name ?? 'redis';
    if (typeof name !== 'string' || name.length === 0) throw new CacheRedisError('INVALID_ARGUMENT', 'name', `name must be a non-empty string, got ${String(name)}`);
    this.name = name;
    this.ttlSeconds = positiveInt('ttlSeconds', opts.ttlSeconds, undefined);
    const commandTimeout = positiveInt('commandTimeoutMs', opts.commandTimeoutMs, 500)!;
    const connectTimeout = positiveInt('connectTimeoutMs', opts.connectTimeoutMs, 2000)!;
    this.client = new Redis({
      host: this.url.host,
      port: this.url.port,
      db: this.url.db,
      ...(this.url.username !== undefined ? { username: this.url.username } : {}),
      ...(this.url.password !== undefined ? { password: this.url.password } : {}),
      ...(this.url.tls ? { tls: {} } : {}),
      commandTimeout,
      connectTimeout,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: (times: number) => Math.min(100 * times, 2000),
      lazyConnect: false,
    });
    this.client.on('error', (error: Error) => {
      this.lastErrorValue = error;
    });
  }

  /** The last connection error ioredis reported, if any. */
  get lastError(): Error | undefined {
    return this.lastErrorValue;
  }

  /** The key a block hash is stored under. */
  key(hash: BlockHash): string {
    return this.keyPrefix + hash;
  }

  /** Resolves once connected (or rejects after `ms`); optional: the tier works, and misses, without it. */
  async ready(ms = 5000): Promise<void> {
    if (this.client.status === 'ready') return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.client.off('ready', onReady);
        reject(new CacheError('TIER_UNAVAILABLE', `${this.name}: not connected to ${this.url.host}:${this.url.port} after ${ms} ms${this.lastErrorValue ? ` (${this.lastErrorValue.message})` : ''}`));
      }, ms);
      const onReady = () => {
        clearTimeout(timer);
        resolve();
      };
      this.client.once('ready', onReady);
    });
  }

  async get(hashes: readonly BlockHash[]): Promise<(Uint8Array | undefined)[]> {
    if (hashes.length === 0) return [];
    try {
      const values = await this.client.mgetBuffer(...hashes.map((h) => this.key(h)));
      return values.map((v) => (v === null ? undefined : v));
    } catch (error) {
      throw redisFailure(error, this.name);
    }
  }

  async set(entries: readonly KvTierEntry[]): Promise<void> {
    if (entries.length === 0) return;
    let results: [Error | null, unknown][] | null;
    try {
      const p = this.client.pipeline();
      for (const { hash, value } of entries) {
        const buf = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
        if (this.ttlSeconds !== undefined) p.set(this.key(hash), buf, 'EX', this.ttlSeconds);
        else p.set(this.key(hash), buf);
      }
      results = await p.exec();
    } catch (error) {
      throw redisFailure(error, this.name);
    }
    const failed = results?.find(([e]) => e !== null)?.[0];
    if (failed) throw redisFailure(failed, this.name);
  }

  async close(): Promise<void> {
    try {
      if (this.client.status === 'ready') await this.client.quit();
    } catch {
      // quitting a broken connection: disconnect below
    }
    this.client.disconnect();
  }
}
