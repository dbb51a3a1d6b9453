import { readFileSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { ReferenceLlama } from '../testing/reference-llama.js';
import { testData } from '../testing/fixtures.js';
import { loadModel } from './load-model.js';

/**
 * Slow (about 20 s on 2 cores): the mean NLL of kvq-tiny over the first 30 evaluation documents, through
 * the test-only reference forward pass, against the reference run's 4.06298 nats/token (2296 tokens).
 */
describe.skipIf(!process.env.KVQ_TEST_SLOW)('kvq-tiny evaluation NLL', () => {
  it('matches the reference mean NLL on eval/kjv-fortunes-public.txt (first 30 documents)', async () => {
    const m = await loadModel(testData.kvqTiny);
    const ref = JSON.parse(readFileSync(testData.refKvqTiny, 'utf8')) as {
      nll_eval_public_first30: { tokens: number; results: { auto: { nll_mean: number } } };
    };
    const docs = readFileSync(testData.evalText, 'utf8')
      .split(/\n\s*\n/)
      .filter((d) => d.trim().length > 0)
      .slice(0, 30);
    const llm = new ReferenceLlama(m.config, m.weights);
    let total = 0;
    let tokens = 0;
    for (const doc of docs) {
      const ids = m.tokenizer.encode(doc);
      total += llm.nllSum(ids);
      tokens += ids.length - 1;
    }
    expect(tokens).toBe(ref.nll_eval_public_first30.tokens);
    expect(total / tokens).toBeCloseTo(ref.nll_eval_public_first30.results.auto.nll_mean, 4);
  }, 300_000);
});
