// @kvq/engine public API — model loading half (formats, config, tokenizer, chat template, KV scales, convert).

export { EngineError, type EngineErrorCode, type EngineErrorDetails } from './errors.js';

export {
  asWeightMatrix,
  bf16ToNumber,
  dtypeBytes,
  f16ToNumber,
  GGML_BLOCKS,
  isCompressedDType,
  isDenseDType,
  isGgmlDType,
  permuteRotaryRows,
  quantizedByteLength,
  quantizedRowBytes,
  shapeSize,
  tensorToFloat32,
  type AnyTensorData,
  type CompressedWeightDtype,
  type GgmlWeightDtype,
  type Tensor,
  type TensorData,
  type TensorDType,
  type WeightDType,
  type WeightMatrix,
} from './tensor.js';

export {
  ropeInverseFrequencies,
  parseHfConfig,
  toHfConfigJson,
  SUPPORTED_ARCHITECTURES,
  type Architecture,
  type LayerType,
  type ModelConfig,
  type RopeScaling,
} from './config/model-config.js';
export type { FamilyFields } from './config/families.js';
export { parseGenerationConfig, toGenerationConfigJson, type GenerationConfig } from './config/generation-config.js';

export {
  expectedHfTensors,
  layerMatrices,
  weightsByHfName,
  type ExpectedTensor,
  type LayerMatrices,
  type LayerWeights,
  type ModelWeights,
} from './weights/model-weights.js';
export {
  classifyKvScaleName,
  kvScaleMethodOf,
  resolveKvScales,
  type CheckpointKvScales,
  type KvCacheFormat,
  type KvCacheScheme,
  type KvScaleMethod,
  type KvScales,
  type LayerKvScales,
  type RawLayerKvScales,
  type ResolveKvScalesOptions,
} from './weights/kv-scales.js';
export { KV_CACHE_SCALES_JSON_DTYPE, parseKvCacheScalesJson, readKvCacheScalesJson, type KvCacheScalesJsonContext } from './weights/kv-scales-json.js';

export {
  Tokenizer,
  type AddedToken,
  type DecodeOptions,
  type EncodeOptions,
  type TokenizerConfigJson,
  type TokenizerJson,
  type TokenizerOptions,
} from './tokenizer/tokenizer.js';
export { DecodeStream } from './tokenizer/decode-stream.js';
export { sentencePieceTokenizerJson, TokenType, type SentencePieceVocab } from './tokenizer/sentencepiece.js';

export { ChatTemplate, selectChatTemplate, type ChatMessage, type ChatRenderOptions } from './chat/chat-template.js';

export {
  encodeSafetensors,
  parseSafetensorsHeader,
  readSafetensorsHeader,
  writeSafetensors,
  type SafetensorsRawTensor,
  type SafetensorsWritable,
  type SafetensorsHeader,
  type SafetensorsTensorInfo,
} from './formats/safetensors.js';
export {
  GGML_TYPE_OF,
  GGML_TYPE_OF_QUANT,
  tensorDTypeOfGgml,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GgufValueType,
  parseGguf,
  readGgufHeader,
  ggmlTypeName,
  type GgufFile,
  type GgufTensorInfo,
  type GgufValue,
} from './formats/gguf.js';
export {
  encodeGguf,
  encodeGgufHeader,
  writeGguf,
  GGML_TENSOR_TYPES,
  GGML_TYPE_BYTES,
  GgufType,
  ggmlBlockDtypeOf,
  type GgmlDenseTensorType,
  type GgmlTensorType,
  type GgufEntry,
  type GgufTensor,
  type GgufTensorData,
  type GgufTensorHeader,
  type GgufTensorSpec,
} from './formats/gguf-writer.js';
export { ggufNameOfHf, hfNameOfGguf } from './load/gguf.js';
export {
  parseLlama2cHeader,
  parseLlama2cTokenizer,
  type Llama2cHeader,
  type Llama2cTokenizerFile,
} from './formats/llama2c.js';
export { MemorySource, openFileSource, type ByteSource } from './io/source.js';

export { detectModelFormat, loadModel, loadTokenizer } from './load/load-model.js';
export {
  type LoadedModel,
  type LoadedTokenizer,
  type LoadModelOptions,
  type LoadProgress,
  type ModelFormat,
} from './load/types.js';
export { convertToHf, type ConvertOptions, type ConvertResult } from './convert/convert.js';
export { fileTypeOf, GGUF_OUT_TYPES, writeModelAsGguf, type GgufOutType, type WriteGgufOptions, type WriteGgufResult } from './convert/to-gguf.js';
export { quantizeModel, type QuantizeModelOptions, type QuantizeResult } from './quantize/quantize.js';
/** `@kvq/kernels`' GGML / compressed-tensors weight quantizer (what the GGUF writer uses), for tools that write their own tensors. */
export { quantizeMatrix } from '@kvq/kernels';
export {
  ggufTensorType,
  isCompressedTensorsScheme,
  LLAMA_FTYPE,
  parseQuantizeScheme,
  QUANTIZE_SCHEMES,
  type CompressedTensorsScheme as CompressedTensorsQuantizeScheme,
  type GgufScheme,
  type QuantizeScheme,
} from './quantize/schemes.js';
export { parseCompressedTensorsConfig, type CompressedTensorsConfig } from './load/compressed-tensors.js';

// Running models: the LLM API, the engine core, the forward pass and sampling.
export { LLM, llamaWeightsOf, type KvCacheDtype, type LLMOptions, type ScoreResult } from './llm/llm.js';
export type { StreamDelta } from './llm/stream-deltas.js';
export { modelFingerprint } from './llm/fingerprint.js';
export { KV_CACHE_ROTATIONS, KvHadamardRotation, type KvCacheRotation } from './runtime/kv-rotation.js';
export { KV_CACHE_PLAN_FILE, kvCachePlanJson, parseKvCachePlan, type KvCachePlanFile } from './weights/kv-cache-plan.js';
export type { KvSkipLayer } from './llm/kv-skip-layers.js';
export type { KvLayerTelemetry, KvTensorTelemetry } from './runtime/kv-telemetry.js';
export {
  BACKEND_FALLBACK_WARNING,
  ENGINE_BACKEND_CANDIDATES,
  gpuBackendCandidate,
  selectBackend,
  type BackendWarning,
  type SelectBackendOptions,
  type WarningHandler,
} from './llm/backend.js';
export {
  LLMEngine,
  type AddRequestOptions,
  type CompletionOutput,
  type Detokenizer,
  type EngineKvTiers,
  type EngineStats,
  type FinishReason,
  type RequestMetrics,
  type RequestOutput,
} from './runtime/engine.js';
export {
  Scheduler,
  type ScheduledSequence,
  type SchedulerConfig,
  type SchedulerOutput,
  type SchedulerSequence,
  type SchedulingPolicy,
} from './runtime/scheduler.js';
export { ModelRunner, type LogitsRows, type ModelRunnerInput, type ModelRunnerOutput } from './runtime/model-runner.js';
export { Sampler, type SampleRequest, type SampleResult } from './runtime/sampler.js';
export {
  LlamaForward,
  type AttentionObserver,
  type ForwardBatch,
  type ForwardVariant,
  type LayerAttentionDims,
  type LlamaDims,
  type LlamaForwardOptions,
  type LlamaLayerWeights,
  type LlamaWeights,
} from './runtime/forward.js';
export { llamaDimsOf } from './runtime/architecture.js';
export { calculateKvScalesObserver, KV_SCALE_CONSTANTS } from './runtime/kv-scales.js';
export { resolveSamplingParams, type ResolvedSamplingParams, type SamplingParams } from './sampling/params.js';
export { SeededRng } from './sampling/rng.js';
export { checkStructuredOutputs, GrammarConstraint, StructuredOutputCompiler, vocabTypeOf, type StructuredOutputsParams } from './structured/structured.js';
export type { TokenConstraint } from './runtime/constraint.js';
export { checkTools, forcedToolCalls, parseToolCalls, ToolCallStreamParser, toolCallFormatOf, toolChoiceConstraint, type ParsedOutput, type ParsedToolCall, type ToolCallFormat, type ToolChoice, type ToolDefinition, type ToolStreamDelta } from './tools/tool-calls.js';
export {
  applyLogitsProcessors,
  applyPenalties,
  argmax,
  badWordsTokenIds,
  logSoftmax,
  referenceSamplePass,
  sampleToken,
  samplingDistribution,
  tokenLogprobs,
  type SamplePass,
  type TokenLogprob,
  type TokenLogprobs,
} from './sampling/sampler.js';

// Hugging Face Hub: model and dataset repos into the standard Hub cache (huggingface_hub's layout and variables).
export {
  DATASET_FILE_EXTENSIONS,
  downloadDataset,
  downloadModel,
  selectDatasetFiles,
  selectModelFiles,
  type DownloadDatasetOptions,
  type DownloadModelOptions,
  type HubDataset,
} from './hub/hub.js';
export { type HubDownloadProgress, type HubFetchOptions } from './hub/download.js';
export { hubSettings, isHubId, parseHubId, repoCacheFolder, type HubId, type HubRepoType, type HubSettings } from './hub/settings.js';
