import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { LLM, loadModel, type LoadedModel } from '@kvq/engine';
import { amaxPerHead, amaxTensor } from '@kvq/fp8';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { calibrate, randomCalibrationTokens, type CalibrateOptions } from './calibrate.js';
import { selectSamples } from './dataset.js';
import { CalibrateError } from './errors.js';
import { CALIBRATION_TEXTS, stories260KHf, tempDir } from './test-helpers.js';

const tmp = tempDir();
afterAll(() => tmp.remove());

async function failure(p: Promise<unknown>): Promise<CalibrateError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(CalibrateError);
    return e as CalibrateError;
  }
  throw new Error('expected a CalibrateError');
}

/** Per-sample amax of post-RoPE q/k/v per layer (tensor and per head), from a float (auto) cache: independent of calibrate. */
async function observeAmax(model: LoadedModel, texts: readonly string[]) {
  const c = model.config;
  const llm = await LLM.create({ model, kvCacheDtype: 'auto', kvCacheMemory: 8 << 20, enablePrefixCaching: false, maxNumBatchedTokens: 512 });
  const perSample: { k: number[]; v: number[]; q: number[]; kHead: Float32Array[] }[] = [];
  let current: (typeof perSample)[number];
  llm.engine.setAttentionObserver((layer, t) => {
    const kv = t.numTokens * c.numKvHeads * c.headDim;
    current.k[layer] = amaxTensor(t.key.subarray(0, kv));
    current.v[layer] = amaxTensor(t.value.subarray(0, kv));
    current.q[layer] = amaxTensor(t.query.subarray(0, t.numTokens * c.numHeads * c.headDim));
    current.kHead[layer] = amaxPerHead(t.key.subarray(0, kv), c.numKvHeads, c.headDim);
  });
  for (const text of texts) {
    current = { k: [], v: [], q: [], kHead: [] };
    await llm.generate([{ promptTokenIds: llm.encode(text) }], { maxTokens: 1, ignoreEos: true });
    perSample.push(current);
  }
  return perSample;
}

describe('calibrate on stories260K', () => {
  let hf: string;
  let model: LoadedModel;
  const base = (): CalibrateOptions => ({ model, dataset: CALIBRATION_TEXTS, reportSamples: 4 });
  beforeAll(async () => {
    hf = await stories260KHf(tmp.dir);
    model = await loadModel(hf);
  });

  it('random: equals the engine\'s calculate_kv_scales (amax/200, amax/200, amax/100) on the same seeded batch', async () => {
    const r = await calibrate({ model, method: 'random', maxSeqLen: 64, seed: 5, quantizeQuery: true, reportSamples: 0 });
    const tokens = randomCalibrationTokens(5, 64, model.config.vocabSize);
    const llm = await LLM.create({ model, kvCacheDtype: 'fp8_e4m3', calculateKvScales: true, fp8Query: true, kvCacheMemory: 8 << 20, maxNumBatchedTokens: 128 });
    await llm.generate([{ promptTokenIds: tokens }], { maxTokens: 1, ignoreEos: true });
    r.scales.layers.forEach((l, i) => {
      const s = llm.engine.storage.layer(i);
      expect(l.k[0]).toBe(s.kScale[0]);
      expect(l.v[0]).toBe(s.vScale[0]);
      expect(l.q![0]).toBe(s.qScale[0]);
    });
    expect(r.provenance.divisors).toEqual({ q: 200, k: 200, v: 100 });
    expect(r.report.samples).toBe(1);
    expect(r.report.tokens).toBe(64);
  });

  it('random attn_head: per-head amax / 200 and / 100', async () => {
    const r = await calibrate({ model, method: 'random', strategy: 'attn_head', maxSeqLen: 32, seed: 9, reportSamples: 0 });
    const tokens = randomCalibrationTokens(9, 32, model.config.vocabSize);
    const c = model.config;
    // Layer 0 sees no quantized input, so an unquantized pass gives the same activations.
    const llm = await LLM.create({ model, kvCacheDtype: 'auto', kvCacheMemory: 8 << 20, maxNumBatchedTokens: 64 });
    let k0: Float32Array | undefined;
    let v0: Float32Array | undefined;
    llm.engine.setAttentionObserver((layer, t) => {
      if (layer !== 0) return;
      const n = t.numTokens * c.numKvHeads * c.headDim;
      k0 = amaxPerHead(t.key.subarray(0, n), c.numKvHeads, c.headDim);
      v0 = amaxPerHead(t.value.subarray(0, n), c.numKvHeads, c.headDim);
    });
    await llm.generate([{ promptTokenIds: tokens }], { maxTokens: 1, ignoreEos: true });
    expect([...r.scales.layers[0]!.k]).toEqual([...k0!].map((a) => Math.fround(a / 200)));
    expect([...r.scales.layers[0]!.v]).toEqual([...v0!].map((a) => Math.fround(a / 100)));
    expect(r.scales.layers[0]!.k).toHaveLength(c.numKvHeads);
  });

  it('dataset + static_minmax without fake quantization: scale = fround(max over samples of amax / 448)', async () => {
    const r = await calibrate({ ...base(), fakeQuantize: false });
    const obs = await observeAmax(model, CALIBRATION_TEXTS);
    r.scales.layers.forEach((l, i) => {
      expect(l.k[0]).toBe(Math.fround(Math.max(...obs.map((o) => o.k[i]!)) / 448));
      expect(l.v[0]).toBe(Math.fround(Math.max(...obs.map((o) => o.v[i]!)) / 448));
    });
    expect(r.provenance.numSamples).toBe(CALIBRATION_TEXTS.length);
    expect(r.provenance.fakeQuantize).toBe(false);
  });

  it('attn_head: one k/v scale per KV head, q per query head', async () => {
    const r = await calibrate({ ...base(), fakeQuantize: false, strategy: 'attn_head', quantizeQuery: true });
    const obs = await observeAmax(model, CALIBRATION_TEXTS);
    const c = model.config;
    r.scales.layers.forEach((l, i) => {
      expect(l.k).toHaveLength(c.numKvHeads);
      expect(l.q).toHaveLength(c.numHeads);
      for (let h = 0; h < c.numKvHeads; h++) expect(l.k[h]).toBe(Math.fround(Math.max(...obs.map((o) => o.kHead[i]![h]!)) / 448));
      expect(Math.max(...l.q!)).toBe(Math.fround(Math.max(...obs.map((o) => o.q[i]!)) / 448));
    });
  });

  it('memoryless_minmax: the last sample of the seeded order decides', async () => {
    const r = await calibrate({ ...base(), fakeQuantize: false, observer: 'memoryless_minmax', numSamples: 6, seed: 3 });
    const order = selectSamples(CALIBRATION_TEXTS, 6, 3);
    const [last] = await observeAmax(model, [order[5]!]);
    r.scales.layers.forEach((l, i) => expect(l.k[0]).toBe(Math.fround(last!.k[i]! / 448)));
    expect(r.report.observer).toBe('memoryless_minmax');
  });

  it('minmax: moving average (0.01) of per-sample min/max in the seeded order', async () => {
    const r = await calibrate({ ...base(), fakeQuantize: false, observer: 'minmax', numSamples: 5, seed: 4 });
    const order = selectSamples(CALIBRATION_TEXTS, 5, 4);
    // Independently: per-sample min and max of layer 0's values.
    const c = model.config;
    const llm = await LLM.create({ model, kvCacheDtype: 'auto', kvCacheMemory: 8 << 20 });
    let lo = 0;
    let hi = 0;
    let first = true;
    llm.engine.setAttentionObserver((layer, t) => {
      if (layer !== 0) return;
      const v = t.value.subarray(0, t.numTokens * c.numKvHeads * c.headDim);
      const mn = Math.min(...v);
      const mx = Math.max(...v);
      if (first) [lo, hi, first] = [mn, mx, false];
      else [lo, hi] = [lo + 0.01 * (mn - lo), hi + 0.01 * (mx - hi)];
    });
    for (const text of order) await llm.generate([{ promptTokenIds: llm.encode(text) }], { maxTokens: 1, ignoreEos: true });
    expect(r.scales.layers[0]!.v[0]).toBe(Math.fround(Math.max(-Math.min(lo, 0), Math.max(hi, 0)) / 448));
  });

  it('fake quantization: layer 0 is unaffected, later layers see the quantized cache of earlier ones', async () => {
    const fq = await calibrate({ ...base(), fakeQuantize: true });
    const plain = await calibrate({ ...base(), fakeQuantize: false });
    expect(fq.scales.layers[0]).toEqual(plain.scales.layers[0]);
    expect(fq.scales.layers.slice(1)).not.toEqual(plain.scales.layers.slice(1));
    expect(fq.provenance.fakeQuantize).toBe(true);
  });

  it('is deterministic for a seed; another seed draws other samples', async () => {
    const a = await calibrate({ ...base(), numSamples: 5, seed: 1 });
    const b = await calibrate({ ...base(), numSamples: 5, seed: 1 });
    const c = await calibrate({ ...base(), numSamples: 5, seed: 2 });
    expect(b.scales).toEqual(a.scales);
    expect(b.report).toEqual(a.report);
    expect(c.scales).not.toEqual(a.scales);
    expect(a.provenance.datasetSha256).toMatch(/^[0-9a-f]{64}$/);
    expect(a.provenance).toMatchObject({ seed: 1, numSamples: 5, numSamplesRequested: 5, observer: 'static_minmax', method: 'dataset', tool: 'kvq' });
  });

  it('none: every scale is 1.0 with vLLM\'s e4m3 warning; the report still measures the cache', async () => {
    const r = await calibrate({ ...base(), method: 'none', strategy: 'attn_head', quantizeQuery: true });
    for (const l of r.scales.layers) {
      expect([...l.k, ...l.v, ...l.q!].every((x) => x === 1)).toBe(true);
    }
    expect(r.warnings.join('\n')).toContain('Using KV cache scaling factor 1.0 for fp8_e4m3');
    expect(r.report.reportSamples).toBe(4);
    expect(r.report.layers[0]!.k.amax).toBeGreaterThan(0);
    expect(r.report.layers[0]!.k.subnormal).toBeGreaterThan(0);
  });

  it('reports progress per sample and stops on abort', async () => {
    const seen: string[] = [];
    await calibrate({ ...base(), numSamples: 3, onProgress: (p) => seen.push(`${p.phase}:${p.samplesDone}/${p.samplesTotal}`) });
    expect(seen).toEqual(['calibrate:1/3', 'calibrate:2/3', 'calibrate:3/3', 'report:1/3', 'report:2/3', 'report:3/3']);
    const ac = new AbortController();
    const e = await failure(calibrate({ ...base(), signal: ac.signal, onProgress: (p) => p.samplesDone === 2 && ac.abort(new Error('user pressed ^C')) }));
    expect(e.code).toBe('ABORTED');
    expect(e.message).toContain('user pressed ^C');
  });

  it('e4m3fnuz: scales are amax / 224, twice the e4m3fn ones', async () => {
    const fn = await calibrate({ ...base(), fakeQuantize: false, reportSamples: 0 });
    const fnuz = await calibrate({ ...base(), fakeQuantize: false, format: 'e4m3fnuz', reportSamples: 0 });
    fn.scales.layers.forEach((l, i) => expect(fnuz.scales.layers[i]!.k[0]).toBe(l.k[0]! * 2));
    expect(fnuz.scales.format).toBe('e4m3fnuz');
  });

  it('bad input: typed errors naming the problem', async () => {
    expect((await failure(calibrate({ ...base(), strategy: 'channel' as never }))).field).toBe('strategy');
    expect((await failure(calibrate({ ...base(), observer: 'mse' as never }))).message).toContain("'static_minmax'");
    expect((await failure(calibrate({ ...base(), method: 'gptq' as never }))).code).toBe('INVALID_ARGUMENT');
    expect((await failure(calibrate({ ...base(), format: 'int8' as never }))).field).toBe('format');
    expect((await failure(calibrate({ ...base(), numSamples: 0 }))).field).toBe('numSamples');
    expect((await failure(calibrate({ model, method: 'dataset' }))).field).toBe('dataset');
    expect((await failure(calibrate({ model, dataset: join(tmp.dir, 'missing.jsonl') }))).code).toBe('DATASET_NOT_FOUND');
    const malformed = join(tmp.dir, 'bad.jsonl');
    writeFileSync(malformed, '{"text":"fine"}\n{"text":"fine"}\n{"text": broken\n');
    const m = await failure(calibrate({ model, dataset: malformed }));
    expect([m.code, m.line]).toEqual(['DATASET_MALFORMED', 3]);
    const empty = join(tmp.dir, 'empty.txt');
    writeFileSync(empty, '\n\n   \n');
    expect((await failure(calibrate({ model, dataset: empty }))).code).toBe('DATASET_EMPTY');
    expect((await failure(calibrate({ model, dataset: [{ messages: [{ role: 'user', content: 'hi' }] }] }))).code).toBe('NO_CHAT_TEMPLATE');
    const noAttn = join(tmp.dir, 'no-attention');
    mkdirSync(noAttn);
    writeFileSync(join(noAttn, 'config.json'), JSON.stringify({ architectures: ['LlamaForCausalLM'], num_hidden_layers: 0, num_attention_heads: 8, hidden_size: 64 }));
    const na = await failure(calibrate({ model: noAttn, method: 'random' }));
    expect(na.code).toBe('NO_ATTENTION_LAYERS');
    expect(na.message).toContain('num_hidden_layers 0');
    writeFileSync(join(noAttn, 'config.json'), JSON.stringify({ architectures: ['MambaForCausalLM'], num_hidden_layers: 4, layer_types: ['mamba', 'mamba', 'mamba', 'mamba'] }));
    expect((await failure(calibrate({ model: noAttn, method: 'random' }))).code).toBe('NO_ATTENTION_LAYERS');
  });
});
