// Bench support (not exported from the package): a KV cache filled for a context, and the decode batch of one
// token after that context, shared by engine.bench.ts and decode-breakdown.bench.ts.
import { KvCacheStorage, type KvStorageDtype } from '@kvq/cache';
import { encodeFp8Array, f32ToBf16Bits } from '@kvq/fp8';
import type { ForwardBatch } from '../runtime/forward.js';
import type { RandomModelShape } from '../runtime/testing.js';

/** The benches' Llama shape: 768 wide, 12 layers, 12 / 4 heads of 64, ffn 2048, vocab 32000. */
export const LLAMA_768X12: RandomModelShape = { hiddenSize: 768, numLayers: 12, numHeads: 12, numKvHeads: 4, headDim: 64, intermediateSize: 2048, vocabSize: 32000, maxPositions: 8200 };

/** Tokens per KV block in the benches. */
export const BLOCK = 16;

/** A cache of `dtype` whose blocks hold `context` tokens of random K/V (blocks 1.. hold the sequence). */
export function filledStorage(shape: RandomModelShape, dtype: KvStorageDtype, context: number): KvCacheStorage {
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

/** The batch of one decode token at position `context` (the sequence in blocks 1..). */
export function decodeBatch(context: number): ForwardBatch {
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
