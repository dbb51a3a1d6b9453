/**
 * FNUZ hardware (AMD MI300-class: a backend whose `info.fp8Fnuz` is true) resolves `fp8` / `fp8_e4m3` /
 * `fp8_e5m2` to the FNUZ formats, as vLLM does on gfx94x; other backends keep the OCP formats.
 */
import { createReferenceBackend, type KernelBackend } from '@kvq/kernels';
import { modelTinyPath } from '@kvq/model-tiny';
import { describe, expect, it } from 'vitest';
import { LLM } from './llm.js';

/** The reference backend, reporting FNUZ FP8 hardware. */
function fnuzBackend(): KernelBackend {
  const ref = createReferenceBackend();
  const info = { ...ref.info, fp8Fnuz: true };
  return new Proxy(ref, {
    get(target, key) {
      if (key === 'info') return info;
      const v = Reflect.get(target, key) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

describe('kvCacheDtype on FNUZ hardware', () => {
  it('fp8 / fp8_e4m3 / fp8_e5m2 become e4m3fnuz / e4m3fnuz / e5m2fnuz; auto stays the model dtype', async () => {
    const want = { auto: 'bf16', fp8: 'e4m3fnuz', fp8_e4m3: 'e4m3fnuz', fp8_e5m2: 'e5m2fnuz', e4m3fnuz: 'e4m3fnuz' } as const;
    for (const [kvCacheDtype, dtype] of Object.entries(want)) {
      const llm = await LLM.create({ model: modelTinyPath, kvCacheDtype: kvCacheDtype as keyof typeof want, backend: fnuzBackend(), kvCacheMemory: 2 << 20 });
      expect(llm.kvDtype, kvCacheDtype).toBe(dtype);
    }
  });

  it('OCP hardware keeps e4m3fn / e5m2, and an explicit FNUZ dtype still works there', async () => {
    for (const [kvCacheDtype, dtype] of [['fp8', 'e4m3fn'], ['fp8_e5m2', 'e5m2'], ['e4m3fnuz', 'e4m3fnuz']] as const) {
      const llm = await LLM.create({ model: modelTinyPath, kvCacheDtype, backend: 'reference', kvCacheMemory: 2 << 20 });
      expect(llm.kvDtype, kvCacheDtype).toBe(dtype);
    }
  });

  it('generates with the FNUZ cache like the OCP one (same greedy tokens for 8 steps)', async () => {
    const opts = { temperature: 0, maxTokens: 8, ignoreEos: true } as const;
    const fnuz = await LLM.create({ model: modelTinyPath, kvCacheDtype: 'fp8', backend: fnuzBackend(), kvCacheMemory: 2 << 20 });
    const ocp = await LLM.create({ model: modelTinyPath, kvCacheDtype: 'fp8', backend: 'reference', kvCacheMemory: 2 << 20 });
    const [a] = await fnuz.generate('And it came to pass', opts);
    const [b] = await ocp.generate('And it came to pass', opts);
    expect(a!.outputs[0]!.tokenIds.length).toBe(8);
    // e4m3fnuz with scale 1 is e4m3fn's grid halved at the top (max 240): kvq-tiny's K/V stay well inside it.
    expect(a!.outputs[0]!.tokenIds).toEqual(b!.outputs[0]!.tokenIds);
  });
});
