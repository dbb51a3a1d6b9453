import type { KvCacheStorage } from '@kvq/cache';
import type { KernelBackend, RopeStyle, RopeTable, WeightMatrix } from '@kvq/kernels';

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
  /** Mistral-style sliding window, in tokens. */
  readonly slidingWindow?: number | undefined;
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
  private capacity = 0;
  private hidden = new Float32Array(0);
  private normed = new Float32Array(0);
  private q = new Float32Array(0);
  private k = new Float32Array(0);
  private v = new Float32Array(0);
  private attn = new Float32Array(0);
  private proj = new Float32Array(0);
  private gate = new Float32Array(0);
  private up = new Float32Array(0);

  constructor(backend: KernelBackend, weights: LlamaWeights, dims: LlamaDims, storage: KvCacheStorage, options: LlamaForwardOptions = {}) {
    this.backend = backend;
    this.weights = weights;
    this.dims = dims;
    this.storage = storage;
    this.fp8Query = options.fp8Query ?? false;
  }

  private ensureCapacity(numTokens: number): void {
    if (numTokens <= this.capacity) return;
    const n = Math.max(numTokens, Math.ceil(this.capacity * 1.5), 16);
    const d = this.dims;
    this.hidden = new Float32Array(n * d.hiddenSize);
    this.normed = new Float32Array(n * d.hiddenSize);
    this.q = new Float32Array(n * d.numHeads * d.headDim);
    this.k = new Float32Array(n * d.numKvHeads * d.headDim);
    this.v = new Float32Array(n * d.numKvHeads * d.headDim);
    this.attn = new Float32Array(n * d.numHeads * d.headDim);
    this.proj = new Float32Array(n * d.hiddenSize);
    this.gate = new Float32Array(n * d.intermediateSize);
    this.up = new Float32Array(n * d.intermediateSize);
    this.capacity = n;
  }

  /**
   * Runs every layer on the batch, writes its K/V into the cache, and returns logits for `batch.logitsRows`.
   * @returns a new Float32Array `[logitsRows.length, vocabSize]`
   */
  forward(batch: ForwardBatch, observer?: AttentionObserver): Float32Array {
    const { backend: b, weights: w, dims: d } = this;
    const n = batch.numTokens;
    this.ensureCapacity(n);
    const { hidden, normed, q, k, v, attn, proj, gate, up } = this;
    b.embedding({ table: w.embedTokens, ids: batch.tokenIds, out: hidden, numTokens: n });
    for (let l = 0; l < d.numLayers; l++) {
      const lw = w.layers[l]!;
      const cache = this.storage.layer(l);
      b.rmsNorm({ x: hidden, weight: lw.inputLayernorm, out: normed, rows: n, hidden: d.hiddenSize, eps: d.rmsNormEps });
      b.linear({ x: normed, weight: lw.qProj, bias: lw.qBias, out: q, rows: n });
      b.linear({ x: normed, weight: lw.kProj, bias: lw.kBias, out: k, rows: n });
      b.linear({ x: normed, weight: lw.vProj, bias: lw.vBias, out: v, rows: n });
      b.rope({
        query: q,
        key: k,
        positions: batch.positions,
        numTokens: n,
        numHeads: d.numHeads,
        numKvHeads: d.numKvHeads,
        headSize: d.headDim,
        table: d.rope,
        style: d.ropeStyle,
      });
      observer?.(l, { query: q, key: k, value: v, numTokens: n });
      b.reshapeAndCache({ key: k, value: v, slotMapping: batch.slotMapping, numTokens: n, cache });
      b.pagedAttention({
        query: q,
        out: attn,
        cache,
        queryStartLoc: batch.queryStartLoc,
        seqLens: batch.seqLens,
        blockTables: batch.blockTables,
        maxBlocksPerSeq: batch.maxBlocksPerSeq,
        numSeqs: batch.numSeqs,
        numHeads: d.numHeads,
        slidingWindow: d.slidingWindow,
        fp8Query: this.fp8Query ? {} : undefined,
      });
      b.linear({ x: attn, weight: lw.oProj, bias: lw.oBias, out: proj, rows: n });
      b.add({ a: hidden, b: proj, out: hidden, length: n * d.hiddenSize });
      b.rmsNorm({ x: hidden, weight: lw.postAttentionLayernorm, out: normed, rows: n, hidden: d.hiddenSize, eps: d.rmsNormEps });
      b.linear({ x: normed, weight: lw.gateProj, out: gate, rows: n });
      b.linear({ x: normed, weight: lw.upProj, out: up, rows: n });
      b.siluAndMul({ gate, up, out: gate, length: n * d.intermediateSize });
      b.linear({ x: gate, weight: lw.downProj, out: proj, rows: n });
      b.add({ a: hidden, b: proj, out: hidden, length: n * d.hiddenSize });
    }
    const rows = batch.logitsRows.length;
    if (rows === 0) return new Float32Array(0); // a step of mid-prefill chunks only: nothing to sample
    const selected = new Float32Array(rows * d.hiddenSize);
    for (let r = 0; r < rows; r++) {
      const src = batch.logitsRows[r]!;
      selected.set(hidden.subarray(src * d.hiddenSize, (src + 1) * d.hiddenSize), r * d.hiddenSize);
    }
    b.rmsNorm({ x: selected, weight: w.norm, out: selected, rows, hidden: d.hiddenSize, eps: d.rmsNormEps });
    const logits = new Float32Array(rows * d.vocabSize);
    b.linear({ x: selected, weight: w.lmHead, out: logits, rows });
    return logits;
  }
}
