/**
 * @kvq/bench-peer (private): kvq measured against llama.cpp (node-llama-cpp 3.21.1) on identical GGUF models —
 * speed (prompt processing, decode at several contexts, TTFT, peak RSS, KV bytes), KV-cache quality (NLL, KL,
 * top-1 agreement) and greedy parity — and the GGUF models it compares (written with `@kvq/engine`'s GGUF writer).
 * @see ../README.md
 */
export { BenchPeerError, type BenchPeerErrorCode, type BenchPeerErrorDetails } from './errors.js';

export {
  alternate,
  bestPeer,
  runPeerBenchmark,
  shortReason,
  speedTargets,
  qualityDocuments,
  splitDocuments,
  summarize,
  type ModelSpeedReport,
  type PeerBenchmarkOptions,
  type PeerBenchmarkReport,
  type SpeedSummary,
  type TargetResult,
} from './benchmark.js';
export { PEER_BENCHMARK_USAGE, parsePeerBenchmarkArgs, type PeerBenchmarkArgs } from './args.js';
export { prepareQualityModel, prepareQuantizedTinyModel, prepareTinyF32Model, prepareRandomModel, prepareSpeedModel, QUANT_SCHEMES, RANDOM_SHAPES, SPEED_MODELS, type PreparedModel, type QuantScheme, type SpeedModelName } from './models.js';
export { CROSS_ENGINE_KVQ, CROSS_ENGINE_SCHEMES, CROSS_ENGINE_TARGETS, crossEngineTargets, randomDocuments, runCrossEngineQuantized, type CrossEngineContext, type CrossEngineModelResult, type CrossEngineScheme } from './quantized.js';
export { defaultPeerDir, importPeer, installedPeerVersion, installPeer, isPeerInstalled, PEER_PACKAGE, PEER_VERSION, peerInstallArgs, prebuiltPackage } from './peer/install.js';
export { peerKvUnsupported, PeerRunner } from './peer/runner.js';
export { KvqRunner, calibratedHeadScales, type GenerationTiming } from './kvq/runner.js';
export { runGreedyJob, runJob, runQualityJob, runSpeedJob, schedulingPolicy } from './child.js';
export { childScript, realtimeAvailable, resolveRealtime, runChild, type Realtime } from './spawn.js';
export { median, QualityAccumulator, logProbsFromMap, logSoftmaxInto, MIN_PROBABILITY } from './metrics.js';
export {
  configLabel,
  KV_ELEMENT_BYTES,
  kvBytesPerToken,
  promptTokens,
  type Configuration,
  type ContextSpeed,
  type GreedyJob,
  type GreedyResult,
  type Job,
  type JobResult,
  type KvqKv,
  type ModelDims,
  type PeerKv,
  type QualityJob,
  type QualityResult,
  type QualityRow,
  type Side,
  type SpeedJob,
  type SpeedResult,
} from './protocol.js';
export { benchmarkMarkdown, extractNotes, NOTES_END, NOTES_START } from './report/markdown.js';
export { decodeChartSvg, niceAxis, type ChartPanel, type ChartSeries } from './report/svg.js';
export { chartPanels, mergeReports, writeReport } from './report/write.js';

export {
  checkLlamaShape,
  llamaModelMetadata,
  llamaTensorSlots,
  SYNTHETIC_VOCAB,
  syntheticTokenizerMetadata,
  syntheticVocab,
  TOKEN_TYPE,
  type LlamaShape,
  type LlamaTensorSlot,
} from './gguf/llama.js';
export { randomLlamaQuantizedTensors, randomLlamaTensors, randomTensorValues, toGgmlData, writeRandomLlamaGguf } from './gguf/random-model.js';
export { ggufTensorName, gpt2TokenizerMetadata, writeHfModelAsGguf } from './gguf/from-hf.js';
