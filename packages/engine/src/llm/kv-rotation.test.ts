/**
 * `kvCacheRotation: 'hadamard'` through the engine: the cache stores rotated K/V (what the backend receives is the
 * rotation of what it receives without it), the attention output is rotated back (an unquantized cache gives the
 * same greedy tokens and logprobs as without rotation), a 4-bit cache loses less with it, the option is validated,
 * and KV blocks shared through tiers are keyed apart from unrotated ones.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createReferenceBackend, type KernelBackend, type ReshapeAndCacheArgs } from '@kvq/kernels';
import { modelTinyPath } from '@kvq/model-tiny';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { loadModel } from '../load/load-model.js';
import type { LoadedModel } from '../load/types.js';
import { KvHadamardRotation } from '../runtime/kv-rotation.js';
import { engineErrorOfAsync, tempDir } from '../testing/fixtures.js';
import { modelFingerprint } from './fingerprint.js';
import { LLM } from './llm.js';

const TEXT =
  'In the beginning God created the heaven and the earth. And the earth was without form, and void; and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters. And God said, Let there be light: and there was light.';

let model: LoadedModel;
beforeAll(async () => {
  model = await loadModel(modelTinyPath);
});

/** The reference backend, keeping a copy of the keys of the first reshapeAndCache call. */
function keyRecorder(): { backend: KernelBackend; keys: Float32Array[] } {
  const ref = createReferenceBackend();
  const keys: Float32Array[] = [];
  const backend = new Proxy(ref, {
    get(target, key) {
      const v = Reflect.get(target, key) as unknown;
      if (key === 'reshapeAndCache') {
        return (args: ReshapeAndCacheArgs) => {
          keys.push(args.key.slice(0, args.numTokens * args.cache.numKvHeads * args.cache.headSize));
          return (v as (a: unknown) => unknown).call(target, args);
        };
      }
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { backend, keys };
}

/** Mean |logprob difference| of the text's tokens between two runs. */
async function meanAbsLogprobDiff(a: LLM, b: LLM, ids: readonly number[]): Promise<number> {
  const [sa, sb] = [await a.score(ids), await b.score(ids)];
  let sum = 0;
  for (let i = 1; i < ids.length; i++) sum += Math.abs(sa.logprobs[i]! - sb.logprobs[i]!);
  return sum / (ids.length - 1);
}

describe("kvCacheRotation: 'hadamard'", () => {
  it('the backend receives the rotated keys (the first layer of the first step: R·k of every head)', async () => {
    const plain = keyRecorder();
    const rotated = keyRecorder();
    const opts = { model, kvCacheDtype: 'float32', kvCacheMemory: 1 << 20 } as const;
    const a = await LLM.create({ ...opts, backend: plain.backend });
    const b = await LLM.create({ ...opts, backend: rotated.backend, kvCacheRotation: 'hadamard' });
    expect(a.kvCacheRotation).toBe('none');
    expect(b.kvCacheRotation).toBe('hadamard');
    plain.keys.length = 0; // the create-time probe (none for float32, but keep the test about the request)
    rotated.keys.length = 0;
    await a.generate(TEXT.slice(0, 40), { temperature: 0, maxTokens: 1 });
    await b.generate(TEXT.slice(0, 40), { temperature: 0, maxTokens: 1 });
    const want = plain.keys[0]!.slice();
    new KvHadamardRotation(model.config.headDim).rotate(want, want.length / model.config.headDim);
    expect(rotated.keys[0]!.length).toBe(want.length);
    for (let i = 0; i < want.length; i++) expect(rotated.keys[0]![i]).toBeCloseTo(want[i]!, 5);
    expect(rotated.keys[0]!.some((x, i) => Math.abs(x - plain.keys[0]![i]!) > 1e-3)).toBe(true);
  });

  it('with an unquantized cache: the same greedy tokens and the same logprobs (scores and outputs are unchanged)', async () => {
    const opts = { model, kvCacheDtype: 'float32', backend: 'cpu', kvCacheMemory: 2 << 20 } as const;
    const a = await LLM.create(opts);
    const b = await LLM.create({ ...opts, kvCacheRotation: 'hadamard' });
    const [x] = await a.generate('And God said', { temperature: 0, maxTokens: 24, ignoreEos: true });
    const [y] = await b.generate('And God said', { temperature: 0, maxTokens: 24, ignoreEos: true });
    expect(y!.outputs[0]!.tokenIds).toEqual(x!.outputs[0]!.tokenIds);
    expect(await meanAbsLogprobDiff(a, b, a.encode(TEXT))).toBeLessThan(1e-4);
    a.dispose();
    b.dispose();
  });

  it('a 4-bit cache (int4_g32, int4_per_token_head, nvfp4) moves the logprobs less with rotation than without', async () => {
    const make = (kvCacheDtype: string, rotation: 'none' | 'hadamard') =>
      LLM.create({ model, kvCacheDtype: kvCacheDtype as never, backend: 'reference', kvCacheMemory: 2 << 20, kvCacheRotation: rotation });
    const f32 = await make('float32', 'none');
    const ids = f32.encode(TEXT);
    for (const dtype of ['int4_g32', 'int4_per_token_head', 'nvfp4']) {
      const plain = await meanAbsLogprobDiff(f32, await make(dtype, 'none'), ids);
      const rotated = await meanAbsLogprobDiff(f32, await make(dtype, 'hadamard'), ids);
      expect(rotated, `${dtype}: rotated ${rotated} vs plain ${plain}`).toBeLessThan(plain);
    }
  }, 120_000);

  it('an unknown value is INVALID_ARGUMENT naming kvCacheRotation; FP8 scales from a file or checkpoint warn (measured unrotated)', async () => {
    const err = await engineErrorOfAsync(LLM.create({ model, backend: 'reference', kvCacheRotation: 'givens' as never, kvCacheMemory: 1 << 20 }));
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(err.field).toBe('kvCacheRotation');
    expect(err.message).toContain('"givens"');
    const { dir, cleanup } = await tempDir('kvq-rotation-');
    const warnings: string[] = [];
    const spy = vi.spyOn(process, 'emitWarning').mockImplementation((w: string | Error) => void warnings.push(String(w)));
    try {
      const file = join(dir, 'kv_cache_scales.json');
      const layers = Object.fromEntries(Array.from({ length: model.config.numLayers }, (_, l) => [String(l), 0.05]));
      await writeFile(file, JSON.stringify({ model_type: 'llama', kv_cache: { dtype: 'float8_e4m3fn', scaling_factor: { '0': layers } } }));
      const base = { model, backend: 'reference', kvCacheDtype: 'fp8', quantizationParamPath: file, kvCacheMemory: 1 << 20 } as const;
      await LLM.create(base);
      expect(warnings.filter((w) => w.includes('kvCacheRotation'))).toEqual([]);
      await LLM.create({ ...base, kvCacheRotation: 'hadamard' });
      expect(warnings.filter((w) => w.includes("kvCacheRotation 'hadamard' with KV-cache scales from") && w.includes(file))).toHaveLength(1);
    } finally {
      spy.mockRestore();
      await cleanup();
    }
  });

  it('tier block keys: the fingerprint of a rotated cache differs from the unrotated one and is stable', () => {
    const plain = modelFingerprint(model);
    const rotated = modelFingerprint(model, 'kv-rotation:hadamard');
    expect(rotated).toMatch(/^[0-9a-f]{32}$/);
    expect(rotated).not.toBe(plain);
    expect(modelFingerprint(model, 'kv-rotation:hadamard')).toBe(rotated);
    expect(modelFingerprint(model)).toBe(plain);
  });
});
