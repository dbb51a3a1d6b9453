import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { LLM, loadModel, openFileSource, readSafetensorsHeader, type LoadedModel, type SafetensorsHeader } from '@kvq/engine';
import { modelTinyPath } from '@kvq/model-tiny';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { calibrate, type CalibrationResult } from '../calibrate.js';
import { CalibrateError } from '../errors.js';
import { convertScaleFormat, reduceQueryScalesPerKvHead } from '../scales.js';
import { CALIBRATION_TEXTS, stories260KBin, stories260KHf, tempDir } from '../test-helpers.js';
import { convertCheckpoint } from './convert.js';
import { readCheckpointScales } from './read.js';
import { writeCheckpoint } from './write.js';

// Field lists of compressed-tensors' serialized config, from docs/spec/vllm-fp8-kv-cache.md §4.1.
const QUANTIZATION_CONFIG_KEYS = ['config_groups', 'format', 'global_compression_ratio', 'ignore', 'kv_cache_scheme', 'quant_method', 'quantization_status'];
const QUANTIZATION_ARGS_KEYS = ['actorder', 'block_structure', 'dynamic', 'group_size', 'num_bits', 'observer', 'observer_kwargs', 'scale_dtype', 'strategy', 'symmetric', 'type', 'zp_dtype'];
const QUANTIZATION_SCHEME_KEYS = ['format', 'input_activations', 'output_activations', 'targets', 'weights'];

const tmp = tempDir();
afterAll(() => tmp.remove());

const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');
const json = (path: string) => JSON.parse(readFileSync(path, 'utf8')) as Record<string, any>;

async function headers(dir: string): Promise<Map<string, SafetensorsHeader>> {
  const out = new Map<string, SafetensorsHeader>();
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.safetensors'))) {
    const src = await openFileSource(join(dir, f));
    out.set(f, await readSafetensorsHeader(src));
    await src.close();
  }
  return out;
}

async function failure(p: Promise<unknown>): Promise<CalibrateError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(CalibrateError);
    return e as CalibrateError;
  }
  throw new Error('expected a CalibrateError');
}

describe('compressed-tensors checkpoints (stories260K, f32)', () => {
  let hf: string;
  let model: LoadedModel;
  let perTensor: CalibrationResult;
  let perHead: CalibrationResult;
  beforeAll(async () => {
    hf = await stories260KHf(tmp.dir);
    model = await loadModel(hf);
    perTensor = await calibrate({ model, dataset: CALIBRATION_TEXTS, reportSamples: 2 });
    perHead = await calibrate({ model, dataset: CALIBRATION_TEXTS, strategy: 'attn_head', quantizeQuery: true, observer: 'memoryless_minmax', reportSamples: 2 });
  });

  it('config.json and the scale tensors match the compressed-tensors field lists and shapes exactly', async () => {
    const { numLayers: L, numHeads: H, numKvHeads: KVH } = model.config;
    for (const [name, r, strategy] of [['ct-tensor', perTensor, 'tensor'], ['ct-head', perHead, 'attn_head']] as const) {
      const out = join(tmp.dir, name);
      const w = await writeCheckpoint({ model: hf, out, scales: r.scales, provenance: r.provenance, report: r.report });
      const qc = json(join(out, 'config.json')).quantization_config;
      expect(Object.keys(qc).sort()).toEqual(QUANTIZATION_CONFIG_KEYS);
      expect(qc.quant_method).toBe('compressed-tensors');
      const scheme = qc.kv_cache_scheme;
      expect(Object.keys(scheme).sort()).toEqual(QUANTIZATION_ARGS_KEYS);
      expect(scheme).toMatchObject({ num_bits: 8, type: 'float', strategy, dynamic: false, symmetric: true, group_size: null, observer: r.provenance.observer });
      const withQ = strategy === 'attn_head';
      expect(Object.keys(qc.config_groups)).toEqual(withQ ? ['attention'] : []);
      if (withQ) {
        const g = qc.config_groups.attention;
        expect(Object.keys(g).sort()).toEqual(QUANTIZATION_SCHEME_KEYS);
        expect(g).toMatchObject({ targets: ['LlamaAttention'], weights: null, output_activations: null });
        expect(g.input_activations).toEqual(scheme);
      }
      // Tensors: names, shapes, model dtype (F32), no zero points; every tensor in the index.
      const hs = await headers(out);
      const all = new Map<string, { file: string; dtype: string; shape: readonly number[] }>();
      for (const [file, h] of hs) for (const [n, t] of h.tensors) all.set(n, { file, dtype: t.dtype, shape: t.shape });
      const scaleNames = [...all.keys()].filter((n) => /_scale$|zero_point$/.test(n)).sort();
      const want: string[] = [];
      for (let l = 0; l < L; l++) for (const s of withQ ? ['k', 'q', 'v'] : ['k', 'v']) want.push(`model.layers.${l}.self_attn.${s}_scale`);
      expect(scaleNames).toEqual(want.sort());
      expect(w.scaleTensors.slice().sort()).toEqual(want);
      for (const n of scaleNames) {
        const t = all.get(n)!;
        expect(t.dtype).toBe('F32');
        const heads = n.endsWith('q_scale') ? H : KVH;
        expect(t.shape).toEqual(withQ ? [heads, 1, 1] : [1]);
      }
      const index = json(join(out, 'model.safetensors.index.json'));
      expect(Object.keys(index.weight_map).sort()).toEqual([...all.keys()].sort());
      for (const [n, t] of all) expect(index.weight_map[n]).toBe(t.file);
      const bytes = [...hs.values()].flatMap((h) => [...h.tensors.values()].map((t) => t.end - t.begin)).reduce((a, b) => a + b, 0);
      expect(index.metadata.total_size).toBe(bytes);
      // Provenance.
      const prov = json(join(out, 'kvq_calibration.json'));
      expect(prov.provenance).toMatchObject({ datasetSha256: r.provenance.datasetSha256, numSamples: CALIBRATION_TEXTS.length, seed: 42, kvqVersion: '0.1.0' });
      expect(prov.report.layers).toHaveLength(L);
      const meta = [...hs.values()].find((h) => h.tensors.has('model.layers.0.self_attn.k_scale'))!.metadata;
      expect(meta).toMatchObject({ kvq_scale_format: 'e4m3fn', kvq_strategy: strategy, kvq_seed: '42', kvq_dataset_sha256: r.provenance.datasetSha256 });
    }
  });

  it('round-trips through the engine loader (per-head natively, q reduced per GQA group by max) and our reader', async () => {
    for (const [name, r] of [['ct-tensor', perTensor], ['ct-head', perHead]] as const) {
      const out = join(tmp.dir, name);
      const loaded = await loadModel(out);
      const ks = loaded.kvScales!;
      expect(ks.method).toBe('compressed-tensors');
      expect(ks.granularity).toBe(r.scales.strategy === 'attn_head' ? 'head' : 'tensor');
      ks.layers.forEach((l, i) => {
        const want = r.scales.layers[i]!;
        expect(l.k).toEqual(want.k);
        expect(l.v).toEqual(want.v);
        if (want.q) expect(l.q).toEqual(reduceQueryScalesPerKvHead(want.q, model.config.numHeads, model.config.numKvHeads));
      });
      const back = await readCheckpointScales(out);
      expect(back.flavor).toBe('compressed-tensors');
      expect(back.scales.layers).toEqual(r.scales.layers);
      expect(back.provenance?.datasetSha256).toBe(r.provenance.datasetSha256);
      // The engine's cache takes the per-head arrays as they are (no max over heads).
      const llm = await LLM.create({ model: out, kvCacheDtype: 'fp8_e4m3', kvCacheMemory: 4 << 20 });
      expect(llm.engine.storage.layer(2).kScale).toEqual(r.scales.layers[2]!.k);
    }
  });

  it('leaves the original weights untouched (linked, byte-identical) and copies the tokenizer files', () => {
    const out = join(tmp.dir, 'ct-tensor');
    expect(sha(join(out, 'model-00001-of-00002.safetensors'))).toBe(sha(join(hf, 'model.safetensors')));
    expect(statSync(join(out, 'model-00001-of-00002.safetensors')).ino).toBe(statSync(join(hf, 'model.safetensors')).ino);
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) expect(sha(join(out, f))).toBe(sha(join(hf, f)));
    expect(readdirSync(hf).sort()).toEqual(['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    expect(json(join(hf, 'config.json')).quantization_config).toBeUndefined();
  });

  it('re-calibrating a calibrated checkpoint replaces its scale tensors (the old shard re-written, weights bytes equal)', async () => {
    const src = join(tmp.dir, 'ct-head');
    const out = join(tmp.dir, 'recalibrated');
    const w = await writeCheckpoint({ model: src, out, scales: perTensor.scales, linkWeights: 'copy' });
    expect(w.rewrittenShards).toEqual(['model-00002-of-00002.safetensors']);
    const loaded = await loadModel(out);
    expect(loaded.kvScales!.granularity).toBe('tensor');
    expect(loaded.kvScales!.layers[0]!.k).toEqual(perTensor.scales.layers[0]!.k);
    expect(loaded.warnings.filter((x) => x.includes('not used'))).toEqual([]);
  });

  it('writes from a llama2.c file by converting it first', async () => {
    const out = join(tmp.dir, 'from-bin');
    await writeCheckpoint({ model: stories260KBin, out, scales: perHead.scales });
    const loaded = await loadModel(out);
    expect(loaded.kvScales!.layers[1]!.v).toEqual(perHead.scales.layers[1]!.v);
    expect(loaded.weights.layers[3]!.k.data).toEqual(model.weights.layers[3]!.k.data);
    expect(readdirSync(out).some((f) => f.startsWith('.'))).toBe(false);
  });

  it('an existing output folder is OUTPUT_EXISTS unless overwrite; overwrite swaps atomically', async () => {
    const out = join(tmp.dir, 'ct-tensor');
    const e = await failure(writeCheckpoint({ model: hf, out, scales: perTensor.scales }));
    expect(e.code).toBe('OUTPUT_EXISTS');
    expect(e.message).toContain(out);
    await writeCheckpoint({ model: hf, out, scales: perHead.scales, overwrite: true });
    expect((await loadModel(out)).kvScales!.granularity).toBe('head');
    expect(readdirSync(tmp.dir).filter((f) => f.includes('kvq-tmp') || f.includes('kvq-old'))).toEqual([]);
  });

  it('an abort (before or in the middle) leaves no output and no temporary folder', async () => {
    const parent = join(tmp.dir, 'aborts');
    const ac = new AbortController();
    ac.abort();
    expect((await failure(writeCheckpoint({ model: hf, out: join(parent, 'x'), scales: perTensor.scales, signal: ac.signal }))).code).toBe('ABORTED');
    for (const after of [2, 3, 5]) {
      let checks = 0;
      const signal = { get aborted() { return ++checks > after; }, reason: new Error('stop') } as unknown as AbortSignal;
      const e = await failure(writeCheckpoint({ model: hf, out: join(parent, 'y'), scales: perTensor.scales, signal }));
      expect(e.code).toBe('ABORTED');
      expect(readdirSync(parent)).toEqual([]);
    }
  });

  it('rejects per-head scales for per-tensor flavors and bad options', async () => {
    expect((await failure(writeCheckpoint({ model: hf, out: join(tmp.dir, 'mo-head'), scales: perHead.scales, flavor: 'modelopt' }))).field).toBe('flavor');
    expect((await failure(writeCheckpoint({ model: hf, out: join(tmp.dir, 'zz'), scales: perTensor.scales, flavor: 'gguf' as never }))).code).toBe('INVALID_ARGUMENT');
    expect((await failure(writeCheckpoint({ model: join(tmp.dir, 'nope'), out: join(tmp.dir, 'zz'), scales: perTensor.scales }))).code).toBe('UNSUPPORTED_MODEL');
    expect(readdirSync(tmp.dir).filter((f) => f.includes('kvq-tmp'))).toEqual([]);
  });

  it('ModelOpt, Quark and vLLM-JSON exports read back through our reader and the engine; JSON converts to compressed-tensors', async () => {
    const s = perTensor.scales;
    const q = await calibrate({ model, dataset: CALIBRATION_TEXTS, quantizeQuery: true, reportSamples: 0 });
    const mo = join(tmp.dir, 'modelopt');
    await writeCheckpoint({ model: hf, out: mo, scales: q.scales, flavor: 'modelopt' });
    const moNames = [...(await headers(mo)).values()].flatMap((h) => [...h.tensors.keys()]).filter((n) => n.includes('_scale'));
    expect(moNames).toContain('model.layers.0.self_attn.k_proj.k_scale');
    expect(moNames).toContain('model.layers.0.self_attn.v_proj.v_scale');
    expect(json(join(mo, 'config.json')).quantization_config).toMatchObject({ quant_method: 'modelopt', kv_cache_quant_algo: 'FP8' });
    expect(json(join(mo, 'hf_quant_config.json')).quantization).toMatchObject({ kv_cache_quant_algo: 'FP8' });
    const moBack = await readCheckpointScales(mo);
    expect(moBack.flavor).toBe('modelopt');
    expect(moBack.scales.layers.map((l) => [l.k, l.v])).toEqual(q.scales.layers.map((l) => [l.k, l.v]));
    const moLoaded = await loadModel(mo);
    expect(moLoaded.kvScales!.method).toBe('base');
    expect(moLoaded.kvScales!.layers[1]!.q).toEqual(q.scales.layers[1]!.k); // vLLM: missing q := k
    const quark = join(tmp.dir, 'quark');
    await writeCheckpoint({ model: hf, out: quark, scales: q.scales, flavor: 'quark' });
    const quarkLoaded = await loadModel(quark);
    expect(quarkLoaded.kvScales!.layers[2]).toEqual({ k: q.scales.layers[2]!.k, v: q.scales.layers[2]!.v, q: q.scales.layers[2]!.q });
    expect((await readCheckpointScales(quark)).flavor).toBe('quark');
    const vj = join(tmp.dir, 'vllm-json');
    await writeCheckpoint({ model: hf, out: vj, scales: s, flavor: 'vllm-json' });
    const file = json(join(vj, 'kv_cache_scales.json'));
    expect(file.kv_cache.dtype).toBe('float8_e4m3fn');
    expect(Object.keys(file.kv_cache.scaling_factor['0'])).toHaveLength(model.config.numLayers);
    const vjBack = await readCheckpointScales(vj);
    expect(vjBack.flavor).toBe('vllm-json');
    vjBack.scales.layers.forEach((l, i) => {
      const m = Math.max(s.layers[i]!.k[0]!, s.layers[i]!.v[0]!);
      expect([l.k[0], l.v[0]]).toEqual([m, m]);
    });
    const ct = join(tmp.dir, 'json-to-ct');
    await convertCheckpoint({ model: vj, out: ct });
    expect((await loadModel(ct)).kvScales!.layers[3]!.k).toEqual(vjBack.scales.layers[3]!.k);
    expect(readdirSync(ct)).not.toContain('kv_cache_scales.json');
  });

  it('a malformed kv_cache_scales.json is MALFORMED_CHECKPOINT naming the field', async () => {
    const vj = join(tmp.dir, 'vllm-json');
    const path = join(vj, 'kv_cache_scales.json');
    const good = readFileSync(path, 'utf8');
    const cases: Array<[(j: any) => void, string]> = [
      [(j) => (j.kv_cache.dtype = 'float8_e5m2'), 'kv_cache.dtype'],
      [(j) => delete j.kv_cache.scaling_factor['0']['2'], 'kv_cache.scaling_factor.0'],
      [(j) => (j.kv_cache.scaling_factor['0']['1'] = -1), 'kv_cache.scaling_factor.0.1'],
      [(j) => (j.kv_cache.scaling_factor['1'] = {}), 'kv_cache.scaling_factor'],
      [(j) => (j.model_type = 'gpt2'), 'model_type'],
    ];
    try {
      for (const [mutate, field] of cases) {
        const j = JSON.parse(good);
        mutate(j);
        writeFileSync(path, JSON.stringify(j));
        const e = await failure(readCheckpointScales(vj));
        expect([e.code, e.field]).toEqual(['MALFORMED_CHECKPOINT', field]);
      }
    } finally {
      writeFileSync(path, good);
    }
  });

  it('fnuz scales: written as e4m3fn for ModelOpt (÷2, recorded); the engine doubles them back on fnuz', async () => {
    const fnuz = await calibrate({ model, dataset: CALIBRATION_TEXTS, format: 'e4m3fnuz', reportSamples: 0 });
    const out = join(tmp.dir, 'mo-fnuz');
    const w = await writeCheckpoint({ model: hf, out, scales: fnuz.scales, flavor: 'modelopt' });
    expect(w.writtenScales.format).toBe('e4m3fn');
    expect(w.writtenScales.convertedFrom).toBe('e4m3fnuz');
    expect(w.writtenScales.layers[0]!.k[0]).toBe(fnuz.scales.layers[0]!.k[0]! / 2);
    const meta = [...(await headers(out)).values()].find((h) => h.tensors.has('model.layers.0.self_attn.k_proj.k_scale'))!.metadata;
    expect(meta).toMatchObject({ kvq_scale_format: 'e4m3fn', kvq_converted_from: 'e4m3fnuz' });
    const onFnuz = await loadModel(out, { kvCacheFormat: 'e4m3fnuz' });
    expect(onFnuz.kvScales!.fnuzAdjusted).toBe(true);
    expect(onFnuz.kvScales!.layers[0]!.k).toEqual(fnuz.scales.layers[0]!.k);
    // compressed-tensors keeps the calibrated convention (vLLM's CT path does not double).
    const ct = join(tmp.dir, 'ct-fnuz');
    await writeCheckpoint({ model: hf, out: ct, scales: fnuz.scales });
    expect((await readCheckpointScales(ct)).scales).toMatchObject({ format: 'e4m3fnuz' });
    expect((await loadModel(ct, { kvCacheFormat: 'e4m3fnuz' })).kvScales!.layers[0]!.k).toEqual(fnuz.scales.layers[0]!.k);
    expect(convertScaleFormat(fnuz.scales, 'e4m3fn').layers[0]!.k).toEqual(w.writtenScales.layers[0]!.k);
  });
});

describe('compressed-tensors checkpoint of kvq-tiny (bf16)', () => {
  it('stores scales in the model dtype (BF16, rounded to nearest even) and serves them', async () => {
    const chats = CALIBRATION_TEXTS.slice(0, 6).map((t) => ({ messages: [{ role: 'user', content: 'Continue: ' + t.slice(0, 30) }, { role: 'assistant', content: t.slice(30) }] }));
    const r = await calibrate({ model: modelTinyPath, dataset: chats, strategy: 'attn_head', quantizeQuery: true, reportSamples: 1 });
    const out = join(tmp.dir, 'tiny-ct');
    const w = await writeCheckpoint({ model: modelTinyPath, out, scales: r.scales, provenance: r.provenance });
    const h = (await headers(out)).get('model-00002-of-00002.safetensors')!;
    expect(h.tensors.get('model.layers.5.self_attn.k_scale')).toMatchObject({ dtype: 'BF16', shape: [2, 1, 1] });
    expect(h.tensors.get('model.layers.5.self_attn.q_scale')).toMatchObject({ dtype: 'BF16', shape: [4, 1, 1] });
    const loaded = await loadModel(out);
    w.writtenScales.layers.forEach((l, i) => {
      expect(loaded.kvScales!.layers[i]!.k).toEqual(l.k);
      for (let j = 0; j < l.k.length; j++) expect(Math.abs(l.k[j]! / r.scales.layers[i]!.k[j]! - 1)).toBeLessThan(2 ** -8);
    });
    const llm = await LLM.create({ model: out, kvCacheDtype: 'fp8', fp8Query: true, kvCacheMemory: 8 << 20 });
    const s = await llm.score('In the beginning God created the heaven and the earth.');
    expect(Number.isFinite(s.nllSum)).toBe(true);
  });
});
