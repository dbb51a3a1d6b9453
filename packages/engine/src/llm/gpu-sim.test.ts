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

/**
 * What one decode step moves between host and device, counted by the GPU runtime (`transferStats`), with each
 * residency mode: nothing resident (every op uploads its weight and the attention its KV pools), resident weights,
 * and resident weights + caches. What still crosses then is every op's input and output activations (the contract
 * passes host arrays), the block tables and the logits: the device-resident contract of issue 21 would leave only
 * token ids, positions, block-table deltas and the logits. The step is the difference between generating 12 and 4
 * tokens, over 8 steps.
 */
describe.skipIf(!simAvailability(32).available && !required)('host<->device traffic per decode step (CUDA simulator, warp 32)', () => {
  it('resident weights and caches keep weights and KV pools off the bus; tokens unchanged', async () => {
    const perStep = async (resident: 'none' | 'weights' | 'all') => {
      const gpu = createSimBackend({ warp: 32, residentWeights: resident !== 'none', residentCaches: resident === 'all' });
      try {
        const llm = await LLM.create({ model: modelTinyPath, kvCacheDtype: 'fp8_e4m3', backend: gpu, kvCacheMemory: 4 << 20, blockSize: 16 });
        const run = async (maxTokens: number) => {
          const before = gpu.transferStats();
          const [r] = await llm.generate(PROMPT, { temperature: 0, maxTokens, ignoreEos: true });
          const after = gpu.transferStats();
          return { ids: r!.outputs[0]!.tokenIds, h2d: after.hostToDeviceBytes - before.hostToDeviceBytes, d2h: after.deviceToHostBytes - before.deviceToHostBytes };
        };
        await run(2); // first use uploads resident data
        const a = await run(4);
        const b = await run(12);
        return { ids: b.ids, h2d: (b.h2d - a.h2d) / 8, d2h: (b.d2h - a.d2h) / 8, resident: gpu.residentBytes };
      } finally {
        gpu.dispose();
      }
    };
    const none = await perStep('none');
    const weights = await perStep('weights');
    const all = await perStep('all');
    expect(weights.ids).toEqual(none.ids);
    expect(all.ids).toEqual(none.ids);
    // kvq-tiny: ~2.6 MB of f32/bf16 weights, vocab 2048 (8 KiB of f32 logits per step).
    console.log(
      `kvq-tiny decode step, bytes host->device / device->host: nothing resident ${none.h2d.toFixed(0)} / ${none.d2h.toFixed(0)}, ` +
        `weights ${weights.h2d.toFixed(0)} / ${weights.d2h.toFixed(0)}, weights+caches ${all.h2d.toFixed(0)} / ${all.d2h.toFixed(0)} ` +
        `(resident ${all.resident} bytes)`,
    );
    expect(all.d2h).toBeGreaterThanOrEqual(2048 * 4); // the logits come back
    expect(weights.h2d).toBeLessThan(none.h2d / 4); // the weights no longer cross per step
    expect(all.h2d).toBeLessThanOrEqual(weights.h2d); // nor the KV pools (at this short context they are small)
    expect(all.h2d).toBeLessThan(all.resident / 20); // per step: a small fraction of what lives on the device
  }, 600_000);
});
