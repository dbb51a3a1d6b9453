import { describe, expect, it } from 'vitest';

import { resolveSamplingParams, type SamplingParams } from './params.js';
import { SeededRng } from './rng.js';
import { applyLogitsProcessors, applyPenalties, badWordsTokenIds, sampleToken, samplingDistribution } from './sampler.js';

/** Logits whose softmax at temperature 1 is exactly `probs`. */
const logitsOf = (probs: number[]) => Float32Array.from(probs, Math.log);

/** The filtered distribution as `{ id: probability }`. */
function dist(logits: Float32Array, params: SamplingParams): Record<number, number> {
  const { ids, probs } = samplingDistribution(logits, resolveSamplingParams(params));
  return Object.fromEntries(ids.map((id, j) => [id, probs[j]!]));
}

function expectDist(got: Record<number, number>, want: Record<number, number>): void {
  expect(Object.keys(got).map(Number).sort()).toEqual(Object.keys(want).map(Number).sort());
  for (const [id, p] of Object.entries(want)) expect(got[Number(id)]).toBeCloseTo(p, 6);
}

const P = [0.5, 0.2, 0.15, 0.1, 0.05];

/** A generator that always draws `u`. */
const fixed = (u: number) => ({ next: () => u, peek: () => u }) as unknown as SeededRng;

describe('samplingDistribution (vLLM V1 order: temperature, min-p, top-k, top-p renormalized)', () => {
  it('temperature alone reshapes the softmax (p^(1/T), renormalized)', () => {
    const w = P.map((p) => p * p);
    const s = w.reduce((a, b) => a + b, 0);
    expectDist(dist(logitsOf(P), { temperature: 0.5 }), Object.fromEntries(w.map((x, i) => [i, x / s])));
  });

  it('top-p alone: sorted ascending, drops tokens while the cumulative mass is <= 1 - p', () => {
    // ascending cumsum 0.05, 0.15, 0.30, ...: with 1 - p = 0.2 the two least likely go
    expectDist(dist(logitsOf(P), { topP: 0.8 }), { 0: 0.5 / 0.85, 1: 0.2 / 0.85, 2: 0.15 / 0.85 });
  });

  it('top-p is taken over the mass renormalized after top-k (not over the full vocabulary)', () => {
    // top-k 3 keeps {0.5, 0.2, 0.15} -> {0.588, 0.235, 0.176}; 1 - p = 0.25 drops 0.176. Over the full vocabulary
    // the same top-p would have kept all three (0.5 + 0.2 < 0.75).
    expectDist(dist(logitsOf(P), { topK: 3, topP: 0.75 }), { 0: 5 / 7, 1: 2 / 7 });
  });

  it('min-p runs before top-p: its survivors are what top-p renormalizes', () => {
    // min-p 0.25: threshold 0.125 keeps {0.5, 0.2, 0.15}; then top-p 0.75 as above
    expectDist(dist(logitsOf(P), { minP: 0.25 }), { 0: 0.5 / 0.85, 1: 0.2 / 0.85, 2: 0.15 / 0.85 });
    expectDist(dist(logitsOf(P), { minP: 0.25, topP: 0.75 }), { 0: 5 / 7, 1: 2 / 7 });
  });

  it('top-k keeps every token tied with the k-th largest logit (vLLM masks logits < the k-th value)', () => {
    expectDist(dist(Float32Array.from([1, 1, 1, 0]), { topK: 2 }), { 0: 1 / 3, 1: 1 / 3, 2: 1 / 3 });
  });

  it("Qwen2.5's generation config (temperature 0.7, top_k 20 -> 4 here, top_p 0.8, repetition_penalty 1.05)", () => {
    const logits = Float32Array.from([2.0, 1.5, 1.2, 0.9, -0.3, -0.8]);
    const params = resolveSamplingParams({ temperature: 0.7, topK: 4, topP: 0.8, repetitionPenalty: 1.05 });
    applyPenalties(logits, params, [0, 5], []);
    // Computed by hand in float64: penalized logits [2/1.05, 1.5, 1.2, 0.9, -0.3, -0.84], exp(l / 0.7), top-4
    // renormalized = [0.46204, 0.25916, 0.16882, 0.10998], ascending cumsum 0.10998 <= 0.2 drops token 3.
    const { ids, probs } = samplingDistribution(logits, params);
    expect(ids).toEqual([0, 1, 2]);
    expect(probs[0]).toBeCloseTo(0.5191367, 6);
    expect(probs[1]).toBeCloseTo(0.2911783, 6);
    expect(probs[2]).toBeCloseTo(0.1896849, 6);
  });

  it('always keeps the most likely token, even with a tiny top-p', () => {
    expectDist(dist(logitsOf(P), { topP: 1e-9 }), { 0: 1 });
  });
});

describe('sampleToken', () => {

  it('draws by the cumulative filtered distribution (most likely first)', () => {
    const params = resolveSamplingParams({ topK: 3, topP: 0.75 });
    expect(sampleToken(logitsOf(P), params, fixed(0))).toBe(0);
    expect(sampleToken(logitsOf(P), params, fixed(5 / 7 - 1e-6))).toBe(0);
    expect(sampleToken(logitsOf(P), params, fixed(5 / 7 + 1e-6))).toBe(1);
    expect(sampleToken(logitsOf(P), params, fixed(0.999999))).toBe(1);
  });

  it('is greedy at temperature 0 (first index of the maximum) and never draws', () => {
    const rng = fixed(0.99);
    expect(sampleToken(Float32Array.from([0, 3, 3, 1]), resolveSamplingParams({ temperature: 0 }), rng)).toBe(1);
  });

  it('frequencies of a seeded generator follow the filtered distribution', () => {
    const params = resolveSamplingParams({ temperature: 1, topK: 3 });
    const rng = new SeededRng(7);
    const counts = [0, 0, 0, 0, 0];
    const draws = 20000;
    for (let i = 0; i < draws; i++) counts[sampleToken(logitsOf(P), params, rng)]!++;
    expect(counts[3]).toBe(0);
    expect(counts[4]).toBe(0);
    for (const [id, p] of [[0, 0.5 / 0.85], [1, 0.2 / 0.85], [2, 0.15 / 0.85]] as const) {
      expect(Math.abs(counts[id]! / draws - p)).toBeLessThan(0.015); // > 4 standard deviations
    }
  });
});

describe('penalties (vLLM apply_penalties)', () => {
  it('repetition divides positive and multiplies negative logits of prompt and output tokens', () => {
    const logits = Float32Array.from([2, -2, 2, -2, 1]);
    applyPenalties(logits, resolveSamplingParams({ repetitionPenalty: 2 }), [0, 1], [3]);
    expect([...logits]).toEqual([1, -4, 2, -4, 1]);
  });

  it('frequency subtracts per output occurrence, presence once, neither looks at the prompt', () => {
    const logits = Float32Array.from([1, 1, 1, 1]);
    applyPenalties(logits, resolveSamplingParams({ frequencyPenalty: 0.5, presencePenalty: 0.25 }), [3, 3], [0, 0, 0, 1]);
    expect([...logits]).toEqual([1 - 1.5 - 0.25, 1 - 0.5 - 0.25, 1, 1]);
  });
});

describe('logits processors (before penalties)', () => {
  it('logit_bias is added to the listed logits (string keys as JSON sends them)', () => {
    const logits = Float32Array.from([1, 2, 3]);
    applyLogitsProcessors(logits, resolveSamplingParams({ logitBias: { '0': 5, '2': -100 } }), []);
    expect([...logits]).toEqual([6, 2, -97]);
  });

  it('allowed_token_ids sets every other logit to -inf', () => {
    const logits = Float32Array.from([9, 2, 3, 1]);
    applyLogitsProcessors(logits, resolveSamplingParams({ allowedTokenIds: [1, 3] }), []);
    expect([...logits]).toEqual([-Infinity, 2, -Infinity, 1]);
  });

  it('min_tokens masks EOS and stop token ids until enough tokens were generated; ignore_eos keeps EOS', () => {
    const params = resolveSamplingParams({ minTokens: 2, stopTokenIds: [1] });
    const a = Float32Array.from([5, 5, 5]);
    applyLogitsProcessors(a, params, [7], [0]);
    expect([...a]).toEqual([-Infinity, -Infinity, 5]);
    const b = Float32Array.from([5, 5, 5]);
    applyLogitsProcessors(b, params, [7, 7], [0]);
    expect([...b]).toEqual([5, 5, 5]);
    const c = Float32Array.from([5, 5, 5]);
    applyLogitsProcessors(c, resolveSamplingParams({ minTokens: 2, ignoreEos: true }), [], [0]);
    expect([...c]).toEqual([5, 5, 5]);
  });

  it('bad words: a single-token word is always banned; a longer one bans its last token after its prefix', () => {
    const params = resolveSamplingParams({});
    const words = [[4], [1, 2, 3]];
    const a = Float32Array.from([0, 0, 0, 0, 0]);
    applyLogitsProcessors(a, params, [9, 1, 2], [], words);
    expect([...a]).toEqual([0, 0, 0, -Infinity, -Infinity]);
    const b = Float32Array.from([0, 0, 0, 0, 0]);
    applyLogitsProcessors(b, params, [1, 9], [], words);
    expect([...b]).toEqual([0, 0, 0, 0, -Infinity]);
  });

  it('bad words are tokenized as written and with a leading space (kept when its first token differs, same length)', () => {
    const vocab: Record<string, number[]> = { hello: [5], ' hello': [6], 'big cat': [7, 8], ' big cat': [9, 10, 11] };
    expect(badWordsTokenIds(['hello', '  big cat'], (t) => vocab[t] ?? [])).toEqual([[5], [6], [7, 8]]);
  });

  it('bad values are typed errors naming the field', () => {
    expect(() => resolveSamplingParams({ logitBias: { '3': 101 } })).toThrow(/logitBias\[3\].*\[-100, 100\]/);
    expect(() => resolveSamplingParams({ logitBias: { x: 1 } })).toThrow(/logitBias/);
    expect(() => resolveSamplingParams({ allowedTokenIds: [] })).toThrow(/allowedTokenIds/);
    expect(() => resolveSamplingParams({ allowedTokenIds: [-1] })).toThrow(/allowedTokenIds/);
    expect(() => resolveSamplingParams({ badWords: [' '] })).toThrow(/badWords/);
  });
});

/** The definition, written the slow way: sort the whole vocabulary, then min-p, top-k, top-p (the pre-2026-12-04 code). */
function naiveDistribution(logits: Float32Array, params: SamplingParams): { ids: number[]; probs: number[] } {
  const p = resolveSamplingParams(params);
  let max = -Infinity;
  for (const l of logits) max = Math.max(max, l);
  const w = Array.from(logits, (l) => Math.exp((l - max) / p.temperature));
  let ids = w.map((_, i) => i).filter((i) => w[i]! > 0);
  ids.sort((a, b) => w[b]! - w[a]! || a - b);
  if (p.minP > 0) ids = ids.filter((i) => w[i]! >= p.minP * w[ids[0]!]!);
  if (p.topK > 0 && ids.length > p.topK) ids = ids.filter((i) => w[i]! >= w[ids[p.topK - 1]!]!);
  if (p.topP < 1 && ids.length > 1) {
    const total = ids.reduce((s, i) => s + w[i]!, 0);
    let cumulative = 0;
    let drop = 0;
    for (let j = ids.length - 1; j > 0; j--) {
      cumulative += w[ids[j]!]! / total;
      if (cumulative > 1 - p.topP) break;
      drop++;
    }
    ids = ids.slice(0, ids.length - drop);
  }
  const sum = ids.reduce((s, i) => s + w[i]!, 0);
  return { ids, probs: ids.map((i) => w[i]! / sum) };
}

describe('samplingDistribution is the definition, without sorting the whole vocabulary', () => {
  it('same ids in the same order and the same probabilities (to float32 rounding) as the full sort, over random vocabularies and filters', () => {
    const rng = new SeededRng(3);
    const cases: SamplingParams[] = [
      { temperature: 1 },
      { temperature: 0.7, topP: 0.95 },
      { temperature: 0.8, topP: 0.9, topK: 50 },
      { temperature: 1.3, topK: 5 },
      { temperature: 0.6, minP: 0.05 },
      { temperature: 1, minP: 0.02, topP: 0.8, topK: 200 },
      { temperature: 2, topP: 0.5 },
      { temperature: 0.2, topP: 0.999 },
    ];
    for (const size of [7, 1000, 32000]) {
      for (const spread of [1, 4, 12]) {
        // Peaked and flat vocabularies, with exact ties (quantized logits) and a masked (-Infinity) stretch.
        const logits = Float32Array.from({ length: size }, (_, i) => (i % 97 === 5 ? -Infinity : Math.round((rng.next() - 0.5) * spread * 8) / 4));
        for (const params of cases) {
          const got = samplingDistribution(logits, resolveSamplingParams(params));
          const want = naiveDistribution(logits, params);
          expect(got.ids, `${size} ${spread} ${JSON.stringify(params)}`).toEqual(want.ids);
          // The sampler's weights are float32, as in vLLM's float32 softmax: e^-q within 2 ulp, and q = (max - l) / T
          // itself rounded three times (2^-24 each, relative), so a token q nats down moves by up to ~2e-7 q relative.
          const max = Math.max(...logits.filter((l) => !Number.isNaN(l)));
          for (let j = 0; j < want.probs.length; j++) {
            const q = (max - logits[want.ids[j]!]!) / resolveSamplingParams(params).temperature;
            expect(Math.abs(got.probs[j]! - want.probs[j]!)).toBeLessThanOrEqual(want.probs[j]! * (6e-7 + 2e-7 * q));
          }
        }
      }
    }
  });
});

describe('sampleToken draws what walking the sorted distribution draws, without sorting it', () => {
  it('the same token as the full-sort walk for every draw, over random vocabularies and filters (rounding edges aside)', () => {
    const rng = new SeededRng(5);
    const cases: SamplingParams[] = [
      { temperature: 1 },
      { temperature: 0.7, topP: 0.95 },
      { temperature: 0.8, topP: 0.9, topK: 50 },
      { temperature: 1.3, topK: 5 },
      { temperature: 0.6, minP: 0.05 },
      { temperature: 2, topP: 0.5 },
      { temperature: 0.3, topP: 0.999 },
      { temperature: 1, topP: 1e-9 },
    ];
    let checked = 0;
    for (const size of [3, 501, 20000]) {
      for (const spread of [1, 4, 12]) {
        const logits = Float32Array.from({ length: size }, (_, i) => (i % 89 === 7 ? -Infinity : Math.round((rng.next() - 0.5) * spread * 8) / 4));
        for (const params of cases) {
          const want = naiveDistribution(logits, params);
          const bounds: number[] = [];
          let c = 0;
          for (const p of want.probs) bounds.push((c += p));
          for (let d = 0; d < 40; d++) {
            const u = d < 2 ? [0, 1 - 1e-12][d]! : rng.next();
            const at = bounds.findIndex((b) => u < b);
            const naive = want.ids[at < 0 ? want.ids.length - 1 : at]!;
            const got = sampleToken(logits, resolveSamplingParams(params), fixed(u));
            if (bounds.some((b) => Math.abs(b - u) < 1e-9)) continue; // a rounding edge: either neighbour is right
            expect(got, `${size} ${spread} ${JSON.stringify(params)} u=${u}`).toBe(naive);
            checked++;
          }
        }
      }
    }
    expect(checked).toBeGreaterThan(2500);
  });
});

describe('sampleToken and the negligible tail', () => {
  it('sampleToken leaves out only the negligible tail: a token e^-60 below the rest is never drawn, one e^-30 below is kept', () => {
    // One likely token, 997 at -100 (negligible), token 7 at -60 and token 8 at -30 (probability e^-30 = 9.4e-14).
    const logits = new Float32Array(1000).fill(-100);
    logits[0] = 0;
    logits[7] = -60;
    logits[8] = -30;
    const params = resolveSamplingParams({ temperature: 1 });
    // Draws past the likely token's mass land on token 8, the least likely kept one, up to the largest draw below 1.
    for (const u of [1 - 4e-14, 1 - 2 ** -53]) expect(sampleToken(logits, params, fixed(u))).toBe(8);
    expect(sampleToken(logits, params, fixed(1 - 2e-13))).toBe(0);
    expect(samplingDistribution(logits, params).ids).toContain(7); // the definition keeps every token
  });
});
