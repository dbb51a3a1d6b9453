/**
 * The write-time-scaled KV dtypes (docs/spec/kv-dtypes.md) through the engine: `kvCacheDtype` accepts vLLM's names,
 * the pools get `@kvq/cache`'s block layouts, the backend ops receive the dtype, kvq-tiny generates with each of them
 * on the reference backend close to an unquantized (float32 KV) run, the native CPU backend (its kernels:
 * @kvq/kernels-cpu csrc/kvquant_impl.h) runs each of them like the reference backend, and a backend without kernels
 * for them (the CUDA simulator) is refused in `LLM.create` with a typed error before the model is loaded.
 */
import { isKvQuantDtype, KV_QUANT_DTYPES, kvBlockLayout, planKvCache, type KvQuantDtype } from '@kvq/cache';
import { createReferenceBackend, KernelError, type KernelBackend } from '@kvq/kernels';
import { modelTinyPath } from '@kvq/model-tiny';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../load/load-model.js';
import type { LoadedModel } from '../load/types.js';
import { engineErrorOfAsync } from '../testing/fixtures.js';
import { LLM } from './llm.js';

const PROMPT = 'And God said unto Moses,';
const NEW_TOKENS = 24;

let model: LoadedModel;
beforeAll(async () => {
  model = await loadModel(modelTinyPath);
});

/** The reference backend, recording the cache dtype every reshapeAndCache / pagedAttention call receives. */
function recordingReference(): { backend: KernelBackend; dtypes: Set<string> } {
  const ref = createReferenceBackend();
  const dtypes = new Set<string>();
  const backend = new Proxy(ref, {
    get(target, key) {
      const v = Reflect.get(target, key) as unknown;
      if (key === 'reshapeAndCache' || key === 'pagedAttention') {
        return (args: { cache: { dtype: string } }) => {
          dtypes.add(`${key}:${args.cache.dtype}`);
          return (v as (a: unknown) => unknown).call(target, args);
        };
      }
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { backend, dtypes };
}

describe('kvCacheDtype: the write-time-scaled dtypes', () => {
  it('each name resolves to itself, sizes the pools with kvBlockLayout and reaches the backend ops', async () => {
    const c = model.config;
    for (const dtype of KV_QUANT_DTYPES) {
      const { backend, dtypes } = recordingReference();
      const llm = await LLM.create({ model, kvCacheDtype: dtype, backend, kvCacheMemory: 1 << 20, blockSize: 16 });
      expect(llm.kvDtype).toBe(dtype);
      const layout = kvBlockLayout(dtype, 16, c.numKvHeads, c.headDim);
      const storage = llm.engine.forwardPass.storage;
      expect(storage.dtype).toBe(dtype); // what the prefix-cache block hash covers (KvCacheManager format)
      expect(storage.layer(0).key.length).toBe(llm.numBlocks * layout.blockBytes);
      expect(storage.layer(0).key).toBeInstanceOf(Uint8Array);
      expect(llm.kvBytesPerToken).toBe(planKvCache({ model: { numLayers: c.numLayers, numKvHeads: c.numKvHeads, headSize: c.headDim, numHeads: c.numHeads }, memoryBytes: 1 << 20, dtype, blockSize: 16 }).bytesPerToken);
      dtypes.clear(); // the create-time probe's calls
      await llm.generate(PROMPT, { temperature: 0, maxTokens: 2, ignoreEos: true });
      expect([...dtypes].sort()).toEqual([`pagedAttention:${dtype}`, `reshapeAndCache:${dtype}`]);
    }
  });

  it('KV bytes per token of kvq-tiny (6 layers, 2 KV heads of 64) follow docs/spec/kv-dtypes.md §3', async () => {
    const want: Record<KvQuantDtype, number> = {
      fp8_per_token_head: 6 * 2 * 2 * (64 + 4),
      int8_per_token_head: 6 * 2 * 2 * (64 + 4),
      int4_per_token_head: 6 * 2 * 2 * (32 + 4),
      int4_g16: 6 * 2 * 2 * (32 + 16),
      int4_g32: 6 * 2 * 2 * (32 + 8),
      int4_g64: 6 * 2 * 2 * (32 + 4),
      nvfp4: 6 * 2 * 2 * (32 + 4),
      q4_0: 6 * 2 * 2 * (32 + 4),
      int4_g32_f16: 6 * 2 * 2 * (32 + 4),
    };
    for (const dtype of KV_QUANT_DTYPES) {
      const llm = await LLM.create({ model, kvCacheDtype: dtype, backend: 'reference', kvCacheMemory: 1 << 20 });
      expect(llm.kvBytesPerToken, dtype).toBe(want[dtype]);
    }
  });

  it('the FP8 per-tensor names are unchanged, and unknown names are INVALID_ARGUMENT', async () => {
    const fp8 = await LLM.create({ model, kvCacheDtype: 'fp8', backend: 'reference', kvCacheMemory: 1 << 20 });
    expect(fp8.kvDtype).toBe('e4m3fn');
    expect(fp8.kvBytesPerToken).toBe(6 * 2 * 2 * 64);
    for (const bad of ['int8', 'int4_g8', 'nvfp4_4over6', 'INT8_PER_TOKEN_HEAD']) {
      const err = await engineErrorOfAsync(LLM.create({ model, kvCacheDtype: bad as never, backend: 'reference', kvCacheMemory: 1 << 20 }));
      expect(err.code).toBe('INVALID_ARGUMENT');
      expect(err.field).toBe('kvCacheDtype');
      expect(err.message).toContain(JSON.stringify(bad));
    }
  });

  it('fp8_per_token_head on FNUZ hardware is INVALID_ARGUMENT (no e4m3fnuz variant), not a silent e4m3fn cache', async () => {
    const ref = createReferenceBackend();
    const info = { ...ref.info, fp8Fnuz: true };
    const fnuz = new Proxy(ref, { get: (t, k) => (k === 'info' ? info : Reflect.get(t, k, t)) });
    const err = await engineErrorOfAsync(LLM.create({ model, kvCacheDtype: 'fp8_per_token_head', backend: fnuz, kvCacheMemory: 1 << 20 }));
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(err.field).toBe('kvCacheDtype');
    expect(err.message).toMatch(/fp8_per_token_head.*e4m3fnuz/);
  });
});

/**
 * The check: greedy generation of 24 tokens with each dtype runs to the end; the float32-KV run's completion scored
 * teacher-forced under each dtype moves the completion's token logprobs by a mean |difference| of at most 0.03 nats
 * (8-bit: fp8/int8_per_token_head, measured <= 0.010; max 0.1, measured <= 0.048) or 0.15 nats (4-bit, measured
 * <= 0.052; max 0.5, measured <= 0.23); the 8-bit dtypes generate the float32 run's 24 tokens exactly and the 4-bit
 * ones its first 4 (then a near tie flips); int8_per_token_head is at least 5x closer than every 4-bit dtype
 * (measured 12-17x), and 16-value int4 groups are closer than one scale per head (int4_g16 < int4_g64).
 * Measured 2026-12-04 on the reference backend (float64 accumulation: deterministic on every machine).
 */
describe('kvq-tiny greedy generation with each write-time-scaled dtype (reference backend)', () => {
  it('runs, stays close to the float32-KV run, and int8 is closer than int4', async () => {
    const make = (kvCacheDtype: string) => LLM.create({ model, kvCacheDtype: kvCacheDtype as never, backend: 'reference', kvCacheMemory: 2 << 20 });
    const f32 = await make('float32');
    const [ref] = await f32.generate(PROMPT, { temperature: 0, maxTokens: NEW_TOKENS, ignoreEos: true, logprobs: 0 });
    const refTokens = ref!.outputs[0]!.tokenIds;
    const promptIds = f32.encode(PROMPT);
    const all = [...promptIds, ...refTokens];
    const refScore = await f32.score(all);
    const result: Record<string, { same: number; meanAbs: number; maxAbs: number }> = {};
    for (const dtype of KV_QUANT_DTYPES) {
      const llm = await make(dtype);
      const [out] = await llm.generate(PROMPT, { temperature: 0, maxTokens: NEW_TOKENS, ignoreEos: true, logprobs: 0 });
      const got = out!.outputs[0]!.tokenIds;
      expect(got.length).toBe(NEW_TOKENS);
      let same = 0;
      while (same < NEW_TOKENS && got[same] === refTokens[same]) same++;
      // Teacher-forced: the float32 run's tokens scored under this dtype, position by position.
      const s = await llm.score(all);
      let sum = 0;
      let max = 0;
      for (let i = promptIds.length; i < all.length; i++) {
        const d = Math.abs(s.logprobs[i]! - refScore.logprobs[i]!);
        sum += d;
        max = Math.max(max, d);
      }
      result[dtype] = { same, meanAbs: sum / refTokens.length, maxAbs: max };
    }
    const eightBit: readonly KvQuantDtype[] = ['fp8_per_token_head', 'int8_per_token_head'];
    for (const dtype of KV_QUANT_DTYPES) {
      const r = result[dtype]!;
      const wide = !eightBit.includes(dtype);
      expect(r.meanAbs, `${dtype} ${JSON.stringify(r)}`).toBeLessThanOrEqual(wide ? 0.15 : 0.03);
      expect(r.maxAbs, `${dtype} ${JSON.stringify(r)}`).toBeLessThanOrEqual(wide ? 0.5 : 0.1);
      expect(r.same, `${dtype} ${JSON.stringify(r)}`).toBeGreaterThanOrEqual(wide ? 4 : NEW_TOKENS);
      if (wide) expect(result.int8_per_token_head!.meanAbs * 5, dtype).toBeLessThan(r.meanAbs);
    }
    expect(result.int4_g16!.meanAbs).toBeLessThan(result.int4_g64!.meanAbs);
  }, 300_000);
});

/**
 * The CPU backend's kernels through the engine: `LLM.create` accepts every dtype on `backend: 'cpu'` (the create-time
 * probe passes), greedy generation gives the reference backend's tokens, and the teacher-forced logprobs of that
 * completion differ from the reference backend's by float32 rounding only (the CPU accumulates in float32, the
 * reference in float64; max |difference| measured 7.5e-7..8.8e-7 over the seven dtypes on 2026-12-04, AVX-512).
 */
const CPU_TOKENS = 16;
const MAX_LOGPROB_DIFF = 1e-5;
/**
 * The f16-scaled dtypes (q4_0, int4_g32_f16): on identical inputs the CPU pools are byte-identical to the reference's
 * (parity kit), but the two backends' float32 K/V differ in the last bits, and a group scale that lands on the other
 * side of an f16 rounding boundary moves all 32 values of its group by 2^-11 at once (a float32 scale: 2^-24).
 * Measured 2026-12-07: 7.0e-7 (q4_0) and 1.0e-5 (int4_g32_f16).
 */
const MAX_LOGPROB_DIFF_F16_SCALES = 1e-4;

describe('the native CPU backend runs every write-time-scaled dtype', () => {
  it('LLM.create accepts them on cpu, greedy tokens equal the reference backend\'s, logprobs within float32 rounding', async () => {
    const diffs: Record<string, number> = {};
    for (const dtype of KV_QUANT_DTYPES) {
      const ref = await LLM.create({ model, kvCacheDtype: dtype, backend: 'reference', kvCacheMemory: 2 << 20 });
      const cpu = await LLM.create({ model, kvCacheDtype: dtype, backend: 'cpu', kvCacheMemory: 2 << 20 });
      try {
        expect(cpu.kvDtype).toBe(dtype);
        expect(cpu.engine.forwardPass.storage.dtype).toBe(dtype);
        const opts = { temperature: 0, maxTokens: CPU_TOKENS, ignoreEos: true } as const;
        const [want] = await ref.generate(PROMPT, opts);
        const [got] = await cpu.generate(PROMPT, opts);
        const tokens = want!.outputs[0]!.tokenIds;
        expect(got!.outputs[0]!.tokenIds, dtype).toEqual(tokens);
        const all = [...ref.encode(PROMPT), ...tokens];
        const [a, b] = [await ref.score(all), await cpu.score(all)];
        let max = 0;
        for (let i = 1; i < all.length; i++) max = Math.max(max, Math.abs(a.logprobs[i]! - b.logprobs[i]!));
        diffs[dtype] = max;
        const bound = dtype === 'q4_0' || dtype === 'int4_g32_f16' ? MAX_LOGPROB_DIFF_F16_SCALES : MAX_LOGPROB_DIFF;
        expect(max, `${dtype}: max |logprob difference| cpu vs reference`).toBeLessThanOrEqual(bound);
      } finally {
        cpu.dispose();
      }
    }
    expect(Object.keys(diffs).sort()).toEqual([...KV_QUANT_DTYPES].sort());
  }, 300_000);
});

describe('a backend without kernels for a write-time-scaled dtype', () => {
  it('is refused by LLM.create (the create-time probe) with INVALID_ARGUMENT naming the backend and the way out', async () => {
    const ref = createReferenceBackend();
    const refuse = (cache: { readonly dtype: string }) => {
      if (isKvQuantDtype(cache.dtype)) {
        throw new KernelError('UNSUPPORTED', `KV-cache dtype '${cache.dtype}' has no kernels here`, { argument: 'cache.dtype' });
      }
    };
    const backend: KernelBackend = {
      ...ref,
      name: 'no-kv-quant',
      reshapeAndCache: (a) => (refuse(a.cache), ref.reshapeAndCache(a)),
      pagedAttention: (a) => (refuse(a.cache), ref.pagedAttention(a)),
    };
    const err = await engineErrorOfAsync(LLM.create({ model, kvCacheDtype: 'int8_per_token_head', backend, kvCacheMemory: 1 << 20 }));
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(err.message).toContain("'no-kv-quant' backend");
    expect(err.message).toContain("backend: 'reference'");
    expect(err.cause).toBeInstanceOf(KernelError);
    expect((err.cause as KernelError).code).toBe('UNSUPPORTED');
  });
});
