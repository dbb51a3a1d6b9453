import { isFp8Dtype, KV_TIER_FAILURES, type KvTierStats } from '@kvq/cache';
import type { LLM, RequestOutput } from '@kvq/engine';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { EngineLoop, OutputObserver } from './engine-loop.js';

/**
 * /metrics through `prom-client`, one {@link Registry} per server (never the global default registry, so two
 * servers in one process do not collide).
 *
 * Names, help strings and histogram bucket edges follow vLLM's Prometheus logger (vllm-project/vllm,
 * `vllm/v1/metrics/loggers.py`, `PrometheusStatLogger.__init__`, read for facts, v0.11/0.12 era):
 * - `vllm:time_to_first_token_seconds`: 0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5,
 *   5, 7.5, 10, 20, 40, 80, 160, 640, 2560
 * - `vllm:inter_token_latency_seconds`: 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5,
 *   7.5, 10, 20, 40, 80
 * - `vllm:e2e_request_latency_seconds` and `vllm:request_queue_time_seconds` (vLLM's `request_latency_buckets`):
 *   0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680
 * - `vllm:request_prompt_tokens`, `vllm:request_generation_tokens`: 1-2-5 edges up to max_model_len
 *   (vLLM's `build_1_2_5_buckets(max_model_len)`).
 * vLLM also labels an `engine` index; kvq has one engine and labels `model_name` only.
 */

/** TTFT bucket edges, seconds (vLLM). */
export const TTFT_BUCKETS: readonly number[] = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560];
/** Inter-token latency bucket edges, seconds (vLLM). */
export const ITL_BUCKETS: readonly number[] = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];
/** End-to-end and queue-time bucket edges, seconds (vLLM's `request_latency_buckets`). */
export const REQUEST_LATENCY_BUCKETS: readonly number[] = [0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680];

/** KV tier load / store latency bucket edges, seconds (100 µs .. 2.5 s: loopback Redis answers in well under 1 ms). */
export const KV_TIER_LATENCY_BUCKETS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** 1, 2, 5, 10, 20, 50, ... up to and including `max` (vLLM's 1-2-5 token-count buckets). */
export function buckets125(max: number): number[] {
  const out: number[] = [];
  for (let scale = 1; ; scale *= 10) {
    for (const m of [1, 2, 5]) {
      if (m * scale > max) return out;
      out.push(m * scale);
    }
  }
}

/** Facts /metrics reports besides the engine's own counters. */
export interface MetricsContext {
  readonly llm: LLM;
  readonly loop: EngineLoop;
  readonly modelName: string;
  /** The `--kv-cache-dtype` as given (`auto`, `fp8`, ...). */
  readonly kvCacheDtype: string;
  readonly calculateKvScales: boolean;
  readonly enablePrefixCaching: boolean;
  /** Requests aborted because their client disconnected. */
  readonly clientAborts: () => number;
  /** HTTP requests answered with an error status, by status. */
  readonly httpErrors: () => ReadonlyMap<number, number>;
}

/** Seconds on the engine's clock (`performance.timeOrigin`-based, as `RequestMetrics`). */
const nowSeconds = () => performance.timeOrigin / 1000 + performance.now() / 1000;

/** Per-request latency bookkeeping between outputs. */
interface Tracked {
  ttftSeen: boolean;
  /** Per sequence: tokens seen and when the last of them arrived (seconds). */
  readonly seqs: Map<number, { tokens: number; at: number }>;
}

/**
 * The server's metrics: gauges and counters read from the engine when scraped, histograms observed from every
 * {@link RequestOutput} the {@link EngineLoop} hands out (attach with `loop.observer = metrics`).
 * - TTFT: `firstTokenTime - arrivalTime`, once per engine request (its first token of any sequence).
 * - Inter-token latency: per sequence, the time between the outputs that brought its successive tokens (one
 *   observation per sequence per step that added tokens, as vLLM's per-iteration ITL).
 * - E2E: `finishedTime - arrivalTime`; queue: `firstScheduledTime - arrivalTime` (when it was scheduled);
 *   prompt / generation tokens: per finished engine request (generation summed over its `n` sequences).
 */
export class ServerMetrics implements OutputObserver {
  /** This server's registry (no other server shares it). */
  readonly registry = new Registry();
  private readonly ttft: Histogram<'model_name'>;
  private readonly itl: Histogram<'model_name'>;
  private readonly e2e: Histogram<'model_name'>;
  private readonly queue: Histogram<'model_name'>;
  private readonly promptTokens: Histogram<'model_name'>;
  private readonly generationTokens: Histogram<'model_name'>;
  private readonly tracked = new Map<string, Tracked>();
  private readonly labels: { model_name: string };

  constructor(private readonly ctx: MetricsContext) {
    const { llm, loop } = ctx;
    const registers = [this.registry];
    const model = (this.labels = { model_name: ctx.modelName });
    const labelNames = ['model_name'] as const;
    const stats = () => llm.engine.stats();
    const blocks = () => llm.engine.manager.metrics();
    const gauge = (name: string, help: string, value: () => number) =>
      new Gauge({ name, help, labelNames, registers, collect() { this.set(model, finite(value())); } });
    const counter = (name: string, help: string, value: () => number) =>
      new Counter({ name, help, labelNames, registers, collect() { this.reset(); this.inc(model, finite(value())); } });
    const info = (name: string, help: string, labels: Record<string, string | number | boolean>) => {
      const strings = Object.fromEntries(Object.entries(labels).map(([k, v]) => [k, String(v)]));
      new Gauge({ name, help, labelNames: Object.keys(strings), registers }).set(strings, 1);
    };

    gauge('vllm:num_requests_running', 'Number of requests in model execution batches.', () => stats().numRunning);
    gauge('vllm:num_requests_waiting', 'Number of requests waiting to be processed.', () => stats().numWaiting);
    gauge('vllm:kv_cache_usage_perc', 'KV-cache usage. 1 means 100 percent usage.', () => stats().kvCacheUsage);
    counter('vllm:prefix_cache_queries_total', 'Prefix cache queries, in terms of number of queried tokens.', () => stats().prefixCacheQueries);
    counter('vllm:prefix_cache_hits_total', 'Prefix cache hits, in terms of number of cached tokens.', () => stats().prefixCacheHits);
    counter('vllm:num_preemptions_total', 'Cumulative number of preemptions from the engine.', () => stats().numPreemptions);
    counter('vllm:prompt_tokens_total', 'Number of prefill tokens processed.', () => stats().promptTokens);
    counter('vllm:generation_tokens_total', 'Number of generation tokens processed.', () => stats().generationTokens);
    new Counter({
      name: 'vllm:request_success_total',
      help: 'Count of finished requests (completions), by finish reason.',
      labelNames: ['model_name', 'finished_reason'] as const,
      registers,
      collect() {
        this.reset();
        for (const r of ['stop', 'length', 'abort']) this.inc({ ...model, finished_reason: r }, loop.counters.finished[r] ?? 0);
      },
    });
    info('vllm:cache_config_info', 'Information of the LLMEngine CacheConfig.', {
      block_size: llm.blockSize,
      cache_dtype: ctx.kvCacheDtype,
      calculate_kv_scales: ctx.calculateKvScales,
      enable_prefix_caching: ctx.enablePrefixCaching,
      num_gpu_blocks: llm.numBlocks,
    });
    const fp8 = isFp8Dtype(llm.kvDtype);
    info('kvq:kv_cache_info', 'The KV cache storage: dtype as requested and as stored, FP8 or not, scale granularity.', {
      ...model,
      kv_cache_dtype: ctx.kvCacheDtype,
      storage_dtype: llm.kvDtype,
      fp8,
      scale_granularity: fp8 ? llm.engine.storage.scaleGranularity : 'none',
    });
    gauge('kvq:kv_cache_bytes_per_token', 'KV-cache bytes per token over all layers (K and V).', () => llm.kvBytesPerToken);
    gauge('kvq:kv_cache_blocks', 'Usable KV-cache blocks (the null block excluded).', () => blocks().numUsableBlocks);
    gauge('kvq:kv_cache_blocks_used', 'KV-cache blocks held by sequences.', () => blocks().numUsableBlocks - blocks().numFreeBlocks);
    gauge('kvq:kv_cache_blocks_cached', 'Blocks holding a prefix-cache hash (in use or free).', () => blocks().numCachedBlocks);
    gauge('kvq:kv_cache_block_size', 'Tokens per KV-cache block.', () => llm.blockSize);
    gauge('kvq:kv_cache_capacity_tokens', 'Tokens the KV cache holds when full.', () => blocks().numUsableBlocks * llm.blockSize);
    counter('kvq:engine_steps_total', 'Engine steps (batched forward passes).', () => stats().steps);
    counter('kvq:client_disconnects_total', 'Requests aborted because their client went away.', () => ctx.clientAborts());
    counter('kvq:engine_errors_total', 'Engine steps that failed (every request in flight was aborted).', () => loop.counters.errors);
    new Counter({
      name: 'kvq:http_errors_total',
      help: 'HTTP responses with an error status.',
      labelNames: ['model_name', 'status'] as const,
      registers,
      collect() {
        this.reset();
        for (const [status, n] of ctx.httpErrors()) this.inc({ ...model, status }, n);
      },
    });

    const histogram = (name: string, help: string, buckets: readonly number[]) => new Histogram({ name, help, labelNames, registers, buckets: [...buckets] });
    this.registerKvTiers(registers, model);
    this.registerKvTelemetry(registers, model);
    this.ttft = histogram('vllm:time_to_first_token_seconds', 'Histogram of time to first token in seconds.', TTFT_BUCKETS);
    this.itl = histogram('vllm:inter_token_latency_seconds', 'Histogram of inter-token latency in seconds.', ITL_BUCKETS);
    this.e2e = histogram('vllm:e2e_request_latency_seconds', 'Histogram of e2e request latency in seconds.', REQUEST_LATENCY_BUCKETS);
    this.queue = histogram('vllm:request_queue_time_seconds', 'Histogram of time spent in WAITING phase for request.', REQUEST_LATENCY_BUCKETS);
    const tokenBuckets = buckets125(llm.engine.maxModelLen);
    this.promptTokens = histogram('vllm:request_prompt_tokens', 'Number of prefill tokens processed.', tokenBuckets);
    this.generationTokens = histogram('vllm:request_generation_tokens', 'Number of generation tokens processed.', tokenBuckets);
  }

  /**
   * FP8 telemetry (only for a quantized KV cache with telemetry on, `LLM.kvTelemetry()`): per layer and tensor (`k`,
   * `v`), the values written to the cache, saturated (clamped to the largest code) and flushed to zero.
   */
  private registerKvTelemetry(registers: Registry[], model: { model_name: string }): void {
    const { llm } = this.ctx;
    if (llm.kvTelemetry() === undefined) return;
    const labelNames = ['model_name', 'layer', 'tensor'] as const;
    const perLayer = (name: string, help: string, pick: 'written' | 'saturated' | 'flushed') =>
      new Counter({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.reset();
          for (const l of llm.kvTelemetry() ?? []) {
            this.inc({ ...model, layer: String(l.layer), tensor: 'k' }, finite(l.k[pick]));
            this.inc({ ...model, layer: String(l.layer), tensor: 'v' }, finite(l.v[pick]));
          }
        },
      });
    perLayer('kvq:kv_cache_written_values_total', 'Values written to the quantized KV cache.', 'written');
    perLayer('kvq:kv_cache_saturated_values_total', 'Values written to the KV cache beyond its largest code at their scale (stored clamped).', 'saturated');
    perLayer('kvq:kv_cache_flushed_values_total', 'Non-zero values written to the KV cache that were stored as zero.', 'flushed');
  }

  /**
   * KV tier metrics (only when the LLM has tiers): per tier (`tier` label: `host`, `redis`) hits, misses and bytes in
   * blocks / bytes, writes, dropped writes, failures by reason, and load / store latency histograms.
   */
  private registerKvTiers(registers: Registry[], model: { model_name: string }): void {
    const store = this.ctx.llm.kvStore;
    if (!store) return;
    const labelNames = ['model_name', 'tier'] as const;
    const perTier = (name: string, help: string, value: (s: KvTierStats) => number) =>
      new Counter({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.reset();
          for (const s of store.tierStats()) this.inc({ ...model, tier: s.tier }, finite(value(s)));
        },
      });
    perTier('kvq:kv_tier_hits_total', 'KV blocks loaded from the tier instead of computed.', (s) => s.hits);
    perTier('kvq:kv_tier_misses_total', 'KV blocks looked up in the tier and not loaded from it.', (s) => s.misses);
    perTier('kvq:kv_tier_loaded_bytes_total', 'Serialized KV block bytes loaded from the tier.', (s) => s.bytesLoaded);
    perTier('kvq:kv_tier_stored_bytes_total', 'Serialized KV block bytes written to the tier.', (s) => s.bytesStored);
    perTier('kvq:kv_tier_stored_blocks_total', 'KV blocks written to the tier.', (s) => s.blocksStored);
    perTier('kvq:kv_tier_dropped_blocks_total', 'KV block writes dropped because too many bytes were in flight.', (s) => s.blocksDropped);
    new Counter({
      name: 'kvq:kv_tier_failures_total',
      help: 'KV tier operations (or blocks) that failed and were treated as misses, by reason.',
      labelNames: ['model_name', 'tier', 'reason'] as const,
      registers,
      collect() {
        this.reset();
        for (const s of store.tierStats()) for (const r of KV_TIER_FAILURES) this.inc({ ...model, tier: s.tier, reason: r }, s.failures[r]);
      },
    });
    const llm = this.ctx.llm;
    new Counter({
      name: 'kvq:kv_tier_loaded_tokens_total',
      help: 'Prompt tokens whose KV was loaded from a KV tier instead of computed.',
      labelNames: ['model_name'] as const,
      registers,
      collect() {
        this.reset();
        this.inc(model, finite(llm.engine.stats().kvTierLoadedTokens));
      },
    });
    const latency = (name: string, help: string) => new Histogram({ name, help, labelNames, registers, buckets: [...KV_TIER_LATENCY_BUCKETS] });
    const load = latency('kvq:kv_tier_load_seconds', 'Latency of one batched KV tier lookup, seconds.');
    const stored = latency('kvq:kv_tier_store_seconds', 'Latency of one batched KV tier write, seconds.');
    store.onOperation((op) => (op.op === 'load' ? load : stored).observe({ ...model, tier: op.tier }, op.seconds));
  }

  /** The Prometheus text exposition (format 0.0.4) of every metric. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  /** The content type of {@link render}'s text. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** Requests whose latency bookkeeping is held (unfinished ones); 0 when idle (no leak). */
  get trackedRequests(): number {
    return this.tracked.size;
  }

  /** Observes one output of the engine (every step's outputs, aborts included); see the class comment. */
  observe(out: RequestOutput): void {
    const now = nowSeconds();
    let t = this.tracked.get(out.requestId);
    if (!t) {
      t = { ttftSeen: false, seqs: new Map() };
      this.tracked.set(out.requestId, t);
    }
    const m = out.metrics;
    if (!t.ttftSeen && m.firstTokenTime !== undefined) {
      t.ttftSeen = true;
      this.ttft.observe(this.labels, Math.max(0, m.firstTokenTime - m.arrivalTime));
    }
    for (const o of out.outputs) {
      const n = o.tokenIds.length;
      const prev = t.seqs.get(o.index);
      if (!prev) {
        if (n > 0) t.seqs.set(o.index, { tokens: n, at: now });
      } else if (n > prev.tokens) {
        this.itl.observe(this.labels, Math.max(0, now - prev.at));
        prev.tokens = n;
        prev.at = now;
      } else if (n < prev.tokens) {
        prev.tokens = n; // cannot happen with recompute preemption (outputs are kept); stay consistent anyway
      }
    }
    if (out.finished) {
      this.tracked.delete(out.requestId);
      const end = m.finishedTime ?? now;
      this.e2e.observe(this.labels, Math.max(0, end - m.arrivalTime));
      if (m.firstScheduledTime !== undefined) this.queue.observe(this.labels, Math.max(0, m.firstScheduledTime - m.arrivalTime));
      this.promptTokens.observe(this.labels, out.promptTokenIds.length);
      this.generationTokens.observe(this.labels, out.outputs.reduce((a, o) => a + o.tokenIds.length, 0));
    }
  }
}

function finite(v: number): number {
  return Number.isFinite(v) ? v : 0;
}
