import { KvCacheStorage, type KvStorageDtype } from '@kvq/cache';
import { encodeFp8Array, f32ToBf16Bits } from '@kvq/fp8';
import { loadBackend, type KernelBackend } from '@kvq/kernels';
import { afterAll, bench, describe } from 'vitest';
import { LlamaForward, type ForwardBatch } from '../runtime/forward.js';
import { randomLlamaWeights, type RandomModelShape } from '../runtime/testing.js';

// Where a decode step's time goes: the forward pass of one token on the llama-768x12 shape (bf16 random weights, as in
// engine.bench.ts) through a backend wrapper that times every kernel call. After the runs it prints, per context and
// KV dtype, the step time, each op's share, and the time outside the kernels (JS bookkeeping of the forward pass).
// Shares, not absolute times, are the result (this machine is noisy).
const SHAPE: RandomModelShape = { hiddenSize: 768, numLayers: 12, numHeads: 12, numKvHeads: 4, headDim: 64, intermediateSize: 2048, vocabSize: 32000, maxPositions: 8200 };
const BLOCK = 16;
const { backend } = await loadBackend({ candidates: [{ name: 'cpu', load: () => import('@kvq/kernels-cpu') as never }] });
const model = randomLlamaWeights(SHAPE, 7, 'bf16');

interface Tally {
  steps: number;
  stepMs: number;
  ops: Map<string, { calls: number; ms: number }>;
}

function timed(inner: KernelBackend, tally: Tally): KernelBackend {
  return new Proxy(inner, {
    get(target, key) {
      const v = Reflect.get(target, key) as unknown;
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        const t0 = performance.now();
        const r = (v as (...a: unknown[]) => unknown).apply(target, args);
        const e = tally.ops.get(String(key)) ?? { calls: 0, ms: 0 };
        e.calls++;
        e.ms += performance.now() - t0;
        tally.ops.set(String(key), e);
        return r;
      };
    },
  });
}

function filledStorage(dtype: KvStorageDtype, context: number): KvCacheStorage {
  const numBlocks = Math.ceil((context + 1) / BLOCK) + 2;
  const storage = new KvCacheStorage({ dtype, numLayers: SHAPE.numLayers, numBlocks, blockSize: BLOCK, numKvHeads: SHAPE.numKvHeads, headSize: SHAPE.headDim, numHeads: SHAPE.numHeads });
  const values = Float32Array.from({ length: 65536 }, (_, i) => Math.sin(i * 0.37) * 2);
  const fp8 = dtype === 'bf16' ? undefined : encodeFp8Array(values, dtype as never);
  for (let l = 0; l < SHAPE.numLayers; l++) {
    const layer = storage.layer(l);
    for (const pool of [layer.key, layer.value]) {
      for (let i = 0; i < pool.length; i++) pool[i] = fp8 ? fp8[i & 65535]! : f32ToBf16Bits(values[i & 65535]!);
    }
  }
  return storage;
}

function decodeBatch(context: number): ForwardBatch {
  const blocks = Math.ceil((context + 1) / BLOCK);
  return {
    tokenIds: Int32Array.of(42),
    positions: Int32Array.of(context),
    slotMapping: Int32Array.of(BLOCK + context),
    numTokens: 1,
    queryStartLoc: Int32Array.of(0, 1),
    seqLens: Int32Array.of(context + 1),
    blockTables: Int32Array.from({ length: blocks }, (_, i) => i + 1),
    maxBlocksPerSeq: blocks,
    numSeqs: 1,
    logitsRows: Int32Array.of(0),
  };
}

const tallies = new Map<string, Tally>();
for (const context of [512, 2048, 8192]) {
  describe(`llama-768x12 decode after ${context} tokens: where the time goes`, () => {
    for (const dtype of ['bf16', 'e4m3fn'] as const) {
      const tally: Tally = { steps: 0, stepMs: 0, ops: new Map() };
      tallies.set(`ctx ${context}, kv ${dtype}`, tally);
      const fwd = new LlamaForward(timed(backend, tally), model.weights, model.dims, filledStorage(dtype, context));
      const batch = decodeBatch(context);
      bench(
        `kv ${dtype}`,
        () => {
          const t0 = performance.now();
          fwd.forward(batch);
          tally.stepMs += performance.now() - t0;
          tally.steps++;
        },
        { time: 1000, warmupIterations: 3 },
      );
    }
  });
}

afterAll(() => {
  for (const [label, t] of tallies) {
    if (t.steps === 0) continue;
    // Warm-up steps are in the tally too; shares are what matter.
    const step = t.stepMs / t.steps;
    let inOps = 0;
    const parts = [...t.ops.entries()]
      .sort((a, b) => b[1].ms - a[1].ms)
      .map(([op, e]) => {
        inOps += e.ms;
        return `${op} ${((100 * e.ms) / t.stepMs).toFixed(1)}%`;
      });
    const outside = (100 * (t.stepMs - inOps)) / t.stepMs;
    console.log(`${label}: ${step.toFixed(2)} ms/step; ${parts.slice(0, 4).join(', ')}; outside the kernels ${outside.toFixed(1)}%`);
  }
});
