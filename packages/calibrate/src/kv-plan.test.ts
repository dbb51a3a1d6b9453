/**
 * The automatic per-layer KV plan on kvq-tiny: every layer's K and V x candidate is measured, the chosen plan is the
 * best summed KL within the budget (checked against a brute force over every combination of the measurements), it
 * fits the budget, its measured KL is close to the predicted sum, and impossible budgets are typed errors.
 */
import { LLM, loadModel, type LoadedModel } from '@kvq/engine';
import { modelTinyPath } from '@kvq/model-tiny';
import { beforeAll, describe, expect, it } from 'vitest';
import { CalibrateError } from './errors.js';
import { planKvCacheLayers } from './kv-plan.js';

const TEXTS = [
  'In the beginning God created the heaven and the earth. And the earth was without form, and void.',
  'And God said, Let there be light: and there was light. And God saw the light, that it was good.',
  'And the evening and the morning were the first day. And God called the firmament Heaven.',
];
const CANDIDATES = ['int8_per_token_head', 'int4_per_token_head'] as const;

let model: LoadedModel;
let sequences: number[][];
beforeAll(async () => {
  model = await loadModel(modelTinyPath);
  sequences = TEXTS.map((t) => model.tokenizer.encode(t));
});

describe('planKvCacheLayers', () => {
  it('picks the least summed KL over every layer\'s K and V within the budget (brute-force checked) and measures the plan', async () => {
    const e4m3 = await LLM.create({ model, backend: 'reference', kvCacheDtype: 'fp8', kvCacheMemory: 1 << 20 });
    const budget = e4m3.kvBytesPerToken; // the bytes of an all-e4m3 cache
    const progress: number[] = [];
    const plan = await planKvCacheLayers({ model, sequences, kvBytesPerToken: budget, candidates: CANDIDATES, backend: 'reference', onProgress: (d) => progress.push(d) });
    const L = model.config.numLayers;
    expect(plan.layerDtypes).toHaveLength(L);
    expect(plan.kvBytesPerToken).toBeLessThanOrEqual(budget);
    expect(plan.positions).toBe(sequences.reduce((n, s) => n + s.length - 1, 0));
    expect(progress.at(-1)).toBe((2 * L + 1) * 2 + 2);
    // Brute force over every combination of the per-pool measurements (K of layer 0, V of layer 0, K of layer 1, ...).
    const items = Array.from({ length: 2 * L }, (_, i) => [
      { dtype: 'auto', kl: 0, bytes: 256 }, // kvq-tiny bf16: 2 heads x 64 x 2 bytes per pool
      ...plan.measurements
        .filter((m) => m.layer === Math.floor(i / 2) && m.pool === (i % 2 === 0 ? 'k' : 'v'))
        .map((m) => ({ dtype: m.dtype as string, kl: m.kl, bytes: m.bytesPerToken })),
    ]);
    expect(items.every((o) => o.length === 3)).toBe(true);
    let best = Infinity;
    const walk = (i: number, bytes: number, kl: number) => {
      if (bytes > budget) return;
      if (i === items.length) {
        best = Math.min(best, kl);
        return;
      }
      for (const o of items[i]!) walk(i + 1, bytes + o.bytes, kl + o.kl);
    };
    walk(0, 0, 0);
    expect(plan.predictedKl).toBeCloseTo(best, 12);
    const values = plan.layerValueDtypes ?? plan.layerDtypes;
    const chosen = plan.layerDtypes.reduce((n, d, l) => n + items[2 * l]!.find((o) => o.dtype === d)!.kl + items[2 * l + 1]!.find((o) => o.dtype === values[l])!.kl, 0);
    expect(chosen).toBeCloseTo(plan.predictedKl, 12);
    // Every measurement is a real KL (int4 hurts more than int8 on every pool), and the whole plan is near the sum.
    for (let i = 0; i < 2 * L; i++) expect(items[i]![2]!.kl, `pool ${i}`).toBeGreaterThan(items[i]![1]!.kl);
    expect(plan.measuredKl).toBeGreaterThan(0);
    expect(plan.measuredKl).toBeLessThan(plan.predictedKl * 3 + 1e-6);
    expect(plan.measuredKl).toBeGreaterThan(plan.predictedKl / 3);
    // The plan beats putting the cheaper candidate everywhere (which also fits).
    const int4All = plan.measurements.find((m) => m.layer === 'all' && m.dtype === 'int4_per_token_head')!;
    expect(int4All.bytesPerToken).toBeLessThanOrEqual(budget);
    expect(plan.measuredKl).toBeLessThan(int4All.kl);
    // The plan runs as the engine's per-layer K/V dtypes.
    const llm = await LLM.create({ model, backend: 'reference', kvCacheLayerDtypes: plan.layerDtypes, kvCacheLayerValueDtypes: values, kvCacheMemory: 1 << 20 });
    expect(llm.kvBytesPerToken).toBe(plan.kvBytesPerToken);
  }, 240_000);

  it('separateKv false: one dtype per layer, K and V measured together (brute-force checked)', async () => {
    const budget = 1200;
    const plan = await planKvCacheLayers({ model, sequences: sequences.slice(0, 1), kvBytesPerToken: budget, candidates: CANDIDATES, backend: 'reference', separateKv: false });
    const L = model.config.numLayers;
    expect(plan.layerValueDtypes).toBeUndefined();
    expect(plan.measurements.filter((m) => m.layer !== 'all').every((m) => m.pool === 'kv')).toBe(true);
    const perLayer = Array.from({ length: L }, (_, l) => [
      { kl: 0, bytes: 512 },
      ...plan.measurements.filter((m) => m.layer === l).map((m) => ({ kl: m.kl, bytes: m.bytesPerToken })),
    ]);
    let best = Infinity;
    const walk = (l: number, bytes: number, kl: number) => {
      if (bytes > budget) return;
      if (l === L) {
        best = Math.min(best, kl);
        return;
      }
      for (const o of perLayer[l]!) walk(l + 1, bytes + o.bytes, kl + o.kl);
    };
    walk(0, 0, 0);
    expect(plan.predictedKl).toBeCloseTo(best, 12);
    expect(plan.kvBytesPerToken).toBeLessThanOrEqual(budget);
  }, 120_000);

  it('a budget of every layer in the model dtype or more keeps everything unquantized; an impossible budget is INVALID_ARGUMENT', async () => {
    const plan = await planKvCacheLayers({ model, sequences: sequences.slice(0, 1), kvBytesPerToken: 1e6, candidates: ['int8_per_token_head'], backend: 'reference' });
    expect(plan.layerDtypes).toEqual(new Array(model.config.numLayers).fill('auto'));
    expect(plan.measuredKl).toBe(0);
    let err: unknown;
    try {
      await planKvCacheLayers({ model, sequences: sequences.slice(0, 1), kvBytesPerToken: 100, candidates: ['int8_per_token_head'], backend: 'reference' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CalibrateError);
    expect((err as CalibrateError).code).toBe('INVALID_ARGUMENT');
    expect((err as CalibrateError).message).toMatch(/kvBytesPerToken 100 is below the cheapest plan of these candidates \(1632 bytes per token\)/);
    await expect(planKvCacheLayers({ model, sequences: [[1]], kvBytesPerToken: 1000, backend: 'reference' })).rejects.toThrow(/at least one sequence of >= 2 tokens/);
    await expect(planKvCacheLayers({ model, sequences, kvBytesPerToken: -1, backend: 'reference' })).rejects.toThrow(/kvBytesPerToken must be a positive number/);
  }, 120_000);
});
