import { loadBackend, type KernelBackend } from '@kvq/kernels';
import { afterAll, bench, describe } from 'vitest';
import { LlamaForward } from '../runtime/forward.js';
import { randomLlamaWeights } from '../runtime/testing.js';
import { decodeBatch, filledStorage, LLAMA_768X12 } from './inputs.js';

// Where a decode step's time goes: the forward pass of one token on the llama-768x12 shape (bf16 random weights, as in
// engine.bench.ts; and the same shape quantized to Q4_K and to Q8_0 with GGML 8-bit activations, `KVQ_BENCH_GGML=1`)
// through a backend wrapper that times every kernel call. After the runs it prints, per context and
// KV dtype, the step time, each op's share, and the time outside the kernels (JS bookkeeping of the forward pass).
// Shares, not absolute times, are the result (this machine is noisy).
const SHAPE = LLAMA_768X12;
const { backend } = await loadBackend({ candidates: [{ name: 'cpu', load: () => import('@kvq/kernels-cpu') as never }] });
const models = [
  ['bf16', randomLlamaWeights(SHAPE, 7, 'bf16')],
  ...(process.env.KVQ_BENCH_GGML === '1' ? ([['q4_k', randomLlamaWeights(SHAPE, 7, 'q4_k')], ['q8_0', randomLlamaWeights(SHAPE, 7, 'q8_0')]] as const) : []),
] as const;

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

const tallies = new Map<string, Tally>();
for (const [wdtype, model] of models) {
  for (const context of [512, 2048, 8192]) {
    describe(`llama-768x12 ${wdtype} weights, decode after ${context} tokens: where the time goes`, () => {
      for (const dtype of ['bf16', 'e4m3fn'] as const) {
        const tally: Tally = { steps: 0, stepMs: 0, ops: new Map() };
        tallies.set(`${wdtype} weights, ctx ${context}, kv ${dtype}`, tally);
        const fwd = new LlamaForward(timed(backend, tally), model.weights, model.dims, filledStorage(SHAPE, dtype, context));
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
