/**
 * The scheduler: which sequences run in the next step, and how many tokens each (vLLM V1 `Scheduler.schedule`).
 * It owns the waiting and running queues, the token budget (chunked prefill), admission, and the preemption
 * policy; the {@link KvCacheManager} below it is the mechanism (it allocates, answers "can allocate", frees and
 * preempts the sequence it is told to).
 * @see docs/spec/vllm-fp8-kv-cache.md §6.4
 * @module
 */
import type { KvAllocation, KvCacheManager } from '@kvq/cache';
import { EngineError } from '../errors.js';

/**
 * Victim choice when a running sequence needs blocks and none are free (vLLM `scheduling_policy`):
 * - `'fcfs'`: the most recently admitted running sequence (vLLM `running.pop()`);
 * - `'priority'`: the running sequence with the largest `(priority, arrivalTime)` (lower priority values are served
 *   first, as in vLLM).
 */
export type SchedulingPolicy = 'fcfs' | 'priority';

/** Scheduler limits (vLLM names in brackets). */
export interface SchedulerConfig {
  /** Max sequences running at once [`max_num_seqs`]. Integer >= 1. Default 64. */
  readonly maxNumSeqs?: number;
  /** Token budget of one step [`max_num_batched_tokens`]; prefills beyond it are chunked. Integer >= 1. Default 512. */
  readonly maxNumBatchedTokens?: number;
  /** Max prompt + output length [`max_model_len`], tokens. */
  readonly maxModelLen: number;
  /** Whom to preempt when blocks run out [`scheduling_policy`]. Default `'fcfs'`. */
  readonly policy?: SchedulingPolicy;
}

/** What the scheduler needs to know of a sequence. `id` is also its id in the {@link KvCacheManager}. */
export interface SchedulerSequence {
  /** The sequence's id in the cache manager (it must have been added there before {@link Scheduler.add}). */
  readonly id: string;
  /** The request the sequence belongs to (named in errors). */
  readonly requestId: string;
  /** Lower is served first, and preempted last, under the `'priority'` policy. */
  readonly priority: number;
  /** Arrival (any monotonic unit): ties of `priority` preempt the later arrival first. */
  readonly arrivalTime: number;
  /** Prefix-cache salt the sequence was added with (the admission budget counts only uncached tokens). */
  readonly cacheSalt: string | undefined;
}

/** One sequence scheduled in a step, with the slots the cache manager gave it. */
export interface ScheduledSequence<S extends SchedulerSequence> {
  readonly seq: S;
  /** Tokens `[allocation.firstPosition, + allocation.numNewTokens)` are computed this step. */
  readonly allocation: KvAllocation;
}

/** The decision of one {@link Scheduler.schedule} call (vLLM `SchedulerOutput`). */
export interface SchedulerOutput<S extends SchedulerSequence> {
  /** Running sequences first (queue order), then newly admitted ones (FCFS). */
  readonly scheduled: readonly ScheduledSequence<S>[];
  /** Sequences admitted from the waiting queue in this step (a subset of `scheduled`). */
  readonly admitted: readonly S[];
  /** Sequences preempted in this step (recompute: their blocks are freed; they are back at the head of the waiting queue). */
  readonly preempted: readonly S[];
  /** Sum of `allocation.numNewTokens` over `scheduled` (<= `maxNumBatchedTokens`). */
  readonly numScheduledTokens: number;
}

function positiveInt(field: string, value: unknown, fallback: number): number {
  const v = value ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
    throw new EngineError('INVALID_ARGUMENT', `scheduler ${field} must be an integer >= 1, got ${String(v)}`, { field });
  }
  return v;
}

/**
 * Continuous batching over a paged KV cache (vLLM V1's scheduler, simplified). Each {@link schedule}:
 * 1. running sequences, in queue order: a decode token or the next chunk of a chunked prefill, within the token
 *    budget; when the cache manager has no blocks, the {@link SchedulingPolicy} picks a running sequence not yet
 *    scheduled in this step (else the requester itself) to preempt by recompute, until the allocation succeeds;
 * 2. waiting sequences (FCFS), unless this step preempted: admitted while the budget, `maxNumSeqs` and the free
 *    blocks allow; prefix-cache hits are not charged to the budget; admission pauses at a sequence the
 *    `admissionHold` hook holds (its prefix is being loaded from a KV tier).
 */
export class Scheduler<S extends SchedulerSequence> {
  /** Max running sequences. */
  readonly maxNumSeqs: number;
  /** Token budget per step. */
  readonly maxNumBatchedTokens: number;
  /** Max prompt + output tokens. */
  readonly maxModelLen: number;
  /** Preemption victim choice. */
  readonly policy: SchedulingPolicy;
  private readonly manager: KvCacheManager;
  private readonly waitingQueue: S[] = [];
  private runningQueue: S[] = [];

  private readonly admissionHold: ((seq: SchedulerSequence) => boolean) | undefined;

  /**
   * @param hooks.admissionHold  True while a waiting sequence must not be admitted yet (its KV is being loaded from an
   *   external tier); admission stops at such a sequence (FCFS is kept) until it returns false.
   * @throws EngineError `INVALID_ARGUMENT` for a limit that is not an integer >= 1 or an unknown policy.
   */
  constructor(manager: KvCacheManager, config: SchedulerConfig, hooks: { admissionHold?: (seq: SchedulerSequence) => boolean } = {}) {
    this.manager = manager;
    this.admissionHold = hooks.admissionHold;
    this.maxNumSeqs = positiveInt('maxNumSeqs', config.maxNumSeqs, 64);
    this.maxNumBatchedTokens = positiveInt('maxNumBatchedTokens', config.maxNumBatchedTokens, 512);
    this.maxModelLen = positiveInt('maxModelLen', config.maxModelLen, 0);
    const policy = config.policy ?? 'fcfs';
    if (policy !== 'fcfs' && policy !== 'priority') {
      throw new EngineError('INVALID_ARGUMENT', `scheduler policy must be 'fcfs' or 'priority', got ${JSON.stringify(policy)}`, { field: 'policy' });
    }
    this.policy = policy;
  }

  /** Waiting sequences, head first (read-only view). */
  get waiting(): readonly S[] {
    return this.waitingQueue;
  }

  /** Running sequences in admission order (read-only view). */
  get running(): readonly S[] {
    return this.runningQueue;
  }

  /** True while any sequence waits or runs. */
  hasUnfinished(): boolean {
    return this.waitingQueue.length > 0 || this.runningQueue.length > 0;
  }

  /** Queue a new sequence at the tail of the waiting queue (register it with the cache manager first). */
  add(seq: S): void {
    this.waitingQueue.push(seq);
  }

  /**
   * Copy-on-write fork of a running sequence (parallel sampling): the cache manager shares `parent`'s blocks with
   * `child` (already its id), which joins the running queue.
   */
  fork(parent: S, child: S): void {
    this.manager.fork(parent.id, child.id);
    this.runningQueue.push(child);
  }

  /**
   * A sequence ended: out of the queues, and its blocks released (`abort` counts it as aborted in the manager's
   * metrics). Idempotent for sequences the manager no longer holds.
   */
  finish(seq: S, how: 'free' | 'abort'): void {
    this.runningQueue = this.runningQueue.filter((s) => s !== seq);
    const w = this.waitingQueue.indexOf(seq);
    if (w >= 0) this.waitingQueue.splice(w, 1);
    if (this.manager.hasSequence(seq.id)) {
      if (how === 'abort') this.manager.abort(seq.id);
      else this.manager.free(seq.id);
    }
  }

  /**
   * Decide the next step (see the class comment). Allocations are made in the cache manager as part of the
   * decision: the caller must run exactly the scheduled tokens.
   * @throws EngineError `INVALID_ARGUMENT` (field `kvCacheMemory`) when nothing runs and the head of the waiting
   *   queue cannot be admitted even into an empty cache.
   */
  schedule(): SchedulerOutput<S> {
    const scheduled: ScheduledSequence<S>[] = [];
    const admitted: S[] = [];
    const preempted: S[] = [];
    let budget = this.maxNumBatchedTokens;

    // 1. Running sequences: decode (1 token) or the next chunk of a chunked prefill.
    const running = this.runningQueue.slice(); // preemption below changes the queue
    for (let i = 0; i < running.length; i++) {
      const seq = running[i]!;
      if (budget === 0) break;
      if (preempted.length > 0 && !this.runningQueue.includes(seq)) continue; // preempted as a victim earlier in this loop
      const info = this.manager.getSequence(seq.id);
      const numNew = Math.min(info.numTokens - info.numComputedTokens, budget);
      if (numNew <= 0) continue;
      let allocation = this.manager.allocate(seq.id, { numNewTokens: numNew });
      while (allocation === null) {
        const victim = this.selectVictim(scheduled) ?? seq;
        this.preempt(victim);
        preempted.push(victim);
        if (victim === seq) break;
        allocation = this.manager.allocate(seq.id, { numNewTokens: numNew });
      }
      if (!allocation) continue;
      scheduled.push({ seq, allocation });
      budget -= allocation.numNewTokens;
    }

    // 2. Waiting sequences (FCFS), unless this step had to preempt (vLLM: no admission after a preemption).
    while (preempted.length === 0 && this.waitingQueue.length > 0 && budget > 0 && this.runningQueue.length < this.maxNumSeqs) {
      const seq = this.waitingQueue[0]!;
      if (this.admissionHold?.(seq)) break;
      const tokens = this.manager.tokenIds(seq.id);
      const hit = this.manager.findCachedPrefix(tokens, seq.cacheSalt === undefined ? {} : { cacheSalt: seq.cacheSalt });
      const numNew = Math.min(tokens.length - hit.numCachedTokens, budget);
      const allocation = this.manager.allocate(seq.id, { numNewTokens: numNew });
      if (!allocation) break;
      this.waitingQueue.shift();
      this.runningQueue.push(seq);
      admitted.push(seq);
      scheduled.push({ seq, allocation });
      budget -= allocation.numNewTokens;
    }

    if (scheduled.length === 0 && this.waitingQueue.length > 0 && this.runningQueue.length === 0 && !this.admissionHold?.(this.waitingQueue[0]!)) {
      // Nothing runs and the head of the queue cannot be admitted: it can never fit.
      throw new EngineError(
        'INVALID_ARGUMENT',
        `request ${JSON.stringify(this.waitingQueue[0]!.requestId)} needs more KV cache blocks than exist (${this.manager.metrics().numUsableBlocks} usable blocks); raise kvCacheMemory or lower maxModelLen`,
        { field: 'kvCacheMemory' },
      );
    }
    return { scheduled, admitted, preempted, numScheduledTokens: this.maxNumBatchedTokens - budget };
  }

  /**
   * The running sequence the policy preempts next, among those not already scheduled in this step, or
   * `undefined` when there is none.
   */
  private selectVictim(scheduled: readonly ScheduledSequence<S>[]): S | undefined {
    const busy = new Set(scheduled.map((s) => s.seq));
    let best: S | undefined;
    // Scanning from the tail: FCFS takes the first free one; priority keeps the later one on full ties.
    for (let i = this.runningQueue.length - 1; i >= 0; i--) {
      const s = this.runningQueue[i]!;
      if (busy.has(s)) continue;
      if (this.policy === 'fcfs') return s;
      if (best === undefined || s.priority > best.priority || (s.priority === best.priority && s.arrivalTime > best.arrivalTime)) best = s;
    }
    return best;
  }

  private preempt(victim: S): void {
    this.manager.preempt(victim.id);
    this.runningQueue = this.runningQueue.filter((s) => s !== victim);
    this.waitingQueue.unshift(victim);
  }
}
