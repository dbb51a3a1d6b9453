import {
  KvCacheManager,
  KvCacheStorage,
  planKvCache,
  resolveKvCacheDtype,
  TieredKvStore,
  type KvBlockTier,
  type KvCacheDtypeOption,
  type KvStorageDtype,
} from '@kvq/cache';
import { isFp8Dtype, isKvQuantDtype } from '@kvq/cache';
import type { BackendCandidate, KernelBackend } from '@kvq/kernels';
import type { ChatMessage } from '../chat/chat-template.js';
import type { ModelConfig } from '../config/model-config.js';
import { EngineError } from '../errors.js';
import { selectBackend, type WarningHandler } from './backend.js';
import { checkKvDtypeOnBackend, GENERIC_KV_PROBE_SHAPE } from './kv-support.js';
import { downloadModel } from '../hub/hub.js';
import { isHubId, type HubSettings } from '../hub/settings.js';
import { loadModel } from '../load/load-model.js';
import type { LoadedModel, LoadProgress } from '../load/types.js';
import { resolveKvScales, type CheckpointKvScales, type KvCacheFormat, type KvScales } from '../weights/kv-scales.js';
import { readKvCacheScalesJson } from '../weights/kv-scales-json.js';
import { LLMEngine, type AddRequestOptions, type RequestOutput } from '../runtime/engine.js';
import { checkStructuredOutputs, StructuredOutputCompiler } from '../structured/structured.js';
import { llamaDimsOf, llamaWeightsOf } from '../runtime/architecture.js';
import { deviceMemoryOf, LlamaForward } from '../runtime/forward.js';
import { calculateKvScalesObserver, NVFP4_KV_SCALE_CONSTANTS } from '../runtime/kv-scales.js';
import { checkKvCacheRotation, kvRotationFor, type KvCacheRotation } from '../runtime/kv-rotation.js';
import { kvLayerDtypes, type KvSkipLayer } from './kv-skip-layers.js';
import { createKvKeep } from './kv-keep-setup.js';
import { kvKeepConfig } from '../runtime/kv-keep.js';
import { KvTelemetry, type KvLayerTelemetry } from '../runtime/kv-telemetry.js';
import { modelFingerprint } from './fingerprint.js';
import { EventLoopYield } from './event-loop-yield.js';
import { StreamDeltas, type StreamDelta } from './stream-deltas.js';
import type { SchedulingPolicy } from '../runtime/scheduler.js';
import type { SamplingParams } from '../sampling/params.js';

/** `kv_cache_dtype` strings (vLLM) plus kvq's explicit storage names. */
export type KvCacheDtype = KvCacheDtypeOption;

/** Options of {@link LLM.create}, vLLM's `LLM(...)` arguments in camelCase. */
export interface LLMOptions {
  /**
   * A model folder or file (HF folder, .gguf, llama2.c .bin), a Hugging Face Hub id `org/name[@revision]`
   * (downloaded into the Hub cache, see {@link downloadModel}; an existing local path of the same name wins), or an
   * already loaded model.
   */
  readonly model: string | LoadedModel;
  /** Hub settings for a Hub id. Default: {@link hubSettings} of `process.env` (`HF_ENDPOINT`, `HF_TOKEN`, ...). */
  readonly hub?: HubSettings;
  /** One-line notices of a Hub download (a resumed transfer, a cached snapshot used while the Hub is unreachable). */
  readonly onNotice?: (message: string) => void;
  /**
   * `auto` (model dtype), `fp8` (= `fp8_e4m3`), `fp8_e4m3`, `fp8_e5m2` (FNUZ formats when the backend reports
   * `info.fp8Fnuz`, AMD MI300-class, as vLLM does), or a storage dtype (`e4m3fnuz`, `e5m2fnuz`, `bf16`, ...). Default `auto`.
   * Also vLLM's write-time-scaled dtypes `fp8_per_token_head`, `int8_per_token_head`, `int4_per_token_head` and kvq's
   * `int4_g16` / `int4_g32` / `int4_g64`, `nvfp4`, `q4_0`, `int4_g32_f16` (scales computed per token and kv head, or per group, when the cache
   * is written and stored in each block; docs/spec/kv-dtypes.md). Today only the reference backend
   * (`backend: 'reference'`) has kernels for them: on another backend `LLM.create` throws `INVALID_ARGUMENT` (field
   * `kvCacheDtype`) before loading the model, never falling back to another dtype.
   * `auto` on a compressed-tensors checkpoint with a `kv_cache_scheme` gives the FP8 cache the checkpoint was
   * calibrated for (`fp8`, its scales, no `calculateKvScales`), as vLLM does; an explicit dtype always wins.
   */
  readonly kvCacheDtype?: KvCacheDtype;
  /**
   * vLLM `calculate_kv_scales`: scales from the first forward pass (amax/200, amax/200, amax/100). Default false.
   * With `kvCacheDtype: 'nvfp4'` it sets nvfp4's per-tensor scales instead: amax / 1200 for K and V (the E4M3 block
   * scales then stay below 448 up to 2.24x the first pass's amax, vLLM's FP8 headroom); otherwise they stay 1.0.
   * Ignored, with a process warning (code `KVQ_CHECKPOINT_KV_SCALES`), when the checkpoint has KV scales: checkpoint
   * scales win (vLLM).
   */
  readonly calculateKvScales?: boolean;
  /**
   * vLLM's legacy `quantization_param_path`: a `kv_cache_scales.json` of per-layer KV-cache scaling factors
   * (`{"model_type", "kv_cache": {"dtype": "float8_e4m3fn", "scaling_factor": {"0": {"<layer>": scale}}}}`), one scale
   * per layer used for both K and V (q := k), doubled on FNUZ formats. Read only when given (a file in the model
   * folder is never picked up by itself, as in vLLM). It replaces the checkpoint's KV scales (vLLM applied it after
   * the weights; a `KVQ_CHECKPOINT_KV_SCALES` warning says so) and, like checkpoint scales, turns `calculateKvScales`
   * off. With a cache that is not FP8 e4m3 (`auto` on a model without a KV scheme, bf16, `fp8_e5m2`) the file is
   * validated, then ignored with a `KVQ_KV_SCALES_UNUSED` warning (vLLM used it only for `kv_cache_dtype fp8`).
   * A bad file throws (see `parseKvCacheScalesJson`); vLLM logged the error and fell back to 1.0.
   * @see ../../../../docs/spec/vllm-fp8-kv-cache.md §3.5
   */
  readonly quantizationParamPath?: string;
  /**
   * FP8-query attention (Flash Attention 3 semantics), FP8 caches only. Default false. Without calibrated q scales
   * (a checkpoint `q_scale` in every layer, or `calculateKvScales`) a `KVQ_FP8_QUERY_UNCALIBRATED` warning is given.
   */
  readonly fp8Query?: boolean;
  /**
   * `'hadamard'` rotates q, k and v of every head by a fixed randomized orthonormal Walsh-Hadamard transform after
   * RoPE, so the cache stores rotated K/V and the attention output is rotated back (scores are unchanged; a quantized
   * cache loses less, most for the 4-bit dtypes: docs/benchmarks.md). Works with every KV dtype and backend (the
   * rotation runs in the engine, `headSize · log2(headSize)` additions per head vector). FP8 scales from a checkpoint or
   * `quantizationParamPath` were measured on unrotated K/V: a `KVQ_ROTATION_SCALES` warning says so. Default `'none'`
   * (vLLM's behaviour). A head size without a power-of-two factor >= 8 is an `INVALID_ARGUMENT` error.
   */
  readonly kvCacheRotation?: KvCacheRotation;
  /**
   * vLLM's `kv_cache_dtype_skip_layers`: layers whose KV cache stays in the model dtype (`auto`) while the others use
   * `kvCacheDtype`. Entries: layer indices (numbers, or decimal strings as vLLM takes them) and `'sliding_window'`
   * (every sliding-window attention layer: Gemma 2/3's local layers, all layers of a Mistral-style config). The cache
   * is sized with each layer's bytes (`kvq plan`), and its block hashes and tier blocks cover the per-layer dtypes.
   * Default none. A bad entry is an `INVALID_ARGUMENT` error (field `kvCacheDtypeSkipLayers`).
   */
  readonly kvCacheDtypeSkipLayers?: readonly KvSkipLayer[];
  /**
   * A per-layer KV-cache dtype plan: one `kvCacheDtype` value per attention layer (`'auto'` = the model dtype), e.g.
   * `['int8_per_token_head', 'int4_g32', ...]`. Needs `kvCacheDtype` absent or `'auto'`. Default: the checkpoint's
   * plan (`kvq_kv_cache_plan.json`, written by `kvq calibrate --plan`) when `kvCacheDtype` is absent or `'auto'`
   * (its rotation too, unless `kvCacheRotation` is given), else none. `kvCacheDtypeSkipLayers` applies on top. The
   * cache's main dtype (`LLM.kvDtype`) is the plan's most frequent one.
   */
  readonly kvCacheLayerDtypes?: readonly KvCacheDtype[];
  /**
   * The V cache's dtype when it should differ from K's (llama.cpp's `--cache-type-v`): every layer that stores
   * `kvCacheDtype` stores its V pool in this dtype instead (skipped layers keep the model dtype for both). Keys are
   * the more sensitive half (docs/benchmarks.md), e.g. `kvCacheDtype: 'int8_per_token_head'` with
   * `kvCacheValueDtype: 'int4_g32_f16'`. Needs a backend with kernels for separate K and V dtypes (CPU, reference;
   * another backend is an `INVALID_ARGUMENT` error), and not `fp8Query` or `calculateKvScales`. Not with a per-layer
   * plan (use {@link kvCacheLayerValueDtypes}). Default: V stored like K.
   */
  readonly kvCacheValueDtype?: KvCacheDtype;
  /**
   * The V dtype of each layer beside {@link kvCacheLayerDtypes} (which then gives each layer's K dtype), one
   * `kvCacheDtype` value per attention layer. Default: the checkpoint plan's `layer_value_dtypes` when its plan is used,
   * else each layer's K dtype. Same backend and option conditions as {@link kvCacheValueDtype}.
   */
  readonly kvCacheLayerValueDtypes?: readonly KvCacheDtype[];
  /**
   * Attention sinks in full precision: the first N tokens of every sequence also stay in the model dtype, and attention
   * reads them from there (TensorRT-LLM keeps sink tokens likewise). Rounded up to whole blocks (`blockSize`). Applies to
   * the full-attention layers whose cache is quantized; needs a backend whose attention returns its log-sum-exp (CPU,
   * reference) and prefix caching off (the default when this is set). Default 0.
   */
  readonly kvCacheKeepSink?: number;
  /**
   * A precision tail: the newest N tokens of every sequence stay in the model dtype too, and leave it (read from the
   * quantized cache) as they age out, a block at a time, so between N and N + blockSize - 1 newest tokens are kept.
   * Same conditions as {@link kvCacheKeepSink}. Default 0.
   */
  readonly kvCacheKeepRecent?: number;
  /**
   * FP8 telemetry: count, per layer and for K and V, the values written to a quantized KV cache, and those saturated
   * (clamped to the largest code) or flushed to zero ({@link LLM.kvTelemetry}; the server exports them in /metrics,
   * `kvq eval --json` reports them). Costs nothing on a float cache and one pass over the written values on a quantized
   * one (measured in docs/benchmarks.md). Default true, except on a backend with device memory (GPU), where the count
   * runs on the host and so keeps the activations off the device: there it is opt-in (`true`).
   */
  readonly kvTelemetry?: boolean;
  /**
   * How activations meet GGML-quantized weights (GGUF Q8_0 ... Q6_K): `'q8'` (default) rounds each activation row to
   * GGML's 8-bit blocks first, as llama.cpp and vLLM's GGUF kernels do (the same function as those engines; int8 dot
   * products on AVX2 CPUs); `'f32'` multiplies float32 activations by the exact block values (slower on CPUs,
   * slightly closer to the unquantized model). Other weights always take float32 activations.
   */
  readonly ggmlActivations?: 'q8' | 'f32';
  /**
   * How activations meet `int4` weights (compressed-tensors W4A16 / GPTQ / AWQ-style checkpoints): `'q16'` (default)
   * rounds each activation row to 16 bits in blocks of 128 first (error at most amax / 65534 per element, ~1e-5 of
   * the outputs; the bf16 activations GPU W4A16 kernels take are ~4e-3); on AVX-512 VNNI CPUs the 4-bit weights then
   * meet the codes in exact integer dot products. `'f32'` multiplies float32 activations by the dequantized weights.
   */
  readonly int4Activations?: 'q16' | 'f32';
  /**
   * Decode steps run each layer's q/k/v, and its gate/up, as one `linear` call over their stacked rows where the weights
   * allow (see `LlamaForwardOptions.stackProjections`). Default true; `false` runs one call per projection (the same
   * logits).
   */
  readonly stackProjections?: boolean;
  /** Max prompt + output tokens. Default: the model's `max_position_embeddings`. */
  readonly maxModelLen?: number;
  /** Bytes for the KV cache. Default 256 MiB. */
  readonly kvCacheMemory?: number;
  /** Tokens per block, a power of two. Default 16. */
  readonly blockSize?: number;
  /** Default true (false with {@link kvCacheKeepSink} / {@link kvCacheKeepRecent}, which need it off). */
  readonly enablePrefixCaching?: boolean;
  /** Default 64. */
  readonly maxNumSeqs?: number;
  /** Default 512. */
  readonly maxNumBatchedTokens?: number;
  /**
   * Whom the scheduler preempts when KV blocks run out (vLLM `scheduling_policy`): `'fcfs'` (the latest admitted) or
   * `'priority'` (the largest `priority` of `addRequest`, then the latest arrival). Default `'fcfs'`.
   */
  readonly schedulingPolicy?: SchedulingPolicy;
  /**
   * A backend object, a name that must load (`'cpu'`, `'cuda'`, `'rocm'`, `'reference'`, a module specifier: failure
   * throws `BACKEND_UNAVAILABLE` naming the backend and the reason, never a fallback), or `'auto'` for the best
   * available of {@link LLMOptions.backendCandidates}, then the reference backend (`KVQ_BACKEND` honoured).
   * Default `'auto'`.
   */
  readonly backend?: KernelBackend | string;
  /**
   * The native backend candidates `'auto'` tries, best first, before the pure-TypeScript reference backend (always
   * last); a `backend` name such as `'cuda'` that matches a candidate's `name` loads through that candidate. Default
   * `ENGINE_BACKEND_CANDIDATES` (the CPU addon only: the engine does not depend on the GPU packages). An app
   * that can import them passes them first, e.g.
   * `[{ name: 'cuda', load: () => import('@kvq/kernels-cuda') }, { name: 'rocm', load: () => import('@kvq/kernels-rocm') }, ...ENGINE_BACKEND_CANDIDATES]`;
   * in `'auto'` a candidate that cannot load (not installed, no built addon, no device) is skipped silently when a
   * later native one loads. Ignored when `backend` is an object or `'reference'`.
   */
  readonly backendCandidates?: readonly BackendCandidate[];
  /**
   * On a backend with device memory (GPU): keep the activations between ops and the KV pools on the device, and take
   * greedy tokens there (`argmax`), so a decode step moves only token ids, positions, slots, sequence lengths, the
   * block-table rows that changed and the sampled ids (or the logits a request needs) between host and device.
   * `false`: host activations and host KV pools, copied to and from the device by every op (for comparison and
   * debugging). Default true. Ignored on CPU backends.
   */
  readonly deviceResident?: boolean;
  /**
   * Receives the warning given when `'auto'` ends up on the pure-TypeScript reference backend (why, and the fix).
   * Default: `process.emitWarning` with code `KVQ_BACKEND_FALLBACK`, once per process; pass `() => {}` to silence.
   */
  readonly onWarning?: WarningHandler;
  /** Progress of model loading (and of a Hub id's download first, with `phase: 'download'`). */
  readonly onProgress?: (progress: LoadProgress) => void;
  /**
   * KV block tiers beyond the in-process pool, fastest first: `HostMemoryTier` (`@kvq/cache`, `--kv-offload-memory`),
   * `RedisKvTier` (`@kvq/cache-redis`, `--kv-store`), or any `KvBlockTier`. On a prefix miss the engine looks the
   * missing full blocks up there and loads the hits instead of computing them; full blocks are written to every tier
   * in the background. Failures (down, slow, full, corrupt or foreign values) are logged, counted and treated as
   * misses. Block hashes then derive from the model's fingerprint (not a random seed), so replicas of the same model
   * and KV format share blocks. Needs prefix caching. The LLM owns the tiers: {@link LLM.dispose} closes them.
   * @see ../../../../docs/scale-out.md
   */
  readonly kvTiers?: readonly KvBlockTier[];
  /** Time limit of one tier call (lookup or write), ms; a slower tier counts as a miss. Default 1000. */
  readonly kvTierTimeoutMs?: number;
  /** Receives tier failure reports (rate-limited). Default: `process.emitWarning` with code `KVQ_KV_TIER`. */
  readonly onKvTierLog?: (message: string) => void;
}

/** Per-token log-probabilities of a text (natural log). */
export interface ScoreResult {
  readonly tokenIds: readonly number[];
  /** Logprob of token i given tokens before it (index 0, the first token, has none). */
  readonly logprobs: readonly (number | undefined)[];
  /** Sum of the negative logprobs of scored tokens. */
  readonly nllSum: number;
  /** Number of scored tokens. */
  readonly count: number;
}

export { llamaWeightsOf } from '../runtime/architecture.js';

/** A model option's local path: itself when it exists or is not a Hub id, else the Hub snapshot (downloaded). */
async function resolveModelPath(model: string, options: LLMOptions): Promise<string> {
  if (!isHubId(model)) return model;
  const onProgress = options.onProgress;
  return downloadModel(model, {
    ...(options.hub ? { settings: options.hub } : {}),
    ...(options.onNotice ? { onNotice: options.onNotice } : {}),
    ...(onProgress ? { onProgress: (p) => onProgress({ phase: 'download', file: p.file, loadedBytes: p.bytes, totalBytes: p.total, tensor: '' }) } : {}),
  });
}

/**
 * Run a Llama-family model with a paged (optionally FP8) KV cache: vLLM's `LLM` in TypeScript.
 * @example
 * const llm = await LLM.create({ model: 'path/to/model', kvCacheDtype: 'fp8' });
 * const [out] = await llm.generate('Once upon a time', { temperature: 0, maxTokens: 32 });
 */
export class LLM {
  readonly model: LoadedModel;
  readonly engine: LLMEngine;
  readonly backend: KernelBackend;
  /** Storage element type of the KV cache. */
  readonly kvDtype: KvStorageDtype;
  /** Blocks in the cache (block 0 reserved) and tokens they hold. */
  readonly numBlocks: number;
  readonly blockSize: number;
  /** KV bytes per token over all layers. */
  readonly kvBytesPerToken: number;
  /**
   * The KV-cache scales written into the cache at creation (checkpoint, `quantizationParamPath` or their 1.0
   * fallbacks), with where they came from; undefined for a cache that is not FP8 or when `calculateKvScales` computes
   * them from the first forward pass (then read them from `engine.forwardPass.storage`).
   */
  readonly kvScales: { readonly scales: KvScales; readonly origin: string } | undefined;
  private nextId = 0;
  /**
   * Per-layer counts of the values written to the KV cache, saturated and flushed to zero (K and V), since creation;
   * undefined for a float cache or with `kvTelemetry: false` ({@link LLMOptions.kvTelemetry}).
   */
  kvTelemetry(): KvLayerTelemetry[] | undefined {
    return this.engine.forwardPass.kvTelemetry?.snapshot();
  }

  /** How K/V are rotated before the cache write ({@link LLMOptions.kvCacheRotation}). */
  get kvCacheRotation(): KvCacheRotation {
    return this.engine.forwardPass.kvRotation ? 'hadamard' : 'none';
  }

  /**
   * The kept-precision part of the cache ({@link LLMOptions.kvCacheKeepSink} / {@link LLMOptions.kvCacheKeepRecent}),
   * or undefined: sink tokens (whole blocks), recent tokens, the layers that keep them, and the kept cache's bytes
   * (model dtype, sized for `maxNumSeqs` sequences; on top of `kvBytesPerToken`).
   */
  get kvCacheKeep(): { readonly sinkTokens: number; readonly recentTokens: number; readonly layers: readonly number[]; readonly bytes: number } | undefined {
    const k = this.engine.forwardPass.kvKeep;
    if (!k) return undefined;
    const layers = k.layers.flatMap((on, l) => (on ? [l] : []));
    return { sinkTokens: k.config.sinkTokens, recentTokens: k.config.recentTokens, layers, bytes: k.storage.byteLength };
  }
  private structured: Promise<StructuredOutputCompiler> | undefined;

  private constructor(
    model: LoadedModel,
    engine: LLMEngine,
    backend: KernelBackend,
    kvDtype: KvStorageDtype,
    numBlocks: number,
    blockSize: number,
    bytesPerToken: number,
    kvScales: { readonly scales: KvScales; readonly origin: string } | undefined,
  ) {
    this.kvScales = kvScales;
    this.model = model;
    this.engine = engine;
    this.backend = backend;
    this.kvDtype = kvDtype;
    this.numBlocks = numBlocks;
    this.blockSize = blockSize;
    this.kvBytesPerToken = bytesPerToken;
  }

  /** Loads the model, sizes the KV cache for `kvCacheMemory`, and builds the engine. */
  static async create(options: LLMOptions): Promise<LLM> {
    // The backend first: on FNUZ hardware (AMD MI300-class, `info.fp8Fnuz`) `fp8` means e4m3fnuz, as in vLLM, and
    // checkpoint scales must be loaded for that format (x2).
    if (options === null || typeof options !== 'object') {
      throw new EngineError('INVALID_ARGUMENT', `LLM.create needs an options object ({ model: ... }), got ${String(options)}`, { field: 'options' });
    }
    const m: unknown = options.model;
    if (!(typeof m === 'string' && m.length > 0) && !(m !== null && typeof m === 'object' && 'weights' in m && 'config' in m)) {
      throw new EngineError(
        'INVALID_ARGUMENT',
        `LLM.create: model must be a model folder or file path, a Hub id 'org/name[@revision]' or a LoadedModel, got ${m === '' ? "''" : String(m)}`,
        { field: 'model' },
      );
    }
    if (options.deviceResident !== undefined && typeof options.deviceResident !== 'boolean') {
      throw new EngineError('INVALID_ARGUMENT', `deviceResident must be true or false, got ${JSON.stringify(options.deviceResident)}`, {
        field: 'deviceResident',
      });
    }
    const { backend } = await selectBackend({
      backend: options.backend,
      ...(options.backendCandidates ? { candidates: options.backendCandidates } : {}),
      ...(options.onWarning ? { onWarning: options.onWarning } : {}),
    });
    const fnuz = backend.info.fp8Fnuz === true;
    checkKvCacheRotation(options.kvCacheRotation); // before the model loads
    const keepConfig = kvKeepConfig(options.kvCacheKeepSink, options.kvCacheKeepRecent, options.blockSize ?? 16);
    if (keepConfig && options.enablePrefixCaching === true) {
      throw new EngineError('INVALID_ARGUMENT', 'kvCacheKeepSink / kvCacheKeepRecent need prefix caching off: a cached prefix would skip computing the tokens they keep; drop enablePrefixCaching: true', {
        field: 'enablePrefixCaching',
      });
    }
    const resolveDtype = (modelDtype: 'f32' | 'f16' | 'bf16'): KvStorageDtype => {
      try {
        return resolveKvCacheDtype(options.kvCacheDtype ?? 'auto', modelDtype, { fnuz });
      } catch (cause) {
        throw new EngineError('INVALID_ARGUMENT', `kvCacheDtype ${JSON.stringify(options.kvCacheDtype)} is not supported: ${(cause as Error).message}`, { field: 'kvCacheDtype', cause });
      }
    };
    // An FP8 option names its format whatever the model dtype is.
    const fp8Format = resolveDtype('bf16');
    // A write-time-scaled dtype (int8_per_token_head, nvfp4, ...) the backend has no kernels for fails here, before
    // the model is loaded, not at the first request (checked again below with the model's shape).
    checkKvDtypeOnBackend(backend, fp8Format, GENERIC_KV_PROBE_SHAPE, String(options.kvCacheDtype ?? 'auto'));
    const model = typeof options.model === 'string'
      ? await loadModel(await resolveModelPath(options.model, options), {
          ...(options.onProgress ? { onProgress: options.onProgress } : {}),
          ...(isFp8Dtype(fp8Format) ? { kvCacheFormat: fp8Format } : {}),
        })
      : options.model;
    const c = model.config;
    const modelDtype = c.torchDtype === 'float32' ? 'f32' : c.torchDtype === 'float16' ? 'f16' : 'bf16';
    const layerPlan = layerPlanOf(options, model, modelDtype, fnuz);
    let ckpt: CheckpointKvScales | undefined = model.checkpointKvScales;
    // vLLM (config/cache.py, late 2026): a compressed-tensors kv_cache_scheme turns `auto` into fp8 and turns
    // calculate_kv_scales off; an explicit choice wins.
    const schemeFp8 = (options.kvCacheDtype ?? 'auto') === 'auto' && ckpt?.method === 'compressed-tensors' && ckpt.scheme !== undefined;
    const kvDtype = layerPlan ? layerPlan.mainDtype : schemeFp8 ? resolveKvCacheDtype('fp8', modelDtype, { fnuz }) : resolveDtype(modelDtype);
    let kvScales: KvScales | undefined = model.kvScales;
    // The model may have been loaded before the backend was known (the CLI does): scales resolved for another FP8
    // format (e.g. e4m3fn while the backend runs e4m3fnuz, where base-method scales double) are resolved again.
    if (isFp8Dtype(kvDtype) && ckpt && kvScales?.format !== kvDtype) {
      kvScales = resolveKvScales(ckpt, { numHeads: c.numHeads, numKvHeads: c.numKvHeads, format: kvDtype as KvCacheFormat });
    }
    if (options.quantizationParamPath !== undefined) {
      const file = options.quantizationParamPath;
      if (typeof file !== 'string' || file.length === 0) {
        throw new EngineError('INVALID_ARGUMENT', `quantizationParamPath must be a file path, got ${JSON.stringify(file)}`, { field: 'quantizationParamPath' });
      }
      const json = await readKvCacheScalesJson(file, { numLayers: c.numLayers, modelType: c.modelType });
      if (kvDtype === 'e4m3fn' || kvDtype === 'e4m3fnuz') {
        if (kvScales && kvScales.layersFromCheckpoint > 0) {
          process.emitWarning(
            `kvq: quantizationParamPath ${file} replaces the checkpoint's KV-cache scales (${kvScales.layersFromCheckpoint} layers from ${ckpt?.origin ?? 'the checkpoint'}), as vLLM applied the file after loading the weights`,
            { code: 'KVQ_CHECKPOINT_KV_SCALES' },
          );
        }
        ckpt = json;
        kvScales = resolveKvScales(json, { numHeads: c.numHeads, numKvHeads: c.numKvHeads, format: kvDtype });
      } else {
        process.emitWarning(
          `kvq: quantizationParamPath ${file} ignored: its scales are for an FP8 e4m3 KV cache, and this cache is ${kvDtype} (kvCacheDtype ${JSON.stringify(options.kvCacheDtype ?? 'auto')}); pass kvCacheDtype 'fp8' to use them`,
          { code: 'KVQ_KV_SCALES_UNUSED' },
        );
      }
    }
    let calculateKvScales = options.calculateKvScales ?? false;
    if (calculateKvScales && isFp8Dtype(kvDtype) && kvScales && kvScales.layersFromCheckpoint > 0) {
      process.emitWarning(`kvq: calculateKvScales ignored: the checkpoint has KV-cache scales (${kvScales.layersFromCheckpoint} layers from ${ckpt?.origin ?? 'the checkpoint'}), and checkpoint scales win as in vLLM`, { code: 'KVQ_CHECKPOINT_KV_SCALES' });
      calculateKvScales = false;
    }
    if (schemeFp8) calculateKvScales = false;
    if (options.fp8Query && isFp8Dtype(kvDtype) && !calculateKvScales && !(ckpt && ckpt.layers.every((l) => l.q !== undefined))) {
      process.emitWarning(
        'kvq: fp8Query with uncalibrated q scales (the checkpoint has no q_scale for every layer, so q uses 1.0 or k_scale): attention may lose accuracy; calibrate with `kvq calibrate --quantize-query` or pass calculateKvScales',
        { code: 'KVQ_FP8_QUERY_UNCALIBRATED' },
      );
    }
    if (options.fp8Query && !isFp8Dtype(kvDtype)) {
      throw new EngineError('INVALID_ARGUMENT', `fp8Query needs an FP8 KV cache, got kvCacheDtype ${JSON.stringify(options.kvCacheDtype ?? 'auto')}`, { field: 'fp8Query' });
    }
    const valueDtype = valueDtypeOf(options, layerPlan !== undefined, kvDtype, modelDtype, fnuz, calculateKvScales);
    const maxModelLen = options.maxModelLen ?? c.maxPositionEmbeddings;
    if (!Number.isInteger(maxModelLen) || maxModelLen < 2) {
      throw new EngineError('INVALID_ARGUMENT', `maxModelLen must be an integer >= 2, got ${maxModelLen}`, { field: 'maxModelLen' });
    }
    const blockSize = options.blockSize ?? 16;
    const probeShape = { numKvHeads: c.numKvHeads, numHeads: c.numHeads, headSize: c.headDim, blockSize };
    checkKvDtypeOnBackend(backend, kvDtype, probeShape, String(options.kvCacheDtype ?? 'auto'));
    // Per-layer dtypes: a plan's (or the cache dtype everywhere), then the skipped layers in the model dtype; none when
    // every layer ends up in kvDtype (a uniform cache).
    const skipDtype = resolveKvCacheDtype('auto', modelDtype);
    const perLayer = kvLayerDtypes(options.kvCacheDtypeSkipLayers, c, layerPlan?.layerDtypes ?? new Array<KvStorageDtype>(c.numLayers).fill(kvDtype), skipDtype);
    const perLayerValue = kvLayerDtypes(
      options.kvCacheDtypeSkipLayers,
      c,
      layerPlan?.layerValueDtypes ?? layerPlan?.layerDtypes ?? new Array<KvStorageDtype>(c.numLayers).fill(valueDtype),
      skipDtype,
    );
    const layerDtypes = perLayer.every((d) => d === kvDtype) ? undefined : perLayer;
    const layerValueDtypes = perLayerValue.every((d, l) => d === perLayer[l]) ? undefined : perLayerValue;
    for (const d of new Set([...(layerDtypes ?? []), ...perLayerValue])) if (d !== kvDtype) checkKvDtypeOnBackend(backend, d, probeShape, d);
    if (layerValueDtypes) {
      const field = options.kvCacheValueDtype !== undefined ? 'kvCacheValueDtype' : 'kvCacheLayerValueDtypes';
      const pairs = new Set(perLayer.map((k, l) => `${k}/${perLayerValue[l]}`));
      for (const pair of pairs) {
        const [k, v] = pair.split('/') as [KvStorageDtype, KvStorageDtype];
        if (k !== v) checkKvDtypeOnBackend(backend, k, probeShape, k, v, field);
      }
    }
    // Per-head scales are FP8's (checkpoint / calibrated); the write-time-scaled dtypes compute their own.
    const perHead = isFp8Dtype(kvDtype) && kvScales?.granularity === 'head';
    const plan = planKvCache({
      model: { numLayers: c.numLayers, numKvHeads: c.numKvHeads, headSize: c.headDim, numHeads: c.numHeads },
      memoryBytes: options.kvCacheMemory ?? 256 * 1024 * 1024,
      dtype: kvDtype,
      blockSize,
      ...(isFp8Dtype(kvDtype) ? { scales: perHead ? ('head' as const) : ('tensor' as const) } : {}),
      ...(layerDtypes ? { layerDtypes } : {}),
      ...(layerValueDtypes ? { layerValueDtypes } : {}),
    });
    if (plan.numBlocks < 2) {
      throw new EngineError('INVALID_ARGUMENT', `kvCacheMemory ${options.kvCacheMemory} bytes holds ${plan.numBlocks} blocks of ${blockSize} tokens; at least 2 are needed`, { field: 'kvCacheMemory' });
    }
    const storage = new KvCacheStorage({
      dtype: kvDtype,
      numLayers: c.numLayers,
      numBlocks: plan.numBlocks,
      blockSize,
      numKvHeads: c.numKvHeads,
      headSize: c.headDim,
      numHeads: c.numHeads,
      scaleGranularity: perHead ? 'head' : 'tensor',
      qScaleGranularity: perHead ? 'head' : 'tensor',
      ...(layerDtypes ? { layerDtypes } : {}),
      ...(layerValueDtypes ? { layerValueDtypes } : {}),
    });
    if (isFp8Dtype(kvDtype) && kvScales && !calculateKvScales) {
      // Skipped layers (model dtype) take no scales; a layer with one FP8 pool takes that pool's.
      kvScales.layers.forEach((l, i) => {
        const k = isFp8Dtype(storage.layerDtypes[i]!);
        const v = isFp8Dtype(storage.layerValueDtypes[i]!);
        if (k || v) storage.setScales(i, { ...(k ? { kScale: l.k, qScale: perHead ? expandQ(l.q, c) : l.q } : {}), ...(v ? { vScale: l.v } : {}) });
      });
    }
    const dims = llamaDimsOf(c, maxModelLen);
    const kvRotation = kvRotationFor(options.kvCacheRotation ?? layerPlan?.rotation, c.headDim);
    if (kvRotation && isFp8Dtype(kvDtype) && kvScales && kvScales.layersFromCheckpoint > 0 && !calculateKvScales) {
      process.emitWarning(
        `kvq: kvCacheRotation 'hadamard' with KV-cache scales from ${ckpt?.origin ?? 'the checkpoint'}: they were measured on unrotated K/V, so values may saturate or lose precision; prefer a write-time-scaled dtype (fp8_per_token_head) or calculateKvScales`,
        { code: 'KVQ_ROTATION_SCALES' },
      );
    }
    const telemetry = options.kvTelemetry === false || (deviceMemoryOf(backend) !== undefined && options.kvTelemetry !== true) || storage.layers.every((l) => [l.dtype, l.valueDtype].every((d) => !isFp8Dtype(d) && !isKvQuantDtype(d))) ? undefined : new KvTelemetry(storage.layers);
    const kvKeep = keepConfig
      ? createKvKeep({ backend, config: keepConfig, storage, dims, modelDtype: resolveKvCacheDtype('auto', modelDtype), maxNumSeqs: options.maxNumSeqs ?? 64 })
      : undefined;
    const forward = new LlamaForward(backend, llamaWeightsOf(model), dims, storage, {
      ...(kvRotation ? { kvRotation } : {}),
      ...(kvKeep ? { kvKeep } : {}),
      ...(telemetry ? { kvTelemetry: telemetry } : {}),
      fp8Query: options.fp8Query ?? false,
      ...(options.ggmlActivations !== undefined ? { ggmlActivations: options.ggmlActivations } : {}),
      ...(options.int4Activations !== undefined ? { int4Activations: options.int4Activations } : {}),
      ...(options.stackProjections !== undefined ? { stackProjections: options.stackProjections } : {}),
      ...(options.deviceResident === false ? { deviceActivations: false, deviceKvCache: false } : {}),
    });
    const enablePrefixCaching = options.enablePrefixCaching ?? !keepConfig;
    let kvTiers: { store: TieredKvStore; modelFingerprint: string } | undefined;
    if (options.kvTiers !== undefined && options.kvTiers.length > 0) {
      if (keepConfig) {
        throw new EngineError('INVALID_ARGUMENT', 'kvTiers need prefix caching, which kvCacheKeepSink / kvCacheKeepRecent turn off: drop one or the other', { field: 'kvTiers' });
      }
      if (!enablePrefixCaching) {
        throw new EngineError('INVALID_ARGUMENT', 'kvTiers need prefix caching: drop enablePrefixCaching: false (or the tiers)', { field: 'kvTiers' });
      }
      try {
        kvTiers = {
          store: new TieredKvStore({
            tiers: options.kvTiers,
            ...(options.kvTierTimeoutMs !== undefined ? { timeoutMs: options.kvTierTimeoutMs } : {}),
            ...(options.onKvTierLog ? { log: options.onKvTierLog } : {}),
          }),
          // Rotated and unrotated K/V of the same model are different data: the rotation is part of the identity.
          modelFingerprint: kvRotation ? modelFingerprint(model, 'kv-rotation:hadamard') : modelFingerprint(model),
        };
      } catch (cause) {
        throw new EngineError('INVALID_ARGUMENT', `kvTiers: ${(cause as Error).message}`, { field: 'kvTiers', cause });
      }
    }
    const manager = new KvCacheManager({
      numBlocks: plan.numBlocks,
      blockSize,
      enablePrefixCaching,
      format: storage,
      // Shared tiers need the same block hashes in every replica of this model: seeded by its fingerprint.
      ...(kvTiers ? { hashSeed: `kvq-tiers/1:${kvTiers.modelFingerprint}` } : {}),
    });
    const engine = new LLMEngine({
      ...(kvTiers ? { kvTiers } : {}),
      forward,
      manager,
      eosTokenIds: c.eosTokenIds,
      scheduler: { maxModelLen, maxNumSeqs: options.maxNumSeqs ?? 64, maxNumBatchedTokens: options.maxNumBatchedTokens ?? 512, policy: options.schedulingPolicy ?? 'fcfs' },
      detokenizer: {
        decode: (ids, o) => model.tokenizer.decode(ids, o),
        appendedText: model.tokenizer.appendedText.bind(model.tokenizer),
        encode: (text) => model.tokenizer.encode(text, { addSpecialTokens: false }),
      },
    });
    if (calculateKvScales && (isFp8Dtype(kvDtype) || kvDtype === 'nvfp4')) {
      // nvfp4: the per-tensor scale g from the first pass's amax, with vLLM's FP8 headroom (the E4M3 block scales
      // reach 448 at 2.24x that amax): g = amax / (200 x 6). q is not quantized there; its scale is unused.
      const calc = calculateKvScalesObserver(backend, storage, kvDtype === 'nvfp4' ? NVFP4_KV_SCALE_CONSTANTS : undefined);
      engine.setAttentionObserver((layer, t) => {
        calc.observer(layer, t);
        if (calc.done()) engine.setAttentionObserver(undefined);
      });
    }
    const written = isFp8Dtype(kvDtype) && kvScales && !calculateKvScales ? { scales: kvScales, origin: ckpt?.origin ?? 'the checkpoint' } : undefined;
    return new LLM(model, engine, backend, kvDtype, plan.numBlocks, blockSize, plan.bytesPerToken, written);
  }

  /** Token ids of a prompt (BOS per the tokenizer's configuration). */
  encode(text: string): number[] {
    return this.model.tokenizer.encode(text);
  }

  /**
   * Generates for every prompt, batched (continuous batching); outputs in prompt order.
   * @param prompts text, or `{ promptTokenIds }`
   */
  async generate(prompts: string | { promptTokenIds: readonly number[] } | readonly (string | { promptTokenIds: readonly number[] })[], params: SamplingParams = {}): Promise<RequestOutput[]> {
    const list = Array.isArray(prompts) ? prompts : [prompts];
    const ids: string[] = [];
    for (const p of list) {
      const id = `gen-${this.nextId++}`;
      const tokens = typeof p === 'string' ? this.encode(p) : [...(p as { promptTokenIds: readonly number[] }).promptTokenIds];
      // Only finished outputs are read here: the text is decoded once at the end unless stop strings need it earlier.
      this.engine.addRequest(id, tokens, params, { ...(await this.requestOptions(params)), finalTextOnly: true });
      ids.push(id);
    }
    const done = new Map<string, RequestOutput>();
    const turn = new EventLoopYield();
    while (this.engine.hasUnfinishedRequests()) {
      if (this.engine.needsPrepare) await this.engine.prepare();
      for (const out of this.engine.step()) if (out.finished) done.set(out.requestId, out);
      if (turn.due()) await turn.yield();
    }
    return ids.map((id) => done.get(id)!);
  }

  /**
   * Streams a prompt's completions as text deltas (async iterator): one item per completion `index` (0..n-1) whenever
   * it progressed, `finished` when that completion ended (its last item), `output` the request's whole state.
   * Aborts the request if the loop exits early.
   */
  async *stream(
    prompt: string | { promptTokenIds: readonly number[] },
    params: SamplingParams = {},
  ): AsyncGenerator<StreamDelta> {
    const id = `stream-${this.nextId++}`;
    this.engine.addRequest(id, typeof prompt === 'string' ? this.encode(prompt) : [...prompt.promptTokenIds], params, await this.requestOptions(params));
    const deltas = new StreamDeltas(id);
    const turn = new EventLoopYield();
    try {
      while (!deltas.finished) {
        if (this.engine.needsPrepare) await this.engine.prepare();
        const items = deltas.take(this.engine.step());
        for (let i = 0; i < items.length; i++) yield items[i]!;
        if (turn.due()) await turn.yield();
      }
    } finally {
      if (!deltas.finished) this.engine.abortRequest(id);
    }
  }

  /**
   * Chat with the model's template (`add_generation_prompt`), generating the assistant replies: one conversation or a
   * batch of them (vLLM `LLM.chat`), one {@link RequestOutput} per conversation, in order.
   */
  async chat(conversations: readonly ChatMessage[] | readonly (readonly ChatMessage[])[], params: SamplingParams = {}): Promise<RequestOutput[]> {
    const template = this.model.chatTemplate;
    if (!template) throw new EngineError('CHAT_TEMPLATE', `the model at ${this.model.path} has no chat template`, { file: this.model.path });
    const batch = (conversations.length > 0 && Array.isArray(conversations[0]) ? conversations : [conversations]) as readonly (readonly ChatMessage[])[];
    const prompts = batch.map((messages) => ({
      promptTokenIds: this.model.tokenizer.encode(template.render(messages, { addGenerationPrompt: true }), { addSpecialTokens: false }),
    }));
    return this.generate(prompts, params);
  }

  /**
   * Per-token log-probabilities of a text (for perplexity): the text is tokenized with BOS and every token after
   * the first is scored. `onLogits` receives the raw logits rows (e.g. for KL divergence).
   */
  async score(textOrTokens: string | readonly number[], onLogits?: (firstPosition: number, logits: Float32Array, rows: number) => void): Promise<ScoreResult> {
    const tokens = typeof textOrTokens === 'string' ? this.encode(textOrTokens) : [...textOrTokens];
    const id = `score-${this.nextId++}`;
    this.engine.addRequest(id, tokens, {}, { scoreOnly: true, ...(onLogits ? { onPromptLogits: onLogits } : {}) });
    let result: RequestOutput | undefined;
    const turn = new EventLoopYield();
    while (this.engine.hasUnfinishedRequests()) {
      for (const out of this.engine.step()) if (out.requestId === id && out.finished) result = out;
      if (turn.due()) await turn.yield();
    }
    const logprobs = result!.promptLogprobs!;
    let nllSum = 0;
    let count = 0;
    for (const lp of logprobs) if (lp !== undefined) (nllSum -= lp), count++;
    return { tokenIds: tokens, logprobs, nllSum, count };
  }

  /**
   * The structured-output compiler of this model (xgrammar over its tokenizer; created on first use, grammars cached).
   * The server uses it to compile `response_format` / `structured_outputs` before `engine.addRequest`.
   */
  structuredOutputs(): Promise<StructuredOutputCompiler> {
    this.structured ??= StructuredOutputCompiler.create(this.model.tokenizer, this.model.config.vocabSize, this.model.config.eosTokenIds);
    return this.structured;
  }

  /** Engine options of a request: compiled constraints when it asks for structured outputs. */
  private async requestOptions(params: SamplingParams): Promise<AddRequestOptions> {
    if (params.structuredOutputs === undefined) return {};
    const compiler = await this.structuredOutputs();
    return { constraints: await compiler.constraints(checkStructuredOutputs(params.structuredOutputs), params.n ?? 1) };
  }

  /** The KV tiers beyond the pool (`kvTiers` option), with their counters; undefined without tiers. */
  get kvStore(): TieredKvStore | undefined {
    return this.engine.kvTiers?.store;
  }

  /** Releases the backend's native resources and closes the KV tiers (pending tier writes finish in the background). */
  dispose(): void {
    this.backend.dispose?.();
    void this.engine.kvTiers?.store.close();
  }
}

/** Per-kv-head q scales expanded to one per query head (the storage keeps q per query head when per-head). */
function expandQ(q: Float32Array, c: ModelConfig): Float32Array {
  if (q.length === c.numHeads) return q;
  const group = c.numHeads / c.numKvHeads;
  return Float32Array.from({ length: c.numHeads }, (_, h) => q[Math.floor(h / group)]!);
}

/**
 * The per-layer dtype plan `LLM.create` runs with: `kvCacheLayerDtypes`, else the checkpoint's plan when `kvCacheDtype`
 * is absent or `'auto'`, else none. Resolved to storage dtypes; the main dtype is the most frequent one.
 * @throws EngineError `INVALID_ARGUMENT` (field `kvCacheLayerDtypes`) for a wrong length, an unknown dtype, or a
 *   `kvCacheDtype` other than `'auto'` beside it
 */
function layerPlanOf(
  options: LLMOptions,
  model: LoadedModel,
  modelDtype: 'f32' | 'f16' | 'bf16',
  fnuz: boolean,
): { layerDtypes: KvStorageDtype[]; layerValueDtypes: KvStorageDtype[] | undefined; mainDtype: KvStorageDtype; rotation: KvCacheRotation | undefined } | undefined {
  const autoDtype = (options.kvCacheDtype ?? 'auto') === 'auto';
  const explicit = options.kvCacheLayerDtypes;
  const fromModel = explicit === undefined && autoDtype ? model.kvCachePlan : undefined;
  const list = explicit ?? fromModel?.layerDtypes;
  if (list === undefined) {
    if (options.kvCacheLayerValueDtypes !== undefined) {
      throw new EngineError('INVALID_ARGUMENT', 'kvCacheLayerValueDtypes needs kvCacheLayerDtypes (each layer\'s K dtype) beside it', { field: 'kvCacheLayerValueDtypes' });
    }
    return undefined;
  }
  const resolveList = (field: 'kvCacheLayerDtypes' | 'kvCacheLayerValueDtypes', given: readonly unknown[] | undefined): KvStorageDtype[] | undefined => {
    if (given === undefined) return undefined;
    const fail = (what: string, cause?: unknown): never => {
      throw new EngineError('INVALID_ARGUMENT', `${field}${fromModel ? ` (from ${fromModel.origin})` : ''} ${what}`, { field, ...(cause ? { cause } : {}) });
    };
    if (!autoDtype) fail(`needs kvCacheDtype 'auto' (or none), got ${JSON.stringify(options.kvCacheDtype)}`);
    if (!Array.isArray(given) || given.length !== model.config.numLayers) fail(`must list ${model.config.numLayers} dtypes (one per layer), got ${JSON.stringify(given)}`);
    return given.map((d, i) => {
      try {
        return resolveKvCacheDtype(d as KvCacheDtype, modelDtype, { fnuz });
      } catch (cause) {
        return fail(`[${i}] = ${JSON.stringify(d)} is not supported: ${(cause as Error).message}`, cause);
      }
    });
  };
  const layerDtypes = resolveList('kvCacheLayerDtypes', list)!;
  const layerValueDtypes = resolveList('kvCacheLayerValueDtypes', explicit !== undefined ? options.kvCacheLayerValueDtypes : fromModel?.layerValueDtypes);
  const counts = new Map<KvStorageDtype, number>();
  for (const d of layerDtypes) counts.set(d, (counts.get(d) ?? 0) + 1);
  const mainDtype = [...counts.entries()].sort((a, b) => b[1] - a[1])[0]![0];
  return { layerDtypes, layerValueDtypes, mainDtype, rotation: fromModel?.rotation };
}

/**
 * The V dtype of the layers that store the cache dtype: `kvCacheValueDtype` resolved, else `kvDtype`.
 * @throws EngineError `INVALID_ARGUMENT` (field `kvCacheValueDtype`) for an unknown dtype, beside a per-layer plan,
 *   or with `fp8Query` / `calculateKvScales` when it differs from `kvDtype`
 */
function valueDtypeOf(
  options: LLMOptions,
  hasPlan: boolean,
  kvDtype: KvStorageDtype,
  modelDtype: 'f32' | 'f16' | 'bf16',
  fnuz: boolean,
  calculateKvScales: boolean,
): KvStorageDtype {
  const given = options.kvCacheValueDtype;
  const fail = (what: string, cause?: unknown): never => {
    throw new EngineError('INVALID_ARGUMENT', `kvCacheValueDtype ${what}`, { field: 'kvCacheValueDtype', ...(cause ? { cause } : {}) });
  };
  const mixedPlan = options.kvCacheLayerValueDtypes !== undefined;
  if (given === undefined && !mixedPlan) return kvDtype;
  if (given !== undefined && hasPlan) fail('cannot be combined with a per-layer plan (kvCacheLayerDtypes or the checkpoint\'s); give kvCacheLayerValueDtypes instead');
  let v = kvDtype;
  if (given !== undefined) {
    try {
      v = resolveKvCacheDtype(given, modelDtype, { fnuz });
    } catch (cause) {
      fail(`${JSON.stringify(given)} is not supported: ${(cause as Error).message}`, cause);
    }
  }
  if (v !== kvDtype || mixedPlan) {
    const field = given !== undefined ? 'kvCacheValueDtype' : 'kvCacheLayerValueDtypes';
    if (options.fp8Query) throw new EngineError('INVALID_ARGUMENT', `fp8Query needs K and V in one FP8 dtype; drop ${field} or fp8Query`, { field });
    if (calculateKvScales) throw new EngineError('INVALID_ARGUMENT', `calculateKvScales needs K and V in one dtype; drop ${field} or calculateKvScales`, { field });
  }
  return v;
}
