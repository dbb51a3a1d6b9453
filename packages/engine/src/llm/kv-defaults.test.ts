/**
 * vLLM's defaults around a checkpoint's KV-cache scheme: `auto` becomes the FP8 cache a compressed-tensors
 * `kv_cache_scheme` was calibrated for, checkpoint scales win over `calculate_kv_scales`, and a missing model is a
 * typed error.
 */
import { createReferenceBackend, type KernelBackend } from '@kvq/kernels';
import { modelTinyPath } from '@kvq/model-tiny';
import { describe, expect, it, vi } from 'vitest';
import { loadModel } from '../load/load-model.js';
import type { LoadedModel } from '../load/types.js';
import { engineErrorOfAsync } from '../testing/fixtures.js';
import { resolveKvScales, type CheckpointKvScales } from '../weights/kv-scales.js';
import { LLM } from './llm.js';

const fnuzBackend = (): KernelBackend => {
  const ref = createReferenceBackend();
  const info = { ...ref.info, fp8Fnuz: true };
  return new Proxy(ref, {
    get(target, key) {
      if (key === 'info') return info;
      const v = Reflect.get(target, key) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
};

/** kvq-tiny as if its checkpoint carried a compressed-tensors per-tensor kv_cache_scheme with k/v scales. */
async function withKvScheme(): Promise<LoadedModel> {
  const base = await loadModel(modelTinyPath);
  const c = base.config;
  const ckpt: CheckpointKvScales = {
    method: 'compressed-tensors',
    scheme: { strategy: 'tensor', numBits: 8, type: 'float', symmetric: true, observer: 'minmax' },
    layers: Array.from({ length: c.numLayers }, (_, l) => ({
      k: Float32Array.of(0.02 + l / 1000),
      v: Float32Array.of(0.01 + l / 1000),
      names: { k: `model.layers.${l}.self_attn.k_scale`, v: `model.layers.${l}.self_attn.v_scale` },
    })),
    origin: 'config.json quantization_config (test)',
  };
  return { ...base, checkpointKvScales: ckpt, kvScales: resolveKvScales(ckpt, { numHeads: c.numHeads, numKvHeads: c.numKvHeads }) };
}

describe('kvCacheDtype auto with a checkpoint kv_cache_scheme (vLLM)', () => {
  it('auto gives the FP8 cache with the checkpoint scales; an explicit dtype wins', async () => {
    const model = await withKvScheme();
    const auto = await LLM.create({ model, backend: 'reference', kvCacheMemory: 2 << 20 });
    expect(auto.kvDtype).toBe('e4m3fn');
    const layer1 = auto.engine.forwardPass.storage.layer(1);
    expect(layer1.kScale[0]).toBeCloseTo(0.021, 7);
    expect(layer1.vScale[0]).toBeCloseTo(0.011, 7);
    const explicit = await LLM.create({ model, backend: 'reference', kvCacheDtype: 'bfloat16', kvCacheMemory: 2 << 20 });
    expect(explicit.kvDtype).toBe('bf16');
    const plain = await LLM.create({ model: modelTinyPath, backend: 'reference', kvCacheMemory: 2 << 20 });
    expect(plain.kvDtype).toBe('bf16');
  });

  it('on FNUZ hardware auto gives e4m3fnuz with the compressed-tensors scales undoubled', async () => {
    const llm = await LLM.create({ model: await withKvScheme(), backend: fnuzBackend(), kvCacheMemory: 2 << 20 });
    expect(llm.kvDtype).toBe('e4m3fnuz');
    expect(llm.engine.forwardPass.storage.layer(0).kScale[0]).toBeCloseTo(0.02, 7);
  });

  it('base-method scales of a model loaded for e4m3fn are doubled when the backend runs e4m3fnuz (the CLI loads first)', async () => {
    const base = await loadModel(modelTinyPath);
    const c = base.config;
    const ckpt: CheckpointKvScales = {
      method: 'base',
      scheme: undefined,
      layers: Array.from({ length: c.numLayers }, () => ({ k: Float32Array.of(0.05), v: Float32Array.of(0.03), names: { k: 'k_scale', v: 'v_scale' } })),
      origin: 'test',
    };
    const model = { ...base, checkpointKvScales: ckpt, kvScales: resolveKvScales(ckpt, { numHeads: c.numHeads, numKvHeads: c.numKvHeads, format: 'e4m3fn' }) };
    const fnuz = await LLM.create({ model, backend: fnuzBackend(), kvCacheDtype: 'fp8', kvCacheMemory: 2 << 20 });
    expect(fnuz.kvDtype).toBe('e4m3fnuz');
    expect(fnuz.engine.forwardPass.storage.layer(0).kScale[0]).toBeCloseTo(0.1, 7);
    expect(fnuz.engine.forwardPass.storage.layer(0).vScale[0]).toBeCloseTo(0.06, 7);
    const ocp = await LLM.create({ model, backend: 'reference', kvCacheDtype: 'fp8', kvCacheMemory: 2 << 20 });
    expect(ocp.engine.forwardPass.storage.layer(0).kScale[0]).toBeCloseTo(0.05, 7);
  });

  it('calculateKvScales is ignored with a warning when the checkpoint has scales (checkpoint scales win)', async () => {
    const warnings: string[] = [];
    const spy = vi.spyOn(process, 'emitWarning').mockImplementation((w: string | Error) => void warnings.push(String(w)));
    try {
      const llm = await LLM.create({ model: await withKvScheme(), backend: 'reference', kvCacheDtype: 'fp8', calculateKvScales: true, kvCacheMemory: 2 << 20 });
      await llm.generate('Once upon a time', { temperature: 0, maxTokens: 2 });
      expect(llm.engine.forwardPass.storage.layer(1).kScale[0]).toBeCloseTo(0.021, 7); // not recomputed from amax
    } finally {
      spy.mockRestore();
    }
    expect(warnings.some((w) => /calculateKvScales ignored.*checkpoint scales win/.test(w))).toBe(true);
  });
});

describe('fp8Query', () => {
  it('warns when q scales are not calibrated, and not when calculateKvScales provides them', async () => {
    const warnings: string[] = [];
    const spy = vi.spyOn(process, 'emitWarning').mockImplementation((w: string | Error) => void warnings.push(String(w)));
    try {
      await LLM.create({ model: modelTinyPath, backend: 'reference', kvCacheDtype: 'fp8', fp8Query: true, kvCacheMemory: 2 << 20 });
      expect(warnings.filter((w) => /fp8Query with uncalibrated q scales/.test(w))).toHaveLength(1);
      warnings.length = 0;
      await LLM.create({ model: modelTinyPath, backend: 'reference', kvCacheDtype: 'fp8', fp8Query: true, calculateKvScales: true, kvCacheMemory: 2 << 20 });
      expect(warnings.filter((w) => /uncalibrated/.test(w))).toHaveLength(0);
    } finally {
      spy.mockRestore();
    }
  });
});

describe('LLM.create input checks', () => {
  it('a missing, empty or wrong-typed model is a typed INVALID_ARGUMENT naming the field', async () => {
    for (const model of [undefined, '', 42, null, {}]) {
      const e = await engineErrorOfAsync(LLM.create({ model } as never));
      expect(e.code).toBe('INVALID_ARGUMENT');
      expect(e.field).toBe('model');
    }
    expect((await engineErrorOfAsync(LLM.create(undefined as never))).code).toBe('INVALID_ARGUMENT');
  });
});
