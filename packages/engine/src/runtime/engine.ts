import {
  encodeKvBlock,
  kvBlockFormatOf,
  readKvBlock,
  writeKvBlock,
  type KvCacheManager,
  type KvCacheStorage,
  type KvTierEntry,
  type TieredKvStore,
} from '@kvq/cache';
import { EngineError } from '../errors.js';
import { resolveSamplingParams, type ResolvedSamplingParams, type SamplingParams } from '../sampling/params.js';
import { SeededRng } from '../sampling/rng.js';
import { badWordsTokenIds, tokenLogprobs, type TokenLogprobs } from '../sampling/sampler.js';
import { DecodeStream } from '../tokenizer/decode-stream.js';
import type { AttentionObserver, LlamaForward } from './forward.js';
import type { TokenConstraint } from './constraint.js';
import { KvKeepBlocks } from './kv-keep.js';
import { ModelRunner, type LogitsRows, type ModelRunnerInput } from './model-runner.js';
import { noLogitsProcessors, Sampler } from './sampler.js';
import { Scheduler, type SchedulerConfig, type SchedulerOutput, type SchedulerSequence } from './scheduler.js';

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
  /**
   * With `params.promptLogprobs` (vLLM `prompt_logprobs`): per prompt position, the token's logprob, rank, decoded
   * text and the top alternatives (position 0: undefined). Filled as the prefill progresses.
   */
  readonly promptTokenLogprobs?: readonly (TokenLogprobs | undefined)[] | undefined;
}

/** Text side of the engine (the tokenizer), injected so the core stays testable without one. */
export interface Detokenizer {
  /** Text of generated ids, skipping special tokens when asked. */
  decode(ids: readonly number[], options: { skipSpecialTokens: boolean }): string;
  /** Token ids of a text without special tokens (for `badWords`); requests with bad words need it. */
  encode?(text: string): number[];
  /**
   * The text `id` adds after `prev` when it depends on `id` alone (`Tokenizer.appendedText`, the same with or without
   * skipping special tokens): incremental detokenization then skips decoding. Optional.
   */
  appendedText?(prev: number, id: number): string | undefined;
}

/** Options of {@link LLMEngine.addRequest}. */
export interface AddRequestOptions {
  /** Score the prompt instead of generating: returns `promptLogprobs`, generates nothing. */
  readonly scoreOnly?: boolean;
  /** Receives the raw logits rows `[rows, vocab]` of scored prompt positions (for KL divergence). */
  readonly onPromptLogits?: (firstPosition: number, logits: Float32Array, rows: number) => void;
  /** Scheduling priority under the `'priority'` {@link SchedulerConfig.policy}: lower is served first and preempted last. Default 0. */
  readonly priority?: number;
  /** Prefix-cache salt (isolates this request's cache entries). */
  readonly cacheSalt?: string;
  /**
   * Structured outputs: one {@link TokenConstraint} per completion (`n` of them), compiled from
   * `params.structuredOutputs` (e.g. by `StructuredOutputCompiler.constraints`). Required when that is set.
   */
  readonly constraints?: readonly TokenConstraint[];
  /**
   * The caller reads the request's output only once it finished (`LLM.generate`): `step()` reports it then and not
   * before (no per-step snapshots, each of which copies the token ids so far), and without stop strings to search the
   * text is decoded once at the end instead of token by token (the same text; ~25 us a token saved on a small model).
   * `requestOutput()` still gives a snapshot at any time (empty text until finished when decoding is deferred).
   * Default false.
   */
  readonly finalTextOnly?: boolean;
}

interface Seq extends SchedulerSequence {
  readonly request: Request;
  readonly index: number;
  readonly output: number[];
  readonly logprobs: TokenLogprobs[] | undefined;
  cumulativeLogprob: number;
  rng: SeededRng;
  finishReason: FinishReason | undefined;
  stopReason: string | number | undefined;
  text: string;
  /** Incremental detokenizer of `output` (created at the first decoded token; undefined once the text is final). */
  textStream: DecodeStream | undefined;
  /** Tokens of `output` whose text is decoded when the sequence finishes (`finalTextOnly`), else 0. */
  deferredText: number;
}

interface Request {
  readonly id: string;
  readonly prompt: readonly number[];
  readonly params: ResolvedSamplingParams;
  readonly options: AddRequestOptions;
  readonly seqs: Seq[];
  readonly arrivalTime: number;
  /** Arrival order among this engine's requests (the scheduler's tie-break). */
  readonly arrivalOrder: number;
  firstScheduledTime: number | undefined;
  firstTokenTime: number | undefined;
  finishedTime: number | undefined;
  numCachedTokens: number;
  numPreemptions: number;
  forked: boolean;
  promptLogprobs: (number | undefined)[] | undefined;
  promptTokenLogprobs: (TokenLogprobs | undefined)[] | undefined;
  readonly badWordsTokenIds: readonly (readonly number[])[];
  /** No logits processor or penalty beyond min_tokens' stop masking (`noLogitsProcessors`, fixed per request). */
  readonly noLogitsProcessors: boolean;
  /**
   * Fixed for the request's lifetime: temperature 0, no logprobs, {@link Request.noLogitsProcessors} and no raw
   * prompt logits, so its tokens may come from the backend's argmax (once min_tokens masks nothing: checked per step).
   */
  readonly argmaxEligible: boolean;
  /** Options of the detokenizer's `decode` for this request's text (one object, not one per decoded token). */
  readonly decodeOptions: { readonly skipSpecialTokens: boolean };
  /** The step that last reported this request (dedups a step's outputs without a set). */
  lastTouchedStep: number;
  finished: boolean;
}

/**
 * KV block tiers beyond the in-process pool (host memory, a shared Redis): on a prefix miss the engine looks the
 * missing blocks up there before admitting the request and loads the hits instead of computing them; every block
 * that becomes full is written to the tiers in the background after the step that computed it.
 */
export interface EngineKvTiers {
  /** The tiers behind one load / store API. */
  readonly store: TieredKvStore;
  /** Identifies the model (weights and configuration) in every stored block's header; see `modelFingerprint`. */
  readonly modelFingerprint: string;
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
  /** Prompt tokens whose KV was loaded from a KV tier instead of computed (0 without tiers). */
  readonly kvTierLoadedTokens: number;
}

const now = () => performance.timeOrigin / 1000 + performance.now() / 1000;

/**
 * The engine core (vLLM V1 `EngineCore` + output processing). Every `step()` is the composition of three parts:
 * the {@link Scheduler} decides which sequences run and how many tokens each (running first, chunked prefill,
 * preemption by recompute when blocks run out, then admission of waiting requests under the token budget; prefix-cache
 * hits skip computation), the {@link ModelRunner} builds the varlen batch and runs one forward pass, and the
 * {@link Sampler} turns the logits into tokens (or prompt logprobs); the engine then appends the tokens and checks
 * stop conditions.
 */
export class LLMEngine {
  readonly forwardPass: LlamaForward;
  readonly manager: KvCacheManager;
  readonly storage: KvCacheStorage;
  readonly eosTokenIds: readonly number[];
  /** Batches the scheduled sequences and runs the forward pass. */
  readonly runner: ModelRunner;
  /** Tokens and logprobs from the runner's logits. */
  readonly sampler: Sampler;
  private readonly detokenizer: Detokenizer | undefined;
  private readonly sched: Scheduler<Seq>;
  private readonly requests = new Map<string, Request>();
  /** One-id detokenizations shared by the sequences' decode streams: [with special tokens, skipping them]. */
  private readonly singleDecodes = [new Map<number, string>(), new Map<number, string>()] as const;
  private observer: AttentionObserver | undefined;
  private promptTokens = 0;
  private generationTokens = 0;
  private steps = 0;
  private arrivals = 0;
  private seedCounter = (Math.random() * 2 ** 32) >>> 0;
  /** KV tiers, when configured. */
  readonly kvTiers: EngineKvTiers | undefined;
  /** Sequences whose tier lookup is in flight (admission holds them), and those whose lookup is done. */
  private readonly tierLoading = new Map<string, Promise<void>>();
  private readonly tierLooked = new Set<string>();
  private tierLoadedTokens = 0;

  /** @throws EngineError `INVALID_ARGUMENT` for scheduler limits that are not integers >= 1 or an unknown policy. */
  constructor(options: {
    forward: LlamaForward;
    manager: KvCacheManager;
    eosTokenIds: readonly number[];
    scheduler: SchedulerConfig;
    detokenizer?: Detokenizer;
    /** KV tiers beyond the pool; needs prefix caching on in `manager`. */
    kvTiers?: EngineKvTiers;
  }) {
    this.forwardPass = options.forward;
    this.manager = options.manager;
    this.storage = options.forward.storage;
    this.eosTokenIds = options.eosTokenIds;
    this.detokenizer = options.detokenizer;
    this.kvTiers = options.kvTiers;
    if (this.kvTiers !== undefined && !options.manager.enablePrefixCaching) {
      throw new EngineError('INVALID_ARGUMENT', 'KV tiers need prefix caching (enablePrefixCaching: true)', { field: 'kvTiers' });
    }
    this.sched = new Scheduler<Seq>(options.manager, options.scheduler, this.kvTiers ? { admissionHold: (seq) => this.tierLoading.has(seq.id) } : {});
    const keep = options.forward.kvKeep;
    if (keep && options.manager.enablePrefixCaching) {
      // A prefix hit would skip computing tokens whose kept (model-dtype) copies this sequence then lacks.
      throw new EngineError('INVALID_ARGUMENT', 'kvCacheKeepSink / kvCacheKeepRecent need prefix caching off (enablePrefixCaching: false)', { field: 'enablePrefixCaching' });
    }
    this.runner = new ModelRunner(options.forward, options.manager, keep ? new KvKeepBlocks(keep.config, keep.storage.numBlocks) : undefined);
    const backend = options.forward.backend;
    // The backend's native draw when it has one (the same token as the reference for the same uniform draw).
    const { sampleDraw } = backend;
    this.sampler = new Sampler(sampleDraw ? { draw: (args) => sampleDraw.call(backend, args) } : undefined);
  }

  /** Which sequences run in each step (queues, budget, admission, preemption policy). For inspection (`waiting`, `running`, limits): calling `schedule`, `add`, `fork` or `finish` directly bypasses the engine. */
  get scheduler(): Scheduler<SchedulerSequence> {
    return this.sched;
  }

  /** Max sequences running at once (the scheduler's). */
  get maxNumSeqs(): number {
    return this.sched.maxNumSeqs;
  }

  /** Token budget of one step (the scheduler's). */
  get maxNumBatchedTokens(): number {
    return this.sched.maxNumBatchedTokens;
  }

  /** Max prompt + output tokens. */
  get maxModelLen(): number {
    return this.sched.maxModelLen;
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
    if (resolved.structuredOutputs !== undefined && options.constraints?.length !== resolved.n) {
      throw new EngineError(
        'INVALID_ARGUMENT',
        `structuredOutputs needs ${resolved.n} compiled constraints in options.constraints (got ${options.constraints?.length ?? 0}); LLM compiles them, see StructuredOutputCompiler`,
        { field: 'structuredOutputs' },
      );
    }
    let badWords: number[][] = [];
    if (resolved.badWords.length > 0) {
      const encode = this.detokenizer?.encode;
      if (!encode) throw new EngineError('INVALID_ARGUMENT', 'badWords needs an engine with a tokenizer (detokenizer.encode)', { field: 'badWords' });
      badWords = badWordsTokenIds(resolved.badWords, (t) => encode.call(this.detokenizer, t));
    }
    for (const t of [...resolved.logitBias.keys(), ...(resolved.allowedTokenIds ?? [])]) {
      if (t >= vocab) {
        throw new EngineError('INVALID_ARGUMENT', `token id ${t} in logitBias / allowedTokenIds is outside the vocabulary [0, ${vocab})`, { field: resolved.logitBias.has(t) ? 'logitBias' : 'allowedTokenIds' });
      }
    }
    for (let i = 0; i < promptTokenIds.length; i++) {
      const t = promptTokenIds[i]!;
      if (!Number.isInteger(t) || t < 0 || t >= vocab) {
        throw new EngineError('INVALID_ARGUMENT', `prompt token ${i} = ${t} is outside the vocabulary [0, ${vocab})`, { field: 'prompt' });
      }
    }
    const priority = options.priority ?? 0;
    if (typeof priority !== 'number' || !Number.isFinite(priority)) {
      throw new EngineError('INVALID_ARGUMENT', `priority must be a finite number, got ${String(priority)}`, { field: 'priority' });
    }
    const limit = options.scoreOnly ? this.maxModelLen : this.maxModelLen - 1;
    if (promptTokenIds.length > limit) {
      throw new EngineError(
        'INVALID_ARGUMENT',
        `the prompt has ${promptTokenIds.length} tokens, more than the maximum model length allows (${limit}${options.scoreOnly ? '' : ' + 1 generated'}; max_model_len ${this.maxModelLen})`,
        { field: 'prompt' },
      );
    }
    const plainLogits = noLogitsProcessors(resolved, badWords, options.constraints?.some((c) => c !== undefined) === true);
    const request: Request = {
      id: requestId,
      prompt: [...promptTokenIds],
      params: resolved,
      options,
      seqs: [],
      arrivalTime: now(),
      arrivalOrder: this.arrivals++,
      firstScheduledTime: undefined,
      firstTokenTime: undefined,
      finishedTime: undefined,
      numCachedTokens: 0,
      numPreemptions: 0,
      forked: false,
      promptLogprobs: options.scoreOnly ? [undefined] : undefined,
      badWordsTokenIds: badWords,
      noLogitsProcessors: plainLogits,
      argmaxEligible: resolved.temperature === 0 && resolved.logprobs === undefined && !options.onPromptLogits && plainLogits,
      decodeOptions: { skipSpecialTokens: resolved.skipSpecialTokens },
      lastTouchedStep: -1,
      promptTokenLogprobs: resolved.promptLogprobs === undefined || options.scoreOnly ? undefined : new Array<TokenLogprobs | undefined>(promptTokenIds.length).fill(undefined),
      finished: false,
    };
    const seed = resolved.seed ?? this.seedCounter++;
    const seq = this.newSeq(request, 0, seed);
    this.requests.set(requestId, request);
    this.manager.addSequence(seq.id, request.prompt, {
      ...(options.cacheSalt === undefined ? {} : { cacheSalt: options.cacheSalt }),
      // Scoring (with or without raw logits) and prompt_logprobs need every prompt row computed, so they skip the
      // prefix cache: a cached block's rows are never recomputed, and its positions would go unscored.
      usePrefixCache: !options.scoreOnly && resolved.promptLogprobs === undefined,
    });
    this.sched.add(seq);
  }

  private newSeq(request: Request, index: number, seed: number): Seq {
    const seq: Seq = {
      id: index === 0 ? request.id : `${request.id}#${index}`,
      requestId: request.id,
      priority: request.options.priority ?? 0,
      arrivalTime: request.arrivalOrder,
      cacheSalt: request.options.cacheSalt,
      request,
      index,
      output: [],
      logprobs: request.params.logprobs === undefined ? undefined : [],
      cumulativeLogprob: 0,
      rng: new SeededRng(seed + index * 0x9e3779b9),
      finishReason: undefined,
      stopReason: undefined,
      text: '',
      textStream: undefined,
      deferredText: 0,
    };
    request.seqs.push(seq);
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
    return this.sched.hasUnfinished();
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
      numRunning: this.sched.running.length,
      numWaiting: this.sched.waiting.length,
      kvCacheUsage: m.usage,
      kvTierLoadedTokens: this.tierLoadedTokens,
      prefixCacheQueries: m.prefixCacheQueries,
      prefixCacheHits: m.prefixCacheHits,
      numPreemptions: m.numPreemptions,
      promptTokens: this.promptTokens,
      generationTokens: this.generationTokens,
      steps: this.steps,
    };
  }

  /**
   * One step: schedule, run the model, sample (or score), then append tokens and check stop conditions.
   * @returns the outputs of every request that progressed (or finished) in this step
   * @throws EngineError `INVALID_ARGUMENT` when a waiting request can never fit the KV cache (see {@link Scheduler.schedule})
   */
  step(): RequestOutput[] {
    const plan = this.sched.schedule();
    this.recordScheduled(plan);
    const scheduled = plan.scheduled;
    if (scheduled.length === 0) return [];
    // Plain loops from here on: this runs once a token, and V8 optimizes a function called once a token only after
    // hundreds of tokens; until then every callback, iterator and temporary object costs.
    const inputs: ModelRunnerInput[] = new Array<ModelRunnerInput>(scheduled.length);
    // The logits are consumed within this step unless a caller's onPromptLogits may keep them: then a fresh array.
    let reuseLogits = true;
    let greedy = true;
    for (let i = 0; i < scheduled.length; i++) {
      const { seq, allocation } = scheduled[i]!;
      const request = seq.request;
      const logits = request.options.scoreOnly || (request.promptTokenLogprobs && !request.forked) ? 'all' : 'last';
      inputs[i] = { seqId: seq.id, allocation, logits };
      if (request.options.onPromptLogits) reuseLogits = false;
      if (greedy) greedy = logits === 'last' && this.argmaxSamples(seq);
    }
    const { logits, rows, greedyTokens } = this.runner.execute(inputs, this.observer, greedy, reuseLogits);
    this.steps++;
    if (this.kvTiers) this.storeFullBlocks(plan, this.kvTiers);

    const touched: Request[] = [];
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i]!;
      const seq = scheduled[r.index]!.seq;
      const request = seq.request;
      if (request.lastTouchedStep !== this.steps) {
        request.lastTouchedStep = this.steps;
        touched.push(request);
      }
      if (greedyTokens) {
        // Every row is a plain greedy decode or finished prefill (argmaxSamples): the backend's argmax took the token.
        this.appendToGroup(seq, greedyTokens[r.firstRow]!, undefined);
      } else {
        this.consumeRows(seq, r, logits);
      }
    }
    return this.collect(touched);
  }

  /** A sampled step's rows of one sequence: prompt scoring, prompt logprobs, and the next token when the rows reach its end. */
  private consumeRows(seq: Seq, r: LogitsRows, logits: Float32Array): void {
    const request = seq.request;
    const vocab = this.runner.vocabSize;
    if (request.options.scoreOnly || (request.promptTokenLogprobs && !request.forked)) {
      const rowLogits = logits.subarray(r.firstRow * vocab, (r.firstRow + r.numRows) * vocab);
      if (request.options.scoreOnly) {
        request.options.onPromptLogits?.(r.firstPosition, rowLogits, r.numRows);
        request.promptLogprobs!.push(...this.sampler.scoreNextTokens(rowLogits, r.numRows, vocab, this.manager.tokenIds(seq.id), r.firstPosition));
        if (r.reachesEnd) this.finishSeq(seq, 'length', undefined);
        return;
      }
      this.recordPromptLogprobs(request, rowLogits, r.numRows, r.firstPosition);
    }
    if (!r.reachesEnd) return; // a prefill chunk computed for its prompt logprobs only
    const last = r.firstRow + r.numRows - 1;
    // A decode step's single row is the whole (reused) logits array: no view to make.
    const row = logits.length === vocab ? logits : logits.subarray(last * vocab, (last + 1) * vocab);
    const children = request.forked ? undefined : this.forkChildren(seq);
    if (children) for (const child of children) this.sampleAndAppend(child, row);
    this.sampleAndAppend(seq, row);
  }

  /** Samples `seq`'s next token from its logits row and appends it. */
  private sampleAndAppend(seq: Seq, row: Float32Array): void {
    const request = seq.request;
    const result = this.sampler.sampleOne({
      logits: row,
      params: request.params,
      promptTokenIds: request.prompt,
      outputTokenIds: seq.output,
      rng: seq.rng,
      eosTokenIds: this.eosTokenIds,
      badWordsTokenIds: request.badWordsTokenIds,
      constraint: request.options.constraints?.[seq.index],
      noLogitsProcessors: request.noLogitsProcessors,
    });
    this.appendToken(seq, result.token, result.logprobs);
  }

  /** Appends one token taken for `seq`'s row to `seq` and, at the end of its prompt, to its new children (children first). */
  private appendToGroup(seq: Seq, token: number, logprobs: TokenLogprobs | undefined): void {
    const children = seq.request.forked ? undefined : this.forkChildren(seq);
    if (children) for (const child of children) this.appendToken(child, token, logprobs);
    this.appendToken(seq, token, logprobs);
  }

  /**
   * At the end of its prompt (the first token), forks `seq`'s n - 1 children (copy-on-write blocks), which sample
   * from the same row; returns them (empty for n = 1).
   */
  private forkChildren(seq: Seq): Seq[] {
    const request = seq.request;
    const children: Seq[] = [];
    request.forked = true;
    request.firstTokenTime = now();
    for (let i = 1; i < request.params.n; i++) {
      const child = this.newSeq(request, i, 0);
      child.rng = cloneSeededRng(seq.rng, i);
      this.sched.fork(seq, child);
      this.runner.forkSequence(seq.id, child.id);
      children.push(child);
    }
    return children;
  }

  /**
   * Whether `seq`'s next token can be taken by the backend's `argmax` kernel (on the device when the activations live
   * there, in native code on the CPU backends): it samples its next token as the plain argmax (its request is
   * {@link Request.argmaxEligible} and min_tokens masks nothing now) and wants no prompt rows. A step uses the kernel
   * when every scheduled sequence can (a prefill chunk that stops short of its prompt's end has no row and no token;
   * children forked at the prompt's end sample from this row too, with the same empty output). On the host this skips
   * the sampler's copy of the logits and its JavaScript pass over them (~0.1 ms a token at a 32k vocabulary).
   */
  private argmaxSamples(seq: Seq): boolean {
    return seq.request.argmaxEligible && seq.output.length >= seq.request.params.minTokens;
  }

  /** Bookkeeping of a scheduling decision: preemption counts, admission times and cache hits, prompt tokens computed. */
  private recordScheduled(plan: SchedulerOutput<Seq>): void {
    for (const seq of plan.preempted) {
      seq.request.numPreemptions++;
      this.runner.releaseSequence(seq.id); // recomputed from position 0 when readmitted
    }
    const admitted = plan.admitted.length > 0 ? new Set(plan.admitted) : undefined;
    for (let i = 0; i < plan.scheduled.length; i++) {
      const { seq, allocation } = plan.scheduled[i]!;
      if (admitted?.has(seq)) {
        seq.request.numCachedTokens = allocation.numCachedTokens;
        seq.request.firstScheduledTime ??= now();
      }
      const promptLength = seq.request.prompt.length;
      if (allocation.firstPosition < promptLength) {
        this.promptTokens += Math.min(allocation.firstPosition + allocation.numNewTokens, promptLength) - allocation.firstPosition;
      }
    }
  }

  /** vLLM `prompt_logprobs` of the prompt positions these rows predict (each position once, also after a recompute). */
  private recordPromptLogprobs(request: Request, rowLogits: Float32Array, numRows: number, firstPosition: number): void {
    const vocab = this.runner.vocabSize;
    const k = request.params.promptLogprobs ?? 0;
    for (let i = 0; i < numRows; i++) {
      const position = firstPosition + i + 1;
      if (position >= request.prompt.length) break;
      if (request.promptTokenLogprobs![position] !== undefined) continue;
      request.promptTokenLogprobs![position] = this.withText(tokenLogprobs(rowLogits.subarray(i * vocab, (i + 1) * vocab), request.prompt[position]!, k));
    }
  }

  /** Adds vLLM's `decoded_token` (each token's text alone, special tokens kept) when the engine has a detokenizer. */
  private withText(lp: TokenLogprobs): TokenLogprobs {
    const d = this.detokenizer;
    if (!d) return lp;
    const text = (t: number) => d.decode([t], { skipSpecialTokens: false });
    return { ...lp, decodedToken: text(lp.tokenId), top: lp.top.map((x) => ({ ...x, decodedToken: text(x.tokenId) })) };
  }

  /**
   * Computes what structured-output constraints need before the next {@link step} (their next-token masks). Drivers
   * call it before every step; it resolves at once when no request has a constraint waiting.
   */
  async prepare(): Promise<void> {
    const waiting: Promise<void>[] = this.unpreparedConstraints().map((c) => c.prepare());
    if (this.kvTiers) {
      this.startTierLookups(this.kvTiers);
      // Lookups run beside the steps of running sequences; only an engine with nothing else to do waits for them.
      if (this.sched.running.length === 0) waiting.push(...this.tierLoading.values());
    }
    if (waiting.length > 0) await Promise.all(waiting);
  }

  /**
   * True when {@link prepare} must be awaited before the next step: a request's constraint has no mask yet, a waiting
   * request's KV-tier lookup has not started, or nothing runs while lookups are in flight.
   */
  get needsPrepare(): boolean {
    if (this.unpreparedConstraints().length > 0) return true;
    if (!this.kvTiers) return false;
    for (const seq of this.sched.waiting) if (!this.tierLooked.has(seq.id) && !this.tierLoading.has(seq.id)) return true;
    return this.tierLoading.size > 0 && this.sched.running.length === 0;
  }

  /** Starts the tier lookup of every waiting sequence that has not had one (each sequence is looked up once). */
  private startTierLookups(tiers: EngineKvTiers): void {
    for (const seq of this.sched.waiting) {
      if (this.tierLooked.has(seq.id) || this.tierLoading.has(seq.id)) continue;
      const p = this.loadFromTiers(seq.id, tiers).finally(() => {
        this.tierLoading.delete(seq.id);
        if (this.manager.hasSequence(seq.id)) this.tierLooked.add(seq.id);
      });
      this.tierLoading.set(seq.id, p);
    }
  }

  /**
   * Looks up the blocks after the sequence's locally cached prefix in the tiers and adopts the consecutive hits into
   * the pool (free and cached, so the admission finds them as a prefix hit). Never rejects: tier failures are
   * misses (the store counts and logs them), and anything unexpected only costs the hit.
   */
  private async loadFromTiers(id: string, tiers: EngineKvTiers): Promise<void> {
    try {
      const { hashes, numCachedBlocks } = this.manager.prefixBlockHashes(id);
      if (hashes.length <= numCachedBlocks) return;
      // No more than the pool could take now (importBlocks adopts at most the free blocks).
      const want = hashes.slice(numCachedBlocks, numCachedBlocks + this.manager.pool.numFreeBlocks);
      if (want.length === 0) return;
      const format = kvBlockFormatOf(this.storage, tiers.modelFingerprint);
      const payloads = await tiers.store.load(want, format);
      if (payloads.length === 0 || !this.manager.hasSequence(id)) return;
      // importBlocks checks the hashes are still this sequence's under the current format (scales unchanged).
      const n = this.manager.importBlocks(id, numCachedBlocks, want.slice(0, payloads.length), (blockIds) => {
        blockIds.forEach((b, i) => writeKvBlock(this.storage, b, payloads[i]!));
        this.runner.forwardPass.blocksFromHost(blockIds);
      });
      this.tierLoadedTokens += n * this.manager.blockSize;
    } catch {
      // A block that cannot be adopted is computed instead; the request never sees it.
    }
  }

  /** Serializes the blocks this step filled and hands them to the tiers in the background (never awaited). */
  private storeFullBlocks(plan: SchedulerOutput<Seq>, tiers: EngineKvTiers): void {
    const bs = this.manager.blockSize;
    let entries: KvTierEntry[] | undefined;
    let format: ReturnType<typeof kvBlockFormatOf> | undefined;
    for (const { seq, allocation } of plan.scheduled) {
      const from = Math.floor(allocation.firstPosition / bs);
      const to = Math.floor((allocation.firstPosition + allocation.numNewTokens) / bs);
      if (to <= from) continue;
      const table = this.manager.blockTable(seq.id);
      this.runner.forwardPass.blocksToHost(Array.from(table.slice(from, to)));
      for (let i = from; i < to; i++) {
        const hash = this.manager.cachedBlockHash(seq.id, i);
        if (hash === undefined) continue;
        format ??= kvBlockFormatOf(this.storage, tiers.modelFingerprint);
        (entries ??= []).push({ hash, value: encodeKvBlock(hash, format, readKvBlock(this.storage, table[i]!)) });
      }
    }
    if (entries) void tiers.store.store(entries);
  }

  /** Constraints of live sequences (and of children not forked yet, which sample from the prompt's row) without a mask. */
  private unpreparedConstraints(): TokenConstraint[] {
    const out: TokenConstraint[] = [];
    for (const request of this.requests.values()) {
      const cs = request.options.constraints;
      if (!cs || request.finished) continue;
      if (!request.forked) out.push(...cs.filter((c) => !c.ready));
      else for (const seq of request.seqs) if (seq.finishReason === undefined && cs[seq.index] && !cs[seq.index]!.ready) out.push(cs[seq.index]!);
    }
    return out;
  }

  private appendToken(seq: Seq, token: number, logprobs: TokenLogprobs | undefined): void {
    seq.request.options.constraints?.[seq.index]?.accept(token);
    seq.output.push(token);
    this.generationTokens++;
    if (seq.logprobs && logprobs) {
      logprobs = this.withText(logprobs);
      seq.logprobs.push(logprobs);
      seq.cumulativeLogprob += logprobs.logprob;
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
    const d = this.detokenizer;
    if (d && seq.request.options.finalTextOnly && p.stop.length === 0) {
      seq.deferredText++; // decoded in finishSeq
    } else if (d) {
      // Incremental: each token decodes a window of a few recent ids (DecodeStream), not the whole output again (that
      // grew the per-token cost with the output length), or none when the detokenizer knows the token's text after the
      // previous one (appendedText), and text is only appended: an incomplete UTF-8 character is held back until it
      // completes (or the sequence finishes), so streamed deltas stay a prefix of the final text.
      const before = seq.text.length;
      seq.textStream ??= this.decodeStream(d, seq.request.decodeOptions);
      seq.text += seq.textStream.push(token);
      if (mayStop && seq.text.length > before) {
        // Earlier text was searched at earlier steps (once stops applied): only matches reaching the new text are new.
        const searchedBefore = seq.output.length - 1 >= p.minTokens;
        for (const stop of p.stop) {
          const at = seq.text.indexOf(stop, searchedBefore ? Math.max(0, before - stop.length + 1) : 0);
          if (at >= 0) {
            seq.text = seq.text.slice(0, p.includeStopStrInOutput ? at + stop.length : at);
            seq.textStream = undefined; // the text is final: nothing held back is added after a stop string
            return this.finishSeq(seq, 'stop', stop);
          }
        }
      }
    }
    if (seq.output.length >= p.maxTokens || total >= this.maxModelLen) this.finishSeq(seq, 'length', undefined);
  }

  /** An incremental detokenizer of one sequence's output. */
  private decodeStream(d: Detokenizer, options: { readonly skipSpecialTokens: boolean }): DecodeStream {
    return new DecodeStream(
      (ids) => d.decode(ids, options),
      this.singleDecodes[options.skipSpecialTokens ? 1 : 0],
      d.appendedText?.bind(d),
    );
  }

  private finishSeq(seq: Seq, reason: FinishReason, stopReason: string | number | undefined): void {
    if (seq.deferredText > 0 && this.detokenizer) {
      // The tokens checkStop would have decoded one by one (all but a final EOS / stop token id): the same text at once.
      seq.text = this.detokenizer.decode(seq.output.slice(0, seq.deferredText), { skipSpecialTokens: seq.request.params.skipSpecialTokens });
      seq.deferredText = 0;
    }
    if (seq.textStream) seq.text += seq.textStream.flush(); // what was held back (an incomplete character: U+FFFD)
    seq.textStream = undefined;
    seq.finishReason = reason;
    seq.stopReason = stopReason;
    this.sched.finish(seq, reason === 'abort' ? 'abort' : 'free');
    this.runner.releaseSequence(seq.id);
    const request = seq.request;
    const allDone = request.seqs.every((s) => s.finishReason !== undefined) && (request.forked || request.params.n === 1 || reason === 'abort' || !!request.options.scoreOnly);
    if (allDone && !request.finished) {
      request.finished = true;
      request.finishedTime = now();
      for (const c of request.options.constraints ?? []) c.dispose();
    }
  }

  private collect(touched: readonly Request[]): RequestOutput[] {
    const outputs: RequestOutput[] = [];
    for (let i = 0; i < touched.length; i++) {
      const request = touched[i]!;
      // A finalTextOnly request is reported once, finished: no per-step snapshot (each copies the output so far).
      if (request.options.finalTextOnly && !request.finished) continue;
      outputs.push(this.output(request));
      if (request.finished) this.forget(request);
    }
    return outputs;
  }

  private forget(request: Request): void {
    this.requests.delete(request.id);
    for (const seq of request.seqs) this.tierLooked.delete(seq.id);
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
    const outputs: CompletionOutput[] = new Array<CompletionOutput>(request.seqs.length);
    for (let i = 0; i < request.seqs.length; i++) {
      const seq = request.seqs[i]!;
      outputs[i] = {
        index: seq.index,
        text: seq.text,
        tokenIds: seq.output.slice(),
        logprobs: seq.logprobs ? seq.logprobs.slice() : undefined,
        cumulativeLogprob: seq.logprobs ? seq.cumulativeLogprob : undefined,
        finishReason: seq.finishReason,
        stopReason: seq.stopReason,
      };
    }
    return {
      requestId: request.id,
      promptTokenIds: request.prompt,
      finished: request.finished,
      promptLogprobs: request.promptLogprobs,
      promptTokenLogprobs: request.promptTokenLogprobs ? [...request.promptTokenLogprobs] : undefined,
      metrics: {
        arrivalTime: request.arrivalTime,
        firstScheduledTime: request.firstScheduledTime,
        firstTokenTime: request.firstTokenTime,
        finishedTime: request.finishedTime,
        numCachedTokens: request.numCachedTokens,
        numPreemptions: request.numPreemptions,
      },
      outputs,
    };
  }
}

/** A child generator for sample `index` of an n > 1 request, derived from (and independent of) the parent's. */
function cloneSeededRng(parent: SeededRng, index: number): SeededRng {
  return new SeededRng(Math.floor(parent.next() * 2 ** 32) ^ Math.imul(index, 0x9e3779b9));
}

