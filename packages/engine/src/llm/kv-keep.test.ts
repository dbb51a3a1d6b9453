/**
 * `kvCacheKeepSink` / `kvCacheKeepRecent` through `LLM`: keeping every token reproduces the model-dtype cache (greedy
 * tokens and logprobs, n > 1 sampling included), keeping some moves the logprobs less than keeping none, the kept
 * cache is reported, and what cannot work is a typed error.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { modelTinyPath } from '@kvq/model-tiny';
import { loadModel } from '../load/load-model.js';
import type { LoadedModel } from '../load/types.js';
import { engineErrorOfAsync } from '../testing/fixtures.js';
import { LLM, type LLMOptions } from './llm.js';

const TEXT = 'In the beginning God created the heaven and the earth. And the earth was without form, and void; and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters.';

let model: LoadedModel;
beforeAll(async () => {
  model = await loadModel(modelTinyPath);
});

async function logprobs(llm: LLM, ids: readonly number[]): Promise<number[]> {
  return Array.from((await llm.score(ids)).logprobs as ArrayLike<number>);
}
const meanAbsDiff = (a: readonly number[], b: readonly number[]) => {
  let s = 0;
  for (let i = 1; i < a.length; i++) s += Math.abs(a[i]! - b[i]!);
  return s / (a.length - 1);
};

describe.each(['reference', 'cpu'] as const)('kept-precision KV cache on the %s backend', (backend) => {
  const base = { backend, kvCacheMemory: 2 << 20 } satisfies Partial<LLMOptions>;
  const make = (o: Partial<LLMOptions>) => LLM.create({ model, ...base, ...o });

  it('keeping every token (sink or tail) gives the model-dtype cache: same greedy tokens, same logprobs, n = 2 samples too', async () => {
    const auto = await make({ kvCacheDtype: 'auto' });
    const ids = auto.encode(TEXT);
    const want = await logprobs(auto, ids);
    const [g] = await auto.generate('And God said', { temperature: 0, maxTokens: 40, ignoreEos: true });
    const [s] = await auto.generate('And God said', { temperature: 0.8, seed: 11, n: 2, maxTokens: 24, ignoreEos: true });
    for (const keep of [{ kvCacheKeepRecent: 4096 }, { kvCacheKeepSink: 4096 }]) {
      const llm = await make({ kvCacheDtype: 'int4_per_token_head', ...keep });
      expect(meanAbsDiff(await logprobs(llm, ids), want)).toBeLessThan(1e-5);
      const [x] = await llm.generate('And God said', { temperature: 0, maxTokens: 40, ignoreEos: true });
      expect(x!.outputs[0]!.tokenIds).toEqual(g!.outputs[0]!.tokenIds);
      const [y] = await llm.generate('And God said', { temperature: 0.8, seed: 11, n: 2, maxTokens: 24, ignoreEos: true });
      expect(y!.outputs.map((o) => o.tokenIds)).toEqual(s!.outputs.map((o) => o.tokenIds));
      llm.dispose();
    }
    auto.dispose();
  });

  it('keeping a sink and a tail moves the logprobs less than the bare quantized cache, and is reported', async () => {
    const auto = await make({ kvCacheDtype: 'auto' });
    const ids = auto.encode(TEXT);
    const want = await logprobs(auto, ids);
    const bare = await make({ kvCacheDtype: 'int4_per_token_head' });
    const kept = await make({ kvCacheDtype: 'int4_per_token_head', kvCacheKeepSink: 4, kvCacheKeepRecent: 16, maxNumSeqs: 8 });
    const dBare = meanAbsDiff(await logprobs(bare, ids), want);
    const dKept = meanAbsDiff(await logprobs(kept, ids), want);
    expect(ids.length).toBeGreaterThan(40); // the middle of the text is read quantized
    expect(dKept, `kept ${dKept} vs bare ${dBare}`).toBeLessThan(dBare);
    expect(dKept).toBeGreaterThan(1e-5);
    const info = kept.kvCacheKeep!;
    expect(info.sinkTokens).toBe(16); // one block
    expect(info.recentTokens).toBe(16);
    expect(info.layers).toEqual(Array.from({ length: model.config.numLayers }, (_, l) => l));
    // 8 sequences x (1 sink + 2 tail blocks) + the null block, 16 tokens each, model dtype, all layers.
    const bytesPerToken = 2 * model.config.numLayers * model.config.numKvHeads * model.config.headDim * (model.config.torchDtype === 'float32' ? 4 : 2);
    // (plus the storage's small scale arrays)
    expect(info.bytes - (8 * 3 + 1) * 16 * bytesPerToken).toBeGreaterThanOrEqual(0);
    expect(info.bytes - (8 * 3 + 1) * 16 * bytesPerToken).toBeLessThan(1024);
    expect(bare.kvCacheKeep).toBeUndefined();
    for (const l of [auto, bare, kept]) l.dispose();
  });

  it('keeps nothing on skipped layers: they are in the model dtype already', async () => {
    const llm = await make({ kvCacheDtype: 'fp8', kvCacheDtypeSkipLayers: [0], kvCacheKeepSink: 1 });
    expect(llm.kvCacheKeep!.layers).toEqual(Array.from({ length: model.config.numLayers - 1 }, (_, l) => l + 1));
    llm.dispose();
  });
});

describe('kept-precision KV cache: what cannot work is a typed error', () => {
  it.each([
    [{ kvCacheDtype: 'auto', kvCacheKeepSink: 4 }, 'kvCacheKeepSink', /no full-attention layer/],
    [{ kvCacheDtype: 'fp8', kvCacheKeepRecent: 8, enablePrefixCaching: true }, 'enablePrefixCaching', /prefix caching off/],
    [{ kvCacheDtype: 'fp8', kvCacheKeepRecent: -1 }, 'kvCacheKeepRecent', /integer >= 0/],
    [{ kvCacheDtype: 'fp8', kvCacheKeepSink: 2.5 }, 'kvCacheKeepSink', /integer >= 0/],
  ] as const)('%j', async (o, field, message) => {
    const err = await engineErrorOfAsync(LLM.create({ model, backend: 'reference', kvCacheMemory: 1 << 20, ...(o as Partial<LLMOptions>) }));
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(err.field).toBe(field);
    expect(err.message).toMatch(message);
  });

  it('a backend whose attention has no lse output is refused by name', async () => {
    const { createReferenceBackend, KernelError } = await import('@kvq/kernels');
    const ref = createReferenceBackend();
    const noLse = {
      ...ref,
      name: 'no-lse',
      pagedAttention(a: Parameters<typeof ref.pagedAttention>[0]) {
        if (a.lse) throw new KernelError('UNSUPPORTED', 'pagedAttention: no lse here');
        ref.pagedAttention(a);
      },
    };
    const err = await engineErrorOfAsync(LLM.create({ model, backend: noLse, kvCacheMemory: 1 << 20, kvCacheDtype: 'fp8', kvCacheKeepSink: 4 }));
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(err.message).toMatch(/'no-lse'/);
  });
});
