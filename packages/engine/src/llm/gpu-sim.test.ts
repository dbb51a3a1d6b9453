/**
 * The whole engine on the GPU kernels: kvq-tiny run by @kvq/kernels-cuda's kernels on the CUDA simulator (the CPU
 * executing csrc/'s kernels thread by thread, warp 32 and 64) must generate the same greedy tokens and score a text
 * to the same log-likelihood as the CPU backend, with bf16 (model dtype) and FP8 KV caches. This is the GPU backend
 * driven through a real model: embedding, RMSNorm, RoPE, GEMV, cache writes with FP8 quantization, paged decode and
 * prefill attention, SiLU-mul, all on the kernels a GPU runs. A missing simulator build skips with the reason, except
 * in CI (`KVQ_REQUIRE_GPU_COMPILERS=1`), where it fails.
 */
import { HostMemoryTier } from '@kvq/cache';
import { createSimBackend, SIM_WARPS, simAvailability, type SimWarp } from '@kvq/kernels-cuda/testing';
import { modelTinyPath } from '@kvq/model-tiny';
import { describe, expect, it } from 'vitest';
import { LLM } from './llm.js';

const required = process.env.KVQ_REQUIRE_GPU_COMPILERS === '1';
const PROMPT = 'And God said unto Moses,';
const TEXT = 'In the beginning God created the heaven and the earth. And the earth was without form, and void.';

type LLMOptions = Parameters<typeof LLM.create>[0];

/**
 * kvq-tiny with `options` on the simulator (warp `warp`) and on the CPU backend: the same 20 greedy tokens, and the
 * same NLL of a text (relative difference < 1e-4).
 */
async function expectSameAsCpu(warp: SimWarp, options: Omit<LLMOptions, 'model' | 'backend'>): Promise<void> {
  const gpu = createSimBackend({ warp });
  try {
    const make = (backend: LLMOptions['backend']) => LLM.create({ model: modelTinyPath, ...options, backend, kvCacheMemory: 4 << 20, blockSize: 16 });
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
}

for (const warp of SIM_WARPS) {
  const avail = simAvailability(warp);
  describe.skipIf(!avail.available && !required)(
    `kvq-tiny on the GPU kernels (CUDA simulator, warp ${warp})${avail.available ? '' : `: not built (${avail.reason})`}`,
    () => {
      // bf16, FP8 and two write-time-scaled dtypes (csrc/kvquant.cu) at warp 32; FP8 at warp 64, to keep the suite short.
      for (const kvCacheDtype of warp === 32 ? (['auto', 'fp8_e4m3', 'int8_per_token_head', 'nvfp4'] as const) : (['fp8_e4m3'] as const)) {
        it(`greedy tokens and NLL equal the CPU backend's (KV ${kvCacheDtype})`, () => expectSameAsCpu(warp, { kvCacheDtype }), 300_000);
      }
      if (warp === 32) {
        // Sink and recent tokens kept in the model dtype: the engine merges attention over the quantized cache and the
        // kept one by each call's log-sum-exp, which the GPU kernels now return (tiled, decode and write-time-scaled).
        it('kvCacheKeepSink / kvCacheKeepRecent (int4_per_token_head) give the CPU backend\'s greedy tokens and NLL', () =>
          expectSameAsCpu(warp, { kvCacheDtype: 'int4_per_token_head', kvCacheKeepSink: 4, kvCacheKeepRecent: 8 }), 300_000);
        // K and V in different dtypes (csrc/kvquant.cu's mixed path), on device-resident pools as the engine keeps them.
        it('K int8_per_token_head with V int4_g32_f16 (kvCacheValueDtype) gives the CPU backend\'s greedy tokens and NLL', () =>
          expectSameAsCpu(warp, { kvCacheDtype: 'int8_per_token_head', kvCacheValueDtype: 'int4_g32_f16' }), 300_000);
      }
    },
  );
}

/**
 * What one decode step moves between host and device, counted by the GPU runtime (`transferStats`): with the device-
 * resident contract (the default: weights, KV pools and activations on the device, greedy tokens taken there) against
 * `deviceResident: false` (host activations and host KV pools, copied by every op). A step is the difference between
 * generating 12 and 4 tokens, over 8 steps, one sequence, batch of 1.
 *
 * The bound asserted, per decode step of one sequence (model sizes read from kvq-tiny's config):
 * - host -> device: at most the token id, its position, its slot and the sequence length (4 bytes each; the runtime
 *   sends only the bytes that changed since the last step, so usually fewer) and the block-table entries that changed;
 *   everything else (weights, the RoPE table, norm weights, scales, query-start offsets, the attention work list,
 *   whose tasks do not depend on the length, and the repeats of every layer) is on the device already;
 * - device -> host: the sampled id (4 bytes), after the step's only wait for the device (asynchronous submission).
 */
describe.skipIf(!simAvailability(32).available && !required)('host<->device traffic per decode step (CUDA simulator, warp 32)', () => {
  it('device-resident decode moves only ids, positions, slots, lengths, block-table deltas and the sampled ids', async () => {
    const perStep = async (deviceResident: boolean, kvCacheDtype: 'fp8_e4m3' | 'auto') => {
      const gpu = createSimBackend({ warp: 32 });
      try {
        const llm = await LLM.create({ model: modelTinyPath, kvCacheDtype, backend: gpu, kvCacheMemory: 4 << 20, blockSize: 16, deviceResident });
        const run = async (maxTokens: number) => {
          const before = gpu.transferStats();
          const [r] = await llm.generate(PROMPT, { temperature: 0, maxTokens, ignoreEos: true });
          const after = gpu.transferStats();
          return {
            ids: r!.outputs[0]!.tokenIds,
            h2d: after.hostToDeviceBytes - before.hostToDeviceBytes,
            d2h: after.deviceToHostBytes - before.deviceToHostBytes,
            copies: after.hostToDeviceCopies + after.deviceToHostCopies - before.hostToDeviceCopies - before.deviceToHostCopies,
            waits: after.waits - before.waits,
          };
        };
        await run(2); // first use uploads the resident weights
        const a = await run(4);
        const b = await run(12);
        const config = llm.model.config;
        const per = (k: 'h2d' | 'd2h' | 'copies' | 'waits') => (b[k] - a[k]) / 8;
        return { ids: b.ids, h2d: per('h2d'), d2h: per('d2h'), copies: per('copies'), waits: per('waits'), resident: gpu.residentBytes, config };
      } finally {
        gpu.dispose();
      }
    };
    for (const dtype of ['fp8_e4m3', 'auto'] as const) {
      const host = await perStep(false, dtype);
      const dev = await perStep(true, dtype);
      expect(dev.ids).toEqual(host.ids);
      const c = dev.config;
      console.log(
        `kvq-tiny decode step (KV ${dtype}), bytes host->device / device->host (copies): host activations and pools ` +
          `${host.h2d.toFixed(0)} / ${host.d2h.toFixed(0)} (${host.copies.toFixed(1)}, ${host.waits.toFixed(1)} waits), device-resident ` +
          `${dev.h2d.toFixed(0)} / ${dev.d2h.toFixed(0)} (${dev.copies.toFixed(1)}, ${dev.waits.toFixed(1)} waits); resident ${dev.resident} bytes`,
      );
      // One sequence: id, position, slot, length (4 B each at most), the block-table delta (one new 4-byte entry per
      // 16 tokens at most).
      expect(dev.h2d).toBeLessThanOrEqual(4 * 4 + 4);
      expect(dev.d2h).toBe(4); // the sampled id, nothing else
      // Asynchronous submission: the ops of a step are queued without waiting; the host waits once, for the id.
      expect(dev.waits).toBe(1);
      expect(host.waits).toBeGreaterThan(10 * c.numLayers);
      expect(host.d2h).toBeGreaterThanOrEqual(c.vocabSize * 4); // the host path brings the logits back
      expect(host.h2d).toBeGreaterThan(10 * dev.h2d);
    }
  }, 600_000);
});

/**
 * The KV pools live on the device (the engine gives them to it): host code that touches blocks goes through the
 * backend's memory. Copy-on-write forks (n > 1), prefix-cache hits and KV tiers (blocks written by a GPU engine and
 * loaded by another GPU engine and by a CPU engine) must all give the CPU backend's greedy tokens.
 */
describe.skipIf(!simAvailability(32).available && !required)('KV pools on the device: forks, prefix hits, tiers (CUDA simulator, warp 32)', () => {
  const DOC = 'In the beginning God created the heaven and the earth. And the earth was without form, and void; and darkness was upon the face.';
  const opts = { temperature: 0, maxTokens: 10, ignoreEos: true } as const;
  const make = (backend: Parameters<typeof LLM.create>[0]['backend'], extra: Partial<Parameters<typeof LLM.create>[0]> = {}) =>
    LLM.create({ model: modelTinyPath, kvCacheDtype: 'fp8_e4m3', backend, kvCacheMemory: 4 << 20, blockSize: 16, onKvTierLog: () => {}, ...extra });

  it('n = 2 (copy-on-write of the shared last block on the device) and a prefix-cache hit give the CPU tokens', async () => {
    const gpu = createSimBackend({ warp: 32 });
    try {
      const cpu = await make('cpu');
      const sim = await make(gpu);
      const [want] = await cpu.generate(PROMPT, { ...opts, n: 2 });
      const [got] = await sim.generate(PROMPT, { ...opts, n: 2 });
      expect(got!.outputs.map((o) => o.tokenIds)).toEqual(want!.outputs.map((o) => o.tokenIds));
      const [first] = await sim.generate(DOC, opts);
      const [again] = await sim.generate(DOC, opts);
      const [ref] = await cpu.generate(DOC, opts);
      expect(again!.metrics.numCachedTokens).toBeGreaterThan(0);
      expect(first!.outputs[0]!.tokenIds).toEqual(ref!.outputs[0]!.tokenIds);
      expect(again!.outputs[0]!.tokenIds).toEqual(ref!.outputs[0]!.tokenIds);
    } finally {
      gpu.dispose();
    }
  }, 300_000);

  it('host activations over device pools (the Hadamard rotation runs in TypeScript) give the CPU tokens', async () => {
    const gpu = createSimBackend({ warp: 32 });
    try {
      const extra = { kvCacheRotation: 'hadamard' } as const;
      const sim = await make(gpu, extra);
      expect(sim.engine.forwardPass.memory).toBeUndefined(); // activations on the host: the rotation is TypeScript
      expect(sim.engine.forwardPass.kvMemory).toBe(gpu.memory); // the pools still live on the device
      const [want] = await (await make('cpu', extra)).generate(DOC, opts);
      const [got] = await sim.generate(DOC, opts);
      expect(got!.outputs[0]!.tokenIds).toEqual(want!.outputs[0]!.tokenIds);
    } finally {
      gpu.dispose();
    }
  }, 300_000);

  it('blocks a GPU engine stores in a KV tier are loaded by another GPU engine and by a CPU engine', async () => {
    const a = createSimBackend({ warp: 32 });
    const b = createSimBackend({ warp: 32 });
    try {
      const shared = new HostMemoryTier({ capacityBytes: 64 << 20, name: 'shared' });
      const want = (await (await make('cpu')).generate(DOC, opts))[0]!.outputs[0]!.tokenIds;
      const writer = await make(a, { kvTiers: [shared] });
      expect((await writer.generate(DOC, opts))[0]!.outputs[0]!.tokenIds).toEqual(want);
      await writer.kvStore?.flush();
      expect(shared.size).toBeGreaterThan(0);
      for (const backend of [b, 'cpu'] as const) {
        const reader = await make(backend, { kvTiers: [shared] });
        const [out] = await reader.generate(DOC, opts);
        expect(reader.engine.stats().kvTierLoadedTokens).toBeGreaterThan(0);
        expect(out!.outputs[0]!.tokenIds).toEqual(want);
      }
    } finally {
      a.dispose();
      b.dispose();
    }
  }, 300_000);
});
