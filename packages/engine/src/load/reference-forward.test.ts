import { readFileSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { ReferenceLlama } from '../testing/reference-llama.js';
import { testData, toInterleaved } from '../testing/fixtures.js';
import type { ModelWeights } from '../weights/model-weights.js';
import { loadModel } from './load-model.js';

/**
 * The loaders' weights, run through an independent test-only float forward pass with HF rotate-half RoPE, must
 * reproduce the reference greedy tokens and sentence NLLs — computed by independent implementations (numpy
 * llama2.c forward on the original interleaved weights; torch HF forward for kvq-tiny). This is the proof that
 * Q/K rows are un-permuted correctly for llama2.c and GGUF, and that bf16 weights are decoded correctly.
 */
interface Reference {
  greedy: Array<{ prompt_token_ids: number[]; token_ids: number[] }>;
  nll?: Array<{ token_ids: number[]; auto: { nll_sum: number } }>;
}

const cases = [
  { name: 'stories260K.bin', model: testData.storiesBin, ref: testData.refStories, greedyIncludesPrompt: true },
  { name: 'stories260K.gguf', model: testData.storiesGguf, ref: testData.refStories, greedyIncludesPrompt: true },
  { name: 'babyllama model.bin', model: testData.babyBin, ref: testData.refBaby, greedyIncludesPrompt: true },
  { name: 'kvq-tiny (bf16 HF)', model: testData.kvqTiny, ref: testData.refKvqTiny, greedyIncludesPrompt: false },
];

describe.each(cases)('$name through a reference forward pass', ({ model, ref, greedyIncludesPrompt }) => {
  it('reproduces the reference greedy tokens and NLLs', async () => {
    const m = await loadModel(model);
    const reference = JSON.parse(readFileSync(ref, 'utf8')) as Reference;
    const llm = new ReferenceLlama(m.config, m.weights);
    for (const g of reference.greedy) {
      const expected = greedyIncludesPrompt ? g.token_ids.slice(g.prompt_token_ids.length) : g.token_ids;
      expect(llm.greedy(g.prompt_token_ids, expected.length)).toEqual(expected);
    }
    for (const n of reference.nll ?? []) {
      expect(llm.nllSum(n.token_ids)).toBeCloseTo(n.auto.nll_sum, 3);
    }
  });
});

describe('negative control', () => {
  it('the same weights with Q/K left in interleaved order do not reproduce the reference', async () => {
    const m = await loadModel(testData.storiesBin);
    const reference = JSON.parse(readFileSync(testData.refStories, 'utf8')) as Reference;
    const weights: ModelWeights = {
      ...m.weights,
      layers: m.weights.layers.map((l) => ({ ...l, q: toInterleaved(l.q, m.config.numHeads), k: toInterleaved(l.k, m.config.numKvHeads) })),
    };
    const llm = new ReferenceLlama(m.config, weights);
    const n = reference.nll![0]!;
    expect(Math.abs(llm.nllSum(n.token_ids) - n.auto.nll_sum)).toBeGreaterThan(0.1);
  });
});
