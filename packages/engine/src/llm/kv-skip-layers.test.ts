/**
 * `kvCacheDtypeSkipLayers` (vLLM's `kv_cache_dtype_skip_layers`): the listed layers keep the model dtype, the cache
 * is sized per layer, the backend receives each layer's dtype, skipping every layer reproduces the unquantized run
 * exactly, skipping some moves the logprobs less than skipping none, and bad entries are typed errors.
 */
import { kvBytesPerToken, resolveKvCacheDtype } from '@kvq/cache';
import { createReferenceBackend, type KernelBackend } from '@kvq/kernels';
import { beforeAll, describe, expect, it } from 'vitest';
import { modelTinyPath } from '@kvq/model-tiny';
import { loadModel } from '../load/load-model.js';
import type { LoadedModel } from '../load/types.js';
import { engineErrorOfAsync } from '../testing/fixtures.js';
import { LLM } from './llm.js';

const TEXT = 'In the beginning God created the heaven and the earth. And the earth was without form, and void; and darkness was upon the face of the deep.';

let model: LoadedModel;
let auto: string;
beforeAll(async () => {
  model = await loadModel(modelTinyPath);
  auto = resolveKvCacheDtype('auto', model.config.torchDtype === 'float32' ? 'f32' : model.config.torchDtype === 'float16' ? 'f16' : 'bf16');
});

/** The reference backend, recording the cache dtype of every pagedAttention call in order. */
function recording(): { backend: KernelBackend; dtypes: string[] } {
  const ref = createReferenceBackend();
  const dtypes: string[] = [];
  const backend = new Proxy(ref, {
    get(target, key) {
      const v = Reflect.get(target, key) as unknown;
      if (key === 'pagedAttention') {
        return (args: { cache: { dtype: string } }) => {
          dtypes.push(args.cache.dtype);
          return (v as (a: unknown) => unknown).call(target, args);
        };
      }
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { backend, dtypes };
}

async function logprobs(llm: LLM): Promise<Float64Array | number[]> {
  return (await llm.score(llm.encode(TEXT))).logprobs as number[];
}
const meanAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let s = 0;
  for (let i = 1; i < a.length; i++) s += Math.abs(a[i]! - b[i]!);
  return s / (a.length - 1);
};

describe('kvCacheDtypeSkipLayers', () => {
  it('keeps the listed layers (numbers or decimal strings) in the model dtype, sizes the cache per layer, and the kernels get each layer its dtype', async () => {
    const { backend, dtypes } = recording();
    const llm = await LLM.create({ model, backend, kvCacheDtype: 'fp8', kvCacheDtypeSkipLayers: [0, '5'], kvCacheMemory: 1 << 20 });
    const want = [auto, 'e4m3fn', 'e4m3fn', 'e4m3fn', 'e4m3fn', auto];
    expect(llm.kvDtype).toBe('e4m3fn');
    expect(llm.engine.forwardPass.storage.layerDtypes).toEqual(want);
    const shape = { numLayers: 1, numKvHeads: model.config.numKvHeads, headSize: model.config.headDim };
    const perLayer = (dtype: string) => kvBytesPerToken(shape, { dtype: dtype as never });
    expect(llm.kvBytesPerToken).toBe(2 * perLayer(auto) + 4 * perLayer('e4m3fn'));
    dtypes.length = 0;
    await llm.generate('And God said', { temperature: 0, maxTokens: 1 });
    expect(dtypes).toEqual(want); // one prefill step: layers in order
  });

  it('skipping every layer gives exactly the unquantized run; skipping some moves the logprobs less than skipping none', async () => {
    const opts = { model, backend: 'reference', kvCacheMemory: 2 << 20 } as const;
    const base = await logprobs(await LLM.create({ ...opts, kvCacheDtype: 'auto' }));
    const all = await logprobs(await LLM.create({ ...opts, kvCacheDtype: 'int4_per_token_head', kvCacheDtypeSkipLayers: [0, 1, 2, 3, 4, 5] }));
    expect(Array.from(all)).toEqual(Array.from(base));
    const none = meanAbsDiff(await logprobs(await LLM.create({ ...opts, kvCacheDtype: 'int4_per_token_head' })), base);
    const some = meanAbsDiff(await logprobs(await LLM.create({ ...opts, kvCacheDtype: 'int4_per_token_head', kvCacheDtypeSkipLayers: [0, 1, 2] })), base);
    expect(none).toBeGreaterThan(0);
    expect(some, `skip 0-2: ${some}, skip none: ${none}`).toBeLessThan(none);
  }, 60_000);

  it("'sliding_window' picks the sliding layers of layer_types; FP8 query still runs with skipped layers", async () => {
    const layerTypes = Array.from({ length: model.config.numLayers }, (_, l) => (l % 2 === 0 ? 'sliding_attention' : 'full_attention'));
    const sliding = { ...model, config: { ...model.config, slidingWindow: 64, layerTypes } } as LoadedModel;
    const llm = await LLM.create({ model: sliding, backend: 'reference', kvCacheDtype: 'fp8', fp8Query: true, kvCacheDtypeSkipLayers: ['sliding_window'], kvCacheMemory: 1 << 20, onWarning: () => {} });
    expect(llm.engine.forwardPass.storage.layerDtypes).toEqual(layerTypes.map((t) => (t === 'sliding_attention' ? auto : 'e4m3fn')));
    const [out] = await llm.generate('And God said', { temperature: 0, maxTokens: 3, ignoreEos: true });
    expect(out!.outputs[0]!.tokenIds).toHaveLength(3);
  });

  it('with kvCacheDtype auto it changes nothing (a uniform cache)', async () => {
    const llm = await LLM.create({ model, backend: 'reference', kvCacheDtypeSkipLayers: [1], kvCacheMemory: 1 << 20 });
    expect(new Set(llm.engine.forwardPass.storage.layerDtypes)).toEqual(new Set([auto]));
  });

  it('bad entries are INVALID_ARGUMENT naming kvCacheDtypeSkipLayers, the entry and its position', async () => {
    const cases: [unknown, RegExp][] = [
      [[6], /\[0\] = 6 is not a layer index in \[0, 6\)/],
      [[0, -1], /\[1\] = -1 is not a layer index/],
      [['first'], /\[0\] = "first" is not a layer index/],
      [[1.5], /\[0\] = 1.5/],
      ['0,1', /must be an array/],
      [['sliding_window'], /\[0\] 'sliding_window': this model \(llama\) has no sliding-window attention layers/],
    ];
    for (const [value, message] of cases) {
      const err = await engineErrorOfAsync(LLM.create({ model, backend: 'reference', kvCacheDtype: 'fp8', kvCacheDtypeSkipLayers: value as never, kvCacheMemory: 1 << 20 }));
      expect(err.code).toBe('INVALID_ARGUMENT');
      expect(err.field).toBe('kvCacheDtypeSkipLayers');
      expect(err.message).toMatch(message);
    }
  });
});
