/**
 * FP8 telemetry (`LLM.kvTelemetry()`): per layer, K and V, the values written to the cache, saturated and flushed,
 * checked against counts computed independently from the values the backend was asked to write (the FP8 codec of
 * @kvq/fp8 without saturation for per-tensor FP8; the int4 rounding rule of docs/spec/kv-dtypes.md for int4_g32; the
 * q4_0 grid and @kvq/cache's q4_0 codec for q4_0).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { dequantizeKvHead, kvBlockLayout, quantizeKvHead } from '@kvq/cache';
import { createReferenceBackend, type KernelBackend, type ReshapeAndCacheArgs } from '@kvq/kernels';
import { decodeFp8, encodeFp8, f16BitsToF32, f32ToF16Bits } from '@kvq/fp8';
import { modelTinyPath } from '@kvq/model-tiny';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../load/load-model.js';
import type { LoadedModel } from '../load/types.js';
import { tempDir } from '../testing/fixtures.js';
import { LLM } from './llm.js';

let model: LoadedModel;
beforeAll(async () => {
  model = await loadModel(modelTinyPath);
});
let cleanup: (() => Promise<void>) | undefined;
afterEach(async () => {
  await cleanup?.();
  cleanup = undefined;
});

interface Write {
  layer: number;
  key: Float32Array;
  value: Float32Array;
}

/** The reference backend, recording every reshapeAndCache's values (layer = order within a step). */
function recording(numLayers: number): { backend: KernelBackend; writes: Write[]; clear: () => void } {
  const ref = createReferenceBackend();
  const writes: Write[] = [];
  let call = 0;
  const backend = new Proxy(ref, {
    get(target, key) {
      const v = Reflect.get(target, key) as unknown;
      if (key === 'reshapeAndCache') {
        return (args: ReshapeAndCacheArgs) => {
          const len = args.numTokens * args.cache.numKvHeads * args.cache.headSize;
          writes.push({ layer: call++ % numLayers, key: args.key.slice(0, len), value: args.value.slice(0, len) });
          return (v as (a: unknown) => unknown).call(target, args);
        };
      }
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  // The create-time dtype probes write too: clear() drops them and restarts the layer count.
  return { backend, writes, clear: () => void ((writes.length = 0), (call = 0)) };
}

/**
 * Per layer, the non-zero written values within half a step of zero, `step(x, g)` being the step of the group of 32
 * values starting at `x[g]` (for the dtypes with 32-value groups).
 */
function flushedPerLayer(writes: readonly Write[], layers: number, step: (x: Float32Array, g: number) => number): number[] {
  const flushed = new Array<number>(layers).fill(0);
  for (const w of writes) {
    for (const x of [w.key, w.value]) {
      for (let g = 0; g < x.length; g += 32) {
        const s = step(x, g);
        for (let i = g; i < g + 32; i++) if (x[i] !== 0 && Math.abs(Math.fround(x[i]! / s)) <= 0.5) flushed[w.layer]!++;
      }
    }
  }
  return flushed;
}

async function scalesFile(scale: number): Promise<string> {
  const t = await tempDir('kvq-telemetry-');
  cleanup = t.cleanup;
  const path = join(t.dir, 'kv_cache_scales.json');
  const layers = Object.fromEntries(Array.from({ length: model.config.numLayers }, (_, l) => [String(l), scale]));
  await writeFile(path, JSON.stringify({ model_type: 'llama', kv_cache: { dtype: 'float8_e4m3fn', scaling_factor: { '0': layers } } }));
  return path;
}

const PROMPT = 'And God said, Let there be light: and there was light.';

describe('LLM.kvTelemetry()', () => {
  for (const scale of [0.004, 40]) {
    it(`FP8 e4m3 per tensor, scale ${scale}: the counts equal the codec's verdict on every written value`, async () => {
      const L = model.config.numLayers;
      const { backend, writes, clear } = recording(L);
      const llm = await LLM.create({ model, backend, kvCacheDtype: 'fp8', quantizationParamPath: await scalesFile(scale), kvCacheMemory: 1 << 20 });
      clear();
      await llm.generate(PROMPT, { temperature: 0, maxTokens: 4, ignoreEos: true });
      const want = Array.from({ length: L }, () => ({ k: { written: 0, saturated: 0, flushed: 0 }, v: { written: 0, saturated: 0, flushed: 0 } }));
      const s = Math.fround(scale);
      for (const w of writes) {
        for (const [name, x] of [['k', w.key], ['v', w.value]] as const) {
          const c = want[w.layer]![name];
          for (const v of x) {
            c.written++;
            const code = encodeFp8(Math.fround(v / s), 'e4m3fn', 'nosat');
            if (!Number.isFinite(decodeFp8(code, 'e4m3fn'))) c.saturated++;
            else if (v !== 0 && (code & 0x7f) === 0) c.flushed++;
          }
        }
      }
      const got = llm.kvTelemetry()!;
      expect(got.map((g) => g.dtype)).toEqual(new Array(L).fill('e4m3fn'));
      expect(got.map(({ k, v }) => ({ k, v }))).toEqual(want);
      // The scales were chosen to make each effect happen.
      const total = got.reduce((n, g) => n + g.k.saturated + g.v.saturated + g.k.flushed + g.v.flushed, 0);
      expect(total).toBeGreaterThan(0);
      if (scale < 1) expect(got.some((g) => g.k.saturated > 0)).toBe(true);
      else expect(got.some((g) => g.v.flushed > 0 || g.k.flushed > 0)).toBe(true);
    });
  }

  it('int4_g32: no saturation; flushed = the non-zero values within half a step of zero in their group of 32', async () => {
    const L = model.config.numLayers;
    const { backend, writes, clear } = recording(L);
    const llm = await LLM.create({ model, backend, kvCacheDtype: 'int4_g32', kvCacheMemory: 1 << 20 });
    clear();
    await llm.generate(PROMPT, { temperature: 0, maxTokens: 4, ignoreEos: true });
    const flushed = flushedPerLayer(writes, L, (x, g) => {
      let amax = 0;
      for (let i = g; i < g + 32; i++) amax = Math.max(amax, Math.abs(x[i]!));
      return Math.fround(amax / 7);
    });
    const got = llm.kvTelemetry()!;
    expect(got.map((g) => g.k.saturated + g.v.saturated)).toEqual(new Array(L).fill(0));
    expect(got.map((g) => g.k.flushed + g.v.flushed)).toEqual(flushed);
    expect(flushed.some((n) => n > 0)).toBe(true);
    expect(got[0]!.k.written).toBe(writes.filter((w) => w.layer === 0).reduce((n, w) => n + w.key.length, 0));
  });

  it('q4_0: saturated = past the +7 end of the grid by half a step or more, flushed = stored as zero', async () => {
    const L = model.config.numLayers;
    const { backend, writes, clear } = recording(L);
    const llm = await LLM.create({ model, backend, kvCacheDtype: 'q4_0', kvCacheMemory: 1 << 20 });
    clear();
    await llm.generate(PROMPT, { temperature: 0, maxTokens: 4, ignoreEos: true });
    // Saturated: x / d >= 7.5 with d = max / -8 (float64 here; ggml's rounding puts everything below 7.5 on the grid).
    // Flushed: non-zero values that @kvq/cache's q4_0 codec decodes to zero.
    const l = kvBlockLayout('q4_0', 1, 1, 32);
    const pool = new Uint8Array(l.blockBytes);
    const out = new Float32Array(32);
    const saturated = new Array(L).fill(0);
    const flushed = new Array(L).fill(0);
    for (const w of writes) {
      for (const x of [w.key, w.value]) {
        for (let g = 0; g < x.length; g += 32) {
          let max = 0;
          for (let i = g; i < g + 32; i++) if (Math.abs(x[i]!) > Math.abs(max)) max = x[i]!;
          const d = Math.fround(max / -8);
          quantizeKvHead(l, pool, 0, 0, x, g, 1);
          dequantizeKvHead(l, pool, 0, 0, out, 0, 1);
          for (let i = 0; i < 32; i++) {
            if (x[g + i] === 0) continue;
            if (x[g + i]! / d >= 7.5) saturated[w.layer]++;
            else if (out[i] === 0) flushed[w.layer]++;
          }
        }
      }
    }
    const got = llm.kvTelemetry()!;
    expect(got.map((g) => g.k.saturated + g.v.saturated)).toEqual(saturated);
    expect(got.map((g) => g.k.flushed + g.v.flushed)).toEqual(flushed);
    expect(saturated.some((n) => n > 0)).toBe(true);
    expect(flushed.some((n) => n > 0)).toBe(true);
  });

  it('int4_g32_f16: no saturation (both extremes fit); flushed = within half a step of zero', async () => {
    const L = model.config.numLayers;
    const { backend, writes, clear } = recording(L);
    const llm = await LLM.create({ model, backend, kvCacheDtype: 'int4_g32_f16', kvCacheMemory: 1 << 20 });
    clear();
    await llm.generate(PROMPT, { temperature: 0, maxTokens: 4, ignoreEos: true });
    // The step from docs/spec/kv-dtypes.md: the smaller of max(-n / 8, p / 7) and max(p / 8, -n / 7), as an f16.
    const flushed = flushedPerLayer(writes, L, (x, g) => {
      let p = 0;
      let n = 0;
      for (let i = g; i < g + 32; i++) (p = Math.max(p, x[i]!)), (n = Math.min(n, x[i]!));
      return f16BitsToF32(f32ToF16Bits(Math.min(Math.max(-n / 8, p / 7), Math.max(p / 8, -n / 7))));
    });
    const got = llm.kvTelemetry()!;
    expect(got.map((g) => g.k.saturated + g.v.saturated)).toEqual(new Array(L).fill(0));
    expect(got.map((g) => g.k.flushed + g.v.flushed)).toEqual(flushed);
    expect(flushed.some((n) => n > 0)).toBe(true);
  });

  it('is undefined on a float cache and with kvTelemetry: false', async () => {
    expect((await LLM.create({ model, backend: 'reference', kvCacheMemory: 1 << 20 })).kvTelemetry()).toBeUndefined();
    expect((await LLM.create({ model, backend: 'reference', kvCacheDtype: 'fp8', kvTelemetry: false, kvCacheMemory: 1 << 20 })).kvTelemetry()).toBeUndefined();
  });
});
