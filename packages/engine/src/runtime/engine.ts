import type { KvAllocation, KvCacheManager, KvCacheStorage, SequenceId } from '@kvq/cache';
import { EngineError } from '../errors.js';
import { resolveSamplingParams, type ResolvedSamplingParams, type SamplingParams } from '../sampling/params.js';
import { SeededRng } from '../sampling/rng.js';
import { applyPenalties, logSoftmax, sampleToken, tokenLogprobs, type TokenLogprobs } from '../sampling/sampler.js';
import type { AttentionObserver, ForwardBatch, LlamaForward } from './forward.js';

/** Why a sequence stopped: vLLM's finish reasons. */
export type FinishReason = 'stop' | 'length' | 'abort';

/** One completion of a request (vLLM `CompletionOutput`). */
export interface CompletionOutput {
  readonly index: number;
  /** Decoded text of `tokenIds` (stop strings removed). */
  readonly text: string;
  readonly tokenIds: readonly number[];
  /** Per generated token, when `logprobs` was requested. */
  readonly logprobs: readonly TokenLogprobs[] | undefined;
  /** Sum of the generated tokens' logprobs (natural log), when `logprobs` was requested. */
  readonly cumulativeLogprob: number | undefined;
  readonly finishReason: FinishReason | undefined;
  /** The stop string or stop token id that ended the sequence. */
  readonly stopReason: string | number | undefined;
}

/** Timing and cache facts of one request (seconds since the epoch in `performance.timeOrigin` terms, and counts). */
export interface RequestMetrics {
  readonly arrivalTime: number;
  readonly firstScheduledTime: number | undefined;
  readonly firstTokenTime: number | undefined;
  readonly finishedTime: number | undefined;
  /** Prompt tokens served from the prefix cache at (the latest) admission. */
  readonly numCachedTokens: number;
  readonly numPreemptions: number;
}

/** The state of a request after a step (vLLM `RequestOutput`). */
export interface RequestOutput {
  readonly requestId: string;
  readonly promptTokenIds: readonly number[];
  readonly outputs: readonly CompletionOutput[];
  readonly finished: boolean;
  readonly metrics: RequestMetrics;
  /** For scoring requests: logprob of each prompt token given the ones before (first token: undefined). */
  readonly promptLogprobs?: readonly (number | undefined)[] | undefined;
}

/** Text side of the engine (the tokenizer), injected so the core stays testable without one. */
export interface Detokenizer {
  /** Text of generated ids, skipping special tokens when asked. */
  decode(ids: readonly number[], options: { skipSpecialTokens: boolean }): string;
}

/** Scheduler limits (vLLM names in brackets). */
export interface SchedulerConfig {
  /** Max sequences running at once [`max_num_seqs`]. Default 64. */
  readonly maxNumSeqs?: number;
  /** Token budget of one step [`max_num_batched_tokens`]; prefills beyond it are chunked. Default 512. */
  readonly maxNumBatchedTokens?: number;
  /** Max prompt + output length [`max_model_len`]. */
  readonly maxModelLen: number;
}

/** Options of {@link LLMEngine.addRequest}. */
export interface AddRequestOptions {
  /** Score the prompt instead of generating: returns `promptLogprobs`, generates nothing. */
  readonly scoreOnly?: boolean;
  /** Receives the raw logits rows `[rows, vocab]` of scored prompt positions (for KL divergence). */
  readonly onPromptLogits?: (firstPosition: number, logits: Float32Array, rows: number) => void;
  /** Preemption priority (lower first). Default 0. */
  readonly priority?: number;
  /** Prefix-cache salt (isolates this request's cache entries). */
  readonly cacheSalt?: string;
}

interface Seq {
  readonly id: string;
  readonly request: Request;
  readonly index: number;
  readonly output: number[];
  readonly logprobs: TokenLogprobs[] | undefined;
  cumulativeLogprob: number;
  rng: SeededRng;
  finishReason: FinishReason | undefined;
  stopReason: string | number | undefined;
  text: string;
}

interface Request {
  readonly id: string;
  readonly prompt: readonly number[];
  readonly params: ResolvedSamplingParams;
  readonly options: AddRequestOptions;
  readonly seqs: Seq[];
  readonly arrivalTime: number;
  firstScheduledTime: number | undefined;
  firstTokenTime: number | undefined;
  finishedTime: number | undefined;
  numCachedTokens: number;
  numPreemptions: number;
  forked: boolean;
  promptLogprobs: (number | undefined)[] | undefined;
  finished: boolean;
}

/** Counters and gauges the server's /metrics and the CLI report. */
export interface EngineStats {
  readonly numRunning: number;
  readonly numWaiting: number;
  readonly kvCacheUsage: number;
  readonly prefixCacheQueries: number;
  readonly prefixCacheHits: number;
  readonly numPreemptions: number;
  readonly promptTokens: number;
  readonly generationTokens: number;
  readonly steps: number;
}

const now = () => performance.timeOrigin / 1000 + performance.now() / 1000;

/**
 * The engine core: continuous batching over a paged KV cache (vLLM V1's scheduler, simplified).
 * Every `step()` schedules running sequences first (decode, or the next chunk of a chunked prefill), preempting
 * by recompute when blocks run out, then admits waiting requests (prefix-cache hits skip computation) under
 * the token budget, runs one batched forward pass, samples, and checks stop conditions.
 */
export class LLMEngine {
  readonly forwardPass: LlamaForward;
  readonly manager: KvCacheManager;
  readonly storage: KvCacheStorage;
  readonly eosTokenIds: readonly number[];
  readonly maxNumSeqs: number;
  readonly maxNumBatchedTokens: number;
  readonly maxModelLen: number;
  private readonly detokenizer: Detokenizer | undefined;
  private readonly requests = new Map<string, Request>();
  private readonly waiting: Seq[] = [];
  private running: Seq[] = [];
  private readonly seqById = new Map<string, Seq>();
  private observer: AttentionObserver | undefined;
  private promptTokens = 0;
  private generationTokens = 0;
  private steps = 0;
  private seedCounter = (Math.random() * 2 ** 32) >>> 0;

  constructor(options: {
    forward: LlamaForward;
    manager: KvCacheManager;
    eosTokenIds: readonly number[];
    scheduler: SchedulerConfig;
    detokenizer?: Detokenizer;
  }) {
    this.forwardPass = options.forward;
    this.manager = options.manager;
    this.storage = options.forward.storage;
    this.eosTokenIds = options.eosTokenIds;
    this.detokenizer = options.detokenizer;
    this.maxNumSeqs = options.scheduler.maxNumSeqs ?? 64;
    this.maxNumBatchedTokens = options.scheduler.maxNumBatchedTokens ?? 512;
    this.maxModelLen = options.scheduler.maxModelLen;
  }

  /** Installs (or clears) an observer of every layer's post-RoPE q/k/v for the next forward passes. */
  setAttentionObserver(observer: AttentionObserver | undefined): void {
    this.observer = observer;
  }

  /**
   * Queues a request.
   * @throws EngineError `INVALID_ARGUMENT` for a duplicate id, an empty prompt, a prompt token outside the
   *   vocabulary, a prompt that does not fit `maxModelLen`, or invalid sampling parameters.
   */
  addRequest(requestId: string, promptTokenIds: readonly number[], params: SamplingParams = {}, options: AddRequestOptions = {}): void {
    if (this.requests.has(requestId)) {
      throw new EngineError('INVALID_ARGUMENT', `request id ${JSON.stringify(requestId)} is already in use`, { field: 'requestId' });
    }
    const resolved = resolveSamplingParams(params);
    if (promptTokenIds.length === 0) throw new EngineError('INVALID_ARGUMENT', 'the prompt has no tokens', { field: 'prompt' });
    const vocab = this.forwardPass.dims.vocabSize;
    for (let i = 0; i < promptTokenIds.length; i++) {
      const t = promptTokenIds[i]!;
      if (!Number.isInteger(t) || t < 0 || t >= vocab) {
        throw new EngineError('INVALID_ARGUMENT', `prompt token ${i} = ${t} is outside the vocabulary [0, ${vocab})`, { field: 'prompt' });
      }
    }
    const limit = options.scoreOnly ? this.maxModelLen : this.maxModelLen - 1;
    if (promptTokenIds.length > limit) {
      throw new EngineError(
        'INVALID_ARGUMENT',
        `the prompt has ${promptTokenIds.length} tokens, more than the maximum model length allows (${limit}${options.scoreOnly ? '' : ' + 1 generated'}; max_model_len ${this.maxModelLen})`,
        { field: 'prompt' },
      );
    }
    const request: Request = {
      id: requestId,
      prompt: [...promptTokenIds],
      params: resolved,
      options,
      seqs: [],
      arrivalTime: now(),
      firstScheduledTime: undefined,
      firstTokenTime: undefined,
      finishedTime: undefined,
      numCachedTokens: 0,
      numPreemptions: 0,
      forked: false,
      promptLogprobs: options.scoreOnly ? [undefined] : undefined,
      finished: false,
    };
    const seed = resolved.seed ?? this.seedCounter++;
    const seq = this.newSeq(request, 0, seed);
    this.requests.set(requestId, request);
    this.manager.addSequence(seq.id, request.prompt, {
      priority: options.priority ?? 0,
      ...(options.cacheSalt === undefined ? {} : { cacheSalt: options.cacheSalt }),
      usePrefixCache: !options.scoreOnly || options.onPromptLogits === undefined,
    });
    this.waiting.push(seq);
  }

  private newSeq(request: Request, index: number, seed: number): Seq {
    const seq: Seq = {
      id: index === 0 ? request.id : `${request.id}#${index}`,
      request,
      index,
      output: [],
      logprobs: request.params.logprobs === undefined ? undefined : [],
      cumulativeLogprob: 0,
      rng: new SeededRng(seed + index * 0x9e3779b9),
      finishReason: undefined,
      stopReason: undefined,
      text: '',
    };
    request.seqs.push(seq);
    this.seqById.set(seq.id, seq);
    return seq;
  }

  /**
   * Aborts a request: its blocks are freed now.
   * @returns its final output (finish reason `abort`), or undefined for an unknown or already finished request
   */
  abortRequest(requestId: string): RequestOutput | undefined {
    const request = this.requests.get(requestId);
    if (!request || request.finished) return undefined;
    for (const seq of request.seqs) if (seq.finishReason === undefined) this.finishSeq(seq, 'abort', undefined);
    request.finished = true;
    request.finishedTime ??= now();
    const out = this.output(request);
    this.forget(request);
    return out;
  }

  /** True while any request is waiting or running. */
  hasUnfinishedRequests(): boolean {
    return this.waiting.length > 0 || this.running.length > 0;
  }

  /** Number of requests not yet finished. */
  get numUnfinishedRequests(): number {
    let n = 0;
    for (const r of this.requests.values()) if (!r.finished) n++;
    return n;
  }

  /** Engine counters for metrics. */
  stats(): EngineStats {
    const m = this.manager.metrics();
    return {
      numRunning: this.running.length,
      numWaiting: this.waiting.length,
      kvCacheUsage: m.usage,
      prefixCacheQueries: m.prefixCacheQueries,
      prefixCacheHits: m.prefixCacheHits,
      numPreemptions: m.numPreemptions,
      promptTokens: this.promptTokens,
      generationTokens: this.generationTokens,
      steps: this.steps,
    };
  }

  /**
   * One scheduling + forward + sampling step.
   * @returns the outputs of every request that progressed (or finished, or was aborted) in this step
   */
  step(): RequestOutput[] {
    const touched = new Set<Request>();
    const scheduled: { seq: Seq; alloc: KvAllocation }[] = [];
    let budget = this.maxNumBatchedTokens;
    let preemptedThisStep = false;

    // 1. Running sequences: decode (1 token) or the next chunk of a chunked prefill.
    for (const seq of [...this.running]) {
      if (budget === 0) break;
      if (!this.running.includes(seq)) continue; // preempted as a victim earlier in this loop
      const info = this.manager.getSequence(seq.id);
      const numNew = Math.min(info.numTokens - info.numComputedTokens, budget);
      if (numNew <= 0) continue;
      const { allocation, preempted } = this.manager.allocateOrPreempt(seq.id, { numNewTokens: numNew }, (candidates) => {
        // vLLM FCFS: the last running sequence that is not already scheduled in this step.
        const busy = new Set(scheduled.map((s) => s.seq.id));
        for (let i = this.running.length - 1; i >= 0; i--) {
          const id = this.running[i]!.id;
          if (!busy.has(id) && candidates.some((c) => c.id === id)) return id;
        }
        return seq.id;
      });
      for (const victimId of preempted) {
        const victim = this.seqById.get(String(victimId))!;
        this.running = this.running.filter((s) => s !== victim);
        this.waiting.unshift(victim);
        victim.request.numPreemptions++;
        preemptedThisStep = true;
      }
      if (!allocation) continue;
      scheduled.push({ seq, alloc: allocation });
      budget -= allocation.numNewTokens;
    }

    // 2. Waiting sequences (FCFS), unless this step had to preempt.
    while (!preemptedThisStep && this.waiting.length > 0 && budget > 0 && this.running.length < this.maxNumSeqs) {
      const seq = this.waiting[0]!;
      const tokens = this.manager.tokenIds(seq.id);
      const hit = this.manager.findCachedPrefix(tokens, seq.request.options.cacheSalt === undefined ? {} : { cacheSalt: seq.request.options.cacheSalt });
      const numNew = Math.min(tokens.length - hit.numCachedTokens, budget);
      const allocation = this.manager.allocate(seq.id, { numNewTokens: numNew });
      if (!allocation) break;
      this.waiting.shift();
      this.running.push(seq);
      seq.request.numCachedTokens = allocation.numCachedTokens;
      seq.request.firstScheduledTime ??= now();
      scheduled.push({ seq, alloc: allocation });
      budget -= allocation.numNewTokens;
    }
    if (scheduled.length === 0) {
      if (this.waiting.length > 0 && this.running.length === 0) {
        // Nothing runs and the head of the queue cannot be admitted: it can never fit.
        const seq = this.waiting[0]!;
        throw new EngineError(
          'INVALID_ARGUMENT',
          `request ${JSON.stringify(seq.request.id)} needs more KV cache blocks than exist (${this.manager.metrics().numUsableBlocks} usable blocks); raise kvCacheMemory or lower maxModelLen`,
          { field: 'kvCacheMemory' },
        );
      }
      return this.collect(touched);
    }

    // 3. Build the varlen batch.
    const numSeqs = scheduled.length;
    let numTokens = 0;
    let maxBlocks = 1;
    for (const { seq } of scheduled) maxBlocks = Math.max(maxBlocks, this.manager.getSequence(seq.id).numBlocks);
    for (const { alloc } of scheduled) numTokens += alloc.numNewTokens;
    const tokenIds = new Int32Array(numTokens);
    const positions = new Int32Array(numTokens);
    const slotMapping = new Int32Array(numTokens);
    const queryStartLoc = new Int32Array(numSeqs + 1);
    const seqLens = new Int32Array(numSeqs);
    const blockTables = new Int32Array(numSeqs * maxBlocks);
    const logitsRowsList: number[] = [];
    const rowOwners: { seq: Seq; kind: 'sample' | 'score'; first: number; count: number }[] = [];
    let row = 0;
    for (let s = 0; s < numSeqs; s++) {
      const { seq, alloc } = scheduled[s]!;
      if (alloc.copies.length > 0) this.storage.copyBlocks(alloc.copies);
      const all = this.manager.tokenIds(seq.id);
      queryStartLoc[s] = row;
      for (let i = 0; i < alloc.numNewTokens; i++) {
        tokenIds[row + i] = all[alloc.firstPosition + i]!;
        positions[row + i] = alloc.firstPosition + i;
        slotMapping[row + i] = alloc.slotMapping[i]!;
      }
      const end = alloc.firstPosition + alloc.numNewTokens;
      seqLens[s] = end;
      blockTables.set(this.manager.blockTable(seq.id), s * maxBlocks);
      if (seq.request.options.scoreOnly) {
        rowOwners.push({ seq, kind: 'score', first: logitsRowsList.length, count: alloc.numNewTokens });
        for (let i = 0; i < alloc.numNewTokens; i++) logitsRowsList.push(row + i);
      } else if (end === all.length) {
        rowOwners.push({ seq, kind: 'sample', first: logitsRowsList.length, count: 1 });
        logitsRowsList.push(row + alloc.numNewTokens - 1);
      }
      if (alloc.firstPosition < seq.request.prompt.length) {
        this.promptTokens += Math.min(end, seq.request.prompt.length) - alloc.firstPosition;
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
      logitsRows: Int32Array.from(logitsRowsList),
    };
    const logits = this.forwardPass.forward(batch, this.observer);
    this.steps++;

    // 4. Sample / score.
    const vocab = this.forwardPass.dims.vocabSize;
    for (const owner of rowOwners) {
      const { seq } = owner;
      const request = seq.request;
      touched.add(request);
      if (owner.kind === 'score') {
        const alloc = scheduled.find((s) => s.seq === seq)!.alloc;
        const all = this.manager.tokenIds(seq.id);
        const rows = logits.subarray(owner.first * vocab, (owner.first + owner.count) * vocab);
        request.options.onPromptLogits?.(alloc.firstPosition, rows, owner.count);
        for (let i = 0; i < owner.count; i++) {
          const next = all[alloc.firstPosition + i + 1];
          if (next === undefined) continue;
          const lp = logSoftmax(rows.subarray(i * vocab, (i + 1) * vocab));
          request.promptLogprobs!.push(lp[next]!);
        }
        if (alloc.firstPosition + owner.count === all.length) this.finishSeq(seq, 'length', undefined);
        continue;
      }
      const rowLogits = logits.subarray(owner.first * vocab, (owner.first + 1) * vocab);
      // n > 1: when the prompt is done, fork the children (copy-on-write blocks) and sample each.
      if (!request.forked) {
        request.forked = true;
        request.firstTokenTime = now();
        const seed = seq.rng;
        for (let i = 1; i < request.params.n; i++) {
          const child = this.newSeq(request, i, 0);
          child.rng = cloneSeededRng(seed, i);
          this.manager.fork(seq.id, child.id);
          this.running.push(child);
          this.sampleInto(child, rowLogits);
        }
      }
      this.sampleInto(seq, rowLogits);
    }
    return this.collect(touched);
  }

  private sampleInto(seq: Seq, rowLogits: Float32Array): void {
    const p = seq.request.params;
    const work = Float32Array.from(rowLogits);
    applyPenalties(work, p, seq.request.prompt, seq.output);
    const token = sampleToken(work, p, seq.rng);
    seq.output.push(token);
    this.generationTokens++;
    if (seq.logprobs) {
      const lp = tokenLogprobs(rowLogits, token, p.logprobs ?? 0);
      seq.logprobs.push(lp);
      seq.cumulativeLogprob += lp.logprob;
    }
    this.manager.appendTokens(seq.id, [token]);
    this.checkStop(seq, token);
  }

  private checkStop(seq: Seq, token: number): void {
    const p = seq.request.params;
    const total = seq.request.prompt.length + seq.output.length;
    const mayStop = seq.output.length >= p.minTokens;
    if (mayStop && !p.ignoreEos && this.eosTokenIds.includes(token)) return this.finishSeq(seq, 'stop', undefined);
    if (mayStop && p.stopTokenIds.includes(token)) return this.finishSeq(seq, 'stop', token);
    if (this.detokenizer) {
      seq.text = this.detokenizer.decode(seq.output, { skipSpecialTokens: p.skipSpecialTokens });
      if (mayStop) {
        for (const stop of p.stop) {
          const at = seq.text.indexOf(stop);
          if (at >= 0) {
            seq.text = seq.text.slice(0, at);
            return this.finishSeq(seq, 'stop', stop);
          }
        }
      }
    }
    if (seq.output.length >= p.maxTokens || total >= this.maxModelLen) this.finishSeq(seq, 'length', undefined);
  }

  private finishSeq(seq: Seq, reason: FinishReason, stopReason: string | number | undefined): void {
    seq.finishReason = reason;
    seq.stopReason = stopReason;
    this.running = this.running.filter((s) => s !== seq);
    const w = this.waiting.indexOf(seq);
    if (w >= 0) this.waiting.splice(w, 1);
    if (this.manager.hasSequence(seq.id)) {
      if (reason === 'abort') this.manager.abort(seq.id);
      else this.manager.free(seq.id);
    }
    const request = seq.request;
    const allDone = request.seqs.every((s) => s.finishReason !== undefined) && (request.forked || request.params.n === 1 || reason === 'abort' || !!request.options.scoreOnly);
    if (allDone && !request.finished) {
      request.finished = true;
      request.finishedTime = now();
    }
  }

  private collect(touched: Set<Request>): RequestOutput[] {
    const outputs: RequestOutput[] = [];
    for (const request of touched) {
      outputs.push(this.output(request));
      if (request.finished) this.forget(request);
    }
    return outputs;
  }

  private forget(request: Request): void {
    this.requests.delete(request.id);
    for (const s of request.seqs) this.seqById.delete(s.id);
  }

  /** Snapshot of a request (also used after an abort). Undefined for unknown ids. */
  requestOutput(requestId: string): RequestOutput | undefined {
    const request = this.requests.get(requestId);
    if (!request) return undefined;
    const out = this.output(request);
    if (request.finished) this.forget(request);
    return out;
  }

  private output(request: Request): RequestOutput {
    return {
      requestId: request.id,
      promptTokenIds: request.prompt,
      finished: request.finished,
      promptLogprobs: request.promptLogprobs,
      metrics: {
        arrivalTime: request.arrivalTime,
        firstScheduledTime: request.firstScheduledTime,
        firstTokenTime: request.firstTokenTime,
        finishedTime: request.finishedTime,
        numCachedTokens: request.numCachedTokens,
        numPreemptions: request.numPreemptions,
      },
      outputs: request.seqs.map((seq) => ({
        index: seq.index,
        text: seq.text,
        tokenIds: [...seq.output],
        logprobs: seq.logprobs ? [...seq.logprobs] : undefined,
        cumulativeLogprob: seq.logprobs ? seq.cumulativeLogprob : undefined,
        finishReason: seq.finishReason,
        stopReason: seq.stopReason,
      })),
    };
  }
}

/** A child generator for sample `index` of an n > 1 request, derived from (and independent of) the parent's. */
function cloneSeededRng(parent: SeededRng, index: number): SeededRng {
  return new SeededRng(Math.floor(parent.next() * 2 ** 32) ^ Math.imul(index, 0x9e3779b9));
}

export type { SequenceId };
