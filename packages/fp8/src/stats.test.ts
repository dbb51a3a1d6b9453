import { seededNormal } from '@kvq/test-utils';
import { describe, expect, it } from 'vitest';
import { errorStats, roundTripStats } from './stats.js';

describe('error statistics', () => {
  it('errorStats computes max abs error, MSE, SQNR and flush count', () => {
    const s = errorStats([1, 2, 3, 0.001], [1, 2.5, 3, 0]);
    expect(s.maxAbsError).toBe(0.5);
    expect(s.meanSquaredError).toBeCloseTo((0.25 + 0.000001) / 4, 12);
    expect(s.sqnrDb).toBeCloseTo(10 * Math.log10((1 + 4 + 9 + 0.000001) / 0.250001), 9);
    expect(s.flushedToZeroCount).toBe(1);
    expect(errorStats([1], [1]).sqnrDb).toBe(Infinity);
    expect(() => errorStats([1], [])).toThrow(expect.objectContaining({ code: 'SHAPE_MISMATCH' }));
  });
  it('roundTripStats: e4m3 SQNR of Gaussian data is ~31 dB, e5m2 ~25 dB; saturation and flushes are counted', () => {
    const g = seededNormal(3);
    const x = Float32Array.from({ length: 20000 }, () => g());
    const e4 = roundTripStats(x, 'e4m3fn');
    const e5 = roundTripStats(x, 'e5m2');
    expect(e4.sqnrDb).toBeGreaterThan(29);
    expect(e4.sqnrDb).toBeLessThan(33);
    expect(e5.sqnrDb).toBeGreaterThan(23);
    expect(e5.sqnrDb).toBeLessThan(27);
    const big = roundTripStats(Float32Array.of(1000, -500, 1, 1e-4), 'e4m3fn');
    expect(big.saturatedCount).toBe(2);
    expect(big.flushedToZeroCount).toBe(1);
    const scaled = roundTripStats(Float32Array.of(1000, -500, 1, 1e-4), 'e4m3fn', { scales: 1000 / 448 });
    expect(scaled.saturatedCount).toBe(0);
    const nosat = roundTripStats(Float32Array.of(1000, 1), 'e4m3fn', { saturation: 'nosat' });
    expect(nosat.saturatedCount).toBe(1);
    expect(nosat.nonFiniteCount).toBe(1);
  });
});
