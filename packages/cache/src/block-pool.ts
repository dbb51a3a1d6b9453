import { FreeBlockQueue, KvCacheBlock } from './block.js';
import { CacheError, checkInt, describe } from './errors.js';
import type { BlockHash } from './hash.js';

/** A full block was registered in the prefix cache (vLLM `BlockStored`). */
export interface BlockStoredEvent {
  readonly type: 'stored';
  /** Hashes of the newly cached blocks, in chain order. */
  readonly blockHashes: readonly BlockHash[];
  /** Block ids holding them (same order). */
  readonly blockIds: readonly number[];
  /** Hash of the block before the first one, or `null` when the first is the sequence's block 0. */
  readonly parentBlockHash: BlockHash | null;
  /** Token ids of the stored blocks, concatenated (`blockHashes.length * blockSize` ids). */
  readonly tokenIds: readonly number[];
  /** Tokens per block. */
  readonly blockSize: number;
}

/** Cached blocks lost their hash (vLLM `BlockRemoved`): reallocated for new data, or explicitly evicted. */
export interface BlockRemovedEvent {
  readonly type: 'removed';
  readonly blockHashes: readonly BlockHash[];
  readonly blockIds: readonly number[];
  /** `'reallocated'`: lazily evicted when the free block was handed out again; `'evicted'`: by `evictBlocks`. */
  readonly reason: 'reallocated' | 'evicted';
}

/** The whole prefix cache was reset (vLLM `AllBlocksCleared`). */
export interface AllBlocksClearedEvent {
  readonly type: 'cleared';
}

/** Prefix-cache change events, in the order they happened. */
export type KvCacheEvent = BlockStoredEvent | BlockRemovedEvent | AllBlocksClearedEvent;

/** Options of {@link BlockPool}. */
export interface BlockPoolOptions {
  /** Total blocks, including the reserved null block 0 (so `numBlocks - 1` are usable). Integer >= 2. */
  numBlocks: number;
  /** Keep hashes of full blocks so they can be reused (prefix caching). Default `true`. */
  enableCaching?: boolean;
  /** Buffer {@link KvCacheEvent}s for {@link BlockPool.takeEvents}. Default `false` (nothing buffered). */
  enableEvents?: boolean;
  /** Called synchronously for every event (independent of `enableEvents`). */
  onEvent?: (event: KvCacheEvent) => void;
}

/**
 * The pool of fixed-size KV blocks (vLLM `BlockPool`): ref counts, the LRU free queue, and the
 * hash → block map of the prefix cache with lazy eviction.
 *
 * Block 0 is the null block: a placeholder that is never handed out, never freed, and has no ref count.
 * Free blocks keep their hash, so they can still be hit, until they are reallocated (lazy eviction).
 * @see docs/spec/vllm-fp8-kv-cache.md §6.2
 */
export class BlockPool {
  /** Total blocks including the null block. */
  readonly numBlocks: number;
  /** Whether full blocks are cached by hash. */
  readonly enableCaching: boolean;
  /** The reserved block 0. */
  readonly nullBlock: KvCacheBlock;
  private readonly blocks: KvCacheBlock[];
  private readonly freeQueue: FreeBlockQueue;
  /** hash → blocks holding it (no de-duplication, as vLLM: tables stay append-only). */
  private readonly cached = new Map<BlockHash, KvCacheBlock[]>();
  private cachedCount = 0;
  private evictions = 0;
  private readonly events: KvCacheEvent[] | undefined;
  private readonly onEvent: ((event: KvCacheEvent) => void) | undefined;

  constructor(opts: BlockPoolOptions) {
    if (typeof opts !== 'object' || opts === null) {
      throw new CacheError('INVALID_ARGUMENT', `BlockPool options must be an object, got ${describe(opts)}`);
    }
    this.numBlocks = checkInt('numBlocks', opts.numBlocks, 2, 2 ** 31 - 1);
    this.enableCaching = opts.enableCaching ?? true;
    this.events = opts.enableEvents ? [] : undefined;
    this.onEvent = opts.onEvent;
    this.blocks = new Array<KvCacheBlock>(this.numBlocks);
    for (let i = 0; i < this.numBlocks; i++) this.blocks[i] = new KvCacheBlock(i, i === 0);
    this.nullBlock = this.blocks[0]!;
    this.freeQueue = new FreeBlockQueue(this.blocks.slice(1));
  }

  /** The block with id `blockId`. @throws CacheError `SLOT_OUT_OF_RANGE`. */
  getBlock(blockId: number): KvCacheBlock {
    const b = Number.isInteger(blockId) ? this.blocks[blockId] : undefined;
    if (b === undefined) {
      throw new CacheError('SLOT_OUT_OF_RANGE', `blockId must be an integer in [0, ${this.numBlocks}), got ${describe(blockId)}`);
    }
    return b;
  }

  /** Blocks currently in the free queue (including cached, evictable ones). */
  get numFreeBlocks(): number {
    return this.freeQueue.size;
  }

  /** Blocks currently holding a prefix-cache hash (free or in use). */
  get numCachedBlocks(): number {
    return this.cachedCount;
  }

  /** Cached blocks whose hash was dropped so far (lazy evictions on reallocation plus explicit evictions). */
  get numEvictions(): number {
    return this.evictions;
  }

  /** Fraction of usable blocks in use, in [0, 1] (`1 - free / (numBlocks - 1)`, vLLM `get_usage`). */
  usage(): number {
    return 1 - this.freeQueue.size / (this.numBlocks - 1);
  }

  /** Free block ids in eviction order (front = next to be reallocated). O(n). */
  freeBlockIds(): number[] {
    return this.freeQueue.toArray().map((b) => b.blockId);
  }

  /**
   * Take `n` blocks from the front of the free queue, evicting any stale hash they hold, ref count 1 each.
   * @throws CacheError `OUT_OF_BLOCKS` when fewer than `n` are free (nothing is taken then).
   */
  getNewBlocks(n: number): KvCacheBlock[] {
    checkInt('n', n, 0);
    if (n > this.freeQueue.size) {
      throw new CacheError('OUT_OF_BLOCKS', `cannot allocate ${n} blocks: only ${this.freeQueue.size} are free`);
    }
    const out = this.freeQueue.popLeftN(n);
    let removedHashes: BlockHash[] | undefined;
    let removedIds: number[] | undefined;
    for (const b of out) {
      const h = this.dropHash(b);
      if (h !== undefined) {
        (removedHashes ??= []).push(h);
        (removedIds ??= []).push(b.blockId);
      }
      b.refCount = 1;
    }
    if (removedHashes !== undefined && removedIds !== undefined) {
      this.emit({ type: 'removed', blockHashes: removedHashes, blockIds: removedIds, reason: 'reallocated' });
    }
    return out;
  }

  /** Drop `b`'s hash from the map (lazy eviction), emitting nothing; returns the dropped hash. */
  private dropHash(b: KvCacheBlock): BlockHash | undefined {
    const h = b.blockHash;
    if (h === undefined) return undefined;
    const list = this.cached.get(h);
    if (list !== undefined) {
      const i = list.indexOf(b);
      if (i >= 0) {
        list.splice(i, 1);
        this.cachedCount--;
      }
      if (list.length === 0) this.cached.delete(h);
    }
    b.blockHash = undefined;
    this.evictions++;
    return h;
  }

  /**
   * Prefix-cache hit on `blocks`: ref count + 1 each; blocks at ref count 0 leave the free queue.
   * @throws CacheError `INVALID_STATE` for the null block.
   */
  touch(blocks: readonly KvCacheBlock[]): void {
    for (const b of blocks) {
      if (b.isNull) throw new CacheError('INVALID_STATE', 'the null block cannot be touched');
    }
    for (const b of blocks) {
      if (b.refCount === 0) this.freeQueue.remove(b);
      b.refCount++;
    }
  }

  /**
   * Add one reference to each of `blocks` (a fork sharing them). Unlike {@link touch}, the blocks must be in use.
   * @throws CacheError `INVALID_STATE` for a free or null block.
   */
  share(blocks: readonly KvCacheBlock[]): void {
    for (const b of blocks) {
      if (b.isNull || b.refCount <= 0) {
        throw new CacheError('INVALID_STATE', `block ${b.blockId} cannot be shared: it is ${b.isNull ? 'the null block' : 'free'}`);
      }
    }
    for (const b of blocks) b.refCount++;
  }

  /**
   * Release one reference to each block, in the given order; blocks reaching 0 go to the back of the free
   * queue in that order (free a sequence's blocks tail-first so chain tails are evicted first).
   * They keep their hash until reallocated. Null blocks are skipped.
   * @throws CacheError `DOUBLE_FREE` when a block is already free (no block is released then).
   */
  freeBlocks(ordered: readonly KvCacheBlock[]): void {
    const seen = new Map<KvCacheBlock, number>();
    for (const b of ordered) {
      if (b.isNull) continue;
      const n = (seen.get(b) ?? 0) + 1;
      seen.set(b, n);
      if (n > b.refCount) {
        throw new CacheError('DOUBLE_FREE', `block ${b.blockId} freed more times (${n}) than it is referenced (${b.refCount})`);
      }
    }
    for (const b of ordered) {
      if (b.isNull) continue;
      b.refCount--;
      if (b.refCount === 0) this.freeQueue.append(b);
    }
  }

  /** A block holding `hash`, if any is cached (free or in use). */
  getCachedBlock(hash: BlockHash): KvCacheBlock | undefined {
    return this.cached.get(hash)?.[0];
  }

  /**
   * Register full blocks under their hashes and emit one `stored` event.
   * Blocks that already hold a hash are skipped (they were cached by another table sharing them).
   * @param meta.parentBlockHash  Hash of the block preceding `blocks[0]` (`null` for block 0).
   * @param meta.tokenIds  Token ids of all the blocks, concatenated (for the event).
   * @throws CacheError `INVALID_STATE` for a free or null block.
   */
  cacheFullBlocks(
    blocks: readonly KvCacheBlock[],
    hashes: readonly BlockHash[],
    meta: { parentBlockHash: BlockHash | null; tokenIds: readonly number[]; blockSize: number },
  ): void {
    if (!this.enableCaching || blocks.length === 0) return;
    if (blocks.length !== hashes.length) {
      throw new CacheError('SHAPE_MISMATCH', `cacheFullBlocks got ${blocks.length} blocks but ${hashes.length} hashes`);
    }
    const storedHashes: BlockHash[] = [];
    const storedIds: number[] = [];
    for (let i = 0; i < blocks.length; i++) {
      const b = blocks[i]!;
      const h = hashes[i]!;
      if (b.isNull || b.refCount <= 0) {
        throw new CacheError('INVALID_STATE', `block ${b.blockId} cannot be cached: it is ${b.isNull ? 'the null block' : 'free'}`);
      }
      if (b.blockHash !== undefined) continue;
      b.blockHash = h;
      const list = this.cached.get(h);
      if (list === undefined) this.cached.set(h, [b]);
      else list.push(b);
      this.cachedCount++;
      storedHashes.push(h);
      storedIds.push(b.blockId);
    }
    if (storedHashes.length > 0 && (this.events !== undefined || this.onEvent !== undefined)) {
      this.emit({
        type: 'stored',
        blockHashes: storedHashes,
        blockIds: storedIds,
        parentBlockHash: meta.parentBlockHash,
        tokenIds: meta.tokenIds.slice(),
        blockSize: meta.blockSize,
      });
    }
  }

  /**
   * Drop the hashes of the given blocks (e.g. a KV connector invalidated them). Blocks stay where they are
   * (in use or free); they just can no longer be hit. Returns how many hashes were dropped.
   * @throws CacheError `SLOT_OUT_OF_RANGE` for an unknown id.
   */
  evictBlocks(blockIds: readonly number[]): number {
    const blocks = blockIds.map((id) => this.getBlock(id));
    const hashes: BlockHash[] = [];
    const ids: number[] = [];
    for (const b of blocks) {
      const h = this.dropHash(b);
      if (h !== undefined) {
        hashes.push(h);
        ids.push(b.blockId);
      }
    }
    if (hashes.length > 0) this.emit({ type: 'removed', blockHashes: hashes, blockIds: ids, reason: 'evicted' });
    return hashes.length;
  }

  /**
   * Forget every cached hash. Only allowed when no block is in use (vLLM `reset_prefix_cache`);
   * returns `false` (and changes nothing) otherwise.
   */
  resetPrefixCache(): boolean {
    if (this.freeQueue.size !== this.numBlocks - 1) return false;
    for (const b of this.blocks) b.blockHash = undefined;
    this.cached.clear();
    this.cachedCount = 0;
    this.emit({ type: 'cleared' });
    return true;
  }

  /** Return and clear the buffered events (empty unless `enableEvents`). */
  takeEvents(): KvCacheEvent[] {
    if (this.events === undefined) return [];
    return this.events.splice(0, this.events.length);
  }

  /** Every (hash, block ids) pair in the prefix cache. */
  cachedEntries(): Array<[BlockHash, number[]]> {
    return [...this.cached].map(([h, list]) => [h, list.map((b) => b.blockId)]);
  }

  /**
   * Check the pool's own invariants (free queue ⇔ ref count 0, null block never queued, map ⇔ block hashes).
   * @throws CacheError `INVARIANT_VIOLATION` describing the first violation.
   */
  checkInvariants(): void {
    const fail = (msg: string): never => {
      throw new CacheError('INVARIANT_VIOLATION', `BlockPool: ${msg}`);
    };
    const queued = this.freeQueue.toArray();
    if (queued.length !== this.freeQueue.size) fail(`free queue size ${this.freeQueue.size} != walked ${queued.length}`);
    const inQueue = new Set<KvCacheBlock>();
    for (const b of queued) {
      if (b.isNull) fail('null block is in the free queue');
      if (inQueue.has(b)) fail(`block ${b.blockId} is queued twice`);
      inQueue.add(b);
      if (b.refCount !== 0) fail(`block ${b.blockId} is free but has ref count ${b.refCount}`);
    }
    let hashed = 0;
    for (const b of this.blocks) {
      if (b.isNull) {
        if (b.blockHash !== undefined) fail('null block has a hash');
        continue;
      }
      if (b.refCount < 0) fail(`block ${b.blockId} has negative ref count ${b.refCount}`);
      if (b.refCount === 0 && !inQueue.has(b)) fail(`block ${b.blockId} has ref count 0 but is not in the free queue (leak)`);
      if (b.blockHash !== undefined) {
        hashed++;
        if (!this.enableCaching) fail(`block ${b.blockId} has a hash with caching disabled`);
        if (!(this.cached.get(b.blockHash) ?? []).includes(b)) fail(`block ${b.blockId} hash missing from the map`);
      }
    }
    let mapped = 0;
    for (const [h, list] of this.cached) {
      if (list.length === 0) fail(`empty list for hash ${h}`);
      for (const b of list) {
        mapped++;
        if (b.blockHash !== h) fail(`map lists block ${b.blockId} under ${h} but the block holds ${b.blockHash}`);
      }
    }
    if (mapped !== hashed || mapped !== this.cachedCount) {
      fail(`cached count mismatch: map ${mapped}, blocks ${hashed}, counter ${this.cachedCount}`);
    }
  }

  private emit(event: KvCacheEvent): void {
    this.events?.push(event);
    this.onEvent?.(event);
  }
}
