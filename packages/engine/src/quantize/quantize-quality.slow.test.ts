import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LLM } from '../llm/llm.js';
import { loadModel } from '../load/load-model.js';
import type { LoadedModel } from '../load/types.js';
import { evaluateKvQuality, splitDocuments } from '../quality/quality.js';
import { EXPECTED_Q, tempDir, testData } from '../testing/fixtures.js';
import { quantizeModel } from './quantize.js';
import { QUANTIZE_SCHEMES, type QuantizeScheme } from './schemes.js';

/** Bound on |NLL(scheme) / NLL(bf16) - 1| over the scored text, and the least top-1 agreement with bf16. */
const BOUNDS: Record<QuantizeScheme, { nll: number; top1: number }> = {
  fp8: { nll: 0.01, top1: 0.95 },
  w8a8: { nll: 0.01, top1: 0.95 },
  q8_0: { nll: 0.01, top1: 0.95 },
  q6_k: { nll: 0.02, top1: 0.9 },
  q5_k_m: { nll: 0.03, top1: 0.9 },
  q5_0: { nll: 0.03, top1: 0.9 },
  q5_1: { nll: 0.03, top1: 0.9 },
  q4_k_m: { nll: 0.06, top1: 0.85 },
  q4_0: { nll: 0.1, top1: 0.8 },
  q4_1: { nll: 0.08, top1: 0.8 },
  w4a16: { nll: 0.08, top1: 0.8 },
};


/**
 * Slow (about 5 min on 2 cores: the reference backend dequantizes every weight row per call): NLL and top-1 agreement of
 * every scheme against bf16 kvq-tiny on 190 tokens of the evaluation text, and greedy generation on the quantized weights.
 */
describe.skipIf(!process.env.KVQ_TEST_SLOW)('kvq quantize: kvq-tiny to every scheme, run on the reference backend', () => {
  let bf16: LoadedModel;
  let reference: LLM;
  let docs: number[][];
  let dir: string;
  let cleanup: () => Promise<void>;
  const report: string[] = [];

  beforeAll(async () => {
    bf16 = await loadModel(testData.kvqTiny);
    reference = await LLM.create({ model: bf16, backend: 'reference', kvCacheMemory: 8 << 20 });
    docs = splitDocuments(readFileSync(testData.evalText, 'utf8'))
      .slice(0, 2)
      .map((d) => bf16.tokenizer.encode(d).slice(0, 96));
    ({ dir, cleanup } = await tempDir('kvq-quantize-'));
  }, 60_000);
  afterAll(async () => {
    // The measured deltas, for the record (docs/spec/compressed-tensors.md quotes them).
    if (report.length > 0) console.log(`NLL vs bf16 on ${docs.reduce((s, d) => s + d.length - 1, 0)} tokens:\n${report.join('\n')}`);
    await cleanup?.();
  });

  it.each(QUANTIZE_SCHEMES)('%s', async (scheme) => {
    const out = join(dir, scheme === 'fp8' || scheme === 'w4a16' || scheme === 'w8a8' ? scheme : `${scheme}.gguf`);
    await quantizeModel(bf16, out, scheme);
    const model = await loadModel(out);
    expect(model.weights.layers[0]!.q.dtype).toBe(EXPECTED_Q[scheme]);

    // Quality against the bf16 model on the reference backend.
    const candidate = await LLM.create({ model, backend: 'reference', kvCacheMemory: 8 << 20 });
    const q = await evaluateKvQuality(reference, candidate, docs);
    const base = await evaluateKvQuality(reference, reference, docs);
    const rel = q.nllMean / base.nllMean - 1;
    report.push(`  ${scheme.padEnd(7)} ppl ${q.perplexity.toFixed(3)} (bf16 ${base.perplexity.toFixed(3)}), NLL ${(rel * 100).toFixed(2)}%, KL ${q.klMean.toExponential(2)}, top-1 ${(q.top1Agreement * 100).toFixed(1)}%`);
    expect(Math.abs(rel)).toBeLessThan(BOUNDS[scheme].nll);
    expect(q.top1Agreement).toBeGreaterThanOrEqual(BOUNDS[scheme].top1);
    // Greedy generation runs on the quantized weights.
    const [gen] = await candidate.generate('In the beginning', { maxTokens: 8, temperature: 0 });
    expect(gen!.outputs[0]!.tokenIds.length).toBe(8);
  }, 120_000);
});
