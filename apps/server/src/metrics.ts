import type { LLM } from '@kvq/engine';
import { isFp8Dtype } from '@kvq/cache';
import type { EngineLoop } from './engine-loop.js';

/** Facts /metrics reports besides the engine's counters. */
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

function esc(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function labels(l: Record<string, string | number | boolean>): string {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${esc(String(v))}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

/**
 * Renders the Prometheus text exposition (format 0.0.4). vLLM's metric names where vLLM has the metric (counters
 * carry the `_total` suffix as its Python client writes them), `kvq:` names for the FP8 cache facts.
 */
export function renderMetrics(ctx: MetricsContext): string {
  const { llm, loop } = ctx;
  const s = llm.engine.stats();
  const m = llm.engine.manager.metrics();
  const model = { model_name: ctx.modelName };
  const lines: string[] = [];
  const metric = (name: string, type: 'gauge' | 'counter', help: string, samples: [Record<string, string | number | boolean>, number][]) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [l, v] of samples) lines.push(`${name}${labels(l)} ${Number.isFinite(v) ? v : 0}`);
  };
  metric('vllm:num_requests_running', 'gauge', 'Number of requests in model execution batches.', [[model, s.numRunning]]);
  metric('vllm:num_requests_waiting', 'gauge', 'Number of requests waiting to be processed.', [[model, s.numWaiting]]);
  metric('vllm:kv_cache_usage_perc', 'gauge', 'KV-cache usage. 1 means 100 percent usage.', [[model, s.kvCacheUsage]]);
  metric('vllm:prefix_cache_queries_total', 'counter', 'Prefix cache queries, in terms of number of queried tokens.', [[model, s.prefixCacheQueries]]);
  metric('vllm:prefix_cache_hits_total', 'counter', 'Prefix cache hits, in terms of number of cached tokens.', [[model, s.prefixCacheHits]]);
  metric('vllm:num_preemptions_total', 'counter', 'Cumulative number of preemptions from the engine.', [[model, s.numPreemptions]]);
  metric('vllm:prompt_tokens_total', 'counter', 'Number of prefill tokens processed.', [[model, s.promptTokens]]);
  metric('vllm:generation_tokens_total', 'counter', 'Number of generation tokens processed.', [[model, s.generationTokens]]);
  metric(
    'vllm:request_success_total',
    'counter',
    'Count of finished requests (completions), by finish reason.',
    (['stop', 'length', 'abort'] as const).map((r) => [{ ...model, finished_reason: r }, loop.counters.finished[r] ?? 0]),
  );
  metric('vllm:cache_config_info', 'gauge', 'Information of the LLMEngine CacheConfig.', [
    [
      {
        block_size: llm.blockSize,
        cache_dtype: ctx.kvCacheDtype,
        calculate_kv_scales: ctx.calculateKvScales,
        enable_prefix_caching: ctx.enablePrefixCaching,
        num_gpu_blocks: llm.numBlocks,
      },
      1,
    ],
  ]);
  const storage = llm.engine.storage;
  metric('kvq:kv_cache_info', 'gauge', 'The KV cache storage: dtype as requested and as stored, FP8 or not, scale granularity.', [
    [
      {
        ...model,
        kv_cache_dtype: ctx.kvCacheDtype,
        storage_dtype: llm.kvDtype,
        fp8: isFp8Dtype(llm.kvDtype),
        scale_granularity: isFp8Dtype(llm.kvDtype) ? storage.scaleGranularity : 'none',
      },
      1,
    ],
  ]);
  metric('kvq:kv_cache_bytes_per_token', 'gauge', 'KV-cache bytes per token over all layers (K and V).', [[model, llm.kvBytesPerToken]]);
  metric('kvq:kv_cache_blocks', 'gauge', 'Usable KV-cache blocks (the null block excluded).', [[model, m.numUsableBlocks]]);
  metric('kvq:kv_cache_blocks_used', 'gauge', 'KV-cache blocks held by sequences.', [[model, m.numUsableBlocks - m.numFreeBlocks]]);
  metric('kvq:kv_cache_blocks_cached', 'gauge', 'Blocks holding a prefix-cache hash (in use or free).', [[model, m.numCachedBlocks]]);
  metric('kvq:kv_cache_block_size', 'gauge', 'Tokens per KV-cache block.', [[model, llm.blockSize]]);
  metric('kvq:kv_cache_capacity_tokens', 'gauge', 'Tokens the KV cache holds when full.', [[model, m.numUsableBlocks * llm.blockSize]]);
  metric('kvq:engine_steps_total', 'counter', 'Engine steps (batched forward passes).', [[model, s.steps]]);
  metric('kvq:client_disconnects_total', 'counter', 'Requests aborted because their client went away.', [[model, ctx.clientAborts()]]);
  metric('kvq:engine_errors_total', 'counter', 'Engine steps that failed (every request in flight was aborted).', [[model, loop.counters.errors]]);
  metric(
    'kvq:http_errors_total',
    'counter',
    'HTTP responses with an error status.',
    [...ctx.httpErrors()].map(([status, n]) => [{ ...model, status }, n]),
  );
  return `${lines.join('\n')}\n`;
}
