import { KvCacheManager, KvCacheStorage, type KvStorageDtype } from '@kvq/cache';
import { buildRopeTable, quantizeMatrix, type GgmlWeightDtype, type KernelBackend, type WeightMatrix } from '@kvq/kernels';
import { LlamaForward, type LlamaDims, type LlamaForwardOptions, type LlamaWeights } from './forward.js';

/** Shape of a random test model. */
export interface RandomModelShape {
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  vocabSize: number;
  maxPositions: number;
}

/**
 * Deterministic pseudo-random weights for tests and benchmarks; never committed, made on the fly.
 * @param dtype element type of the matrices (`bf16` stores rounded bits, as a bf16 checkpoint would; a GGML dtype
 *   quantizes the float32 matrices with `quantizeMatrix`, the embedding and LM head included)
 */
export function randomLlamaWeights(
  shape: RandomModelShape,
  seed = 1,
  dtype: 'f32' | 'bf16' | GgmlWeightDtype = 'f32',
): { weights: LlamaWeights; dims: LlamaDims } {
  let state = seed >>> 0;
  const rand = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 4294967296 - 0.5;
  };
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  const mat = (rows: number, cols: number, scale: number): WeightMatrix => {
    if (dtype === 'f32') return { dtype, rows, cols, data: Float32Array.from({ length: rows * cols }, () => rand() * scale) };
    if (dtype !== 'bf16') return quantizeMatrix(Float32Array.from({ length: rows * cols }, () => rand() * scale), rows, cols, dtype);
    const data = new Uint16Array(rows * cols);
    for (let i = 0; i < data.length; i++) {
      f32[0] = rand() * scale;
      data[i] = (u32[0]! + 0x7fff + ((u32[0]! >>> 16) & 1)) >>> 16;
    }
    return { dtype, rows, cols, data };
  };
  const ones = (n: number) => Float32Array.from({ length: n }, () => 1 + rand() * 0.2);
  const { hiddenSize: h, headDim: d, numHeads, numKvHeads, intermediateSize: f, vocabSize } = shape;
  const s = 2 / Math.sqrt(h);
  const layers = Array.from({ length: shape.numLayers }, () => ({
    inputLayernorm: ones(h),
    postAttentionLayernorm: ones(h),
    qProj: mat(numHeads * d, h, s),
    kProj: mat(numKvHeads * d, h, s),
    vProj: mat(numKvHeads * d, h, s),
    oProj: mat(h, numHeads * d, s),
    gateProj: mat(f, h, s),
    upProj: mat(f, h, s),
    downProj: mat(h, f, 2 / Math.sqrt(f)),
  }));
  const embed = mat(vocabSize, h, 1);
  const weights: LlamaWeights = { embedTokens: embed, layers, norm: ones(h), lmHead: mat(vocabSize, h, s * 4) };
  const dims: LlamaDims = {
    hiddenSize: h,
    numLayers: shape.numLayers,
    numHeads,
    numKvHeads,
    headDim: d,
    intermediateSize: f,
    vocabSize,
    rmsNormEps: 1e-5,
    ropeStyle: 'rotate_half',
    rope: buildRopeTable({ rotaryDim: d, theta: 10000, maxPositions: shape.maxPositions }),
  };
  return { weights, dims };
}

/** A forward pass + cache manager over fresh storage, for tests. */
export function makeRuntime(
  backend: KernelBackend,
  model: { weights: LlamaWeights; dims: LlamaDims },
  cache: { dtype: KvStorageDtype; numBlocks: number; blockSize: number; enablePrefixCaching?: boolean },
  options: LlamaForwardOptions = {},
): { forward: LlamaForward; manager: KvCacheManager; storage: KvCacheStorage } {
  const storage = new KvCacheStorage({
    dtype: cache.dtype,
    numLayers: model.dims.numLayers,
    numBlocks: cache.numBlocks,
    blockSize: cache.blockSize,
    numKvHeads: model.dims.numKvHeads,
    headSize: model.dims.headDim,
    numHeads: model.dims.numHeads,
  });
  const manager = new KvCacheManager({
    numBlocks: cache.numBlocks,
    blockSize: cache.blockSize,
    enablePrefixCaching: cache.enablePrefixCaching ?? true,
    format: storage,
    hashSeed: 'test',
  });
  return { forward: new LlamaForward(backend, model.weights, model.dims, storage, options), manager, storage };
}
