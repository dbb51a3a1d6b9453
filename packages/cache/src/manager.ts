import type { KvCacheBlock } from './block.js';
import { BlockPool, type KvCacheEvent } from './block-pool.js';
import { CacheError, checkInt, checkPowerOfTwo, describe } from './errors.js';
import {
  BlockHasher,
  checkExtraKey,
  checkTokenId,
  type BlockHash,
  type ExtraKey,
  type HashFunction,
  kvFormatDtypeId,
  type KvFormatSource,
} from './hash.js';
import { RecentHitRate } from './metrics.js';

/** Caller-chosen id of a sequence (a request, or one sample/beam of it). */
export type SequenceId = string | number;

/**
 * Where a sequence stands:
 * - `'waiting'`: added, no blocks yet;
 * - `'running'`: holds blocks (after a successful {@link KvCacheManager.allocate});
 * - `'preempted'`: its blocks were freed for recompute; the next `allocate` re-admits it from position 0.
 */
export type SequenceStatus = 'waiting' | 'running' | 'preempted';

/** Options of {@link KvCacheManager}. */
export interface KvCacheManagerOptions {
  /** Total blocks including the reserved null block 0 (so `numBlocks - 1` are usable). Integer >= 2. */
  numBlocks: number;
  /** Tokens per block, a power of two. Default 16 (vLLM `DEFAULT_BLOCK_SIZE`). */
  blockSize?: number;
  /** Reuse cached full blocks across sequences. Default `true` (as vLLM V1). */
  enablePrefixCaching?: boolean;
  /**
   * KV storage format mixed into every block hash: its `dtype` and `scaleVersion` are read at hashing time.
   * Pass the `KvCacheStorage` itself. Default `{ dtype: 'auto', scaleVersion: 0 }`.
   */
  format?: KvFormatSource;
  /** Root-hash seed for reproducible hashes; omitted: random per manager (see {@link BlockHasher}). */
  hashSeed?: string;
  /** Digest function for block hashes. Default: SHA-256 (pure TypeScript). */
  hashFn?: HashFunction;
  /** Window of the recent prefix-cache hit rate, in requests. Default 1000 (vLLM). */
  maxRecentRequests?: number;
  /** Buffer {@link KvCacheEvent}s for {@link KvCacheManager.takeEvents}. Default `false`. */
  enableEvents?: boolean;
  /** Called synchronously for every {@link KvCacheEvent}. */
  onEvent?: (event: KvCacheEvent) => void;
}

/** Options of {@link KvCacheManager.addSequence}. */
export interface AddSequenceOptions {
  /** Salt mixed into the hash of the first block only (so it isolates the whole chain), as vLLM's `cache_salt`. */
  cacheSalt?: string;
  /** Keys mixed into every block's hash, e.g. the LoRA adapter id. */
  extraKeys?: readonly ExtraKey[];
  /** Per-block keys (e.g. multimodal item ids overlapping block `blockIndex`); appended after `extraKeys`. */
  blockExtraKeys?: (blockIndex: number) => readonly ExtraKey[] | undefined;
  /** Look up the prefix cache on admission. Default `true` (ignored when prefix caching is off). */
  usePrefixCache?: boolean;
}

/** Options of {@link KvCacheManager.allocate}. */
export interface AllocateOptions {
  /**
   * Tokens to compute in this step, starting at the first uncomputed position. Default: all known tokens
   * not yet computed (whole prefill on admission, 1 per decode step after {@link KvCacheManager.appendTokens}).
   * Smaller values give chunked prefill.
   */
  numNewTokens?: number;
  /** Extra slots reserved after the new tokens (speculative-decoding drafts); not hashed, not counted as computed. Default 0. */
  numLookaheadTokens?: number;
}

/** Copy the whole of block `src` into block `dst` (every layer, K and V) before this step's writes. */
export interface BlockCopy {
  readonly src: number;
  readonly dst: number;
}

/** What a successful {@link KvCacheManager.allocate} did. */
export interface KvAllocation {
  readonly seqId: SequenceId;
  /** Tokens found in the prefix cache on this admission (0 for a running sequence). */
  readonly numCachedTokens: number;
  /** Position of the first token to compute in this step. */
  readonly firstPosition: number;
  /** Tokens to compute in this step (`slotMapping.length`). */
  readonly numNewTokens: number;
  /** Block ids appended to the block table (new capacity). */
  readonly newBlockIds: readonly number[];
  /** Copy-on-write copies the engine must perform before writing (a shared block was replaced by a private one). */
  readonly copies: readonly BlockCopy[];
  /** Slot (`blockId * blockSize + offset`) for each position `firstPosition + i`, i < numNewTokens. */
  readonly slotMapping: Int32Array;
}

/** Read-only snapshot of one sequence. */
export interface SequenceInfo {
  readonly id: SequenceId;
  readonly status: SequenceStatus;
  /** Known tokens (prompt + appended). */
  readonly numTokens: number;
  /** Tokens with a slot assigned (KV written, or scheduled in the current step). */
  readonly numComputedTokens: number;
  /** Blocks in the block table (including lookahead capacity). */
  readonly numBlocks: number;
  /** Prefix-cache hit of the latest admission, in tokens. */
  readonly numCachedTokens: number;
  /** Times this sequence was preempted. */
  readonly numPreemptions: number;
}

/** Counters and gauges of a {@link KvCacheManager} (vLLM V1 metric names in brackets). */
export interface KvCacheMetrics {
  /** Usable blocks (`numBlocks - 1`, without the null block). */
  readonly numUsableBlocks: number;
  /** Blocks in the free queue (cached-but-free ones included). */
  readonly numFreeBlocks: number;
  /** Fraction of usable blocks in use, 0–1 [`vllm:kv_cache_usage_perc`]. */
  readonly usage: number;
  /** Blocks currently holding a prefix-cache hash. */
  readonly numCachedBlocks: number;
  /** Tokens looked up in the prefix cache, lifetime [`vllm:prefix_cache_queries`]. */
  readonly prefixCacheQueries: number;
  /** Tokens found, lifetime [`vllm:prefix_cache_hits`]. */
  readonly prefixCacheHits: number;
  /** hits / queries over the last `maxRecentRequests` admissions (0 when none). */
  readonly recentHitRate: number;
  /** Preemptions so far [`vllm:num_preemptions`]. */
  readonly numPreemptions: number;
  /** Cached blocks whose hash was dropped (reallocated or explicitly evicted). */
  readonly numEvictions: number;
  /** Sequences held (any status). */
  readonly numSequences: number;
  /** Sequences with status `'running'`. */
  readonly numRunning: number;
  /** Sequences ended by {@link KvCacheManager.free}. */
  readonly numFinished: number;
  /** Sequences ended by {@link KvCacheManager.abort}. */
  readonly numAborted: number;
}

interface SeqState {
  readonly id: SequenceId;
  status: SequenceStatus;
  readonly tokens: number[];
  numComputed: number;
  blocks: KvCacheBlock[];
  /** Hashes of full blocks of known tokens, computed lazily; valid for `hashFormat`. */
  hashes: BlockHash[];
  hashFormat: string;
  /** Table prefix already registered in the prefix cache. */
  numCachedBlocks: number;
  /** KV format (dtype + scale version) current when the sequence was admitted: its KV was written under it. */
  kvFormat: string;
  numCachedTokens: number;
  readonly cacheSalt: string | undefined;
  readonly extraKeys: readonly ExtraKey[];
  readonly blockExtraKeys: ((blockIndex: number) => readonly ExtraKey[] | undefined) | undefined;
  readonly usePrefixCache: boolean;
  numPreemptions: number;
}

type HashKeys = Pick<SeqState, 'cacheSalt' | 'extraKeys' | 'blockExtraKeys'>;

interface Plan {
  readonly admitting: boolean;
  readonly hitBlocks: KvCacheBlock[];
  readonly start: number;
  readonly numNew: number;
  readonly numNewBlocks: number;
  readonly cowIndices: number[];
  readonly blocksNeeded: number;
}

const MAX_FINISHED_IDS = 4096;

/** Validated copy of token ids (integers in [0, 2^32)). @throws CacheError `INVALID_ARGUMENT` naming the index. */
function copyTokenIds(tokenIds: ArrayLike<number>): number[] {
  const n = tokenIds.length;
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const t = tokenIds[i]!;
    if (!(t >= 0 && t <= 0xffffffff && Number.isInteger(t))) checkTokenId(`tokenIds[${i}]`, t);
    out[i] = t;
  }
  return out;
}

/**
 * Paged KV-cache bookkeeping for many sequences (vLLM V1 `KVCacheManager` over a {@link BlockPool}):
 * block tables, slot mapping, prefill/decode/lookahead allocation, prefix caching, copy-on-write forks,
 * recompute preemption, metrics and events. It never touches KV data; the engine does the writes and the
 * {@link BlockCopy}s it reports. It is the mechanism only: it answers whether a sequence can be given slots
 * ({@link KvCacheManager.canAllocate}, {@link KvCacheManager.allocate} returning `null`) and preempts the
 * sequence it is told to; which sequence to preempt (the policy) is the caller's scheduler's decision, as in
 * vLLM V1 (`Scheduler.schedule` picks the victim, `KVCacheManager` frees its blocks).
 *
 * Typical step: `addSequence` → `allocate` (prefill, with prefix hit) → write KV at `slotMapping` →
 * `appendTokens([sampled])` → `allocate` (decode, 1 token) → … → `free`.
 * @see docs/spec/vllm-fp8-kv-cache.md §6
 */
export class KvCacheManager {
  /** Tokens per block. */
  readonly blockSize: number;
  /** Whether prefix caching is on. */
  readonly enablePrefixCaching: boolean;
  /** The underlying pool. Read it freely; mutating it directly bypasses the sequence bookkeeping. */
  readonly pool: BlockPool;
  /** The block hasher (its `rootHash` identifies this manager's hash space). */
  readonly hasher: BlockHasher;
  private readonly format: KvFormatSource;
  private readonly eventsOn: boolean;
  private readonly seqs = new Map<SequenceId, SeqState>();
  private readonly finishedIds = new Set<SequenceId>();
  private readonly recent: RecentHitRate;
  private queries = 0;
  private hits = 0;
  private preemptions = 0;
  private finished = 0;
  private aborted = 0;

  constructor(opts: KvCacheManagerOptions) {
    if (typeof opts !== 'object' || opts === null) {
      throw new CacheError('INVALID_ARGUMENT', `KvCacheManager options must be an object, got ${describe(opts)}`);
    }
    this.blockSize = checkPowerOfTwo('blockSize', opts.blockSize ?? 16);
    checkInt('numBlocks', opts.numBlocks, 2);
    if (opts.numBlocks * this.blockSize > 2 ** 31) {
      throw new CacheError(
        'INVALID_ARGUMENT',
        `numBlocks * blockSize must fit int32 slots (<= 2^31), got ${opts.numBlocks} * ${this.blockSize}`,
      );
    }
    this.enablePrefixCaching = opts.enablePrefixCaching ?? true;
    this.eventsOn = opts.enableEvents === true || opts.onEvent !== undefined;
    this.pool = new BlockPool({
      numBlocks: opts.numBlocks,
      enableCaching: this.enablePrefixCaching,
      enableEvents: opts.enableEvents ?? false,
      ...(opts.onEvent !== undefined ? { onEvent: opts.onEvent } : {}),
    });
    const format = opts.format ?? { dtype: 'auto', scaleVersion: 0 };
    if (typeof format !== 'object' || format === null || typeof format.dtype !== 'string') {
      throw new CacheError('INVALID_ARGUMENT', `format must be an object with a string dtype, got ${describe(format)}`);
    }
    this.format = format;
    this.hasher = new BlockHasher({
      ...(opts.hashSeed !== undefined ? { seed: opts.hashSeed } : {}),
      ...(opts.hashFn !== undefined ? { hashFn: opts.hashFn } : {}),
    });
    this.recent = new RecentHitRate(checkInt('maxRecentRequests', opts.maxRecentRequests ?? 1000, 1));
  }

  // ---------------------------------------------------------------- sequences

  /**
   * Register a sequence with its prompt. No blocks are taken until {@link allocate}.
   * @throws CacheError `DUPLICATE_SEQUENCE`, `INVALID_ARGUMENT` (empty prompt, bad token id or option).
   */
  addSequence(id: SequenceId, tokenIds: ArrayLike<number>, opts: AddSequenceOptions = {}): void {
    this.checkNewId(id);
    if (tokenIds === null || typeof tokenIds !== 'object' || typeof tokenIds.length !== 'number') {
      throw new CacheError('INVALID_ARGUMENT', `tokenIds must be an array of token ids, got ${describe(tokenIds)}`);
    }
    if (tokenIds.length === 0) throw new CacheError('INVALID_ARGUMENT', `tokenIds of sequence ${describe(id)} is empty`);
    const tokens = copyTokenIds(tokenIds);
    if (opts.cacheSalt !== undefined && typeof opts.cacheSalt !== 'string') {
      throw new CacheError('INVALID_ARGUMENT', `cacheSalt must be a string, got ${describe(opts.cacheSalt)}`);
    }
    const extraKeys = (opts.extraKeys ?? []).map((k, i) => checkExtraKey(`extraKeys[${i}]`, k));
    if (opts.blockExtraKeys !== undefined && typeof opts.blockExtraKeys !== 'function') {
      throw new CacheError('INVALID_ARGUMENT', `blockExtraKeys must be a function, got ${describe(opts.blockExtraKeys)}`);
    }
    this.seqs.set(id, {
      id,
      status: 'waiting',
      tokens,
      numComputed: 0,
      blocks: [],
      hashes: [],
      hashFormat: '',
      numCachedBlocks: 0,
      kvFormat: '',
      numCachedTokens: 0,
      cacheSalt: opts.cacheSalt,
      extraKeys,
      blockExtraKeys: opts.blockExtraKeys,
      usePrefixCache: opts.usePrefixCache ?? true,
      numPreemptions: 0,
    });
  }

  /** True when the manager holds sequence `id`. */
  hasSequence(id: SequenceId): boolean {
    return this.seqs.has(id);
  }

  /** Ids of all held sequences, in insertion order. */
  sequenceIds(): SequenceId[] {
    return [...this.seqs.keys()];
  }

  /** Snapshot of sequence `id`. @throws CacheError `UNKNOWN_SEQUENCE`. */
  getSequence(id: SequenceId): SequenceInfo {
    return this.info(this.seq(id));
  }

  /** Copy of the sequence's known token ids. @throws CacheError `UNKNOWN_SEQUENCE`. */
  tokenIds(id: SequenceId): number[] {
    return this.seq(id).tokens.slice();
  }

  /**
   * Append generated (or otherwise new) tokens to a sequence; their KV is computed by a later {@link allocate}.
   * @throws CacheError `UNKNOWN_SEQUENCE`, `INVALID_ARGUMENT` (bad token id).
   */
  appendTokens(id: SequenceId, tokenIds: ArrayLike<number>): void {
    const s = this.seq(id);
    if (tokenIds === null || typeof tokenIds !== 'object' || typeof tokenIds.length !== 'number') {
      throw new CacheError('INVALID_ARGUMENT', `tokenIds must be an array of token ids, got ${describe(tokenIds)}`);
    }
    for (const t of copyTokenIds(tokenIds)) s.tokens.push(t);
  }

  /** The sequence's block table (block ids, position `p` lives in block `table[p / blockSize]`). */
  blockTable(id: SequenceId): Int32Array {
    const s = this.seq(id);
    const out = new Int32Array(s.blocks.length);
    for (let i = 0; i < s.blocks.length; i++) out[i] = s.blocks[i]!.blockId;
    return out;
  }

  /**
   * Slots for positions `[start, start + count)` of a sequence: `blockId * blockSize + position % blockSize`.
   * @throws CacheError `UNKNOWN_SEQUENCE`, `SLOT_OUT_OF_RANGE` when a position has no block.
   */
  slotMapping(id: SequenceId, start: number, count: number): Int32Array {
    const s = this.seq(id);
    checkInt('start', start, 0);
    checkInt('count', count, 0);
    const capacity = s.blocks.length * this.blockSize;
    if (start + count > capacity) {
      throw new CacheError(
        'SLOT_OUT_OF_RANGE',
        `positions [${start}, ${start + count}) exceed sequence ${describe(id)}'s ${capacity} allocated slots`,
      );
    }
    return this.slots(s, start, count);
  }

  // ---------------------------------------------------------------- prefix cache

  /**
   * Longest cached prefix for `tokenIds` (whole blocks only, and never the last token, which must be
   * computed to produce logits). Pure query: no ref counts or metrics change.
   * @returns the cached block ids and the number of tokens they cover.
   */
  findCachedPrefix(
    tokenIds: ArrayLike<number>,
    opts: Pick<AddSequenceOptions, 'cacheSalt' | 'extraKeys' | 'blockExtraKeys'> = {},
  ): { blockIds: number[]; numCachedTokens: number } {
    if (tokenIds === null || typeof tokenIds !== 'object' || typeof tokenIds.length !== 'number') {
      throw new CacheError('INVALID_ARGUMENT', `tokenIds must be an array of token ids, got ${describe(tokenIds)}`);
    }
    const tokens = copyTokenIds(tokenIds);
    if (opts.cacheSalt !== undefined && typeof opts.cacheSalt !== 'string') {
      throw new CacheError('INVALID_ARGUMENT', `cacheSalt must be a string, got ${describe(opts.cacheSalt)}`);
    }
    const keys: HashKeys = {
      cacheSalt: opts.cacheSalt,
      extraKeys: (opts.extraKeys ?? []).map((k, i) => checkExtraKey(`extraKeys[${i}]`, k)),
      blockExtraKeys: opts.blockExtraKeys,
    };
    const blockIds: number[] = [];
    if (this.enablePrefixCaching) {
      const maxHit = Math.floor((tokens.length - 1) / this.blockSize);
      let parent: BlockHash | undefined;
      for (let i = 0; i < maxHit; i++) {
        parent = this.hashBlockAt(tokens, i, parent, keys);
        const b = this.pool.getCachedBlock(parent);
        if (b === undefined) break;
        blockIds.push(b.blockId);
      }
    }
    return { blockIds, numCachedTokens: blockIds.length * this.blockSize };
  }

  /**
   * What an external KV tier could add to a waiting sequence's prefix hit: the chained hashes of the full blocks a
   * hit may cover (never the block holding the last token) and how many of them the pool holds now, consecutively
   * from block 0. Empty for a running sequence, or when prefix caching is off for it. Pure query.
   * @throws CacheError `UNKNOWN_SEQUENCE`.
   */
  prefixBlockHashes(id: SequenceId): { hashes: BlockHash[]; numCachedBlocks: number } {
    const s = this.seq(id);
    if (s.status === 'running' || !this.enablePrefixCaching || !s.usePrefixCache) return { hashes: [], numCachedBlocks: 0 };
    const maxHit = Math.floor((s.tokens.length - 1) / this.blockSize);
    this.ensureHashes(s, maxHit);
    let n = 0;
    while (n < maxHit && this.pool.getCachedBlock(s.hashes[n]!) !== undefined) n++;
    return { hashes: s.hashes.slice(0, maxHit), numCachedBlocks: n };
  }

  /**
   * Adopt blocks whose KV comes from outside the pool (a host-memory or shared tier) into the prefix cache, for a
   * waiting sequence: blocks `from .. from + hashes.length - 1` of its chain. Fresh blocks are taken from the free
   * queue (the sequence's cached blocks `0 .. from - 1` are held meanwhile so they cannot be evicted), `write`
   * fills them, then they are registered under `hashes` and released: free but cached, so the sequence's admission
   * finds them as an ordinary prefix hit. Fewer blocks are adopted when fewer are free.
   *
   * Nothing is adopted (0 is returned) when the sequence is no longer waiting, its cached prefix is no longer
   * `from` blocks long, or `hashes` are not its hashes under the current KV format (the scales changed since the
   * lookup): the data would not match.
   * @param write  Fills the given block ids (in chain order) with the KV of the first `blockIds.length` hashes.
   * @returns the number of blocks adopted
   * @throws CacheError `UNKNOWN_SEQUENCE`; whatever `write` throws (the taken blocks are released uncached first).
   */
  importBlocks(id: SequenceId, from: number, hashes: readonly BlockHash[], write: (blockIds: readonly number[]) => void): number {
    const s = this.seq(id);
    checkInt('from', from, 0);
    if (s.status === 'running' || !this.enablePrefixCaching || !s.usePrefixCache || hashes.length === 0) return 0;
    const maxHit = Math.floor((s.tokens.length - 1) / this.blockSize);
    if (from + hashes.length > maxHit) return 0;
    this.ensureHashes(s, maxHit);
    for (let i = 0; i < hashes.length; i++) if (s.hashes[from + i] !== hashes[i]) return 0;
    const held: KvCacheBlock[] = [];
    for (let i = 0; i < from; i++) {
      const b = this.pool.getCachedBlock(s.hashes[i]!);
      if (b === undefined) return 0;
      held.push(b);
    }
    this.pool.touch(held);
    const n = Math.min(hashes.length, this.pool.numFreeBlocks);
    const fresh = this.pool.getNewBlocks(n);
    try {
      write(fresh.map((b) => b.blockId));
    } catch (error) {
      this.pool.freeBlocks([...fresh.reverse(), ...held.reverse()]);
      throw error;
    }
    this.pool.cacheFullBlocks(fresh, hashes.slice(0, n), {
      parentBlockHash: from > 0 ? s.hashes[from - 1]! : null,
      tokenIds: this.eventsOn ? s.tokens.slice(from * this.blockSize, (from + n) * this.blockSize) : [],
      blockSize: this.blockSize,
    });
    // Tail first, so the end of the chain is evicted before its beginning.
    this.pool.freeBlocks([...fresh.slice().reverse(), ...held.slice().reverse()]);
    return n;
  }

  /**
   * The hash of block `index` of a sequence's table when that block is full, computed and registered in the prefix
   * cache under the sequence's own chain (so its KV may be shared under that hash), and the KV format has not changed
   * since the sequence was admitted; otherwise `undefined`.
   * @throws CacheError `UNKNOWN_SEQUENCE`.
   */
  cachedBlockHash(id: SequenceId, index: number): BlockHash | undefined {
    const s = this.seq(id);
    const fk = this.formatKey();
    if (!Number.isInteger(index) || index < 0 || index >= s.numCachedBlocks || s.hashFormat !== s.kvFormat || s.kvFormat !== fk) return undefined;
    const h = s.hashes[index];
    return h !== undefined && s.blocks[index]?.blockHash === h ? h : undefined;
  }

  /**
   * Drop every cached hash and reset the recent hit-rate window. Only when no block is in use
   * (vLLM `reset_prefix_cache`); returns `false` and changes nothing otherwise.
   */
  resetPrefixCache(): boolean {
    if (!this.pool.resetPrefixCache()) return false;
    for (const s of this.seqs.values()) s.numCachedBlocks = 0;
    this.recent.reset();
    return true;
  }

  // ---------------------------------------------------------------- allocation

  /**
   * True when {@link allocate} with the same arguments would succeed now.
   * @throws like {@link allocate} for bad arguments.
   */
  canAllocate(id: SequenceId, opts: AllocateOptions = {}): boolean {
    const s = this.seq(id);
    return this.plan(s, opts).blocksNeeded <= this.pool.numFreeBlocks;
  }

  /**
   * Give a sequence slots for its next tokens.
   *
   * On admission (status `'waiting'`/`'preempted'`) the longest cached prefix is taken first (hit blocks are
   * touched, their tokens count as computed) and the rest of the prompt is scheduled. For a running sequence
   * the next uncomputed tokens are scheduled (1 per decode step). Blocks are appended as needed, plus
   * `numLookaheadTokens` spare slots. Any shared block in the write range is replaced by a private copy
   * (copy-on-write; see `copies`). Newly full blocks are registered in the prefix cache.
   *
   * @returns the allocation, or `null` when there are not enough free blocks; nothing changes then
   *   (the caller's scheduler then decides whom to {@link preempt}; the policy is not the manager's).
   * @throws CacheError `UNKNOWN_SEQUENCE`; `INVALID_ARGUMENT` when `numNewTokens` exceeds the uncomputed tokens.
   */
  allocate(id: SequenceId, opts: AllocateOptions = {}): KvAllocation | null {
    const s = this.seq(id);
    const p = this.plan(s, opts);
    if (p.blocksNeeded > this.pool.numFreeBlocks) return null;

    let numCachedTokens = 0;
    if (p.admitting) {
      this.pool.touch(p.hitBlocks);
      s.blocks = p.hitBlocks.slice();
      s.numComputed = p.start;
      s.numCachedBlocks = p.hitBlocks.length;
      numCachedTokens = p.start;
      s.numCachedTokens = numCachedTokens;
      if (this.enablePrefixCaching && s.usePrefixCache) {
        this.queries += s.tokens.length;
        this.hits += numCachedTokens;
        this.recent.record(s.tokens.length, numCachedTokens);
      }
      s.status = 'running';
      s.kvFormat = this.formatKey();
    }

    const copies: BlockCopy[] = [];
    if (p.cowIndices.length > 0) {
      const fresh = this.pool.getNewBlocks(p.cowIndices.length);
      const released: KvCacheBlock[] = [];
      for (let k = 0; k < p.cowIndices.length; k++) {
        const i = p.cowIndices[k]!;
        const old = s.blocks[i]!;
        const dst = fresh[k]!;
        s.blocks[i] = dst;
        if (i * this.blockSize < s.numComputed) copies.push({ src: old.blockId, dst: dst.blockId });
        released.push(old);
      }
      this.pool.freeBlocks(released);
    }
    const newBlocks = this.pool.getNewBlocks(p.numNewBlocks);
    for (const b of newBlocks) s.blocks.push(b);

    const slotMapping = this.slots(s, p.start, p.numNew);
    s.numComputed = p.start + p.numNew;
    this.cacheFullBlocks(s);
    return {
      seqId: id,
      numCachedTokens,
      firstPosition: p.start,
      numNewTokens: p.numNew,
      newBlockIds: newBlocks.map((b) => b.blockId),
      copies,
      slotMapping,
    };
  }

  /**
   * Recompute preemption: free the sequence's blocks (tail first), forget its computed tokens, keep its
   * tokens (prompt + generated), status `'preempted'`. The next {@link allocate} re-admits it (with a prefix
   * hit on whatever is still cached).
   * @throws CacheError `UNKNOWN_SEQUENCE`; `INVALID_STATE` unless it is running.
   */
  preempt(id: SequenceId): void {
    const s = this.seq(id);
    if (s.status !== 'running') {
      throw new CacheError('INVALID_STATE', `sequence ${describe(id)} cannot be preempted: it is ${s.status}`);
    }
    this.releaseBlocks(s);
    s.status = 'preempted';
    s.numPreemptions++;
    this.preemptions++;
  }

  /**
   * Copy-on-write fork (parallel sampling n > 1, beam search): `childId` gets the parent's tokens and shares
   * every block holding computed tokens (ref counts + 1). Whichever sequence first writes into a shared block
   * gets a private copy (see {@link KvAllocation.copies}).
   * @throws CacheError `UNKNOWN_SEQUENCE`, `DUPLICATE_SEQUENCE`, `INVALID_STATE` (parent not running).
   */
  fork(parentId: SequenceId, childId: SequenceId): void {
    const p = this.seq(parentId);
    this.checkNewId(childId);
    if (p.status !== 'running') {
      throw new CacheError('INVALID_STATE', `sequence ${describe(parentId)} cannot be forked: it is ${p.status}`);
    }
    const numShared = Math.ceil(p.numComputed / this.blockSize);
    const shared = p.blocks.slice(0, numShared);
    this.pool.share(shared);
    this.seqs.set(childId, {
      id: childId,
      status: 'running',
      tokens: p.tokens.slice(),
      numComputed: p.numComputed,
      blocks: shared,
      hashes: p.hashes.slice(),
      hashFormat: p.hashFormat,
      numCachedBlocks: Math.min(p.numCachedBlocks, numShared),
      kvFormat: p.kvFormat,
      numCachedTokens: p.numCachedTokens,
      cacheSalt: p.cacheSalt,
      extraKeys: p.extraKeys,
      blockExtraKeys: p.blockExtraKeys,
      usePrefixCache: p.usePrefixCache,
      numPreemptions: 0,
    });
  }

  /**
   * A sequence finished: free its blocks (tail first, so chain tails are evicted first) and forget it.
   * Its full blocks stay in the prefix cache until reallocated.
   * @throws CacheError `DOUBLE_FREE` when already freed, `UNKNOWN_SEQUENCE` when never known.
   */
  free(id: SequenceId): void {
    this.end(id, 'free');
    this.finished++;
  }

  /** Like {@link free}, for a cancelled sequence (any status); counted separately in metrics. */
  abort(id: SequenceId): void {
    this.end(id, 'abort');
    this.aborted++;
  }

  // ---------------------------------------------------------------- metrics, events, checks

  /** Current metrics. */
  metrics(): KvCacheMetrics {
    let running = 0;
    for (const s of this.seqs.values()) if (s.status === 'running') running++;
    return {
      numUsableBlocks: this.pool.numBlocks - 1,
      numFreeBlocks: this.pool.numFreeBlocks,
      usage: this.pool.usage(),
      numCachedBlocks: this.pool.numCachedBlocks,
      prefixCacheQueries: this.queries,
      prefixCacheHits: this.hits,
      recentHitRate: this.recent.hitRate,
      numPreemptions: this.preemptions,
      numEvictions: this.pool.numEvictions,
      numSequences: this.seqs.size,
      numRunning: running,
      numFinished: this.finished,
      numAborted: this.aborted,
    };
  }

  /** Return and clear buffered events (needs `enableEvents`). */
  takeEvents(): KvCacheEvent[] {
    return this.pool.takeEvents();
  }

  /**
   * Check every bookkeeping invariant: ref count of each block = number of table references; no block both
   * free and referenced; the null block never in a table; tables cover the computed tokens; the hash map
   * matches block hashes; cached table blocks carry the sequence's hash for that position.
   * @throws CacheError `INVARIANT_VIOLATION` describing the first violation.
   */
  checkInvariants(): void {
    const fail = (msg: string): never => {
      throw new CacheError('INVARIANT_VIOLATION', `KvCacheManager: ${msg}`);
    };
    this.pool.checkInvariants();
    const refs = new Map<number, number>();
    for (const s of this.seqs.values()) {
      const inTable = new Set<number>();
      for (const b of s.blocks) {
        if (b.isNull) fail(`sequence ${describe(s.id)} holds the null block`);
        if (inTable.has(b.blockId)) fail(`sequence ${describe(s.id)} holds block ${b.blockId} twice`);
        inTable.add(b.blockId);
        refs.set(b.blockId, (refs.get(b.blockId) ?? 0) + 1);
      }
      if (s.status !== 'running' && (s.blocks.length > 0 || s.numComputed > 0)) {
        fail(`sequence ${describe(s.id)} is ${s.status} but holds ${s.blocks.length} blocks / ${s.numComputed} computed tokens`);
      }
      if (s.numComputed > s.tokens.length) fail(`sequence ${describe(s.id)} computed ${s.numComputed} > ${s.tokens.length} tokens`);
      if (s.blocks.length * this.blockSize < s.numComputed) {
        fail(`sequence ${describe(s.id)} has ${s.blocks.length} blocks for ${s.numComputed} computed tokens`);
      }
      if (s.numCachedBlocks > Math.floor(s.numComputed / this.blockSize)) {
        fail(`sequence ${describe(s.id)} cached ${s.numCachedBlocks} blocks beyond its full computed blocks`);
      }
      if (s.status === 'running' && s.hashFormat === s.kvFormat) {
        for (let i = 0; i < s.numCachedBlocks && i < s.hashes.length; i++) {
          const h = s.blocks[i]!.blockHash;
          if (h !== undefined && h !== s.hashes[i]) fail(`sequence ${describe(s.id)} block ${i} holds a foreign hash`);
        }
      }
    }
    for (let id = 1; id < this.pool.numBlocks; id++) {
      const b = this.pool.getBlock(id);
      const r = refs.get(id) ?? 0;
      if (b.refCount !== r) fail(`block ${id} has ref count ${b.refCount} but ${r} table references`);
    }
  }

  // ---------------------------------------------------------------- internals

  private seq(id: SequenceId): SeqState {
    const s = this.seqs.get(id);
    if (s === undefined) {
      if (this.finishedIds.has(id)) throw new CacheError('DOUBLE_FREE', `sequence ${describe(id)} was already freed`);
      throw new CacheError('UNKNOWN_SEQUENCE', `unknown sequence ${describe(id)}`);
    }
    return s;
  }

  private checkNewId(id: SequenceId): void {
    if (!((typeof id === 'string') || (typeof id === 'number' && Number.isFinite(id)))) {
      throw new CacheError('INVALID_ARGUMENT', `sequence id must be a string or a finite number, got ${describe(id)}`);
    }
    if (this.seqs.has(id)) throw new CacheError('DUPLICATE_SEQUENCE', `sequence ${describe(id)} already exists`);
    this.finishedIds.delete(id);
  }

  private info(s: SeqState): SequenceInfo {
    return {
      id: s.id,
      status: s.status,
      numTokens: s.tokens.length,
      numComputedTokens: s.numComputed,
      numBlocks: s.blocks.length,
      numCachedTokens: s.numCachedTokens,
      numPreemptions: s.numPreemptions,
    };
  }

  private end(id: SequenceId, how: 'free' | 'abort'): void {
    const s = this.seqs.get(id);
    if (s === undefined) {
      if (this.finishedIds.has(id)) throw new CacheError('DOUBLE_FREE', `sequence ${describe(id)} was already ${how === 'free' ? 'freed' : 'aborted'}`);
      throw new CacheError('UNKNOWN_SEQUENCE', `cannot ${how} unknown sequence ${describe(id)}`);
    }
    this.releaseBlocks(s);
    this.seqs.delete(id);
    this.finishedIds.add(id);
    if (this.finishedIds.size > MAX_FINISHED_IDS) {
      const oldest = this.finishedIds.values().next().value as SequenceId;
      this.finishedIds.delete(oldest);
    }
  }

  private releaseBlocks(s: SeqState): void {
    if (s.blocks.length > 0) this.pool.freeBlocks(s.blocks.slice().reverse());
    s.blocks = [];
    s.numComputed = 0;
    s.numCachedBlocks = 0;
  }

  private formatKey(): string {
    return `${kvFormatDtypeId(this.format)}\u0000${this.format.scaleVersion}`;
  }

  private keysFor(keys: HashKeys, i: number): ExtraKey[] | undefined {
    if (keys.blockExtraKeys === undefined) return keys.extraKeys.length > 0 ? (keys.extraKeys as ExtraKey[]) : undefined;
    const out: ExtraKey[] = [...keys.extraKeys];
    const more = keys.blockExtraKeys(i);
    if (more !== undefined) {
      if (!Array.isArray(more)) {
        throw new CacheError('INVALID_ARGUMENT', `blockExtraKeys(${i}) must return an array, got ${describe(more)}`);
      }
      for (let k = 0; k < more.length; k++) out.push(checkExtraKey(`blockExtraKeys(${i})[${k}]`, more[k]));
    }
    return out.length > 0 ? out : undefined;
  }

  private hashBlockAt(
    tokens: readonly number[],
    i: number,
    parent: BlockHash | undefined,
    keys: HashKeys,
  ): BlockHash {
    const bs = this.blockSize;
    return this.hasher.hashBlock(
      parent,
      this.format,
      tokens,
      i * bs,
      (i + 1) * bs,
      this.keysFor(keys, i),
      i === 0 ? keys.cacheSalt : undefined,
    );
  }

  /** Make sure `s.hashes` covers the first `n` full blocks (n <= full blocks of known tokens). */
  private ensureHashes(s: SeqState, n: number): void {
    const fk = this.formatKey();
    if (s.hashFormat !== fk) {
      s.hashes = [];
      s.hashFormat = fk;
    }
    for (let i = s.hashes.length; i < n; i++) {
      s.hashes.push(this.hashBlockAt(s.tokens, i, i > 0 ? s.hashes[i - 1] : undefined, s));
    }
  }

  private plan(s: SeqState, opts: AllocateOptions): Plan {
    if (typeof opts !== 'object' || opts === null) {
      throw new CacheError('INVALID_ARGUMENT', `allocate options must be an object, got ${describe(opts)}`);
    }
    const bs = this.blockSize;
    const admitting = s.status !== 'running';
    const hitBlocks: KvCacheBlock[] = [];
    if (admitting && this.enablePrefixCaching && s.usePrefixCache) {
      const maxHit = Math.floor((s.tokens.length - 1) / bs);
      this.ensureHashes(s, maxHit);
      for (let i = 0; i < maxHit; i++) {
        const b = this.pool.getCachedBlock(s.hashes[i]!);
        if (b === undefined) break;
        hitBlocks.push(b);
      }
    }
    const start = admitting ? hitBlocks.length * bs : s.numComputed;
    const remaining = s.tokens.length - start;
    const numNew =
      opts.numNewTokens === undefined ? remaining : checkInt('numNewTokens', opts.numNewTokens, 0, remaining);
    const lookahead = checkInt('numLookaheadTokens', opts.numLookaheadTokens ?? 0, 0, 2 ** 31 - 1);
    const end = start + numNew + lookahead;
    const tableLen = admitting ? hitBlocks.length : s.blocks.length;
    const required = Math.ceil(end / bs);
    const numNewBlocks = Math.max(0, required - tableLen);
    const cowIndices: number[] = [];
    if (!admitting && end > start) {
      const last = Math.min(tableLen, required);
      for (let i = Math.floor(start / bs); i < last; i++) {
        if (s.blocks[i]!.refCount > 1) cowIndices.push(i);
      }
    }
    let evictableHits = 0;
    for (const b of hitBlocks) if (b.refCount === 0) evictableHits++;
    return {
      admitting,
      hitBlocks,
      start,
      numNew,
      numNewBlocks,
      cowIndices,
      blocksNeeded: numNewBlocks + cowIndices.length + evictableHits,
    };
  }

  private slots(s: SeqState, start: number, count: number): Int32Array {
    const bs = this.blockSize;
    const out = new Int32Array(count);
    for (let k = 0; k < count; k++) {
      const p = start + k;
      out[k] = s.blocks[Math.floor(p / bs)]!.blockId * bs + (p % bs);
    }
    return out;
  }

  private cacheFullBlocks(s: SeqState): void {
    if (!this.enablePrefixCaching) return;
    // NOTE: once the format (scales) changed under a running sequence, its KV mixes old and new scales:
    // none of its later blocks may be cached (they would be hit under the new format).
    if (s.kvFormat !== this.formatKey()) return;
    const numFull = Math.floor(s.numComputed / this.blockSize);
    const from = s.numCachedBlocks;
    if (numFull <= from) return;
    this.ensureHashes(s, numFull);
    const bs = this.blockSize;
    this.pool.cacheFullBlocks(s.blocks.slice(from, numFull), s.hashes.slice(from, numFull), {
      parentBlockHash: from > 0 ? s.hashes[from - 1]! : null,
      tokenIds: this.eventsOn ? s.tokens.slice(from * bs, numFull * bs) : [],
      blockSize: bs,
    });
    s.numCachedBlocks = numFull;
  }
}
