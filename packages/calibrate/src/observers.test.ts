import { seededNormal } from '@kvq/test-utils';
import { describe, expect, it } from 'vitest';

import { CalibrateError } from './errors.js';
import { headMinMax, MINMAX_AVERAGING_CONSTANT, MinMaxObserver, tensorMinMax } from './observers.js';

describe('MinMaxObserver (llm-compressor semantics)', () => {
  const observations: Array<[number, number]> = [
    [-3, 2],
    [-1, 5],
    [-0.5, 0.25],
  ];

  it('static_minmax keeps the running min and max over all observations', () => {
    const o = new MinMaxObserver('static_minmax', 1);
    for (const [lo, hi] of observations) o.update([lo], [hi]);
    expect(o.amax()[0]).toBe(5);
    expect(o.observations).toBe(3);
  });

  it('memoryless_minmax keeps only the last observation', () => {
    const o = new MinMaxObserver('memoryless_minmax', 1);
    for (const [lo, hi] of observations) o.update([lo], [hi]);
    expect(o.amax()[0]).toBe(0.5);
    expect(o.observedAbsMax()[0]).toBe(5);
  });

  it('minmax is a moving average with constant 0.01, initialized by the first observation', () => {
    expect(MINMAX_AVERAGING_CONSTANT).toBe(0.01);
    const o = new MinMaxObserver('minmax', 1);
    for (const [lo, hi] of observations) o.update([lo], [hi]);
    let min = -3;
    let max = 2;
    for (const [lo, hi] of observations.slice(1)) {
      min += 0.01 * (lo - min);
      max += 0.01 * (hi - max);
    }
    expect(o.amax()[0]).toBeCloseTo(Math.max(-min, max), 15);
    // Moving averages move slowly: the -3 of the first observation still dominates, far below the static max of 5.
    expect(o.amax()[0]).toBeGreaterThan(2.9);
    expect(o.amax()[0]).toBeLessThan(3);
  });

  it('clamps min <= 0 <= max before taking amax (compressed-tensors calculate_qparams)', () => {
    const o = new MinMaxObserver('static_minmax', 2);
    o.update([1, -4], [3, -2]);
    expect([...o.amax()]).toEqual([3, 4]);
  });
});

describe('headMinMax / tensorMinMax', () => {
  it('reduces [tokens, heads, dim] over tokens and dims per head, reading only numTokens rows', () => {
    const rand = seededNormal(7);
    const tokens = 5;
    const heads = 3;
    const dim = 4;
    const x = new Float32Array((tokens + 2) * heads * dim).map(() => rand());
    x.fill(1000, tokens * heads * dim); // rows beyond numTokens must be ignored
    const { min, max } = headMinMax(x, tokens, heads, dim, 'test');
    for (let h = 0; h < heads; h++) {
      const values: number[] = [];
      for (let t = 0; t < tokens; t++) for (let d = 0; d < dim; d++) values.push(x[(t * heads + h) * dim + d]!);
      expect(min[h]).toBe(Math.min(...values));
      expect(max[h]).toBe(Math.max(...values));
    }
    const t = tensorMinMax({ min, max });
    expect(t.min[0]).toBe(Math.min(...min));
    expect(t.max[0]).toBe(Math.max(...max));
  });

  it('rejects NaN and infinity with NON_FINITE_ACTIVATION naming the tensor', () => {
    for (const bad of [NaN, Infinity, -Infinity]) {
      const x = new Float32Array(8).fill(0.5);
      x[5] = bad;
      try {
        headMinMax(x, 2, 2, 2, 'layer 3 key');
        expect.unreachable();
      } catch (e) {
        expect(e).toBeInstanceOf(CalibrateError);
        expect((e as CalibrateError).code).toBe('NON_FINITE_ACTIVATION');
        expect((e as Error).message).toContain('layer 3 key');
      }
    }
  });
});
