/**
 * The model runner: turns the scheduler's decision into one varlen batch (token ids, positions, slot mapping,
 * query offsets, sequence lengths, block tables), performs the cache manager's copy-on-write copies, runs the
 * forward pass on the kernels, and returns the logits rows that were asked for (vLLM V1 `GPUModelRunner.execute_model`).
 * @module
 */
import type { KvAllocation, KvCacheManager } from '@kvq/cache';
import type { AttentionObserver, ForwardBatch, LlamaForward } from './forward.js';
import type { KeepSeqStep, KvKeepBlocks } from './kv-keep.js';

/** One sequence of the batch: its id in the cache manager, its allocation for this step, and which logits it needs. */
export interface ModelRunnerInput {
  /** The sequence's id in the cache manager. */
  readonly seqId: string;
  /** From the scheduler: tokens `[firstPosition, firstPosition + numNewTokens)` are computed. */
  readonly allocation: KvAllocation;
  /**
   * `'all'`: a logits row for every computed token (prompt scoring); `'last'`: one row for the last token, only when
   * this step reaches the end of the sequence's known tokens (a finished prefill or a decode step; not a prefill
   * chunk); `'none'`: no logits.
   */
  readonly logits: 'all' | 'last' | 'none';
}

/** Where the logits of input `index` are in {@link ModelRunnerOutput.logits}. */
export interface LogitsRows {
  /** Index into the inputs given to {@link ModelRunner.execute}. */
  readonly index: number;
  /** First row (of `vocabSize` floats) in `logits`. */
  readonly firstRow: number;
  /** Number of rows (1 for `'last'`). */
  readonly numRows: number;
  /** Sequence position of the first row's token (its logits predict position `firstPosition + 1`). */
  readonly firstPosition: number;
  /** True when the rows reach the last known token (a finished prefill, a decode step, the end of a scored prompt). */
  readonly reachesEnd: boolean;
}

/** The result of one {@link ModelRunner.execute}. */
export interface ModelRunnerOutput {
  /** Float32 `[numRows, vocabSize]`, row-major; rows in the order of `rows` (empty when `greedyTokens` is set). */
  readonly logits: Float32Array;
  /** With `greedy` execution: the argmax of each logits row (rows in the order of `rows`), instead of `logits`. */
  readonly greedyTokens?: Int32Array;
  /** Per input that asked for logits (and got them in this step), in input order. */
  readonly rows: readonly LogitsRows[];
  /** Tokens computed by the forward pass. */
  readonly numTokens: number;
}

/** Builds batches for a {@link LlamaForward} from cache-manager allocations and runs them. */
export class ModelRunner {
  /** The forward pass (kernels, weights, KV storage). */
  readonly forwardPass: LlamaForward;
  private readonly manager: KvCacheManager;
  /** The kept-precision cache's blocks, when the forward pass has one ({@link LlamaForward.kvKeep}). */
  readonly keepBlocks: KvKeepBlocks | undefined;

  constructor(forward: LlamaForward, manager: KvCacheManager, keepBlocks?: KvKeepBlocks) {
    this.forwardPass = forward;
    this.manager = manager;
    this.keepBlocks = keepBlocks;
  }

  /** A sequence left the engine (finished, aborted, preempted): its kept blocks return. */
  releaseSequence(seqId: string): void {
    this.keepBlocks?.release(seqId);
  }

  /** `childId` was forked from `parentId` (n > 1): it gets copies of the parent's kept blocks. */
  forkSequence(parentId: string, childId: string): void {
    const storage = this.forwardPass.kvKeep?.storage;
    if (this.keepBlocks && storage) this.keepBlocks.fork(parentId, childId, (pairs) => storage.copyBlocks(pairs));
  }

  /** Vocabulary size: floats per logits row. */
  get vocabSize(): number {
    return this.forwardPass.dims.vocabSize;
  }

  /**
   * The varlen batch of `inputs` (copy-on-write copies are performed here, before any KV write), without running it.
   * @returns the batch and where each input's logits rows will be
   */
  prepare(inputs: readonly ModelRunnerInput[]): { batch: ForwardBatch; rows: LogitsRows[] } {
    const numSeqs = inputs.length;
    let numTokens = 0;
    let maxBlocks = 1;
    for (let s = 0; s < numSeqs; s++) {
      const { seqId, allocation } = inputs[s]!;
      maxBlocks = Math.max(maxBlocks, this.manager.getSequence(seqId).numBlocks);
      numTokens += allocation.numNewTokens;
    }
    const tokenIds = new Int32Array(numTokens);
    const positions = new Int32Array(numTokens);
    const slotMapping = new Int32Array(numTokens);
    const queryStartLoc = new Int32Array(numSeqs + 1);
    const seqLens = new Int32Array(numSeqs);
    const blockTables = new Int32Array(numSeqs * maxBlocks);
    const logitsRows: number[] = [];
    const rows: LogitsRows[] = [];
    const keepSlots = this.keepBlocks ? new Int32Array(numTokens) : undefined;
    const keepSeqs: KeepSeqStep[] = [];
    let row = 0;
    for (let s = 0; s < numSeqs; s++) {
      const { seqId, allocation: alloc, logits } = inputs[s]!;
      if (alloc.copies.length > 0) this.forwardPass.copyBlocks(alloc.copies);
      const all = this.manager.tokenIds(seqId);
      queryStartLoc[s] = row;
      for (let i = 0; i < alloc.numNewTokens; i++) {
        tokenIds[row + i] = all[alloc.firstPosition + i]!;
        positions[row + i] = alloc.firstPosition + i;
        slotMapping[row + i] = alloc.slotMapping[i]!;
      }
      const end = alloc.firstPosition + alloc.numNewTokens;
      seqLens[s] = end;
      if (this.keepBlocks) {
        const step = this.keepBlocks.step(seqId, alloc.firstPosition, alloc.numNewTokens);
        keepSlots!.set(step.slots, row);
        keepSeqs.push(step);
      }
      blockTables.set(this.manager.blockTable(seqId), s * maxBlocks);
      const reachesEnd = end === all.length;
      if (logits === 'all') {
        rows.push({ index: s, firstRow: logitsRows.length, numRows: alloc.numNewTokens, firstPosition: alloc.firstPosition, reachesEnd });
        for (let i = 0; i < alloc.numNewTokens; i++) logitsRows.push(row + i);
      } else if (logits === 'last' && reachesEnd) {
        rows.push({ index: s, firstRow: logitsRows.length, numRows: 1, firstPosition: end - 1, reachesEnd });
        logitsRows.push(row + alloc.numNewTokens - 1);
      }
      row += alloc.numNewTokens;
    }
    queryStartLoc[numSeqs] = row;
    const batch: ForwardBatch = {
      tokenIds,
      positions,
      slotMapping,
      numTokens,
      queryStartLoc,
      seqLens,
      blockTables,
      maxBlocksPerSeq: maxBlocks,
      numSeqs,
      logitsRows: Int32Array.from(logitsRows),
      keep: keepSlots ? { slotMapping: keepSlots, seqs: keepSeqs } : undefined, // no spread here: V8 builds `{ a, ...x, b }` on a slow path (~1-10 us)
    };
    return { batch, rows };
  }

  /**
   * {@link prepare} the batch and run the forward pass (KV of the computed tokens is written to the cache).
   * @param observer receives every layer's post-RoPE q/k/v (KV-scale calibration), when given
   * @param greedy return each logits row's argmax (`greedyTokens`) instead of the logits (see {@link LlamaForward.forwardArgmax})
   * @param reuseLogits the caller is done with `logits` before its next `execute`: they may live in a reused buffer
   *   (see {@link LlamaForward.forward}'s `reuse`). Default false (a new array).
   */
  execute(inputs: readonly ModelRunnerInput[], observer?: AttentionObserver, greedy = false, reuseLogits = false): ModelRunnerOutput {
    const { batch, rows } = this.prepare(inputs);
    if (greedy) return { logits: new Float32Array(0), greedyTokens: this.forwardPass.forwardArgmax(batch, observer), rows, numTokens: batch.numTokens };
    const logits = this.forwardPass.forward(batch, observer, reuseLogits);
    return { logits, rows, numTokens: batch.numTokens };
  }
}
