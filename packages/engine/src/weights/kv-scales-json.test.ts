/**
 * vLLM's legacy `--quantization-param-path` file (`kv_cache_scales.json`): the schema of vLLM's `QuantParamSchema`
 * with tensor-parallel size 1, and every way a file can be wrong as a typed error naming the file, field and value.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { engineErrorOf, engineErrorOfAsync, tempDir } from '../testing/fixtures.js';
import { resolveKvScales } from './kv-scales.js';
import { parseKvCacheScalesJson, readKvCacheScalesJson } from './kv-scales-json.js';

const FILE = '/models/x/kv_cache_scales.json';
const CTX = { numLayers: 3, modelType: 'llama' };

/** A valid document (vLLM's tests/fp8_kv example shape) with three layers. */
function doc(overrides: { layers?: Record<string, unknown>; ranks?: Record<string, unknown>; dtype?: unknown; modelType?: unknown } = {}): Record<string, unknown> {
  const layers = overrides.layers ?? { '0': 0.0230, '1': 0.0197, '2': 0.5 };
  return {
    model_type: 'modelType' in overrides ? overrides.modelType : 'llama',
    kv_cache: { dtype: 'dtype' in overrides ? overrides.dtype : 'float8_e4m3fn', scaling_factor: overrides.ranks ?? { '0': layers } },
  };
}

describe('parseKvCacheScalesJson', () => {
  it('reads one scale per layer into k and v (vLLM base rules: q := k, x2 on FNUZ)', () => {
    const ckpt = parseKvCacheScalesJson(doc({ layers: { '2': 0.5, '0': 0.0230, '1': 0.0197 } }), FILE, CTX);
    expect(ckpt.method).toBe('base');
    expect(ckpt.origin).toContain(FILE);
    expect(ckpt.layers.map((l) => [l.k![0], l.v![0]])).toEqual([
      [Math.fround(0.023), Math.fround(0.023)],
      [Math.fround(0.0197), Math.fround(0.0197)],
      [0.5, 0.5],
    ]);
    expect(ckpt.layers[1]!.names.k).toBe(`${FILE} kv_cache.scaling_factor.0.1`);
    const ocp = resolveKvScales(ckpt, { numHeads: 4, numKvHeads: 2, format: 'e4m3fn' });
    expect(ocp.layersFromCheckpoint).toBe(3);
    expect(ocp.layers[2]).toEqual({ k: Float32Array.of(0.5), v: Float32Array.of(0.5), q: Float32Array.of(0.5) });
    const fnuz = resolveKvScales(ckpt, { numHeads: 4, numKvHeads: 2, format: 'e4m3fnuz' });
    expect(fnuz.layers[2]!.k[0]).toBe(1);
    expect(fnuz.fnuzAdjusted).toBe(true);
  });

  it('accepts integer scales and a model_type matching the model', () => {
    const ckpt = parseKvCacheScalesJson(doc({ layers: { '0': 1, '1': 2, '2': 3 } }), FILE, CTX);
    expect(ckpt.layers.map((l) => l.k![0])).toEqual([1, 2, 3]);
  });

  const bad: [string, unknown, string, string, RegExp][] = [
    ['not an object', [1, 2], 'MALFORMED', '', /must be a JSON object/],
    ['model_type missing', { kv_cache: doc().kv_cache }, 'MALFORMED', 'model_type', /model_type is missing/],
    ['model_type of another model', doc({ modelType: 'qwen2' }), 'INVALID_CONFIG', 'model_type', /"qwen2", but the model's model_type is "llama"/],
    ['model_type null', doc({ modelType: null }), 'INVALID_CONFIG', 'model_type', /is null/],
    ['kv_cache missing', { model_type: 'llama' }, 'MALFORMED', 'kv_cache', /kv_cache must be an object/],
    ['wrong dtype', doc({ dtype: 'float8_e5m2' }), 'UNSUPPORTED_KV_SCHEME', 'kv_cache.dtype', /"float8_e5m2"; scaling factors are only defined for "float8_e4m3fn"/],
    ['dtype not a string', doc({ dtype: 8 }), 'MALFORMED', 'kv_cache.dtype', /must be a string, got 8/],
    ['scaling_factor not an object', doc({ ranks: [] as never }), 'MALFORMED', 'kv_cache.scaling_factor', /must be an object/],
    ['rank 1 only', doc({ ranks: { '1': { '0': 1, '1': 1, '2': 1 } } }), 'INVALID_KV_SCALE', 'kv_cache.scaling_factor', /ranks \[1\]; kvq runs a single rank/],
    ['two ranks', doc({ ranks: { '0': { '0': 1, '1': 1, '2': 1 }, '1': { '0': 1, '1': 1, '2': 1 } } }), 'INVALID_KV_SCALE', 'kv_cache.scaling_factor', /ranks \[0, 1\].*tensor-parallel size 2/],
    ['rank key not an integer', doc({ ranks: { zero: {} } }), 'MALFORMED', 'kv_cache.scaling_factor', /key "zero" is not a non-negative integer/],
    ['too few layers', doc({ layers: { '0': 1, '1': 1 } }), 'INVALID_KV_SCALE', 'kv_cache.scaling_factor.0', /has 2 layers, but the model has num_hidden_layers 3/],
    ['too many layers', doc({ layers: { '0': 1, '1': 1, '2': 1, '3': 1 } }), 'INVALID_KV_SCALE', 'kv_cache.scaling_factor.0', /has 4 layers/],
    ['a missing layer', doc({ layers: { '0': 1, '1': 1, '5': 1 } }), 'INVALID_KV_SCALE', 'kv_cache.scaling_factor.0', /no scale for layer 2/],
    ['a layer key not an integer', doc({ layers: { '0': 1, '1': 1, 'two': 1 } }), 'MALFORMED', 'kv_cache.scaling_factor.0', /key "two"/],
    ['zero scale', doc({ layers: { '0': 1, '1': 0, '2': 1 } }), 'INVALID_KV_SCALE', 'kv_cache.scaling_factor.0.1', /is 0; a scaling factor must be a finite number > 0/],
    ['negative scale', doc({ layers: { '0': 1, '1': 1, '2': -0.5 } }), 'INVALID_KV_SCALE', 'kv_cache.scaling_factor.0.2', /is -0.5/],
    ['string scale', doc({ layers: { '0': '0.1', '1': 1, '2': 1 } }), 'INVALID_KV_SCALE', 'kv_cache.scaling_factor.0.0', /is "0.1"/],
    ['scale overflowing float32', doc({ layers: { '0': 1e39, '1': 1, '2': 1 } }), 'INVALID_KV_SCALE', 'kv_cache.scaling_factor.0.0', /not a finite float32/],
    ['scale underflowing float32', doc({ layers: { '0': 1e-50, '1': 1, '2': 1 } }), 'INVALID_KV_SCALE', 'kv_cache.scaling_factor.0.0', /not a finite float32 > 0/],
  ];
  for (const [what, json, code, field, message] of bad) {
    it(`${what}: ${code} naming the file, field and value`, () => {
      const e = engineErrorOf(() => parseKvCacheScalesJson(json, FILE, CTX));
      expect(e.code).toBe(code);
      expect(e.file).toBe(FILE);
      expect(e.field).toBe(field);
      expect(e.message.startsWith(`${FILE}: `)).toBe(true);
      expect(e.message).toMatch(message);
    });
  }
});

describe('readKvCacheScalesJson', () => {
  it('reads a file; bad JSON (an infinite scale too) and a missing file are typed errors naming it', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const good = join(dir, 'kv_cache_scales.json');
      await writeFile(good, JSON.stringify(doc()));
      expect((await readKvCacheScalesJson(good, CTX)).layers).toHaveLength(3);
      const broken = join(dir, 'broken.json');
      await writeFile(broken, '{"model_type": "llama", "kv_cache": {');
      const e1 = await engineErrorOfAsync(readKvCacheScalesJson(broken, CTX));
      expect([e1.code, e1.file]).toEqual(['MALFORMED', broken]);
      expect(e1.message).toMatch(/not valid JSON/);
      const inf = join(dir, 'inf.json');
      await writeFile(inf, '{"model_type":"llama","kv_cache":{"dtype":"float8_e4m3fn","scaling_factor":{"0":{"0":1e999,"1":1,"2":1}}}}');
      const e2 = await engineErrorOfAsync(readKvCacheScalesJson(inf, CTX));
      expect([e2.code, e2.field]).toEqual(['INVALID_KV_SCALE', 'kv_cache.scaling_factor.0.0']);
      expect(e2.message).toMatch(/kv_cache\.scaling_factor\.0\.0 is Infinity; a scaling factor must be a finite number > 0/);
      const e3 = await engineErrorOfAsync(readKvCacheScalesJson(join(dir, 'absent.json'), CTX));
      expect([e3.code, e3.file]).toEqual(['FILE_NOT_FOUND', join(dir, 'absent.json')]);
    } finally {
      await cleanup();
    }
  });
});
