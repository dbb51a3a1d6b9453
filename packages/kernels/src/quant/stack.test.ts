import { describe, expect, it } from 'vitest';
import type { WeightMatrix } from '../contract.js';
import { createReferenceBackend } from '../reference/backend.js';
import { rng } from '../testing/random.js';
import { quantizeMatrix } from './quantize.js';
import { joinWeightRows, stackWeightRows } from './stack.js';

const ref = createReferenceBackend();
const next = rng(29);
const values = (n: number) => Float32Array.from({ length: n }, () => next() * 2 - 1);

/** y = x W^T of `w` for `rows` activation rows (the reference backend). */
function apply(w: WeightMatrix, x: Float32Array, rows: number): Float32Array {
  const out = new Float32Array(rows * w.rows);
  ref.linear({ x, weight: w, out, rows });
  return out;
}

describe('stackWeightRows', () => {
  const cols = 256;
  const shapes = [96, 32, 32]; // q, k, v of a GQA layer
  const cases: { name: string; make: (rows: number) => WeightMatrix }[] = [
    { name: 'q8_0', make: (r) => quantizeMatrix(values(r * cols), r, cols, 'q8_0') },
    { name: 'q4_k', make: (r) => quantizeMatrix(values(r * cols), r, cols, 'q4_k') },
    { name: 'int4 g64 asymmetric', make: (r) => quantizeMatrix(values(r * cols), r, cols, 'int4', { groupSize: 64, symmetric: false }) },
    { name: 'fp8 per channel', make: (r) => quantizeMatrix(values(r * cols), r, cols, 'fp8_e4m3', { granularity: 'channel' }) },
    { name: 'int8 per channel', make: (r) => quantizeMatrix(values(r * cols), r, cols, 'int8', { granularity: 'channel' }) },
    { name: 'f32', make: (r) => ({ dtype: 'f32', data: values(r * cols), rows: r, cols }) },
  ];

  it.each(cases)('$name: the stacked matrix computes every part\'s outputs, and the views equal the parts', ({ make }) => {
    const parts = shapes.map(make);
    const s = stackWeightRows(parts)!;
    expect(s).toBeDefined();
    expect(s.stacked.rows).toBe(160);
    const x = values(3 * cols);
    const all = apply(s.stacked, x, 3);
    let offset = 0;
    parts.forEach((p, i) => {
      const want = apply(p, x, 3);
      for (let r = 0; r < 3; r++) expect(all.subarray(r * 160 + offset, r * 160 + offset + p.rows)).toEqual(want.subarray(r * p.rows, (r + 1) * p.rows));
      const v = s.views[i]!;
      expect([v.dtype, v.rows, v.cols, v.groupSize]).toEqual([p.dtype, p.rows, p.cols, p.groupSize]);
      expect(v.data).toEqual(p.data);
      expect(v.scale).toEqual(p.scale);
      expect(v.zeroPoint).toEqual(p.zeroPoint);
      expect(v.data.buffer).toBe(s.stacked.data.buffer); // a view, not a copy
      offset += p.rows;
    });
    // The views join back into the stacked matrix without a copy; the separate parts do not.
    const joined = joinWeightRows(s.views)!;
    expect(joined.data.buffer).toBe(s.stacked.data.buffer);
    expect(apply(joined, x, 3)).toEqual(all);
    expect(joinWeightRows(parts)).toBeUndefined();
    expect(joinWeightRows([s.views[0]!, s.views[2]!])).toBeUndefined(); // not consecutive
    expect(joinWeightRows([s.views[1]!, s.views[0]!])).toBeUndefined(); // out of order
  });

  it('refuses parts that cannot share one matrix', () => {
    const q8 = quantizeMatrix(values(32 * cols), 32, cols, 'q8_0');
    expect(stackWeightRows([])).toBeUndefined();
    expect(stackWeightRows([q8, quantizeMatrix(values(32 * cols), 32, cols, 'q4_0')])).toBeUndefined(); // dtypes differ
    expect(stackWeightRows([q8, quantizeMatrix(values(32 * 512), 32, 512, 'q8_0')])).toBeUndefined(); // cols differ
    const perTensor = quantizeMatrix(values(32 * cols), 32, cols, 'fp8_e4m3', { granularity: 'tensor' });
    expect(perTensor.scale!.length).toBe(1);
    expect(stackWeightRows([perTensor, perTensor])).toBeUndefined(); // one scale per tensor
    const g64 = quantizeMatrix(values(32 * cols), 32, cols, 'int4', { groupSize: 64 });
    expect(stackWeightRows([g64, quantizeMatrix(values(32 * cols), 32, cols, 'int4', { groupSize: 128 })])).toBeUndefined();
    expect(stackWeightRows([g64, quantizeMatrix(values(32 * cols), 32, cols, 'int4', { groupSize: 64, symmetric: false })])).toBeUndefined(); // zero points in one
  });
});
