/**
 * @kvq/server: an OpenAI-compatible HTTP server over @kvq/engine (completions, chat, streaming, /metrics),
 * with one continuous-batching loop shared by every client.
 * @see ../README.md
 */
export { createServer, samplingDefaults, type KvqServer, type ServerOptions } from './server.js';
export { SERVER_BACKEND_CANDIDATES } from './backends.js';
export { EngineLoop, type OutputObserver, type RequestListener } from './engine-loop.js';
export { ServerContext, finishReason, type ServerContextOptions } from './context.js';
export { sse, sseDone, sseError, sseStart } from './sse.js';
export { Generation } from './generation.js';
export { ServerMetrics, buckets125, TTFT_BUCKETS, ITL_BUCKETS, REQUEST_LATENCY_BUCKETS, KV_TIER_LATENCY_BUCKETS, type MetricsContext } from './metrics.js';
export { buildKvTiers, type KvTierFlags } from './kv-tiers.js';
export {
  ServerError,
  toHttpError,
  SERVER_ERROR_HTTP,
  ENGINE_ERROR_HTTP,
  CACHE_ERROR_HTTP,
  KERNEL_ERROR_HTTP,
  type ServerErrorCode,
  type OpenAIErrorBody,
  type OpenAIErrorType,
} from './errors.js';
export {
  chatRequestSchema,
  completionRequestSchema,
  type ChatMessageIn,
  type ChatRequest,
  type CommonRequest,
  type CompletionRequest,
  type OpenAIFinishReason,
  type Usage,
} from './openai/protocol.js';
export { DeltaText, chatLogprobs, completionLogprobs, tokenText, type ChatLogprob, type CompletionLogprobs } from './openai/text.js';
export {
  detokenizeRequestSchema,
  tokenizeRequestSchema,
  type DetokenizeRequest,
  type DetokenizeResponse,
  type TokenizeRequest,
  type TokenizeResponse,
} from './routes/tokenize.js';
export { runSoak, quantile, type SoakOptions, type SoakResult } from './soak.js';
export { measureThroughput, type ThroughputOptions, type ThroughputResult } from './throughput.js';
