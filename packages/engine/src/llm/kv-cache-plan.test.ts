/**
 * Per-layer KV-cache dtype plans: `kvCacheLayerDtypes`, and a checkpoint's `kvq_kv_cache_plan.json` (what
 * `kvq calibrate --plan` writes) loaded with the model and applied when no explicit `kvCacheDtype` is given.
 */
import { readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { modelTinyPath } from '@kvq/model-tiny';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EngineError } from '../errors.js';
import { loadModel } from '../load/load-model.js';
import type { LoadedModel } from '../load/types.js';
import { engineErrorOfAsync, tempDir } from '../testing/fixtures.js';
import { KV_CACHE_PLAN_FILE, kvCachePlanJson, parseKvCachePlan } from '../weights/kv-cache-plan.js';
import { LLM } from './llm.js';

const PLAN = ['int8_per_token_head', 'int8_per_token_head', 'int4_g32', 'auto', 'int8_per_token_head', 'int4_g32'] as const;

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

/** kvq-tiny's files linked into a new folder, plus `extra` files. */
async function checkpoint(extra: Record<string, string>): Promise<string> {
  const { dir, cleanup } = await tempDir('kvq-plan-');
  cleanups.push(cleanup);
  for (const f of await readdir(modelTinyPath)) await symlink(join(modelTinyPath, f), join(dir, f));
  for (const [name, text] of Object.entries(extra)) await writeFile(join(dir, name), text);
  return dir;
}

describe('kvCacheLayerDtypes', () => {
  it('gives each layer its dtype; the main dtype is the most frequent; generation runs', async () => {
    const llm = await LLM.create({ model, backend: 'reference', kvCacheLayerDtypes: PLAN, kvCacheMemory: 1 << 20 });
    expect(llm.engine.forwardPass.storage.layerDtypes).toEqual(PLAN.map((d) => (d === 'auto' ? auto : d)));
    expect(llm.kvDtype).toBe('int8_per_token_head');
    // kvq-tiny per layer and token: int8_per_token_head 2 x 2 x (64 + 4), int4_g32 2 x 2 x (32 + 8), bf16 2 x 2 x 64 x 2.
    expect(llm.kvBytesPerToken).toBe(3 * 272 + 2 * 160 + 512);
    const [out] = await llm.generate('And God said', { temperature: 0, maxTokens: 3, ignoreEos: true });
    expect(out!.outputs[0]!.tokenIds).toHaveLength(3);
  });

  it('kvCacheDtypeSkipLayers applies on top, also when the plan is mostly the model dtype', async () => {
    const plan = ['auto', 'auto', 'int4_g32', 'auto', 'auto', 'int8_per_token_head'] as const;
    const llm = await LLM.create({ model, backend: 'reference', kvCacheLayerDtypes: plan, kvCacheDtypeSkipLayers: [2], kvCacheMemory: 1 << 20 });
    expect(llm.engine.forwardPass.storage.layerDtypes).toEqual([auto, auto, auto, auto, auto, 'int8_per_token_head']);
  });

  it('is refused beside an explicit kvCacheDtype, with a wrong length, or with an unknown dtype', async () => {
    const cases: [object, RegExp][] = [
      [{ kvCacheDtype: 'fp8', kvCacheLayerDtypes: PLAN }, /needs kvCacheDtype 'auto' \(or none\), got "fp8"/],
      [{ kvCacheLayerDtypes: PLAN.slice(1) }, /must list 6 dtypes/],
      [{ kvCacheLayerDtypes: [...PLAN.slice(1), 'int3'] }, /\[5\] = "int3" is not supported/],
    ];
    for (const [opts, message] of cases) {
      const err = await engineErrorOfAsync(LLM.create({ model, backend: 'reference', kvCacheMemory: 1 << 20, ...opts }));
      expect(err.code).toBe('INVALID_ARGUMENT');
      expect(err.field).toBe('kvCacheLayerDtypes');
      expect(err.message).toMatch(message);
    }
  });
});

describe('a checkpoint plan (kvq_kv_cache_plan.json)', () => {
  it('loads with the model and applies, with its rotation, when kvCacheDtype is absent or auto; an explicit dtype wins', async () => {
    const dir = await checkpoint({ [KV_CACHE_PLAN_FILE]: kvCachePlanJson({ layerDtypes: PLAN, rotation: 'hadamard', kvBytesPerToken: 1648 }, { measured: { note: 'kept' } }) });
    const loaded = await loadModel(dir);
    expect(loaded.kvCachePlan).toEqual({ layerDtypes: PLAN, rotation: 'hadamard', kvBytesPerToken: 1648, origin: join(dir, KV_CACHE_PLAN_FILE) });
    for (const kvCacheDtype of [undefined, 'auto'] as const) {
      const llm = await LLM.create({ model: dir, backend: 'reference', kvCacheMemory: 1 << 20, ...(kvCacheDtype ? { kvCacheDtype } : {}) });
      expect(llm.engine.forwardPass.storage.layerDtypes).toEqual(PLAN.map((d) => (d === 'auto' ? auto : d)));
      expect(llm.kvCacheRotation).toBe('hadamard');
    }
    const unrotated = await LLM.create({ model: loaded, backend: 'reference', kvCacheRotation: 'none', kvCacheMemory: 1 << 20 });
    expect(unrotated.kvCacheRotation).toBe('none');
    const explicit = await LLM.create({ model: loaded, backend: 'reference', kvCacheDtype: 'fp8', kvCacheMemory: 1 << 20 });
    expect(new Set(explicit.engine.forwardPass.storage.layerDtypes)).toEqual(new Set(['e4m3fn']));
    expect(explicit.kvCacheRotation).toBe('none');
    // Without the file: no plan.
    expect((await loadModel(await checkpoint({}))).kvCachePlan).toBeUndefined();
  });

  it('a malformed plan file is a MALFORMED error naming the file and the field', async () => {
    const cases: [unknown, string, RegExp][] = [
      [{ format: 'other/1', layer_dtypes: PLAN }, 'format', /must be "kvq-kv-cache-plan\/1"/],
      [{ format: 'kvq-kv-cache-plan/1', layer_dtypes: PLAN.slice(2) }, 'layer_dtypes', /must list 6 dtypes/],
      [{ format: 'kvq-kv-cache-plan/1', layer_dtypes: [...PLAN.slice(1), 7] }, 'layer_dtypes[5]', /7 is not a kvCacheDtype/],
      [{ format: 'kvq-kv-cache-plan/1', layer_dtypes: PLAN, kv_cache_rotation: 'givens' }, 'kv_cache_rotation', /must be one of none, hadamard/],
      [[1, 2], '(root)', /must be a JSON object/],
    ];
    for (const [json, field, message] of cases) {
      let err: unknown;
      try {
        parseKvCachePlan(json, 6, '/x/kvq_kv_cache_plan.json');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(EngineError);
      expect((err as EngineError).code).toBe('MALFORMED');
      expect((err as EngineError).field).toBe(field);
      expect((err as EngineError).file).toBe('/x/kvq_kv_cache_plan.json');
      expect((err as EngineError).message).toMatch(message);
    }
    const dir = await checkpoint({ [KV_CACHE_PLAN_FILE]: '{"format": "kvq-kv-cache-plan/1", "layer_dtypes": ["fp8"]}' });
    const err = await engineErrorOfAsync(loadModel(dir));
    expect(err.code).toBe('MALFORMED');
    expect(err.message).toContain(join(dir, KV_CACHE_PLAN_FILE));
  });
});
