import { describe, expect, it } from 'vitest';

import { encodeSafetensors, readSafetensorsHeader } from '../formats/safetensors.js';
import { MemorySource } from '../io/source.js';
import { readHfWeights } from '../load/hf.js';
import type { LoadModelOptions } from '../load/types.js';
import { engineErrorOf, engineErrorOfAsync, randomHfTensors, tinyConfig, toBits } from '../testing/fixtures.js';
import type { Tensor } from '../tensor.js';
import { classifyKvScaleName, kvScaleMethodOf, resolveKvScales } from './kv-scales.js';

const config = tinyConfig(); // 2 layers, 4 query heads, 2 KV heads
const scalar = (x: number, shape: number[] = [1]): Tensor => ({ dtype: 'f32', shape, data: Float32Array.of(x) });
const values = (xs: number[], shape: number[]): Tensor => ({ dtype: 'f32', shape, data: Float32Array.from(xs) });
const bf16 = (xs: number[], shape: number[]): Tensor => ({ dtype: 'bf16', shape, data: toBits(Float32Array.from(xs), 'bf16') });

async function load(scales: Record<string, Tensor>, quantizationConfig: unknown, options: LoadModelOptions = {}) {
  const tensors = new Map([...randomHfTensors(config), ...Object.entries(scales)]);
  const source = new MemorySource(encodeSafetensors(tensors), 'model.safetensors');
  const shard = { source, header: await readSafetensorsHeader(source) };
  return readHfWeights(config, [shard], quantizationConfig, 'config.json', options);
}

const ct = (strategy: string, extra: Record<string, unknown> = {}) => ({
  quant_method: 'compressed-tensors',
  config_groups: {},
  kv_cache_scheme: { num_bits: 8, type: 'float', strategy, dynamic: false, symmetric: true, observer: 'static_minmax', ...extra },
});
const attn = (layer: number, suffix: string): string => `model.layers.${layer}.self_attn.${suffix}`;
const list = (a: Float32Array | undefined): number[] => Array.from(a ?? []);

describe('compressed-tensors kv_cache_scheme (vLLM CompressedTensorsKVCacheMethod rules)', () => {
  it('per-tensor: uses k/v/q as stored, missing scales stay 1.0 (q does not fall back to k), no fnuz doubling', async () => {
    const scales = {
      [attn(0, 'k_scale')]: bf16([0.0625], [1]),
      [attn(0, 'v_scale')]: bf16([0.125], [1]),
      [attn(0, 'q_scale')]: bf16([0.25], [1]),
      [attn(1, 'k_scale')]: scalar(0.5),
      [attn(1, 'v_scale')]: scalar(0.75),
      [attn(1, 'k_zero_point')]: scalar(0),
    };
    const loaded = await load(scales, ct('tensor'));
    const kv = loaded.kvScales!;
    expect(kv).toMatchObject({ method: 'compressed-tensors', granularity: 'tensor', format: 'e4m3fn', fnuzAdjusted: false, layersFromCheckpoint: 2 });
    expect(kv.layers.map((l) => [list(l.k), list(l.v), list(l.q)])).toEqual([
      [[0.0625], [0.125], [0.25]],
      [[0.5], [0.75], [1]],
    ]);
    expect(kv.warnings.join('\n')).toContain('layer 1 q');
    expect(loaded.warnings.some((w) => w.includes('not used'))).toBe(false);
    expect(loaded.checkpointKvScales?.scheme?.observer).toBe('static_minmax');

    const fnuz = await load(scales, ct('tensor'), { kvCacheFormat: 'e4m3fnuz' });
    expect(list(fnuz.kvScales!.layers[0]!.k)).toEqual([0.0625]);
    const doubled = await load(scales, ct('tensor'), { kvCacheFormat: 'e4m3fnuz', doubleCompressedTensorsOnFnuz: true });
    expect(list(doubled.kvScales!.layers[0]!.k)).toEqual([0.125]);
    expect(doubled.kvScales!.fnuzAdjusted).toBe(true);
  });

  it('attn_head: [H,1,1] tensors give per-KV-head scales; q is reduced over each GQA group by max', async () => {
    const loaded = await load(
      {
        [attn(0, 'k_scale')]: values([0.1, 0.2], [2, 1, 1]),
        [attn(0, 'v_scale')]: values([0.3, 0.4], [2, 1, 1]),
        [attn(0, 'q_scale')]: values([0.1, 0.3, 0.2, 0.05], [4, 1, 1]),
      },
      ct('attn_head'),
    );
    const [l0, l1] = loaded.kvScales!.layers;
    expect(loaded.kvScales!.granularity).toBe('head');
    expect(list(l0!.k)).toEqual([Math.fround(0.1), Math.fround(0.2)]);
    expect(list(l0!.q)).toEqual([Math.fround(0.3), Math.fround(0.2)]);
    expect(list(l1!.v)).toEqual([1, 1]);
  });

  it('rejects per-head shapes that do not match the head counts', async () => {
    const e = await engineErrorOfAsync(load({ [attn(0, 'k_scale')]: values([1, 1, 1, 1], [4, 1, 1]) }, ct('attn_head')));
    expect(e.code).toBe('INVALID_KV_SCALE');
    expect(e.message).toContain(attn(0, 'k_scale'));
    expect(e.message).toContain('needs 2');
  });

  it.each([
    [{ type: 'int' }, 'type'],
    [{ num_bits: 4 }, 'num_bits'],
    [{ strategy: 'channel' }, 'strategy'],
    [{ symmetric: false }, 'symmetric'],
    [{ dynamic: true }, 'dynamic'],
  ])('rejects kv_cache_scheme %j', (extra, field) => {
    const e = engineErrorOf(() => kvScaleMethodOf(ct('tensor', extra), false, 'config.json'));
    expect(e.code).toBe('UNSUPPORTED_KV_SCHEME');
    expect(e.field).toBe(`quantization_config.kv_cache_scheme.${field}`);
  });
});

describe('fp8 / ModelOpt / legacy names (vLLM BaseKVCacheMethod rules)', () => {
  const modelopt = { quant_method: 'modelopt', quant_algo: 'FP8', kv_cache_quant_algo: 'FP8' };

  it('k and v present → used; neither → 1.0 with the uncalibrated warning; q missing → q := k; fnuz doubles', async () => {
    const scales = { [attn(0, 'k_proj.k_scale')]: scalar(0.5, []), [attn(0, 'v_proj.v_scale')]: scalar(0.25, []) };
    const loaded = await load(scales, modelopt);
    const kv = loaded.kvScales!;
    expect(kv.method).toBe('base');
    expect(kv.layers.map((l) => [l.k[0], l.v[0], l.q[0]])).toEqual([
      [0.5, 0.25, 0.5],
      [1, 1, 1],
    ]);
    expect(kv.warnings.some((w) => w.startsWith('Checkpoint does not provide a q scaling factor'))).toBe(true);
    expect(kv.warnings.some((w) => w.startsWith('Using KV cache scaling factor 1.0 for fp8_e4m3 (layers 1)'))).toBe(true);

    const fnuz = (await load(scales, modelopt, { kvCacheFormat: 'e4m3fnuz' })).kvScales!;
    expect(fnuz.layers.map((l) => [l.k[0], l.v[0], l.q[0]])).toEqual([
      [1, 0.5, 1],
      [1, 1, 1],
    ]);
    expect(fnuz.fnuzAdjusted).toBe(true);
    const e5m2 = (await load(scales, modelopt, { kvCacheFormat: 'e5m2' })).kvScales!;
    expect(e5m2.warnings.some((w) => w.startsWith('Using KV cache scaling factor 1.0'))).toBe(false);
  });

  it('a single deprecated kv_scale or a lone k scale serves both k and v (max of those present)', async () => {
    const kv = (await load({ [attn(0, 'kv_scale')]: scalar(0.2), [attn(1, 'v_proj.output_scale')]: scalar(0.3), [attn(1, 'q_proj.output_scale')]: scalar(0.4) }, { quant_method: 'fp8' }))
      .kvScales!;
    expect(kv.layers.map((l) => [l.k[0], l.v[0], l.q[0]])).toEqual([
      [Math.fround(0.2), Math.fround(0.2), Math.fround(0.2)],
      [Math.fround(0.3), Math.fround(0.3), Math.fround(0.4)],
    ]);
  });

  it('scale tensors without a quantization_config are loaded with the base rules and a warning', async () => {
    const loaded = await load({ [attn(0, 'k_scale')]: scalar(0.5), [attn(0, 'v_scale')]: scalar(0.5) }, undefined);
    expect(loaded.kvScales?.method).toBe('base');
    expect(loaded.warnings.some((w) => w.includes('without a quantization_config'))).toBe(true);
  });

  it('rejects per-head scales, non-positive and non-finite values, and duplicate scales', async () => {
    let e = await engineErrorOfAsync(load({ [attn(0, 'k_scale')]: values([1, 2], [2]) }, modelopt));
    expect(e.code).toBe('INVALID_KV_SCALE');
    expect(e.message).toContain('per-tensor');
    e = await engineErrorOfAsync(load({ [attn(1, 'v_scale')]: scalar(0) }, modelopt));
    expect(e.code).toBe('INVALID_KV_SCALE');
    expect(e.message).toContain(attn(1, 'v_scale'));
    e = await engineErrorOfAsync(load({ [attn(1, 'v_scale')]: scalar(Number.NaN) }, ct('tensor')));
    expect(e.code).toBe('INVALID_KV_SCALE');
    e = await engineErrorOfAsync(load({ [attn(0, 'k_scale')]: scalar(1), [attn(0, 'k_proj.k_scale')]: scalar(1) }, modelopt));
    expect(e.code).toBe('INVALID_KV_SCALE');
    expect(e.message).toContain('already has a k scale');
  });
});

describe('scale names and the no-scale case', () => {
  it('classifies producer names and ignores unrelated tensors', () => {
    expect(classifyKvScaleName('model.layers.3.self_attn.k_proj.output_scale')).toEqual({ name: 'model.layers.3.self_attn.k_proj.output_scale', layer: 3, slot: 'k' });
    expect(classifyKvScaleName('model.layers.3.self_attn.prob_output_scale')?.slot).toBe('prob');
    expect(classifyKvScaleName('model.layers.3.self_attn.q_zero_point')?.slot).toBe('ignore');
    expect(classifyKvScaleName('model.layers.3.self_attn.k_proj.weight')).toBeUndefined();
    expect(classifyKvScaleName('model.layers.3.mlp.k_scale')).toBeUndefined();
  });

  it('a checkpoint without scales or KV quantization has no kvScales', async () => {
    const loaded = await load({}, undefined);
    expect(loaded.kvScales).toBeUndefined();
    expect(loaded.checkpointKvScales).toBeUndefined();
    expect(kvScaleMethodOf({ quant_method: 'fp8' }, false, 'c')).toBeUndefined();
  });

  it('resolves the same checkpoint scales again for another format', async () => {
    const loaded = await load({ [attn(0, 'k_scale')]: scalar(0.5), [attn(0, 'v_scale')]: scalar(0.5) }, { quant_method: 'fp8' });
    const again = resolveKvScales(loaded.checkpointKvScales!, { numHeads: 4, numKvHeads: 2, format: 'e5m2fnuz' });
    expect(again.layers[0]!.k[0]).toBe(1);
  });
});
