import { CacheError, checkInt, describe } from './errors.js';
import type { BlockHash } from './hash.js';

/** One serialized block to write to a tier: its chained hash (the key) and its bytes (see `encodeKvBlock`). */
export interface KvTierEntry {
  readonly hash: BlockHash;
  /** The serialized block; tiers keep it as is (callers never mutate it afterwards). */
  readonly value: Uint8Array;
}

/**
 * A store of serialized KV blocks outside the in-process block pool, keyed by chained block hash: host memory
 * ({@link HostMemoryTier}), a shared Redis / Valkey (`@kvq/cache-redis`), ... A {@link TieredKvStore} queries its
 * tiers in order on a prefix miss and writes full blocks to all of them.
 *
 * Contract: `get` and `set` batch many keys in one round trip where the backend allows. Failures reject with a
 * {@link CacheError} `TIER_UNAVAILABLE`, `TIER_TIMEOUT` or `TIER_FULL` when the cause is known (any other rejection
 * is counted as `error`); the store never lets them reach a request.
 */
export interface KvBlockTier {
  /** Short name used in metrics and logs (`'host'`, `'redis'`). Unique within one store. */
  readonly name: string;
  /** The stored values of `hashes`, in order; `undefined` for a key the tier does not hold. */
  get(hashes: readonly BlockHash[]): Promise<(Uint8Array | undefined)[]>;
  /** Store every entry (overwriting). Eviction and expiry are the tier's own business. */
  set(entries: readonly KvTierEntry[]): Promise<void>;
  /** Release connections and memory; later calls may fail. */
  close(): Promise<void>;
}

/** Options of {@link HostMemoryTier}. */
export interface HostMemoryTierOptions {
  /** Most bytes of serialized blocks held (values only; the map's own overhead is not counted). Integer >= 1. */
  readonly capacityBytes: number;
  /** Tier name in metrics. Default `'host'`. */
  readonly name?: string;
}

/**
 * Host-memory tier (`--kv-offload-memory SIZE`): serialized blocks in a `Map`, least recently used evicted first
 * when a write would exceed `capacityBytes`. A hit refreshes the entry. Values larger than the whole capacity are
 * not stored.
 */
export class HostMemoryTier implements KvBlockTier {
  readonly name: string;
  /** Most bytes of values held. */
  readonly capacityBytes: number;
  private readonly entries = new Map<BlockHash, Uint8Array>();
  private bytes = 0;
  private evicted = 0;

  /** @throws CacheError `INVALID_ARGUMENT` for a capacity that is not a positive integer or an empty name. */
  constructor(opts: HostMemoryTierOptions) {
    if (typeof opts !== 'object' || opts === null) {
      throw new CacheError('INVALID_ARGUMENT', `HostMemoryTier options must be an object, got ${describe(opts)}`);
    }
    this.capacityBytes = checkInt('capacityBytes', opts.capacityBytes, 1);
    const name = opts.name ?? 'host';
    if (typeof name !== 'string' || name.length === 0) throw new CacheError('INVALID_ARGUMENT', `name must be a non-empty string, got ${describe(name)}`);
    this.name = name;
  }

  /** Blocks held. */
  get size(): number {
    return this.entries.size;
  }

  /** Bytes of values held (<= `capacityBytes`). */
  get byteLength(): number {
    return this.bytes;
  }

  /** Entries evicted so far to make room. */
  get numEvictions(): number {
    return this.evicted;
  }

  /** True when `hash` is held (does not refresh it). */
  has(hash: BlockHash): boolean {
    return this.entries.has(hash);
  }

  get(hashes: readonly BlockHash[]): Promise<(Uint8Array | undefined)[]> {
    return Promise.resolve(
      hashes.map((h) => {
        const v = this.entries.get(h);
        if (v !== undefined) {
          this.entries.delete(h);
          this.entries.set(h, v);
        }
        return v;
      }),
    );
  }

  set(entries: readonly KvTierEntry[]): Promise<void> {
    for (const { hash, value } of entries) {
      if (value.length > this.capacityBytes) continue;
      const old = this.entries.get(hash);
      if (old !== undefined) {
        this.entries.delete(hash);
        this.bytes -= old.length;
      }
      while (this.bytes + value.length > this.capacityBytes) {
        const oldest = this.entries.keys().next().value as BlockHash;
        this.bytes -= this.entries.get(oldest)!.length;
        this.entries.delete(oldest);
        this.evicted++;
      }
      // A view into a larger buffer (a network client's read buffer) is copied, so it does not pin the rest.
      const own = value.byteOffset === 0 && value.byteLength === value.buffer.byteLength ? value : value.slice();
      this.entries.set(hash, own);
      this.bytes += own.length;
    }
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.entries.clear();
    this.bytes = 0;
    return Promise.resolve();
  }
}
