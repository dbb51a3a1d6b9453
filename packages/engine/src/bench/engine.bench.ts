import { KvCacheStorage, type KvStorageDtype } from '@kvq/cache';
import { encodeFp8Array, f32ToBf16Bits } from '@kvq/fp8';
import { loadBackend } from '@kvq/kernels';
import { bench, describe } from 'vitest';
import { LlamaForward, type ForwardBatch } from '../runtime/forward.js';
import { randomLlamaWeights, type RandomModelShape } from '../runtime/testing.js';

// Prefill and decode speed of the forward pass for KV `auto` (bf16) vs FP8, on Llama-shaped random bf16 weights
// made in memory (never written to the repo). Decode at a context of L tokens: the cache is filled with random
// K/V for L positions (the speed of a decode step depends on the cache's size, not on how it was filled).
// Set KVQ_BENCH_TINYLLAMA=1 to add the TinyLlama-1.1B shape (2.2 GB of weights, slow to build).
const SHAPES: Record<string, RandomModelShape> = {
  'llama-768x12 (4 kv heads)': { hiddenSize: 768, numLayers: 12, numHeads: 12, numKvHeads: 4, headDim: 64, intermediateSize: 2048, vocabSize: 32000, maxPositions: 8200 },
  ...(process.env.KVQ_BENCH_TINYLLAMA
    ? { 'tinyllama-1.1B': { hiddenSize: 2048, numLayers: 22, numHeads: 32, numKvHeads: 4, headDim: 64, intermediateSize: 5632, vocabSize: 32000, maxPositions: 8200 } }
    : {}),
};
const CONTEXTS = [512, 2048, 8192];
const BLOCK = 16;
const { backend } = await loadBackend({ candidates: [{ name: 'cpu', load: () => import('@kvq/kernels-cpu') as never }] });

function filledStorage(shape: RandomModelShape, dtype: KvStorageDtype, context: number): KvCacheStorage {
  const numBlocks = Math.ceil((context + 1) / BLOCK) + 2;
  const storage = new KvCacheStorage({ dtype, numLayers: shape.numLayers, numBlocks, blockSize: BLOCK, numKvHeads: shape.numKvHeads, headSize: shape.headDim, numHeads: shape.numHeads });
  const n = numBlocks * BLOCK * shape.numKvHeads * shape.headDim;
  const values = Float32Array.from({ length: 65536 }, (_, i) => Math.sin(i * 0.37) * 2);
  const fp8 = dtype === 'bf16' ? undefined : encodeFp8Array(values, dtype as never);
  for (let l = 0; l < shape.numLayers; l++) {
    const layer = storage.layer(l);
    for (const pool of [layer.key, layer.value]) {
      for (let i = 0; i < n; i++) pool[i] = fp8 ? fp8[i & 65535]! : f32ToBf16Bits(values[i & 65535]!);
    }
  }
  return storage;
}

function decodeBatch(context: number): ForwardBatch {
  const blocks = Math.ceil((context + 1) / BLOCK);
  return {
    tokenIds: Int32Array.of(42),
    positions: Int32Array.of(context),
    slotMapping: Int32Array.of(BLOCK + context), // blocks 1.. hold the sequence
    numTokens: 1,
    queryStartLoc: Int32Array.of(0, 1),
    seqLens: Int32Array.of(context + 1),
    blockTables: Int32Array.from({ length: blocks }, (_, i) => i + 1),
    maxBlocksPerSeq: blocks,
    numSeqs: 1,
    logitsRows: Int32Array.of(0),
  };
}

function prefillBatch(tokens: number): ForwardBatch {
  const blocks = Math.ceil(tokens / BLOCK);
  return {
    tokenIds: Int32Array.from({ length: tokens }, (_, i) => (i * 7919) % 32000),
    positions: Int32Array.from({ length: tokens }, (_, i) => i),
    slotMapping: Int32Array.from({ length: tokens }, (_, i) => BLOCK + i),
    numTokens: tokens,
    queryStartLoc: Int32Array.of(0, tokens),
    seqLens: Int32Array.of(tokens),
    blockTables: Int32Array.from({ length: blocks }, (_, i) => i + 1),
    maxBlocksPerSeq: blocks,
    numSeqs: 1,
    logitsRows: Int32Array.of(tokens - 1),
  };
}

for (const [name, shape] of Object.entries(SHAPES)) {
  const model = randomLlamaWeights(shape, 7, 'bf16');
  describe(`${name}: prefill 512 tokens (tokens/s = 512 x hz)`, () => {
    for (const dtype of ['bf16', 'e4m3fn', 'e5m2'] as const) {
      const fwd = new LlamaForward(backend, model.weights, model.dims, filledStorage(shape, dtype, 512));
      bench(`kv ${dtype === 'bf16' ? 'auto (bf16)' : dtype}`, () => void fwd.forward(prefillBatch(512)), { iterations: 3, warmupIterations: 1, time: 0 });
    }
  });
  for (const context of CONTEXTS) {
    describe(`${name}: decode 1 token after ${context} of context (tokens/s = hz)`, () => {
      for (const dtype of ['bf16', 'e4m3fn', 'e5m2'] as const) {
        const fwd = new LlamaForward(backend, model.weights, model.dims, filledStorage(shape, dtype, context));
        const batch = decodeBatch(context);
        bench(`kv ${dtype === 'bf16' ? 'auto (bf16)' : dtype}`, () => void fwd.forward(batch), { time: 1500, warmupIterations: 3 });
      }
    });
  }
}
