import { readFileSync } from 'node:fs';
import { modelTinyPath } from '@kvq/model-tiny';
import { fixturePath } from '@kvq/fixtures';
import { describe, expect, it } from 'vitest';
import { LLM, type LLMOptions } from '../llm/llm.js';
import { evaluateKvQuality, splitDocuments, type KvQualityResult } from './quality.js';

const evalPath = fixturePath('eval/kjv-fortunes-public.txt');
const refPath = fixturePath('reference/kvq-tiny.json');

async function report(model: string, docs: (llm: LLM) => number[][], configs: Record<string, Partial<LLMOptions>>) {
  const base = { model, kvCacheMemory: 32 << 20 } as const;
  const reference = await LLM.create({ ...base, kvCacheDtype: 'auto' });
  const documents = docs(reference);
  const results: Record<string, KvQualityResult> = {};
  for (const [name, options] of Object.entries(configs)) {
    const candidate = name === 'auto' ? reference : await LLM.create({ ...base, ...options });
    results[name] = await evaluateKvQuality(reference, candidate, documents);
  }
  return results;
}

const CONFIGS: Record<string, Partial<LLMOptions>> = {
  auto: {},
  e4m3_scale1: { kvCacheDtype: 'fp8_e4m3' },
  e4m3_calculated: { kvCacheDtype: 'fp8_e4m3', calculateKvScales: true },
  e4m3_scale1_fp8_query: { kvCacheDtype: 'fp8_e4m3', fp8Query: true },
  e5m2_scale1: { kvCacheDtype: 'fp8_e5m2' },
  e5m2_calculated: { kvCacheDtype: 'fp8_e5m2', calculateKvScales: true },
};

function table(results: Record<string, KvQualityResult>): string {
  const rows = Object.entries(results).map(
    ([k, r]) => `| ${k} | ${r.nllMean.toFixed(5)} | ${r.perplexity.toFixed(3)} | ${r.klMean.toExponential(2)} | ${(r.top1Agreement * 100).toFixed(2)}% |`,
  );
  return ['| KV cache | NLL/token | perplexity | KL vs auto | top-1 agreement |', '|---|---|---|---|---|', ...rows].join('\n');
}

describe('FP8 KV quality on kvq-tiny (eval text, first 30 documents)', () => {
  it('auto matches the independent reference; e4m3 stays within 0.5% perplexity, e5m2 within 1%', async () => {
    const ref = JSON.parse(readFileSync(refPath, 'utf8')) as { nll_eval_public_first30: { tokens: number; results: Record<string, { nll_mean: number; kl_mean: number }> } };
    const texts = splitDocuments(readFileSync(evalPath, 'utf8')).slice(0, 30);
    const results = await report(modelTinyPath, (llm) => texts.map((t) => llm.encode(t)), CONFIGS);
    console.log(`kvq-tiny, ${results.auto!.tokens} tokens\n${table(results)}`);
    const want = ref.nll_eval_public_first30;
    expect(results.auto!.tokens).toBe(want.tokens);
    // Our auto KV is the model dtype (bf16), the reference keeps K/V in float32: agreement to ~1e-4 nats.
    expect(Math.abs(results.auto!.nllMean - want.results.auto!.nll_mean)).toBeLessThan(5e-4);
    expect(Math.abs(results.e4m3_scale1!.nllMean - want.results.e4m3_scale1!.nll_mean)).toBeLessThan(5e-4);
    for (const k of ['e4m3_scale1', 'e4m3_calculated', 'e4m3_scale1_fp8_query'] as const) {
      expect(results[k]!.perplexity / results.auto!.perplexity, k).toBeLessThan(1.005);
      expect(results[k]!.perplexity / results.auto!.perplexity, k).toBeGreaterThan(0.995);
      expect(results[k]!.klMean, k).toBeGreaterThan(0);
      expect(results[k]!.klMean, k).toBeLessThan(0.005);
    }
    for (const k of ['e5m2_scale1', 'e5m2_calculated'] as const) {
      expect(Math.abs(results[k]!.perplexity / results.auto!.perplexity - 1), k).toBeLessThan(0.01);
      // e5m2 has one mantissa bit fewer: about 4x the KL of e4m3
      expect(results[k]!.klMean, k).toBeGreaterThan(results.e4m3_scale1!.klMean);
    }
    // auto against itself: the same tokens in other physical blocks may sum in another order (native kernels)
    expect(results.auto!.klMean).toBeLessThan(1e-9);
    expect(results.auto!.top1Agreement).toBe(1);
  }, 900_000);
});

const storiesRef = fixturePath('reference/stories260K.json');
const storiesModel = fixturePath('models/stories260K/stories260K.bin');
describe('FP8 KV quality on stories260K (head_dim 8)', () => {
  it('e4m3 costs about 2% perplexity and e5m2 about 5%, the formats\' own rounding', async () => {
    const ref = JSON.parse(readFileSync(storiesRef, 'utf8')) as { nll: { token_ids: number[] }[]; greedy: { token_ids: number[] }[] };
    const docs = [...ref.nll.map((n) => n.token_ids), ...ref.greedy.map((g) => g.token_ids)];
    const results = await report(storiesModel, () => docs, CONFIGS);
    console.log(`stories260K, ${results.auto!.tokens} tokens\n${table(results)}`);
    const cost = (k: string) => results[k]!.perplexity / results.auto!.perplexity - 1;
    expect(cost('e4m3_scale1')).toBeGreaterThan(0.005);
    expect(cost('e4m3_scale1')).toBeLessThan(0.05);
    expect(cost('e5m2_scale1')).toBeGreaterThan(cost('e4m3_scale1'));
    expect(cost('e5m2_scale1')).toBeLessThan(0.12);
  }, 900_000);
});
