import { decodeKvBlock, type KvBlockFormat } from './block-codec.js';
import { CacheError, checkInt, describe } from './errors.js';
import type { BlockHash } from './hash.js';
import type { KvBlockTier, KvTierEntry } from './tier.js';

/**
 * Why a tier operation gave nothing: the backend is unreachable, too slow, full, or returned a malformed block
 * (`corrupt`) or a block of another model / dtype / layout / scale set / key (`foreign`); `error` for anything else.
 */
export type KvTierFailure = 'unavailable' | 'timeout' | 'full' | 'corrupt' | 'foreign' | 'error';

/** Every {@link KvTierFailure}, in a fixed order (for metrics labels). */
export const KV_TIER_FAILURES: readonly KvTierFailure[] = ['unavailable', 'timeout', 'full', 'corrupt', 'foreign', 'error'];

/** One finished tier operation, as reported to {@link TieredKvStore.onOperation} listeners. */
export interface KvTierOperation {
  /** The tier's name. */
  readonly tier: string;
  /** `'load'`: a batched lookup on a prefix miss; `'store'`: a batched write of full blocks. */
  readonly op: 'load' | 'store';
  /** Wall time of the operation, seconds (a timed-out one counts up to the timeout). */
  readonly seconds: number;
  /** Blocks asked for (load) or written (store). */
  readonly blocks: number;
  /** Blocks loaded from this tier (load only; 0 for a store). */
  readonly hits: number;
  /** Serialized bytes loaded or written. */
  readonly bytes: number;
  /** Set when the operation (or, for a load, the block that ended the hit run) failed. */
  readonly failure: KvTierFailure | undefined;
}

/** Lifetime counters of one tier in a {@link TieredKvStore}. */
export interface KvTierStats {
  readonly tier: string;
  /** Blocks loaded from the tier. */
  readonly hits: number;
  /** Blocks looked up in the tier and not loaded from it (absent, after a gap, or rejected). */
  readonly misses: number;
  /** Serialized bytes loaded from the tier. */
  readonly bytesLoaded: number;
  /** Serialized bytes written to the tier (successful writes only). */
  readonly bytesStored: number;
  /** Blocks written to the tier (successful writes only). */
  readonly blocksStored: number;
  /** Blocks not written because too many bytes were already in flight (`maxPendingStoreBytes`). */
  readonly blocksDropped: number;
  /** Failed operations (or rejected blocks) by reason. */
  readonly failures: Readonly<Record<KvTierFailure, number>>;
  /** Load operations and their summed seconds. */
  readonly loads: { readonly count: number; readonly seconds: number };
  /** Store operations and their summed seconds. */
  readonly stores: { readonly count: number; readonly seconds: number };
}

/** Options of {@link TieredKvStore}. */
export interface TieredKvStoreOptions {
  /** Tiers, fastest first (e.g. host memory, then Redis). Names must be unique. At least one. */
  readonly tiers: readonly KvBlockTier[];
  /** A tier call that takes longer is abandoned as `timeout` (its late answer is ignored), ms. Default 1000. */
  readonly timeoutMs?: number;
  /** Writes in flight beyond this many bytes are dropped (counted in `blocksDropped`), so a slow tier cannot grow memory without bound. Default 64 MiB. */
  readonly maxPendingStoreBytes?: number;
  /** Most blocks asked of a tier in one call; a longer chain is looked up in consecutive calls until a gap. Default 64. */
  readonly maxBlocksPerCall?: number;
  /**
   * Receives one line per failure kind and tier when it first happens, then at most once a minute with the count
   * since (failures are never thrown). Default: `process.emitWarning` with code `KVQ_KV_TIER`.
   */
  readonly log?: (message: string) => void;
}

interface MutableStats {
  hits: number;
  misses: number;
  bytesLoaded: number;
  bytesStored: number;
  blocksStored: number;
  blocksDropped: number;
  failures: Record<KvTierFailure, number>;
  loads: { count: number; seconds: number };
  stores: { count: number; seconds: number };
}

const LOG_INTERVAL_MS = 60_000;
const now = () => performance.now() / 1000;

/** The {@link KvTierFailure} of a tier call's rejection. */
export function tierFailureOf(error: unknown): KvTierFailure {
  if (error instanceof CacheError) {
    switch (error.code) {
      case 'TIER_UNAVAILABLE':
        return 'unavailable';
      case 'TIER_TIMEOUT':
        return 'timeout';
      case 'TIER_FULL':
        return 'full';
      case 'CORRUPT_BLOCK':
        return 'corrupt';
      case 'FOREIGN_BLOCK':
        return 'foreign';
      default:
        return 'error';
    }
  }
  return 'error';
}

function defaultLog(message: string): void {
  const p = (globalThis as { process?: { emitWarning?: (m: string, o: { code: string }) => void } }).process;
  if (p?.emitWarning) p.emitWarning(message, { code: 'KVQ_KV_TIER' });
}

/**
 * KV blocks beyond the in-process pool: an ordered list of {@link KvBlockTier}s (host memory, then a shared Redis)
 * behind one load / store API, with per-tier counters and an operation hook for latency metrics.
 *
 * - {@link load}: the longest run of consecutive blocks of a chain that the tiers hold, each checked with
 *   {@link decodeKvBlock} against the expected hash and format; the first tier is asked for all of them, each next
 *   tier for what follows the hits so far. Blocks found in a later tier are copied into the earlier ones.
 * - {@link store}: writes to every tier in the background; never awaited on a request's path.
 *
 * NOTE: nothing here throws at a request: an unreachable, slow, full or lying tier is logged, counted and treated
 * as a miss (the engine recomputes the blocks).
 */
export class TieredKvStore {
  /** The tiers, fastest first. */
  readonly tiers: readonly KvBlockTier[];
  /** Per-call time limit, ms. */
  readonly timeoutMs: number;
  /** In-flight write limit, bytes. */
  readonly maxPendingStoreBytes: number;
  /** Most blocks per tier call. */
  readonly maxBlocksPerCall: number;
  private readonly stats = new Map<string, MutableStats>();
  private readonly listeners = new Set<(op: KvTierOperation) => void>();
  private readonly log: (message: string) => void;
  private readonly lastLog = new Map<string, { at: number; suppressed: number }>();
  private readonly pending = new Set<Promise<void>>();
  private pendingBytes = 0;
  private closed = false;

  /** @throws CacheError `INVALID_ARGUMENT` for no tiers, duplicate names or bad limits. */
  constructor(opts: TieredKvStoreOptions) {
    if (typeof opts !== 'object' || opts === null || !Array.isArray(opts.tiers) || opts.tiers.length === 0) {
      throw new CacheError('INVALID_ARGUMENT', `TieredKvStore needs { tiers: [at least one tier] }, got ${describe(opts)}`);
    }
    for (const t of opts.tiers) {
      if (t === null || typeof t !== 'object' || typeof t.get !== 'function' || typeof t.set !== 'function' || typeof t.name !== 'string') {
        throw new CacheError('INVALID_ARGUMENT', `every tier must implement KvBlockTier (name, get, set, close), got ${describe(t)}`);
      }
      if (this.stats.has(t.name)) throw new CacheError('INVALID_ARGUMENT', `tier names must be unique, ${JSON.stringify(t.name)} appears twice`);
      this.stats.set(t.name, {
        hits: 0,
        misses: 0,
        bytesLoaded: 0,
        bytesStored: 0,
        blocksStored: 0,
        blocksDropped: 0,
        failures: Object.fromEntries(KV_TIER_FAILURES.map((f) => [f, 0])) as Record<KvTierFailure, number>,
        loads: { count: 0, seconds: 0 },
        stores: { count: 0, seconds: 0 },
      });
    }
    this.tiers = [...opts.tiers];
    this.timeoutMs = checkInt('timeoutMs', opts.timeoutMs ?? 1000, 1);
    this.maxPendingStoreBytes = checkInt('maxPendingStoreBytes', opts.maxPendingStoreBytes ?? 64 * 1024 * 1024, 0);
    this.maxBlocksPerCall = checkInt('maxBlocksPerCall', opts.maxBlocksPerCall ?? 64, 1);
    this.log = opts.log ?? defaultLog;
  }

  /** Lifetime counters of every tier, in tier order. */
  tierStats(): KvTierStats[] {
    return this.tiers.map((t) => {
      const s = this.stats.get(t.name)!;
      return { tier: t.name, ...s, failures: { ...s.failures }, loads: { ...s.loads }, stores: { ...s.stores } };
    });
  }

  /** Calls `listener` after every tier operation (a throwing listener is ignored). Returns the unsubscribe function. */
  onOperation(listener: (op: KvTierOperation) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * The payloads of the longest run of `hashes` (a chain, in order) the tiers hold, checked against `format`.
   * Never rejects: a failing tier counts as a miss.
   * @returns payloads for `hashes[0 .. n)`, n >= 0
   */
  async load(hashes: readonly BlockHash[], format: KvBlockFormat): Promise<Uint8Array[]> {
    const payloads: Uint8Array[] = [];
    if (this.closed || hashes.length === 0) return payloads;
    for (let t = 0; t < this.tiers.length && payloads.length < hashes.length; t++) {
      const tier = this.tiers[t]!;
      const found: KvTierEntry[] = [];
      // Consecutive calls of at most maxBlocksPerCall blocks, until a gap, a rejected block or a failure.
      let more = true;
      while (more && payloads.length < hashes.length) {
        const want = hashes.slice(payloads.length, payloads.length + this.maxBlocksPerCall);
        const start = now();
        let failure: KvTierFailure | undefined;
        let values: (Uint8Array | undefined)[] = [];
        try {
          values = await this.withTimeout(tier.get(want), tier.name, 'get');
          if (!Array.isArray(values)) throw new CacheError('INVALID_STATE', `tier ${tier.name} answered get() with ${describe(values)}`);
        } catch (error) {
          failure = this.fail(tier.name, error);
          values = [];
        }
        let hits = 0;
        let bytes = 0;
        for (let i = 0; i < want.length; i++) {
          const v = values[i];
          if (v === undefined || v === null) break;
          let payload: Uint8Array;
          try {
            payload = decodeKvBlock(v, want[i]!, format);
          } catch (error) {
            failure = this.fail(tier.name, error);
            break;
          }
          payloads.push(payload);
          found.push({ hash: want[i]!, value: v });
          hits++;
          bytes += v.length;
        }
        more = hits === want.length;
        const s = this.stats.get(tier.name)!;
        s.hits += hits;
        // Blocks after a gap in this tier are asked of the next tier: count them once, here, as misses.
        s.misses += (more ? 0 : hashes.length - payloads.length);
        s.bytesLoaded += bytes;
        const seconds = now() - start;
        s.loads.count++;
        s.loads.seconds += seconds;
        this.emit({ tier: tier.name, op: 'load', seconds, blocks: want.length, hits, bytes, failure });
      }
      // Promote: a block found in a slower tier is copied into the faster ones.
      if (found.length > 0) for (let u = 0; u < t; u++) this.storeTo(this.tiers[u]!, found);
    }
    return payloads;
  }

  /**
   * Write serialized blocks to every tier in the background. The returned promise resolves when the writes have
   * finished (or failed, counted); callers on a request's path do not await it.
   */
  store(entries: readonly KvTierEntry[]): Promise<void> {
    if (this.closed || entries.length === 0) return Promise.resolve();
    return Promise.all(this.tiers.map((t) => this.storeTo(t, entries))).then(() => undefined);
  }

  /** Resolves when every write started so far has finished. */
  async flush(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  /** Waits for pending writes, then closes every tier (errors ignored). Later loads find nothing, stores do nothing. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush();
    this.closed = true;
    await Promise.all(this.tiers.map((t) => t.close().catch(() => undefined)));
  }

  private storeTo(tier: KvBlockTier, entries: readonly KvTierEntry[]): Promise<void> {
    const s = this.stats.get(tier.name)!;
    const size = entries.reduce((n, e) => n + e.value.length, 0);
    if (this.pendingBytes + size > this.maxPendingStoreBytes) {
      s.blocksDropped += entries.length;
      return Promise.resolve();
    }
    this.pendingBytes += size;
    const start = now();
    const p: Promise<void> = this.withTimeout(tier.set(entries), tier.name, 'set').then(
      () => {
        s.bytesStored += size;
        s.blocksStored += entries.length;
        return undefined;
      },
      (error: unknown) => this.fail(tier.name, error),
    ).then((failure) => {
      const seconds = now() - start;
      s.stores.count++;
      s.stores.seconds += seconds;
      this.pendingBytes -= size;
      this.pending.delete(p);
      this.emit({ tier: tier.name, op: 'store', seconds, blocks: entries.length, hits: 0, bytes: size, failure: failure ?? undefined });
    });
    this.pending.add(p);
    return p;
  }

  private withTimeout<T>(promise: Promise<T>, tier: string, what: string): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new CacheError('TIER_TIMEOUT', `tier ${tier}: ${what} took longer than ${this.timeoutMs} ms`)), this.timeoutMs);
      (timer as { unref?: () => void }).unref?.();
    });
    promise.catch(() => undefined); // a late rejection after the timeout must not be unhandled
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
  }

  private fail(tier: string, error: unknown): KvTierFailure {
    const failure = tierFailureOf(error);
    this.stats.get(tier)!.failures[failure]++;
    const key = `${tier}\u0000${failure}`;
    const t = Date.now();
    const last = this.lastLog.get(key);
    if (last === undefined || t - last.at >= LOG_INTERVAL_MS) {
      const more = last && last.suppressed > 0 ? ` (${last.suppressed} more since the last report)` : '';
      const message = error instanceof Error ? error.message : String(error);
      try {
        this.log(`kvq: KV tier ${tier}: ${failure}: ${message}; treated as a miss${more}`);
      } catch {
        // logging must never fail a request
      }
      this.lastLog.set(key, { at: t, suppressed: 0 });
    } else {
      last.suppressed++;
    }
    return failure;
  }

  private emit(op: KvTierOperation): void {
    for (const l of this.listeners) {
      try {
        l(op);
      } catch {
        // a metrics listener must not break the store
      }
    }
  }
}
