import { describe, expect, it } from 'vitest';

import { logProbsFromMap, logSoftmaxInto, median, MIN_PROBABILITY, QualityAccumulator } from './metrics.js';
import { configLabel, KV_ELEMENT_BYTES, kvBytesPerToken, promptTokens } from './protocol.js';

describe('median', () => {
  it('odd, even, unsorted, non-finite dropped, empty', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([5, Number.NaN, 1, Infinity])).toBe(3);
    expect(median([])).toBeNaN();
  });
});

describe('QualityAccumulator', () => {
  const logs = (p: number[]) => p.map(Math.log);

  it('identical distributions: KL 0, full agreement, NLL of the next token', () => {
    const acc = new QualityAccumulator();
    const p = logs([0.5, 0.25, 0.25]);
    acc.add(p, p, 1, 3);
    acc.add(p, p, 0, 3);
    const r = acc.result();
    expect(r.tokens).toBe(2);
    expect(r.klMean).toBe(0);
    expect(r.top1Agreement).toBe(1);
    expect(r.nllMean).toBeCloseTo((Math.log(4) + Math.log(2)) / 2, 12);
    expect(r.perplexity).toBeCloseTo(Math.exp(r.nllMean), 12);
  });

  it('KL(p || q) by hand, and disagreeing argmaxes', () => {
    const acc = new QualityAccumulator();
    const p = [0.7, 0.2, 0.1];
    const q = [0.3, 0.6, 0.1];
    acc.add(logs(p), logs(q), 2, 3);
    const want = p.reduce((s, pi, i) => s + pi * Math.log(pi / q[i]!), 0);
    const r = acc.result();
    expect(r.klMean).toBeCloseTo(want, 12);
    expect(r.top1Agreement).toBe(0);
    expect(r.nllMean).toBeCloseTo(-Math.log(0.1), 12);
  });

  it('no positions: zeros, agreement 1', () => {
    expect(new QualityAccumulator().result()).toEqual({ tokens: 0, nllMean: 0, perplexity: 1, klMean: 0, top1Agreement: 1 });
  });
});

describe('log-probabilities', () => {
  it('logSoftmaxInto sums to one and is shift invariant', () => {
    const a = logSoftmaxInto([1, 2, 3, 1000], new Float64Array(4));
    expect(a.reduce((s, x) => s + Math.exp(x), 0)).toBeCloseTo(1, 12);
    const b = logSoftmaxInto([11, 12, 13, 1010], new Float64Array(4));
    for (let i = 0; i < 4; i++) expect(b[i]).toBeCloseTo(a[i]!, 9);
  });

  it('logProbsFromMap fills absent tokens with the float32 floor and ignores out-of-range ids', () => {
    const out = logProbsFromMap(new Map([[1, 0.75], [2, 0.25], [7, 1], [0, 0]]), new Float64Array(3));
    expect(out[1]).toBeCloseTo(Math.log(0.75), 12);
    expect(out[2]).toBeCloseTo(Math.log(0.25), 12);
    expect(out[0]).toBe(Math.log(MIN_PROBABILITY));
  });
});

describe('protocol helpers', () => {
  it('KV bytes per token: FP8 one byte, q8_0 34/32, q4_0 18/32 (6% and 47% of f16 + block scales)', () => {
    const dims = { numLayers: 12, numKvHeads: 4, headDim: 64, vocabSize: 32000 };
    expect(kvBytesPerToken(dims, KV_ELEMENT_BYTES.fp8_e4m3!)).toBe(6144);
    expect(kvBytesPerToken(dims, KV_ELEMENT_BYTES.f16!)).toBe(12288);
    expect(kvBytesPerToken(dims, KV_ELEMENT_BYTES.q8_0!)).toBe(6528);
    expect(kvBytesPerToken(dims, KV_ELEMENT_BYTES.q4_0!)).toBe(3456);
    expect(1 - 6144 / 6528).toBeCloseTo(0.0588, 4);
  });

  it('promptTokens: deterministic, in range, different per seed', () => {
    const a = promptTokens(1000, [259, 32000], 5);
    expect(a).toEqual(promptTokens(1000, [259, 32000], 5));
    expect(a).not.toEqual(promptTokens(1000, [259, 32000], 6));
    expect(Math.min(...a)).toBeGreaterThanOrEqual(259);
    expect(Math.max(...a)).toBeLessThan(32000);
    expect(new Set(a).size).toBeGreaterThan(900);
  });

  it('configLabel names every configuration apart', () => {
    expect(configLabel({ side: 'kvq', kv: 'fp8_e4m3' })).toBe('kvq fp8_e4m3');
    expect(configLabel({ side: 'kvq', kv: 'fp8_e4m3', calibrated: true })).toBe('kvq fp8_e4m3 (per-head calibrated)');
    expect(configLabel({ side: 'llama.cpp', kv: 'q8_0', flashAttention: true })).toBe('llama.cpp q8_0 fa');
    expect(configLabel({ side: 'llama.cpp', kv: 'f16', flashAttention: false })).toBe('llama.cpp f16');
  });
});
