/**
 * The whole engine on the GPU kernels: kvq-tiny run by @kvq/kernels-cuda's kernels on the CUDA simulator (the CPU
 * executing csrc/'s kernels thread by thread, warp 32 and 64) must generate the same greedy tokens and score a text
 * to the same log-likelihood as the CPU backend, with bf16 (model dtype) and FP8 KV caches. This is the GPU backend
 * driven through a real model: embedding, RMSNorm, RoPE, GEMV, cache writes with FP8 quantization, paged decode and
 * prefill attention, SiLU-mul, all on the kernels a GPU runs. A missing simulator build skips with the reason, except
 * in CI (`KVQ_REQUIRE_GPU_COMPILERS=1`), where it fails.
 */
import { createSimBackend, SIM_WARPS, simAvailability } from '@kvq/kernels-cuda/testing';
import { modelTinyPath } from '@kvq/model-tiny';
import { describe, expect, it } from 'vitest';
import { LLM } from './llm.js';

const required = process.env.KVQ_REQUIRE_GPU_COMPILERS === '1';
const PROMPT = 'And God said unto Moses,';
const TEXT = 'In the beginning God created the heaven and the earth. And the earth was without form, and void.';

for (const warp of SIM_WARPS) {
  const avail = simAvailability(warp);
  describe.skipIf(!avail.available && !required)(
    `kvq-tiny on the GPU kernels (CUDA simulator, warp ${warp})${avail.available ? '' : `: not built (${avail.reason})`}`,
    () => {
      // Both cache dtypes at warp 32; FP8 (the harder path) at warp 64, to keep the suite near a minute.
      for (const kvCacheDtype of warp === 32 ? (['auto', 'fp8_e4m3'] as const) : (['fp8_e4m3'] as const)) {
        it(`greedy tokens and NLL equal the CPU backend's (KV ${kvCacheDtype})`, async () => {
          const gpu = createSimBackend({ warp });
          try {
            const make = (backend: Parameters<typeof LLM.create>[0]['backend']) =>
              LLM.create({ model: modelTinyPath, kvCacheDtype, backend, kvCacheMemory: 4 << 20, blockSize: 16 });
            const [cpu, sim] = await Promise.all([make('cpu'), make(gpu)]);
            const opts = { temperature: 0, maxTokens: 20, ignoreEos: true } as const;
            const [want] = await cpu.generate(PROMPT, opts);
            const [got] = await sim.generate(PROMPT, opts);
            expect(got!.outputs[0]!.tokenIds).toEqual(want!.outputs[0]!.tokenIds);
            const a = await cpu.score(TEXT);
            const b = await sim.score(TEXT);
            expect(b.count).toBe(a.count);
            expect(Math.abs(b.nllSum - a.nllSum) / a.nllSum).toBeLessThan(1e-4);
          } finally {
            gpu.dispose();
          }
        }, 300_000);
      }
    },
  );
}
