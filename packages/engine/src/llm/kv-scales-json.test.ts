/**
 * `quantizationParamPath` (vLLM's legacy `kv_cache_scales.json`): a kvq-tiny run uses exactly the file's scales, the
 * file wins over checkpoint scales and turns calculateKvScales off, a cache that is not FP8 e4m3 ignores it with a
 * warning, a file in the model folder is never read by itself, and a bad file is a typed error.
 */
import { copyFile, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { modelTinyPath } from '@kvq/model-tiny';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { loadModel } from '../load/load-model.js';
import { engineErrorOfAsync, tempDir } from '../testing/fixtures.js';
import { resolveKvScales, type CheckpointKvScales } from '../weights/kv-scales.js';
import { LLM } from './llm.js';

const LAYERS = 6; // kvq-tiny's num_hidden_layers
const SCALES = [0.011, 0.023, 0.037, 0.041, 0.053, 0.067];

let dir: string;
let cleanup: () => Promise<void>;
let warnings: string[];
let restore: () => void;
beforeEach(async () => {
  ({ dir, cleanup } = await tempDir('kvq-scales-json-'));
  warnings = [];
  const spy = vi.spyOn(process, 'emitWarning').mockImplementation((w: string | Error) => void warnings.push(String(w)));
  restore = () => spy.mockRestore();
});
afterEach(async () => {
  restore();
  await cleanup();
});

async function scalesFile(scales: readonly number[] = SCALES, name = 'kv_cache_scales.json'): Promise<string> {
  const path = join(dir, name);
  const layers = Object.fromEntries(scales.map((s, l) => [String(l), s]));
  await writeFile(path, JSON.stringify({ model_type: 'llama', kv_cache: { dtype: 'float8_e4m3fn', scaling_factor: { '0': layers } } }));
  return path;
}

function storedScales(llm: LLM): { k: number; v: number; q: number }[] {
  const storage = llm.engine.forwardPass.storage;
  return Array.from({ length: LAYERS }, (_, l) => {
    const layer = storage.layer(l);
    return { k: layer.kScale[0]!, v: layer.vScale[0]!, q: layer.qScale[0]! };
  });
}

const OPTS = { backend: 'reference', kvCacheMemory: 2 << 20 } as const;

describe('LLM.create({ quantizationParamPath })', () => {
  it('a kvq-tiny run uses exactly the scales of the file (k = v = q = the layer factor) and reports them', async () => {
    const file = await scalesFile();
    const llm = await LLM.create({ model: modelTinyPath, ...OPTS, kvCacheDtype: 'fp8', quantizationParamPath: file });
    const [out] = await llm.generate('Once upon a time', { temperature: 0, maxTokens: 3 });
    expect(out!.outputs[0]!.tokenIds).toHaveLength(3);
    const expected = SCALES.map((s) => ({ k: Math.fround(s), v: Math.fround(s), q: Math.fround(s) }));
    expect(storedScales(llm)).toEqual(expected);
    expect(llm.kvScales?.origin).toContain(file);
    expect(llm.kvScales?.scales.layers.map((l) => l.k[0])).toEqual(SCALES.map((s) => Math.fround(s)));
    // Without the file the same cache runs on the 1.0 fallback scales.
    const plain = await LLM.create({ model: modelTinyPath, ...OPTS, kvCacheDtype: 'fp8' });
    expect(storedScales(plain).every((s) => s.k === 1 && s.v === 1)).toBe(true);
  });

  it('on an FNUZ format the factors double, as vLLM did on ROCm', async () => {
    const llm = await LLM.create({ model: modelTinyPath, ...OPTS, kvCacheDtype: 'e4m3fnuz', quantizationParamPath: await scalesFile() });
    expect(storedScales(llm).map((s) => s.k)).toEqual(SCALES.map((s) => Math.fround(s) * 2));
  });

  it('replaces checkpoint scales (warning) and turns calculateKvScales off like checkpoint scales do', async () => {
    const base = await loadModel(modelTinyPath);
    const c = base.config;
    const ckpt: CheckpointKvScales = {
      method: 'base',
      scheme: undefined,
      layers: Array.from({ length: c.numLayers }, () => ({ k: Float32Array.of(0.5), v: Float32Array.of(0.25), names: { k: 'k_scale', v: 'v_scale' } })),
      origin: 'test checkpoint',
    };
    const model = { ...base, checkpointKvScales: ckpt, kvScales: resolveKvScales(ckpt, { numHeads: c.numHeads, numKvHeads: c.numKvHeads }) };
    const file = await scalesFile();
    const llm = await LLM.create({ model, ...OPTS, kvCacheDtype: 'fp8', calculateKvScales: true, quantizationParamPath: file });
    await llm.generate('Once upon a time', { temperature: 0, maxTokens: 2 });
    expect(storedScales(llm).map((s) => [s.k, s.v])).toEqual(SCALES.map((s) => [Math.fround(s), Math.fround(s)])); // not amax-derived
    expect(warnings.some((w) => w.includes(`quantizationParamPath ${file} replaces the checkpoint's KV-cache scales (6 layers from test checkpoint)`))).toBe(true);
    expect(warnings.some((w) => /calculateKvScales ignored/.test(w) && w.includes(file))).toBe(true);
  });

  it('a cache that is not FP8 e4m3 validates the file, then ignores it with KVQ_KV_SCALES_UNUSED', async () => {
    const file = await scalesFile();
    const codes: string[] = [];
    restore();
    const spy = vi.spyOn(process, 'emitWarning').mockImplementation((w: string | Error, o?: unknown) => {
      warnings.push(String(w));
      codes.push((o as { code?: string } | undefined)?.code ?? '');
    });
    restore = () => spy.mockRestore();
    for (const kvCacheDtype of ['auto', 'fp8_e5m2'] as const) {
      warnings.length = 0;
      codes.length = 0;
      const llm = await LLM.create({ model: modelTinyPath, ...OPTS, kvCacheDtype, quantizationParamPath: file });
      expect(llm.kvScales).toBeUndefined();
      expect(codes).toContain('KVQ_KV_SCALES_UNUSED');
      expect(warnings.find((w) => w.includes(`quantizationParamPath ${file} ignored`))).toMatch(kvCacheDtype === 'auto' ? /this cache is bf16/ : /this cache is e5m2/);
    }
    const bad = await scalesFile([0.1, 0.2]);
    const e = await engineErrorOfAsync(LLM.create({ model: modelTinyPath, ...OPTS, quantizationParamPath: bad }));
    expect([e.code, e.file, e.field]).toEqual(['INVALID_KV_SCALE', bad, 'kv_cache.scaling_factor.0']);
    expect(e.message).toMatch(/has 2 layers, but the model has num_hidden_layers 6/);
  });

  it('a kv_cache_scales.json in the model folder is not read unless passed (vLLM has no such lookup)', async () => {
    const folder = join(dir, 'model');
    await mkdir(folder);
    for (const f of await readdir(modelTinyPath)) await copyFile(join(modelTinyPath, f), join(folder, f));
    await scalesFile(SCALES, 'model/kv_cache_scales.json');
    const llm = await LLM.create({ model: folder, ...OPTS, kvCacheDtype: 'fp8' });
    expect(storedScales(llm).every((s) => s.k === 1)).toBe(true);
    const explicit = await LLM.create({ model: folder, ...OPTS, kvCacheDtype: 'fp8', quantizationParamPath: join(folder, 'kv_cache_scales.json') });
    expect(storedScales(explicit)[5]!.k).toBe(Math.fround(0.067));
  });

  it('an empty path, a missing file and a model_type of another model are typed errors', async () => {
    expect((await engineErrorOfAsync(LLM.create({ model: modelTinyPath, ...OPTS, kvCacheDtype: 'fp8', quantizationParamPath: '' }))).field).toBe('quantizationParamPath');
    const missing = join(dir, 'nope.json');
    const e = await engineErrorOfAsync(LLM.create({ model: modelTinyPath, ...OPTS, kvCacheDtype: 'fp8', quantizationParamPath: missing }));
    expect([e.code, e.file]).toEqual(['FILE_NOT_FOUND', missing]);
    const other = join(dir, 'qwen.json');
    await writeFile(other, JSON.stringify({ model_type: 'qwen2', kv_cache: { dtype: 'float8_e4m3fn', scaling_factor: { '0': { '0': 1 } } } }));
    expect((await engineErrorOfAsync(LLM.create({ model: modelTinyPath, ...OPTS, kvCacheDtype: 'fp8', quantizationParamPath: other }))).code).toBe('INVALID_CONFIG');
  });
});
