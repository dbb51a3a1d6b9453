import { describe, expect, it } from 'vitest';
import { createReferenceBackend } from './backend.js';
import { baselineLinear, decodeInput, linearInput } from './bench-inputs.js';

const ref = createReferenceBackend();

describe('benchmark inputs compute what the benchmark claims', () => {
  it('the baseline linear equals the reference linear on the benchmark input', () => {
    const a = linearInput('f32');
    ref.linear(a);
    const out = new Float32Array(1024);
    baselineLinear(a.x, a.weight.data as Float32Array, out, 1024, 1024);
    for (let i = 0; i < 1024; i++) expect(out[i]).toBeCloseTo(a.out[i]!, 4);
    expect(a.out.some((v) => v !== 0)).toBe(true);
  });

  it('the decode batches are decode-shaped and give finite, dtype-close outputs', () => {
    const f32 = decodeInput('f32', ref);
    const fp8 = decodeInput('e4m3fn', ref);
    expect([...f32.queryStartLoc]).toEqual([0, 1, 2, 3, 4]);
    expect([...f32.seqLens]).toEqual([512, 512, 512, 512]);
    ref.pagedAttention(f32);
    ref.pagedAttention(fp8);
    let maxDiff = 0;
    for (let i = 0; i < f32.out.length; i++) maxDiff = Math.max(maxDiff, Math.abs(f32.out[i]! - fp8.out[i]!));
    expect(f32.out.every(Number.isFinite)).toBe(true);
    // Same seed, same data: only the FP8 rounding of K and V separates the two (a few percent of unit values).
    expect(maxDiff).toBeGreaterThan(0);
    expect(maxDiff).toBeLessThan(0.1);
  });
});
