/**
 * K and V in different dtypes (`kvCacheValueDtype`, `kvCacheLayerValueDtypes`, a plan's `layer_value_dtypes`): the
 * pools get each dtype's layout, the backend ops receive both, kvq-tiny's quality lands between the two uniform
 * caches, and every combination that cannot run is a typed error before any request.
 */
import { readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { kvBlockLayout } from '@kvq/cache';
import { createReferenceBackend, KernelError, type KernelBackend } from '@kvq/kernels';
import { modelTinyPath } from '@kvq/model-tiny';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../load/load-model.js';
import type { LoadedModel } from '../load/types.js';
import { engineErrorOfAsync, tempDir } from '../testing/fixtures.js';
import { KV_CACHE_PLAN_FILE, kvCachePlanJson } from '../weights/kv-cache-plan.js';
import { LLM } from './llm.js';

const PROMPT = 'And God said unto Moses,';
const TEXT = 'In the beginning God created the heaven and the earth. And the earth was without form, and void; and darkness was upon the face of the deep.';

let model: LoadedModel;
let auto: string;
beforeAll(async () => {
  model = await loadModel(modelTinyPath);
  auto = model.config.torchDtype === 'float32' ? 'f32' : model.config.torchDtype === 'float16' ? 'f16' : 'bf16';
});
let cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups) await c();
  cleanups = [];
});

/** The reference backend, recording `K/V` dtypes of every reshapeAndCache / pagedAttention call. */
function recordingReference(): { backend: KernelBackend; seen: Set<string> } {
  const ref = createReferenceBackend();
  const seen = new Set<string>();
  const backend = new Proxy(ref, {
    get(target, key) {
      const v = Reflect.get(target, key) as unknown;
      if (key === 'reshapeAndCache' || key === 'pagedAttention') {
        return (args: { cache: { dtype: string; valueDtype: string } }) => {
          seen.add(`${key}:${args.cache.dtype}/${args.cache.valueDtype}`);
          return (v as (a: unknown) => unknown).call(target, args);
        };
      }
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { backend, seen };
}

/** A reference backend without kernels for mixed caches (as a third-party backend may be): UNSUPPORTED for K dtype != V dtype. */
function uniformOnly(): KernelBackend {
  const ref = createReferenceBackend();
  return new Proxy(ref, {
    get(target, key) {
      const v = Reflect.get(target, key) as unknown;
      if (key === 'reshapeAndCache' || key === 'pagedAttention') {
        return (args: { cache: { dtype: string; valueDtype: string } }) => {
          if (args.cache.valueDtype !== args.cache.dtype) throw new KernelError('UNSUPPORTED', `${key}: no mixed K/V kernels`, { argument: 'cache.valueDtype' });
          return (v as (a: unknown) => unknown).call(target, args);
        };
      }
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

describe('kvCacheValueDtype', () => {
  it('stores V in its own dtype and layout in every quantized layer; the ops receive both dtypes', async () => {
    const c = model.config;
    const { backend, seen } = recordingReference();
    const llm = await LLM.create({ model, backend, kvCacheDtype: 'int8_per_token_head', kvCacheValueDtype: 'int4_g32_f16', kvCacheDtypeSkipLayers: [2], kvCacheMemory: 1 << 20 });
    const storage = llm.engine.forwardPass.storage;
    expect(llm.kvDtype).toBe('int8_per_token_head');
    expect(storage.layerDtypes).toEqual(['int8_per_token_head', 'int8_per_token_head', auto, 'int8_per_token_head', 'int8_per_token_head', 'int8_per_token_head']);
    // The skipped layer keeps the model dtype for V too.
    expect(storage.layerValueDtypes).toEqual(['int4_g32_f16', 'int4_g32_f16', auto, 'int4_g32_f16', 'int4_g32_f16', 'int4_g32_f16']);
    const v = kvBlockLayout('int4_g32_f16', 16, c.numKvHeads, c.headDim);
    expect(storage.layer(0).value.length).toBe(llm.numBlocks * v.blockBytes);
    expect(storage.layer(0).key.length).toBe(llm.numBlocks * kvBlockLayout('int8_per_token_head', 16, c.numKvHeads, c.headDim).blockBytes);
    // kvq-tiny: 2 KV heads of 64; int8 K 64 + 4 bytes, int4 V 32 + 4 bytes per head; the skipped layer 2 x 64 x 2 bytes.
    const elem = auto === 'f32' ? 4 : 2;
    expect(llm.kvBytesPerToken).toBe(5 * 2 * (68 + 36) + 2 * 2 * 64 * elem);
    seen.clear();
    await llm.generate(PROMPT, { temperature: 0, maxTokens: 2, ignoreEos: true });
    expect([...seen].sort()).toEqual([
      `pagedAttention:${auto}/${auto}`,
      'pagedAttention:int8_per_token_head/int4_g32_f16',
      `reshapeAndCache:${auto}/${auto}`,
      'reshapeAndCache:int8_per_token_head/int4_g32_f16',
    ]);
  });

  it('puts kvq-tiny between the two uniform caches: closer to float32 than all-int4, further than all-int8', async () => {
    // Teacher-forced token logprobs of TEXT; distance = mean |difference| from the float32-KV run.
    const logprobs = async (o: Partial<Parameters<typeof LLM.create>[0]>) => {
      const llm = await LLM.create({ model, backend: 'reference', kvCacheMemory: 2 << 20, ...o });
      return (await llm.score(TEXT)).logprobs;
    };
    const f32 = await logprobs({ kvCacheDtype: 'float32' });
    const dist = async (o: Partial<Parameters<typeof LLM.create>[0]>) => {
      const lp = await logprobs(o);
      let sum = 0;
      for (let i = 1; i < f32.length; i++) sum += Math.abs(lp[i]! - f32[i]!);
      return sum / (f32.length - 1);
    };
    const int8 = await dist({ kvCacheDtype: 'int8_per_token_head' });
    const int4 = await dist({ kvCacheDtype: 'int4_per_token_head' });
    const kInt8 = await dist({ kvCacheDtype: 'int8_per_token_head', kvCacheValueDtype: 'int4_per_token_head' });
    const kInt4 = await dist({ kvCacheDtype: 'int4_per_token_head', kvCacheValueDtype: 'int8_per_token_head' });
    for (const mixed of [kInt8, kInt4]) {
      expect(mixed).toBeGreaterThan(int8);
      expect(mixed).toBeLessThan(int4);
    }
    // Measured 2026-12-07 (reference backend, deterministic): int8 0.0055, K int8 + V int4 0.0245, K int4 + V int8
    // 0.0688, int4 0.0920 nats: kvq-tiny's keys are the more sensitive half.
    expect(kInt8).toBeLessThan(kInt4);
  });

  it('refuses what cannot run with typed errors naming the option', async () => {
    const cases: [Partial<Parameters<typeof LLM.create>[0]>, string, RegExp][] = [
      [{ kvCacheDtype: 'fp8', kvCacheValueDtype: 'fp8_e5m2', fp8Query: true }, 'kvCacheValueDtype', /fp8Query needs K and V in one FP8 dtype/],
      [{ kvCacheDtype: 'fp8', kvCacheValueDtype: 'bfloat16', calculateKvScales: true }, 'kvCacheValueDtype', /calculateKvScales needs K and V in one dtype/],
      [{ kvCacheDtype: 'fp8', kvCacheValueDtype: 'int9' as never }, 'kvCacheValueDtype', /"int9" is not supported/],
      [{ kvCacheLayerDtypes: ['auto', 'auto', 'auto', 'auto', 'auto', 'fp8'], kvCacheValueDtype: 'fp8' }, 'kvCacheValueDtype', /per-layer plan/],
      [{ kvCacheLayerValueDtypes: ['fp8', 'fp8', 'fp8', 'fp8', 'fp8', 'fp8'] }, 'kvCacheLayerValueDtypes', /needs kvCacheLayerDtypes/],
      [{ kvCacheLayerDtypes: ['fp8', 'fp8', 'fp8', 'fp8', 'fp8', 'fp8'], kvCacheLayerValueDtypes: ['fp8'] }, 'kvCacheLayerValueDtypes', /must list 6 dtypes/],
    ];
    for (const [o, field, message] of cases) {
      const err = await engineErrorOfAsync(LLM.create({ model, backend: 'reference', kvCacheMemory: 1 << 20, ...o }));
      expect(err.code, JSON.stringify(o)).toBe('INVALID_ARGUMENT');
      expect(err.field).toBe(field);
      expect(err.message).toMatch(message);
    }
    // A backend without kernels for separate K and V dtypes is refused at create, with the pair named.
    const err = await engineErrorOfAsync(LLM.create({ model, backend: uniformOnly(), kvCacheDtype: 'bfloat16', kvCacheValueDtype: 'fp8', kvCacheMemory: 1 << 20 }));
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(err.field).toBe('kvCacheValueDtype');
    expect(err.message).toMatch(/K in 'bf16' with V in 'e4m3fn'.*no kernels for separate K and V dtypes/);
    // The same backend runs uniform caches.
    await LLM.create({ model, backend: uniformOnly(), kvCacheDtype: 'fp8', kvCacheValueDtype: 'fp8', kvCacheMemory: 1 << 20 });
  });
});

describe('FP8 telemetry of a mixed cache', () => {
  it('counts each pool by its own dtype: the quantized pool as a uniform cache of its dtype, the float pool not at all', async () => {
    const run = async (kvCacheDtype: 'int4_g32' | 'bfloat16', kvCacheValueDtype?: 'int4_g32' | 'bfloat16') => {
      const llm = await LLM.create({ model, backend: 'reference', kvCacheDtype, ...(kvCacheValueDtype ? { kvCacheValueDtype } : {}), kvCacheMemory: 1 << 20 });
      await llm.generate(PROMPT, { temperature: 0, maxTokens: 1, ignoreEos: true });
      return llm.kvTelemetry()!;
    };
    const uniform = await run('int4_g32');
    const kOnly = await run('int4_g32', 'bfloat16');
    const vOnly = await run('bfloat16', 'int4_g32');
    expect(kOnly[0]!.valueDtype).toBe(auto === 'f32' ? 'f32' : 'bf16');
    expect(vOnly[0]!.dtype).toBe(auto === 'f32' ? 'f32' : 'bf16');
    expect(vOnly[0]!.valueDtype).toBe('int4_g32');
    // Layer 0 writes the same K and V in every run (nothing quantized reaches it before its own write).
    expect(kOnly[0]!.k).toEqual(uniform[0]!.k);
    expect(kOnly[0]!.v).toEqual({ written: 0, saturated: 0, flushed: 0 });
    expect(vOnly[0]!.v).toEqual(uniform[0]!.v);
    expect(vOnly[0]!.k).toEqual({ written: 0, saturated: 0, flushed: 0 });
    expect(uniform[0]!.k.written).toBeGreaterThan(0);
    expect(uniform[0]!.v.flushed + uniform[0]!.k.flushed).toBeGreaterThan(0);
  });
});

describe('kvCacheLayerValueDtypes and a plan file with layer_value_dtypes', () => {
  const K = ['int8_per_token_head', 'int8_per_token_head', 'int4_g32', 'auto', 'int8_per_token_head', 'nvfp4'] as const;
  const V = ['int4_g32_f16', 'int8_per_token_head', 'int4_g32', 'int4_g32', 'nvfp4', 'int8_per_token_head'] as const;
  const resolved = (list: readonly string[]) => list.map((d) => (d === 'auto' ? auto : d));

  it('gives each layer its K and V dtypes, explicitly or from the checkpoint plan', async () => {
    const llm = await LLM.create({ model, backend: 'reference', kvCacheLayerDtypes: K, kvCacheLayerValueDtypes: V, kvCacheMemory: 1 << 20 });
    expect(llm.engine.forwardPass.storage.layerDtypes).toEqual(resolved(K));
    expect(llm.engine.forwardPass.storage.layerValueDtypes).toEqual(resolved(V));
    const [out] = await llm.generate(PROMPT, { temperature: 0, maxTokens: 4, ignoreEos: true });
    expect(out!.outputs[0]!.tokenIds.length).toBe(4);

    const { dir, cleanup } = await tempDir('kvq-plan-kv-');
    cleanups.push(cleanup);
    for (const f of await readdir(modelTinyPath)) await symlink(join(modelTinyPath, f), join(dir, f));
    await writeFile(join(dir, KV_CACHE_PLAN_FILE), kvCachePlanJson({ layerDtypes: K, layerValueDtypes: V, rotation: 'none' }));
    const loaded = await loadModel(dir);
    expect(loaded.kvCachePlan?.layerValueDtypes).toEqual(V);
    const fromPlan = await LLM.create({ model: loaded, backend: 'reference', kvCacheMemory: 1 << 20 });
    expect(fromPlan.engine.forwardPass.storage.layerValueDtypes).toEqual(resolved(V));
    expect(fromPlan.kvBytesPerToken).toBe(llm.kvBytesPerToken);
    expect((await fromPlan.score(TEXT)).nllSum).toBe((await llm.score(TEXT)).nllSum);
  });
});
