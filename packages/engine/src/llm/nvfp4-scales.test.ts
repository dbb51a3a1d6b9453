/**
 * `calculateKvScales` with an nvfp4 cache sets each layer's per-tensor K/V scales from the first forward pass
 * (amax / 1200, NVFP4_KV_SCALE_CONSTANTS), before that pass writes the cache; without it they stay 1.0.
 */
import { createReferenceBackend, type KernelBackend, type ReshapeAndCacheArgs } from '@kvq/kernels';
import { MIN_SCALE } from '@kvq/fp8';
import { modelTinyPath } from '@kvq/model-tiny';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../load/load-model.js';
import type { LoadedModel } from '../load/types.js';
import { LLM } from './llm.js';

let model: LoadedModel;
beforeAll(async () => {
  model = await loadModel(modelTinyPath);
});

/** The reference backend, keeping the K/V amax and the cache's tensor scales of every reshapeAndCache call. */
function recording(): { backend: KernelBackend; calls: { kAmax: number; vAmax: number; kScale: number; vScale: number }[] } {
  const ref = createReferenceBackend();
  const calls: { kAmax: number; vAmax: number; kScale: number; vScale: number }[] = [];
  const amax = (x: Float32Array, n: number) => {
    let m = 0;
    for (let i = 0; i < n; i++) m = Math.max(m, Math.abs(x[i]!));
    return m;
  };
  const backend = new Proxy(ref, {
    get(target, key) {
      const v = Reflect.get(target, key) as unknown;
      if (key === 'reshapeAndCache') {
        return (args: ReshapeAndCacheArgs) => {
          const n = args.numTokens * args.cache.numKvHeads * args.cache.headSize;
          calls.push({ kAmax: amax(args.key, n), vAmax: amax(args.value, n), kScale: args.cache.kScale[0]!, vScale: args.cache.vScale[0]! });
          return (v as (a: unknown) => unknown).call(target, args);
        };
      }
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { backend, calls };
}

describe('calculateKvScales with nvfp4', () => {
  it("sets every layer's tensor scales to amax / 1200 of the first pass, used by that pass's own write", async () => {
    const { backend, calls } = recording();
    const llm = await LLM.create({ model, backend, kvCacheDtype: 'nvfp4', calculateKvScales: true, kvCacheMemory: 1 << 20 });
    const probes = calls.length; // the create-time dtype probes
    await llm.generate('And God said, Let there be light', { temperature: 0, maxTokens: 3, ignoreEos: true });
    const first = calls.slice(probes, probes + model.config.numLayers);
    const storage = llm.engine.forwardPass.storage;
    first.forEach((c, l) => {
      const k = Math.max(Math.fround(c.kAmax / 1200), MIN_SCALE);
      const v = Math.max(Math.fround(c.vAmax / 1200), MIN_SCALE);
      expect(c.kScale, `layer ${l} k`).toBe(k);
      expect(c.vScale, `layer ${l} v`).toBe(v);
      expect(storage.layer(l).kScale[0]).toBe(k); // fixed after the first pass
      expect(k).toBeLessThan(1);
    });
    const plain = await LLM.create({ model, backend: 'reference', kvCacheDtype: 'nvfp4', kvCacheMemory: 1 << 20 });
    await plain.generate('And God said', { temperature: 0, maxTokens: 2 });
    expect(plain.engine.forwardPass.storage.layer(0).kScale[0]).toBe(1);
  });
});
