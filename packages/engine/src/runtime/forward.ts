import { isFp8Dtype, type BlockCopy, type KvCacheStorage } from '@kvq/cache';
import {
  isGgmlDtype,
  type Activation,
  type DeviceMemory,
  type KernelBackend,
  type LinearArgs,
  type PagedAttentionArgs,
  type RopeStyle,
  type RopeTable,
  type WeightMatrix,
} from '@kvq/kernels';

import { EngineError } from '../errors.js';
import { int8ActivationsOf } from '../tensor.js';
import { keepAttention, KeepScratch, planKeepSplit, type KeepBatch, type KeepSplit, type KvKeep } from './kv-keep.js';
import { splitRows, STACKED_MAX_ROWS, stackedProjectionsOf } from './stacked-projections.js';
import type { KvHadamardRotation } from './kv-rotation.js';
import type { KvTelemetry } from './kv-telemetry.js';
import { scaleInPlace, softcapInPlace, softcappedPagedAttention } from './variant-ops.js';

/** One decoder layer's weights, Hugging Face orientation (`[out, in]` row-major). */
export interface LlamaLayerWeights {
  /** `input_layernorm.weight` `[hidden]`. */
  readonly inputLayernorm: Float32Array;
  /** `post_attention_layernorm.weight` `[hidden]`. */
  readonly postAttentionLayernorm: Float32Array;
  /** `[numHeads * headDim, hidden]`. */
  readonly qProj: WeightMatrix;
  /** `[numKvHeads * headDim, hidden]`. */
  readonly kProj: WeightMatrix;
  /** `[numKvHeads * headDim, hidden]`. */
  readonly vProj: WeightMatrix;
  /** `[hidden, numHeads * headDim]`. */
  readonly oProj: WeightMatrix;
  /** Qwen2-style q/k/v biases, or undefined. */
  readonly qBias?: Float32Array | undefined;
  readonly kBias?: Float32Array | undefined;
  readonly vBias?: Float32Array | undefined;
  /** `o_proj` bias, when the architecture has one. */
  readonly oBias?: Float32Array | undefined;
  /** `[intermediate, hidden]`. */
  readonly gateProj: WeightMatrix;
  /** `[intermediate, hidden]`. */
  readonly upProj: WeightMatrix;
  /** `[hidden, intermediate]`. */
  readonly downProj: WeightMatrix;
  /** Per-head RMSNorm weights `[headDim]` of queries / keys, applied before RoPE (Qwen3, Gemma 3). */
  readonly qNorm?: Float32Array | undefined;
  readonly kNorm?: Float32Array | undefined;
  /**
   * Gemma sandwich norms `[hidden]`. When present, `postAttentionLayernorm` normalizes the attention output before the
   * residual add and these wrap the MLP (`pre_feedforward_layernorm`, `post_feedforward_layernorm`).
   */
  readonly preFeedforwardLayernorm?: Float32Array | undefined;
  readonly postFeedforwardLayernorm?: Float32Array | undefined;
}

/** All weights of a Llama-family decoder. */
export interface LlamaWeights {
  /** `[vocab, hidden]`. */
  readonly embedTokens: WeightMatrix;
  readonly layers: readonly LlamaLayerWeights[];
  /** Final `norm.weight` `[hidden]`. */
  readonly norm: Float32Array;
  /** `[vocab, hidden]` (the embedding table itself when tied). */
  readonly lmHead: WeightMatrix;
}

/** Shape and numerics of the model the forward pass runs. */
export interface LlamaDims {
  readonly hiddenSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly intermediateSize: number;
  readonly vocabSize: number;
  readonly rmsNormEps: number;
  /** Pairing of rotated dims: `rotate_half` for Hugging Face weights. */
  readonly ropeStyle: RopeStyle;
  /** Precomputed RoPE cos/sin table (theta and scaling baked in). */
  readonly rope: RopeTable;
  /** Mistral-style sliding window, in tokens, for every layer (overridden per layer by `layers`). */
  readonly slidingWindow?: number | undefined;
  /** Per-layer RoPE table and sliding window (Gemma 2/3, Qwen2/3 `max_window_layers`), `numLayers` entries. */
  readonly layers?: readonly LayerAttentionDims[] | undefined;
  /** Architecture switches beyond Llama (absent: Llama). */
  readonly variant?: ForwardVariant | undefined;
}

/** One layer's attention geometry when it differs between layers. */
export interface LayerAttentionDims {
  readonly rope: RopeTable;
  /** Sliding window in tokens, or undefined for full causal attention. */
  readonly slidingWindow?: number | undefined;
}

/** Numerics that differ between model families (every field optional; absent = Llama). */
export interface ForwardVariant {
  /** MLP activation: SwiGLU `silu` (default) or Gemma's GeGLU `gelu_tanh`. */
  readonly activation?: 'silu' | 'gelu_tanh' | undefined;
  /** Multiplier of the embedding output (Gemma: sqrt(hidden) in the model dtype). */
  readonly embeddingScale?: number | undefined;
  /** Multiplier of `q . k`; default `1 / sqrt(headDim)`. */
  readonly softmaxScale?: number | undefined;
  /** `cap * tanh(score / cap)` on attention scores (Gemma 2). */
  readonly attnLogitSoftcapping?: number | undefined;
  /** `cap * tanh(logit / cap)` on the output logits (Gemma 2). */
  readonly finalLogitSoftcapping?: number | undefined;
}

/**
 * A varlen batch for one forward step (vLLM's flattened layout): sequence `s` owns token rows
 * `[queryStartLoc[s], queryStartLoc[s+1])`; its context length after this step is `seqLens[s]`.
 */
export interface ForwardBatch {
  /** Token ids `[numTokens]`. */
  readonly tokenIds: Int32Array;
  /** Absolute position of each token `[numTokens]`. */
  readonly positions: Int32Array;
  /** Cache slot of each token `[numTokens]` (block * blockSize + offset). */
  readonly slotMapping: Int32Array;
  readonly numTokens: number;
  readonly queryStartLoc: Int32Array;
  readonly seqLens: Int32Array;
  /** `[numSeqs, maxBlocksPerSeq]` row-major. */
  readonly blockTables: Int32Array;
  readonly maxBlocksPerSeq: number;
  readonly numSeqs: number;
  /** Token rows whose logits are wanted (e.g. each sequence's last row; every row for scoring). */
  readonly logitsRows: Int32Array;
  /** With a kept-precision cache ({@link LlamaForwardOptions.kvKeep}): the kept slots and regions of this batch. */
  readonly keep?: KeepBatch | undefined;
}

/**
 * Sees each layer's post-RoPE query, key and value (`[numTokens, heads, headDim]`) before the K/V are written
 * to the cache. Used by `calculate_kv_scales` and dataset calibration; it may set the layer's cache scales
 * (through the storage), which the write that follows then uses.
 */
export type AttentionObserver = (
  layer: number,
  tensors: { readonly query: Float32Array; readonly key: Float32Array; readonly value: Float32Array; readonly numTokens: number },
) => void;

/** Options of {@link LlamaForward}. */
export interface LlamaForwardOptions {
  /** Flash-Attention-3-style FP8 query (requires an FP8 cache). Default false. */
  readonly fp8Query?: boolean;
  /**
   * Decode steps (at most 4 rows) run each layer's q/k/v, and its gate/up, as one `linear` call over the stacked rows
   * when their weights are row views of one array (as `loadModel` leaves them) and the activations live on the host.
   * The same products, one weight stream instead of two or three. Default true; `false` runs one call per projection.
   */
  readonly stackProjections?: boolean;
  /**
   * How activations meet GGML-quantized weights (the kernels' `LinearArgs.activations`): `'q8'` (default) rounds
   * them to GGML's 8-bit blocks first, as llama.cpp and vLLM's GGUF kernels do (int8 dot products on AVX2);
   * `'f32'` multiplies the exact block values by float32 activations. Other weight dtypes always use float32.
   */
  readonly ggmlActivations?: 'q8' | 'f32';
  /**
   * How activations meet `int4` weights (compressed-tensors W4A16; the kernels' `LinearArgs.activations`): `'q16'`
   * (default) rounds them to 16 bits in blocks of 128 first (error at most amax / 65534 per element; exact int32
   * dot products on AVX-512 VNNI CPUs); `'f32'` multiplies float32 activations by the dequantized weights.
   */
  readonly int4Activations?: 'q16' | 'f32';
  /**
   * Rotation of q, k and v per head after RoPE, before the cache write (and before the observer, which sees what the
   * cache stores); the attention output is rotated back before `o_proj`. Default none (`kvCacheRotation: 'none'`).
   */
  readonly kvRotation?: KvHadamardRotation;
  /** Counts saturated and flushed values of every cache write (see {@link KvTelemetry}). Default none. */
  readonly kvTelemetry?: KvTelemetry;
  /**
   * Sink and recent tokens kept in the model dtype beside the quantized cache (`kvCacheKeepSink` /
   * `kvCacheKeepRecent`, see ./kv-keep.ts); batches then carry {@link ForwardBatch.keep}. Default none.
   */
  readonly kvKeep?: KvKeep;
  /**
   * Keep the activations in the backend's device memory between ops (`KernelBackend.memory`; GPU backends). Default
   * true when the backend has memory and every op of the step is a kernel op; it is off (host activations, copied per
   * op) with a KV rotation, KV telemetry, attention soft-capping or an embedding scale, which run in TypeScript.
   */
  readonly deviceActivations?: boolean;
  /**
   * Give the KV pools to the backend's device memory (`DeviceMemory.attachCache`): uploaded once, then written and
   * read only there (block copies on the device; KV tiers move blocks through {@link LlamaForward.blocksToHost} /
   * {@link LlamaForward.blocksFromHost}). Default true when the backend has memory.
   */
  readonly deviceKvCache?: boolean;
}

/**
 * The backend's memory when it is device memory (a GPU's); undefined for backends computing in host memory (their
 * `HostMemory` arrays are host arrays: routing activations through them gains nothing).
 */
export function deviceMemoryOf(backend: KernelBackend): DeviceMemory | undefined {
  return backend.memory && backend.memory.onHost !== true ? backend.memory : undefined;
}

/** Why the activations of a forward pass cannot stay on the device (undefined: they can). */
function hostOnlyReason(dims: LlamaDims, options: LlamaForwardOptions): string | undefined {
  if (options.kvRotation) return 'the KV rotation (Hadamard) runs in TypeScript';
  if (options.kvTelemetry) return 'KV telemetry reads the written keys and values in TypeScript';
  if (options.kvKeep) return 'the kept-precision KV cache merges attention in TypeScript';
  if (dims.variant?.attnLogitSoftcapping !== undefined) return 'attention soft-capping runs in TypeScript';
  if (dims.variant?.embeddingScale !== undefined) return 'the embedding scale is applied in TypeScript';
  return undefined;
}

/**
 * The Llama-family forward pass over the kernel contract and a paged KV cache.
 * NOTE: attention always reads K/V back from the cache (quantized for FP8), including the tokens written in this
 * very step, as vLLM does.
 */
export class LlamaForward {
  readonly backend: KernelBackend;
  readonly weights: LlamaWeights;
  readonly dims: LlamaDims;
  readonly storage: KvCacheStorage;
  readonly fp8Query: boolean;
  /** See {@link LlamaForwardOptions.ggmlActivations}. */
  readonly ggmlActivations: 'q8' | 'f32';
  /** See {@link LlamaForwardOptions.int4Activations}. */
  readonly int4Activations: 'q16' | 'f32';
  /** See {@link LlamaForwardOptions.kvRotation}. */
  readonly kvRotation: KvHadamardRotation | undefined;
  /** See {@link LlamaForwardOptions.kvTelemetry}. */
  readonly kvTelemetry: KvTelemetry | undefined;
  /** See {@link LlamaForwardOptions.kvKeep}. */
  readonly kvKeep: KvKeep | undefined;
  private readonly keepScratch = new KeepScratch();
  /** The attention split of the batch being run (planned once, used by every layer). */
  private keepPlan: { batch: ForwardBatch; split: KeepSplit } | undefined;
  /** The backend's device memory when the activations live there (see {@link LlamaForwardOptions.deviceActivations}). */
  readonly memory: DeviceMemory | undefined;
  /** The backend's device memory when the KV pools live there (see {@link LlamaForwardOptions.deviceKvCache}). */
  readonly kvMemory: DeviceMemory | undefined;
  private capacity = 0;
  private hidden: Activation = new Float32Array(0);
  private normed: Activation = new Float32Array(0);
  private q: Activation = new Float32Array(0);
  private k: Activation = new Float32Array(0);
  private v: Activation = new Float32Array(0);
  private attn: Activation = new Float32Array(0);
  private proj: Activation = new Float32Array(0);
  private gate: Activation = new Float32Array(0);
  private up: Activation = new Float32Array(0);
  /** Device logits `[rows, vocab]` of the identity-rows path (device activations only). */
  private logitsDev: Activation = new Float32Array(0);
  /** Host buffers reused for the gathered rows and the logits ({@link forwardArgmax}, `forward` with `reuse`). */
  private readonly scratchBuffers = { selected: new Float32Array(0), logits: new Float32Array(0) };
  /**
   * Per layer, q/k/v and gate/up as one matrix each where the weights allow (host activations only; decode steps of at
   * most STACKED_MAX_ROWS rows run them: ./stacked-projections.ts).
   */
  private readonly stacked: readonly { readonly qkv?: StackedRun; readonly gateUp?: StackedRun }[];

  /** @throws EngineError `INVALID_ARGUMENT` for `fp8Query` on a model with attention soft-capping. */
  constructor(backend: KernelBackend, weights: LlamaWeights, dims: LlamaDims, storage: KvCacheStorage, options: LlamaForwardOptions = {}) {
    this.backend = backend;
    this.weights = weights;
    this.dims = dims;
    this.storage = storage;
    this.fp8Query = options.fp8Query ?? false;
    this.ggmlActivations = options.ggmlActivations ?? 'q8';
    this.int4Activations = options.int4Activations ?? 'q16';
    this.kvRotation = options.kvRotation;
    this.kvTelemetry = options.kvTelemetry;
    this.kvKeep = options.kvKeep;
    if (this.kvKeep && (this.kvKeep.layers.length !== dims.numLayers || this.kvKeep.storage.numLayers !== dims.numLayers)) {
      throw new EngineError('INVALID_ARGUMENT', `kvKeep covers ${this.kvKeep.layers.length} layers, the model has ${dims.numLayers}`, { field: 'kvCacheKeepSink' });
    }
    if (this.kvRotation && this.kvRotation.headSize !== dims.headDim) {
      throw new EngineError('INVALID_ARGUMENT', `kvRotation is for head size ${this.kvRotation.headSize}, the model's is ${dims.headDim}`, { field: 'kvCacheRotation' });
    }
    if (this.ggmlActivations !== 'q8' && this.ggmlActivations !== 'f32') {
      throw new EngineError('INVALID_ARGUMENT', `ggmlActivations must be 'q8' or 'f32', got ${JSON.stringify(this.ggmlActivations)}`, {
        field: 'ggmlActivations',
      });
    }
    if (this.int4Activations !== 'q16' && this.int4Activations !== 'f32') {
      throw new EngineError('INVALID_ARGUMENT', `int4Activations must be 'q16' or 'f32', got ${JSON.stringify(this.int4Activations)}`, {
        field: 'int4Activations',
      });
    }
    if (options.stackProjections !== undefined && typeof options.stackProjections !== 'boolean') {
      throw new EngineError('INVALID_ARGUMENT', `stackProjections must be a boolean, got ${JSON.stringify(options.stackProjections)}`, { field: 'stackProjections' });
    }
    if (this.fp8Query && dims.variant?.attnLogitSoftcapping !== undefined) {
      throw new EngineError('INVALID_ARGUMENT', 'fp8Query is not supported for models with attention logit soft-capping (Gemma 2)', { field: 'fp8Query' });
    }
    const device = deviceMemoryOf(backend);
    const canStay = device !== undefined && hostOnlyReason(dims, options) === undefined;
    if (options.deviceActivations === true && !canStay) {
      const why = device ? hostOnlyReason(dims, options) : `backend '${backend.name}' has no device memory`;
      throw new EngineError('INVALID_ARGUMENT', `deviceActivations: ${why}`, { field: 'deviceActivations' });
    }
    this.memory = canStay && options.deviceActivations !== false ? device : undefined;
    if (options.deviceKvCache === true && !device) {
      throw new EngineError('INVALID_ARGUMENT', `deviceKvCache: backend '${backend.name}' has no device memory`, { field: 'deviceKvCache' });
    }
    this.kvMemory = options.deviceKvCache !== false ? device : undefined;
    if (this.kvMemory) for (const layer of storage.layers) this.kvMemory.attachCache(layer);
    const stacked = this.memory || options.stackProjections === false ? [] : weights.layers.map(stackedProjectionsOf);
    // One output buffer per group, shared by the layers: [STACKED_MAX_ROWS, rows of the widest] (empty when none).
    const qkvOut = new Float32Array(STACKED_MAX_ROWS * Math.max(0, ...stacked.map((x) => x.qkv?.rows ?? 0)));
    const gateUpOut = new Float32Array(STACKED_MAX_ROWS * Math.max(0, ...stacked.map((x) => x.gateUp?.rows ?? 0)));
    const run = (weight: WeightMatrix, bias: Float32Array | undefined, out: Float32Array, widths: readonly number[]): StackedRun => {
      let offset = 0;
      return { weight, bias, out, views: widths.map((w) => out.subarray(offset, (offset += w))) };
    };
    this.stacked = stacked.map((x, l) => {
      const lw = weights.layers[l]!;
      return {
        ...(x.qkv ? { qkv: run(x.qkv, x.qkvBias, qkvOut, [lw.qProj.rows, lw.kProj.rows, lw.vProj.rows]) } : {}),
        ...(x.gateUp ? { gateUp: run(x.gateUp, undefined, gateUpOut, [lw.gateProj.rows, lw.upProj.rows]) } : {}),
      };
    });
  }

  /** Copy-on-write block copies on every layer (on the device when the pools live there). */
  copyBlocks(copies: readonly BlockCopy[]): void {
    if (!this.kvMemory) this.storage.copyBlocks(copies);
    else for (const layer of this.storage.layers) this.kvMemory.copyCacheBlocks(layer, copies);
  }

  /** Before host code reads blocks of the pools (KV tiers): their K/V from the device, when the pools live there. */
  blocksToHost(blocks: readonly number[]): void {
    if (this.kvMemory && blocks.length > 0) for (const layer of this.storage.layers) this.kvMemory.cacheToHost(layer, blocks);
  }

  /** After host code wrote blocks into the pools (KV tier loads): their K/V to the device, when the pools live there. */
  blocksFromHost(blocks: readonly number[]): void {
    if (this.kvMemory && blocks.length > 0) for (const layer of this.storage.layers) this.kvMemory.cacheFromHost(layer, blocks);
  }

  /** A float32 activation buffer of `length` elements: on the device when the activations live there. */
  private buffer(length: number): Activation {
    return this.memory ? this.memory.alloc('f32', Math.max(length, 1)) : new Float32Array(length);
  }

  /**
   * The host copy of an activation (a view of it on the host path; read from the device, a sync point, otherwise),
   * read into `host` when given (its length is `length`), else into a new array.
   */
  private toHost(a: Activation, length: number, host?: Float32Array): Float32Array {
    if (a instanceof Float32Array) return a;
    const out = host ?? new Float32Array(length);
    this.memory!.read(a, out);
    return out;
  }


  /**
   * `linear` with this forward's activation modes for GGML and int4 weights, and the checkpoint's for W8A8 int8
   * weights.
   */
  private linear(args: LinearArgs<Activation>): void {
    const { x, weight, bias, out, rows } = args;
    if (weight.dtype === 'int4') return this.backend.linear({ x, weight, bias, out, rows, activations: this.int4Activations });
    if (weight.dtype === 'int8') {
      const a = int8ActivationsOf(weight);
      if (!a) return this.backend.linear(args);
      if (a.staticScale === undefined) return this.backend.linear({ x, weight, bias, out, rows, activations: 'q8' });
      return this.backend.linear({ x, weight, bias, out, rows, activations: 'q8', activationScale: a.staticScale });
    }
    if (!isGgmlDtype(weight.dtype)) return this.backend.linear(args);
    // Spelled out: V8 clones-and-extends `{ ...args, activations }` on a slow path (~10 us; 85 calls a decode step).
    this.backend.linear({ x, weight, bias, out, rows, activations: this.ggmlActivations });
  }

  private ensureCapacity(numTokens: number): void {
    if (numTokens <= this.capacity) return;
    const n = Math.max(numTokens, Math.ceil(this.capacity * 1.5), 16);
    const d = this.dims;
    this.releaseBuffers();
    this.hidden = this.buffer(n * d.hiddenSize);
    this.normed = this.buffer(n * d.hiddenSize);
    this.q = this.buffer(n * d.numHeads * d.headDim);
    this.k = this.buffer(n * d.numKvHeads * d.headDim);
    this.v = this.buffer(n * d.numKvHeads * d.headDim);
    this.attn = this.buffer(n * d.numHeads * d.headDim);
    this.proj = this.buffer(n * d.hiddenSize);
    this.gate = this.buffer(n * d.intermediateSize);
    this.up = this.buffer(n * d.intermediateSize);
    this.capacity = n;
  }

  /** Free the device buffers now (they would also go with garbage collection). */
  private releaseBuffers(): void {
    if (!this.memory) return;
    for (const a of [this.hidden, this.normed, this.q, this.k, this.v, this.attn, this.proj, this.gate, this.up, this.logitsDev]) {
      if (!(a instanceof Float32Array)) this.memory.free(a);
    }
    this.logitsDev = new Float32Array(0);
  }

  /**
   * Runs every layer on the batch, writes its K/V into the cache, and returns logits for `batch.logitsRows`.
   * @param reuse write the logits into a host buffer this pass reuses (valid until its next `forward`) instead of a
   *   new array: a decode step then allocates no vocabulary-sized array (in a process holding a model, each such
   *   allocation cost ~0.1 ms of garbage collection at a 32k vocabulary). Default false.
   * @returns `[logitsRows.length, vocabSize]`: a new Float32Array, or the reused buffer with `reuse`
   */
  forward(batch: ForwardBatch, observer?: AttentionObserver, reuse = false): Float32Array {
    this.layers(batch, observer);
    return this.logits(batch, reuse);
  }

  /**
   * {@link forward}, but returns the greedy token of each logits row (`argmax`, the kernel contract's: the first
   * maximum, NaN above every number): with device activations only these ids come back to the host, not the logits.
   * @returns a new Int32Array `[logitsRows.length]`
   */
  forwardArgmax(batch: ForwardBatch, observer?: AttentionObserver): Int32Array {
    this.layers(batch, observer);
    const rows = batch.logitsRows.length;
    const out = new Int32Array(rows);
    if (rows === 0) return out;
    // Soft-capping is monotonic but saturates in float32 (it can make two logits equal): take the capped host logits.
    const x = this.dims.variant?.finalLogitSoftcapping !== undefined ? this.logits(batch, true) : this.logitsActivation(batch, true);
    this.backend.argmax({ x, out, rows, cols: this.dims.vocabSize });
    return out;
  }

  /** Embedding and every decoder layer (K/V written to the cache); the final hidden states are in `hidden`. */
  private layers(batch: ForwardBatch, observer: AttentionObserver | undefined): void {
    const { backend: b, weights: w, dims: d } = this;
    const n = batch.numTokens;
    this.ensureCapacity(n);
    b.embedding({ table: w.embedTokens, ids: batch.tokenIds, out: this.hidden, numTokens: n });
    const embeddingScale = d.variant?.embeddingScale;
    if (embeddingScale !== undefined) scaleInPlace(hostView(this.hidden), n * d.hiddenSize, embeddingScale);
    for (let l = 0; l < d.numLayers; l++) {
      this.attentionBlock(l, batch, observer);
      this.mlpBlock(l, n);
    }
  }

  /** The kept-precision attention split of `batch` (planned at its first layer). */
  private keepSplit(batch: ForwardBatch): KeepSplit {
    if (this.keepPlan?.batch !== batch) this.keepPlan = { batch, split: planKeepSplit(batch, batch.keep!, this.storage.blockSize) };
    return this.keepPlan.split;
  }

  /** `hidden += o_proj(attention(norm(hidden)))` (Gemma: the attention output is normalized before the add). */
  private attentionBlock(l: number, batch: ForwardBatch, observer: AttentionObserver | undefined): void {
    const { backend: b, dims: d } = this;
    const { hidden, normed, attn, proj } = this;
    const lw = this.weights.layers[l]!;
    const n = batch.numTokens;
    const cache = this.storage.layer(l);
    const layer = d.layers?.[l];
    b.rmsNorm({ x: hidden, weight: lw.inputLayernorm, out: normed, rows: n, hidden: d.hiddenSize, eps: d.rmsNormEps });
    const [q, k, v] = this.projectQkv(l, n);
    // Per-head q/k RMSNorm: rows = tokens x heads, hidden = headDim.
    if (lw.qNorm) b.rmsNorm({ x: q, weight: lw.qNorm, out: q, rows: n * d.numHeads, hidden: d.headDim, eps: d.rmsNormEps });
    if (lw.kNorm) b.rmsNorm({ x: k, weight: lw.kNorm, out: k, rows: n * d.numKvHeads, hidden: d.headDim, eps: d.rmsNormEps });
    b.rope({
      query: q,
      key: k,
      positions: batch.positions,
      numTokens: n,
      numHeads: d.numHeads,
      numKvHeads: d.numKvHeads,
      headSize: d.headDim,
      table: layer?.rope ?? d.rope,
      style: d.ropeStyle,
    });
    const rot = this.kvRotation;
    if (rot) {
      rot.rotate(hostView(q), n * d.numHeads);
      rot.rotate(hostView(k), n * d.numKvHeads);
      rot.rotate(hostView(v), n * d.numKvHeads);
    }
    if (observer) {
      const kvLength = n * d.numKvHeads * d.headDim;
      observer(l, { query: this.toHost(q, n * d.numHeads * d.headDim), key: this.toHost(k, kvLength), value: this.toHost(v, kvLength), numTokens: n });
    }
    b.reshapeAndCache({ key: k, value: v, slotMapping: batch.slotMapping, numTokens: n, cache });
    this.kvTelemetry?.observe(l, cache, hostView(k), hostView(v), batch.slotMapping, n);
    const kept = this.kvKeep && batch.keep && this.kvKeep.layers[l] ? this.kvKeep.storage.layer(l) : undefined;
    if (kept) b.reshapeAndCache({ key: k, value: v, slotMapping: batch.keep!.slotMapping, numTokens: n, cache: kept });
    const args = {
      query: q,
      out: attn,
      cache,
      queryStartLoc: batch.queryStartLoc,
      seqLens: batch.seqLens,
      blockTables: batch.blockTables,
      maxBlocksPerSeq: batch.maxBlocksPerSeq,
      numSeqs: batch.numSeqs,
      numHeads: d.numHeads,
      softmaxScale: d.variant?.softmaxScale,
      slidingWindow: layer ? layer.slidingWindow : d.slidingWindow,
      // A layer kept in the model dtype (kvCacheDtypeSkipLayers) has no FP8 cache to meet an FP8 query.
      fp8Query: this.fp8Query && isFp8Dtype(cache.dtype) && cache.valueDtype === cache.dtype ? {} : undefined,
    };
    const cap = d.variant?.attnLogitSoftcapping;
    if (kept || cap !== undefined) {
      // Host paths: soft-capping (TypeScript) and/or the kept-precision split, which calls `attend` per segment.
      const attend = (a: PagedAttentionArgs): void => (cap !== undefined ? softcappedPagedAttention(a, cap) : b.pagedAttention(a));
      const onHost = { ...args, query: hostView(q), out: hostView(attn) };
      if (kept) keepAttention(attend, onHost, kept, this.keepSplit(batch), this.keepScratch);
      else attend(onHost);
    } else b.pagedAttention(args);
    if (rot) rot.unrotate(hostView(attn), n * d.numHeads);
    this.linear({ x: attn, weight: lw.oProj, bias: lw.oBias, out: proj, rows: n });
    if (lw.preFeedforwardLayernorm) b.rmsNorm({ x: proj, weight: lw.postAttentionLayernorm, out: proj, rows: n, hidden: d.hiddenSize, eps: d.rmsNormEps });
    b.add({ a: hidden, b: proj, out: hidden, length: n * d.hiddenSize });
  }

  /** `hidden += down(act(gate(x)) * up(x))` with `x` the normalized hidden state (Gemma: the output normalized too). */
  private mlpBlock(l: number, n: number): void {
    const { backend: b, dims: d } = this;
    const { hidden, normed, proj } = this;
    const lw = this.weights.layers[l]!;
    const sandwich = lw.preFeedforwardLayernorm;
    b.rmsNorm({ x: hidden, weight: sandwich ?? lw.postAttentionLayernorm, out: normed, rows: n, hidden: d.hiddenSize, eps: d.rmsNormEps });
    const [gate, up] = this.projectGateUp(l, n);
    if (d.variant?.activation === 'gelu_tanh') b.geluTanhAndMul({ gate, up, out: gate, length: n * d.intermediateSize });
    else b.siluAndMul({ gate, up, out: gate, length: n * d.intermediateSize });
    this.linear({ x: gate, weight: lw.downProj, out: proj, rows: n });
    if (lw.postFeedforwardLayernorm) b.rmsNorm({ x: proj, weight: lw.postFeedforwardLayernorm, out: proj, rows: n, hidden: d.hiddenSize, eps: d.rmsNormEps });
    b.add({ a: hidden, b: proj, out: hidden, length: n * d.hiddenSize });
  }

  /**
   * q, k and v of the `n` normalized rows: one `linear` over layer `l`'s stacked q/k/v when it has them and `n <=
   * STACKED_MAX_ROWS` ({@link runStacked}), else one call each.
   */
  private projectQkv(l: number, n: number): readonly [Activation, Activation, Activation] {
    const st = this.stacked[l]?.qkv;
    if (st && n <= STACKED_MAX_ROWS) return this.runStacked(st, n, [this.q, this.k, this.v]) as readonly [Activation, Activation, Activation];
    const lw = this.weights.layers[l]!;
    const { normed, q, k, v } = this;
    this.linear({ x: normed, weight: lw.qProj, bias: lw.qBias, out: q, rows: n });
    this.linear({ x: normed, weight: lw.kProj, bias: lw.kBias, out: k, rows: n });
    this.linear({ x: normed, weight: lw.vProj, bias: lw.vBias, out: v, rows: n });
    return [q, k, v];
  }

  /** gate and up of the `n` normalized rows, as {@link projectQkv} does q/k/v. */
  private projectGateUp(l: number, n: number): readonly [Activation, Activation] {
    const st = this.stacked[l]?.gateUp;
    if (st && n <= STACKED_MAX_ROWS) return this.runStacked(st, n, [this.gate, this.up]) as readonly [Activation, Activation];
    const lw = this.weights.layers[l]!;
    const { normed, gate, up } = this;
    this.linear({ x: normed, weight: lw.gateProj, out: gate, rows: n });
    this.linear({ x: normed, weight: lw.upProj, out: up, rows: n });
    return [gate, up];
  }

  /**
   * A stacked group's outputs for the `n` normalized rows (one `linear` call): one row's are views of the group's
   * output; more rows are copied apart into `parts` (the separate buffers, one per part).
   */
  private runStacked(run: StackedRun, n: number, parts: readonly Activation[]): readonly Float32Array[] {
    this.linear({ x: this.normed, weight: run.weight, bias: run.bias, out: run.out, rows: n });
    if (n === 1) return run.views;
    const outs = parts.map(hostView);
    splitRows(run.out, n, run.views.map((v) => v.length), outs);
    return outs;
  }

  /** Final norm and LM head on the rows `batch.logitsRows` asks for (soft-capped when the model says so), on the host. */
  private logits(batch: ForwardBatch, reuse: boolean): Float32Array {
    const rows = batch.logitsRows.length;
    if (rows === 0) return new Float32Array(0); // a step of mid-prefill chunks only: nothing to sample
    const length = rows * this.dims.vocabSize;
    const a = this.logitsActivation(batch, reuse);
    const logits = this.toHost(a, length, reuse ? this.hostScratch('logits', length) : undefined);
    const cap = this.dims.variant?.finalLogitSoftcapping;
    if (cap !== undefined) softcapInPlace(logits, logits.length, cap);
    return logits;
  }

  /**
   * Final norm and LM head (no soft-capping) on the rows `batch.logitsRows` asks for (at least one). With device
   * activations and every row asked for in order (decode steps), on the device; otherwise the rows are gathered on the
   * host (read from the device one row each) and the result is a host array.
   */
  private logitsActivation(batch: ForwardBatch, scratch = false): Activation {
    const { weights: w, dims: d, hidden } = this;
    const rows = batch.logitsRows.length;
    const H = d.hiddenSize;
    if (this.memory && rows === batch.numTokens && batch.logitsRows.every((r, i) => r === i)) {
      if (this.logitsDev.length < rows * d.vocabSize) {
        if (!(this.logitsDev instanceof Float32Array)) this.memory.free(this.logitsDev);
        this.logitsDev = this.memory.alloc('f32', this.capacity * d.vocabSize);
      }
      this.backend.rmsNorm({ x: hidden, weight: w.norm, out: this.normed, rows, hidden: H, eps: d.rmsNormEps });
      this.linear({ x: this.normed, weight: w.lmHead, out: this.logitsDev, rows });
      return this.logitsDev;
    }
    // `scratch` (the caller consumes the logits before the next step): reused buffers, no vocabulary-sized array a step.
    const selected = scratch ? this.hostScratch('selected', rows * H) : new Float32Array(rows * H);
    for (let r = 0; r < rows; r++) {
      const src = batch.logitsRows[r]!;
      if (hidden instanceof Float32Array) selected.set(hidden.subarray(src * H, (src + 1) * H), r * H);
      else this.memory!.read(hidden, selected.subarray(r * H, (r + 1) * H), src * H);
    }
    this.backend.rmsNorm({ x: selected, weight: w.norm, out: selected, rows, hidden: H, eps: d.rmsNormEps });
    const logits = scratch ? this.hostScratch('logits', rows * d.vocabSize) : new Float32Array(rows * d.vocabSize);
    this.linear({ x: selected, weight: w.lmHead, out: logits, rows });
    return logits;
  }

  /** A view of `length` elements of the reused host buffer `name` (grown as needed; contents undefined). */
  private hostScratch(name: 'selected' | 'logits', length: number): Float32Array {
    let buf = this.scratchBuffers[name];
    if (buf.length < length) buf = this.scratchBuffers[name] = new Float32Array(length);
    return buf.length === length ? buf : buf.subarray(0, length);
  }
}

/**
 * A layer's group of projections run as one matrix: the stacked weight and bias, the output buffer it fills
 * (`[rows, sum of the parts' widths]`), and one view of that buffer per part for a one-row step (its length the part's
 * width).
 */
interface StackedRun {
  readonly weight: WeightMatrix;
  readonly bias: Float32Array | undefined;
  readonly out: Float32Array;
  readonly views: readonly Float32Array[];
}

/** An activation the host path computes on in TypeScript (never a device array there: see {@link hostOnlyReason}). */
function hostView(a: Activation): Float32Array {
  if (!(a instanceof Float32Array)) throw new EngineError('INVALID_ARGUMENT', 'a step that runs in TypeScript was given a device activation (internal error)');
  return a;
}
