import { loadBackend } from '@kvq/kernels';
import { bench, describe } from 'vitest';
import { LlamaForward, type ForwardBatch } from '../runtime/forward.js';
import { randomLlamaWeights, type RandomModelShape } from '../runtime/testing.js';
import { BLOCK, decodeBatch, filledStorage, LLAMA_768X12 } from './inputs.js';

// Prefill and decode speed of the forward pass for KV `auto` (bf16) vs FP8, on Llama-shaped random bf16 weights
// made in memory (never written to the repo). Decode at a context of L tokens: the cache is filled with random
// K/V for L positions (the speed of a decode step depends on the cache's size, not on how it was filled).
// Set KVQ_BENCH_TINYLLAMA=1 to add the TinyLlama-1.1B shape (2.2 GB of weights, slow to build).
const SHAPES: Record<string, RandomModelShape> = {
  'llama-768x12 (4 kv heads)': LLAMA_768X12,
  ...(process.env.KVQ_BENCH_TINYLLAMA
    ? { 'tinyllama-1.1B': { hiddenSize: 2048, numLayers: 22, numHeads: 32, numKvHeads: 4, headDim: 64, intermediateSize: 5632, vocabSize: 32000, maxPositions: 8200 } }
    : {}),
};
const CONTEXTS = [512, 2048, 8192];
const { backend } = await loadBackend({ candidates: [{ name: 'cpu', load: () => import('@kvq/kernels-cpu') as never }] });

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
