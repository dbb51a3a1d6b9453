/**
 * Mixed precision along the sequence (`kvCacheKeepSink`, `kvCacheKeepRecent`): the first tokens of every sequence
 * (attention sinks) and its newest tokens (a precision tail) stay in the model dtype while the rest of the cache is
 * quantized. docs/kv-rotation-and-mixed-precision.md has the semantics; in short:
 *
 * - Every token is written to the quantized cache as usual. Tokens in the sink or the tail are ALSO written to a
 *   small "kept" cache in the model dtype (a second {@link KvCacheStorage}, a few blocks per sequence). A tail block
 *   that ages out is simply dropped from the kept cache: its quantized copy has been in the main cache all along,
 *   exactly what quantizing it at that moment would give (the codes depend only on the token's values and the
 *   layer's scales).
 * - Both regions are whole blocks: the sink is `ceil(sink / blockSize)` blocks; the tail starts at a block boundary,
 *   so between `recent` and `recent + blockSize - 1` newest tokens are kept.
 * - Attention runs twice, over disjoint key sets, and the two results are merged by their log-sum-exp (vLLM
 *   `merge_attn_states`): the quantized keys `[sinkEnd, tailStart)` (the sequence's block table shifted by the sink's
 *   blocks) and the kept keys, sink then tail, in "virtual" positions `[0, sinkEnd + tailLength)`. Every query's
 *   visible keys are a prefix of each segment (causality only cuts into the tail), so each call is an ordinary
 *   `pagedAttention` over pseudo-sequences; a query whose visible keys are a whole segment gets a pseudo-sequence of
 *   its own (query length 1).
 * @module
 */
import type { KvCacheStorage, KvLayerCache } from '@kvq/cache';
import { mergeAttentionStates, type KernelBackend, type PagedAttentionArgs } from '@kvq/kernels';
import { EngineError } from '../errors.js';

/** Sink and tail sizes, resolved to whole blocks. */
export interface KvKeepConfig {
  /** Tokens per block of both caches. */
  readonly blockSize: number;
  /** Kept leading tokens per sequence: the requested sink rounded up to whole blocks (0 = none). */
  readonly sinkTokens: number;
  /** Newest tokens always kept (0 = no tail); up to `blockSize - 1` more are kept with them. */
  readonly recentTokens: number;
}

/**
 * Resolve the options: `sink` rounded up to whole blocks, `recent` as given.
 * @throws EngineError `INVALID_ARGUMENT` naming the field when a value is not an integer >= 0
 */
export function kvKeepConfig(sink: unknown, recent: unknown, blockSize: number): KvKeepConfig | undefined {
  const check = (v: unknown, field: string): number => {
    if (v === undefined) return 0;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
      throw new EngineError('INVALID_ARGUMENT', `${field} must be an integer >= 0 (tokens), got ${JSON.stringify(v)}`, { field });
    }
    return v;
  };
  const s = check(sink, 'kvCacheKeepSink');
  const r = check(recent, 'kvCacheKeepRecent');
  if (s === 0 && r === 0) return undefined;
  return { blockSize, sinkTokens: Math.ceil(s / blockSize) * blockSize, recentTokens: r };
}

/** Kept blocks a sequence can hold at once: its sink blocks and the most tail blocks (see {@link KvKeepConfig}). */
export function keptBlocksPerSequence(c: KvKeepConfig): number {
  const tail = c.recentTokens > 0 ? Math.ceil((c.recentTokens + c.blockSize - 1) / c.blockSize) : 0;
  return c.sinkTokens / c.blockSize + tail;
}

/** First position of the kept tail for a sequence of `seqLen` tokens (`seqLen` when there is no tail). */
export function tailStart(c: KvKeepConfig, seqLen: number): number {
  if (c.recentTokens === 0) return Math.max(c.sinkTokens, seqLen);
  const aligned = Math.floor(Math.max(0, seqLen - c.recentTokens) / c.blockSize) * c.blockSize;
  return Math.max(c.sinkTokens, aligned);
}

/** One sequence's kept blocks: logical block index -> kept-cache block id. */
interface KeptSeq {
  readonly blocks: Map<number, number>;
}

/** What one sequence's step needs: where its new tokens go in the kept cache, and its kept keys. */
export interface KeepSeqStep {
  /** Kept-cache slot of each new token, or -1 (not kept). */
  readonly slots: Int32Array;
  /** End of the sink (a block boundary, <= the sequence length only once the sink is full). */
  readonly sinkEnd: number;
  /** First tail position (a block boundary, or the sequence length without a tail). */
  readonly tailStart: number;
  /** Kept-cache blocks in virtual order: the sink's, then the tail's. */
  readonly table: Int32Array;
}

/**
 * The kept cache's block bookkeeping (a free list over its blocks; block 0 is never handed out, as in the main
 * pool). Sequences get blocks as their sink fills and their tail moves; blocks that leave the tail return at once.
 */
export class KvKeepBlocks {
  readonly config: KvKeepConfig;
  private readonly free: number[] = [];
  private readonly seqs = new Map<string, KeptSeq>();

  /** @param numBlocks blocks of the kept cache, block 0 included (reserved) */
  constructor(config: KvKeepConfig, numBlocks: number) {
    this.config = config;
    for (let b = numBlocks - 1; b >= 1; b--) this.free.push(b);
  }

  /** Blocks not held by any sequence. */
  get freeBlocks(): number {
    return this.free.length;
  }

  /**
   * Book a step of `seqId`: tokens `[firstPosition, firstPosition + numNewTokens)` are computed. A step from
   * position 0 starts the sequence afresh (a new one, or one preempted and recomputed).
   * @throws EngineError `INTERNAL` when the kept cache has no free block (it is sized for the scheduler's maximum of
   *   sequences), or a kept block the sequence needs was never written (a step that skipped tokens)
   */
  step(seqId: string, firstPosition: number, numNewTokens: number): KeepSeqStep {
    const c = this.config;
    const bs = c.blockSize;
    if (firstPosition === 0) this.release(seqId);
    let seq = this.seqs.get(seqId);
    if (!seq) {
      seq = { blocks: new Map() };
      this.seqs.set(seqId, seq);
    }
    const end = firstPosition + numNewTokens;
    const t = tailStart(c, end);
    // Tail blocks that aged out go back first, so a step never needs more than a sequence's share.
    for (const [logical, id] of seq.blocks) {
      if (logical * bs >= c.sinkTokens && (logical + 1) * bs <= t) {
        seq.blocks.delete(logical);
        this.free.push(id);
      }
    }
    const slots = new Int32Array(numNewTokens);
    for (let i = 0; i < numNewTokens; i++) {
      const p = firstPosition + i;
      if (p >= c.sinkTokens && p < t) {
        slots[i] = -1;
        continue;
      }
      const logical = Math.floor(p / bs);
      let id = seq.blocks.get(logical);
      if (id === undefined) {
        id = this.free.pop();
        if (id === undefined) {
          throw new EngineError('INTERNAL', `the kept-precision KV cache (kvCacheKeepSink / kvCacheKeepRecent) has no free block for sequence ${seqId}`, {
            field: 'kvCacheKeepSink',
          });
        }
        seq.blocks.set(logical, id);
      }
      slots[i] = id * bs + (p % bs);
    }
    const sinkEnd = Math.min(c.sinkTokens, Math.ceil(end / bs) * bs);
    const table: number[] = [];
    const kept = (b: number): number => {
      const id = seq.blocks.get(b);
      if (id === undefined) {
        throw new EngineError('INTERNAL', `sequence ${seqId} has no kept block for positions ${b * bs}..${(b + 1) * bs - 1} (its step started at ${firstPosition})`, {
          field: 'kvCacheKeepSink',
        });
      }
      return id;
    };
    for (let b = 0; b * bs < sinkEnd; b++) table.push(kept(b));
    for (let b = t / bs; b * bs < end; b++) table.push(kept(b));
    return { slots, sinkEnd: c.sinkTokens, tailStart: t, table: Int32Array.from(table.length > 0 ? table : [0]) };
  }

  /**
   * A forked sequence (n > 1 sampling) shares its parent's tokens: it gets its own copies of the parent's kept blocks.
   * @param copy copies kept-cache blocks `[src, dst]` (all layers)
   */
  fork(parentId: string, childId: string, copy: (pairs: readonly { src: number; dst: number }[]) => void): void {
    const parent = this.seqs.get(parentId);
    this.release(childId);
    if (!parent) return;
    const child: KeptSeq = { blocks: new Map() };
    const pairs: { src: number; dst: number }[] = [];
    for (const [logical, src] of parent.blocks) {
      const dst = this.free.pop();
      if (dst === undefined) {
        for (const id of child.blocks.values()) this.free.push(id);
        throw new EngineError('INTERNAL', `the kept-precision KV cache has no free block for forked sequence ${childId}`, { field: 'kvCacheKeepSink' });
      }
      child.blocks.set(logical, dst);
      pairs.push({ src, dst });
    }
    copy(pairs);
    this.seqs.set(childId, child);
  }

  /** Return a sequence's blocks (finished, aborted or preempted). Unknown ids are ignored. */
  release(seqId: string): void {
    const seq = this.seqs.get(seqId);
    if (!seq) return;
    for (const id of seq.blocks.values()) this.free.push(id);
    this.seqs.delete(seqId);
  }
}

/** Per-sequence facts of a batch the split needs (from the model runner). */
export interface KeepBatch {
  /** Kept-cache slot per batch token (-1: not kept). */
  readonly slotMapping: Int32Array;
  /** Per sequence of the batch. */
  readonly seqs: readonly KeepSeqStep[];
}

/** One of the two attention calls: pseudo-sequences over a subset of the batch's query rows. */
interface SplitCall {
  /** Batch token of each of this call's query tokens, in order. */
  readonly rows: Int32Array;
  /** Whether `rows` is exactly `0..numTokens-1` (no gather needed). */
  readonly identity: boolean;
  readonly queryStartLoc: Int32Array;
  readonly seqLens: Int32Array;
  readonly blockTables: Int32Array;
  readonly maxBlocksPerSeq: number;
  readonly numSeqs: number;
}

/** Collects pseudo-sequences. */
class CallBuilder {
  private readonly rows: number[] = [];
  private readonly qsl: number[] = [0];
  private readonly lens: number[] = [];
  private readonly tables: Int32Array[] = [];

  /** A pseudo-sequence: batch tokens `[firstRow, firstRow + count)` seeing the first `seqLen` keys of `table`. */
  add(firstRow: number, count: number, seqLen: number, table: Int32Array): void {
    if (count <= 0 || seqLen <= 0) return;
    for (let i = 0; i < count; i++) this.rows.push(firstRow + i);
    this.qsl.push(this.rows.length);
    this.lens.push(seqLen);
    this.tables.push(table);
  }

  build(blockSize: number, numTokens: number): SplitCall | undefined {
    const numSeqs = this.lens.length;
    if (numSeqs === 0) return undefined;
    let maxBlocks = 1;
    for (let s = 0; s < numSeqs; s++) maxBlocks = Math.max(maxBlocks, Math.ceil(this.lens[s]! / blockSize));
    const blockTables = new Int32Array(numSeqs * maxBlocks);
    for (let s = 0; s < numSeqs; s++) blockTables.set(this.tables[s]!.subarray(0, Math.ceil(this.lens[s]! / blockSize)), s * maxBlocks);
    const rows = Int32Array.from(this.rows);
    let identity = rows.length === numTokens;
    for (let i = 0; identity && i < rows.length; i++) identity = rows[i] === i;
    return { rows, identity, queryStartLoc: Int32Array.from(this.qsl), seqLens: Int32Array.from(this.lens), blockTables, maxBlocksPerSeq: maxBlocks, numSeqs };
  }
}

/** The two calls of a batch: over the quantized keys (`main`) and over the kept keys (`kept`); either may be absent. */
export interface KeepSplit {
  readonly main: SplitCall | undefined;
  readonly kept: SplitCall | undefined;
}

/** The batch fields {@link planKeepSplit} reads. */
export interface SplitBatchView {
  readonly queryStartLoc: Int32Array;
  readonly seqLens: Int32Array;
  readonly blockTables: Int32Array;
  readonly maxBlocksPerSeq: number;
  readonly numSeqs: number;
  readonly numTokens: number;
}

/**
 * Plan the two attention calls of a batch (the same for every layer). For a sequence with sink end `N`, tail start
 * `T` and query positions `p`:
 * - quantized keys `[N, T)`: queries with `N <= p < T` see `[N, p]` (causal: one pseudo-sequence over the table
 *   shifted by `N / blockSize` blocks); queries with `p >= T` see all of them (one pseudo-sequence each);
 * - kept keys, sink `[0, N)` then tail `[T, len)` at virtual positions `N + (p - T)`: queries with `p < N` see `[0, p]`
 *   (causal); `N <= p < T` the whole sink (one pseudo-sequence each); `p >= T` the sink and `[T, p]` (causal).
 */
export function planKeepSplit(batch: SplitBatchView, keep: KeepBatch, blockSize: number): KeepSplit {
  const main = new CallBuilder();
  const kept = new CallBuilder();
  for (let s = 0; s < batch.numSeqs; s++) {
    const q0 = batch.queryStartLoc[s]!;
    const qLen = batch.queryStartLoc[s + 1]! - q0;
    const len = batch.seqLens[s]!;
    const first = len - qLen; // position of the first query token
    const { sinkEnd: N, tailStart: T, table } = keep.seqs[s]!;
    const row = batch.blockTables.subarray(s * batch.maxBlocksPerSeq, (s + 1) * batch.maxBlocksPerSeq);
    const shifted = row.subarray(N / blockSize);
    // Query index ranges by region: [first, a) in the sink, [a, b) between, [b, len) in the tail.
    const a = Math.min(Math.max(first, N), len);
    const b = Math.min(Math.max(first, T), len);
    // Quantized segment.
    if (b > a) main.add(q0 + (a - first), b - a, b - N, shifted);
    for (let p = b; p < len; p++) main.add(q0 + (p - first), 1, T - N, shifted);
    // Kept segment.
    if (a > first) kept.add(q0, a - first, a, table);
    for (let p = a; p < b; p++) kept.add(q0 + (p - first), 1, N, table);
    if (len > b) kept.add(q0 + (b - first), len - b, N + (len - T), table);
  }
  return { main: main.build(blockSize, batch.numTokens), kept: kept.build(blockSize, batch.numTokens) };
}

/** Scratch buffers of {@link keepAttention}, reused between layers and steps. */
export class KeepScratch {
  private bufs = new Map<string, Float32Array>();

  /** A buffer of at least `n` floats under `name` (contents unspecified). */
  get(name: string, n: number): Float32Array {
    let b = this.bufs.get(name);
    if (!b || b.length < n) {
      b = new Float32Array(Math.max(n, 2 * (b?.length ?? 0)));
      this.bufs.set(name, b);
    }
    return b.subarray(0, n);
  }
}

/** The attention call {@link keepAttention} makes (the backend's `pagedAttention`, or a host path such as soft-capping). */
export type AttentionFn = (args: PagedAttentionArgs) => void;

/**
 * Attention of a batch over the quantized cache and the kept cache, merged: writes `out` (`[numTokens, numHeads,
 * headSize]`) as attention over every visible key would, with the kept keys read in the model dtype.
 * @param attend runs one segment's attention (the backend's, or soft-capped attention on the host)
 * @param args the batch's attention arguments over the quantized cache (host arrays); its `fp8Query` applies to the
 *   quantized segment only (the kept cache is not FP8)
 * @param keptCache the layer's kept cache
 */
export function keepAttention(
  attend: AttentionFn,
  args: PagedAttentionArgs,
  keptCache: KvLayerCache,
  split: KeepSplit,
  scratch: KeepScratch,
): void {
  const { numHeads, out } = args;
  const headSize = args.cache.headSize;
  const numTokens = args.queryStartLoc[args.numSeqs]!;
  const rowLen = numHeads * headSize;
  const parts: { out: Float32Array; lse: Float32Array }[] = [];
  for (const [i, call] of [split.main, split.kept].entries()) {
    const fullOut = scratch.get(`out${i}`, numTokens * rowLen);
    const fullLse = scratch.get(`lse${i}`, numTokens * numHeads);
    fullLse.fill(-Infinity);
    if (call) {
      const n = call.rows.length;
      let query = args.query;
      let o = fullOut;
      let l = fullLse;
      if (!call.identity) {
        query = scratch.get('q', n * rowLen);
        for (let r = 0; r < n; r++) query.set(args.query.subarray(call.rows[r]! * rowLen, (call.rows[r]! + 1) * rowLen), r * rowLen);
        o = scratch.get('o', n * rowLen);
        l = scratch.get('l', n * numHeads);
      }
      attend({
        query,
        out: o,
        lse: l,
        cache: i === 0 ? args.cache : keptCache,
        queryStartLoc: call.queryStartLoc,
        seqLens: call.seqLens,
        blockTables: call.blockTables,
        maxBlocksPerSeq: call.maxBlocksPerSeq,
        numSeqs: call.numSeqs,
        numHeads,
        softmaxScale: args.softmaxScale,
        fp8Query: i === 0 ? args.fp8Query : undefined,
      });
      if (!call.identity) {
        for (let r = 0; r < n; r++) {
          const t = call.rows[r]!;
          fullOut.set(o.subarray(r * rowLen, (r + 1) * rowLen), t * rowLen);
          fullLse.set(l.subarray(r * numHeads, (r + 1) * numHeads), t * numHeads);
        }
      }
    }
    parts.push({ out: fullOut, lse: fullLse });
  }
  mergeAttentionStates({
    outA: parts[0]!.out,
    lseA: parts[0]!.lse,
    outB: parts[1]!.out,
    lseB: parts[1]!.lse,
    out,
    numRows: numTokens * numHeads,
    headSize,
  });
}

/** The kept cache of a forward pass: its storage and which layers use it (full-attention layers of a quantized cache). */
export interface KvKeep {
  readonly config: KvKeepConfig;
  /** The kept cache: model dtype, the main cache's block size and heads, `numBlocks` sized for the scheduler's sequences. */
  readonly storage: KvCacheStorage;
  /** Per layer: whether it keeps sink/tail tokens (false: sliding-window layers and layers already in the model dtype). */
  readonly layers: readonly boolean[];
}
