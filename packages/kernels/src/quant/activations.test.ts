import { describe, expect, it } from 'vitest';
import {
  activationBlockQ8,
  quantizeActivationBlockQ16,
  quantizeActivationBlockQ8,
  quantizeActivationRowInt8,
  roundTripActivationsInt8,
  roundTripActivationsQ16,
  roundTripActivationsQ8,
} from './activations.js';

describe('GGML 8-bit activation blocks (ggml-quants.c quantize_row_q8_0_ref / q8_K_ref)', () => {
  it('block sizes: Q8_K (256) for the k-quants, Q8_0 (32) otherwise', () => {
    expect(['q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1'].map((d) => activationBlockQ8(d as never))).toEqual([32, 32, 32, 32, 32]);
    expect(['q4_k', 'q5_k', 'q6_k'].map((d) => activationBlockQ8(d as never))).toEqual([256, 256, 256]);
  });

  it('Q8_0: d = amax / 127 (stored as f16), roundf rounds halves away from zero', () => {
    const x = new Float32Array(32);
    x.set([127, 2.5, -2.5, 0.5, -0.5, 1.5, -1.5, 126.5, -3.5]);
    const q = new Int8Array(32);
    expect(quantizeActivationBlockQ8(x, 0, 32, q, 0)).toBe(1);
    expect([...q.subarray(0, 9)]).toEqual([127, 3, -3, 1, -1, 2, -2, 127, -4]);
    // amax 1: d = 1/127 in float32, stored as f16 (0.007874 -> 0.0078735...), x' = q * f16(d).
    const y = new Float32Array(32).fill(0.25);
    y[0] = -1;
    const s = quantizeActivationBlockQ8(y, 0, 32, q, 0);
    expect(s).toBe(0.00787353515625);
    expect(q[0]).toBe(-127);
    expect(q[1]).toBe(32); // 0.25 * 127 = 31.75
  });

  it('Q8_K: iscale = -127 / max (signed), nearest_int rounds halves to even, d = 1 / iscale in float32', () => {
    const x = new Float32Array(256);
    x.set([-127, 2.5, -2.5, 0.5, -0.5, 1.5, -1.5, 126.5, -3.5]);
    const q = new Int8Array(256);
    expect(quantizeActivationBlockQ8(x, 0, 256, q, 0)).toBe(1);
    expect([...q.subarray(0, 9)]).toEqual([-127, 2, -2, 0, 0, 2, -2, 126, -4]);
    // A positive max maps to -127 (iscale < 0) and the scale is negative.
    x[0] = 127;
    const s = quantizeActivationBlockQ8(x, 0, 256, q, 0);
    expect(s).toBe(-1);
    expect([q[0], q[1]]).toEqual([-127, -2]);
  });

  it('zero blocks give scale 0; a non-finite value makes the whole block NaN', () => {
    const q = new Int8Array(256);
    expect(quantizeActivationBlockQ8(new Float32Array(32), 0, 32, q, 0)).toBe(0);
    expect(quantizeActivationBlockQ8(new Float32Array(256), 0, 256, q, 0)).toBe(0);
    const x = new Float32Array(64).fill(1);
    x[40] = Infinity;
    const rt = roundTripActivationsQ8(x, 1, 64, 'q8_0');
    expect([...rt.subarray(0, 32)].every((v) => Math.abs(v - 1) < 1e-3)).toBe(true);
    expect([...rt.subarray(32)].every((v) => Number.isNaN(v))).toBe(true);
  });

  it('round trip error is within half a step of each block (plus the f16 rounding of the Q8_0 scale)', () => {
    const x = Float32Array.from({ length: 512 }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 7)));
    for (const dtype of ['q8_0', 'q6_k'] as const) {
      const rt = roundTripActivationsQ8(x, 2, 256, dtype);
      const n = activationBlockQ8(dtype);
      for (let b = 0; b < 512; b += n) {
        let amax = 0;
        for (let i = b; i < b + n; i++) amax = Math.max(amax, Math.abs(x[i]!));
        for (let i = b; i < b + n; i++) expect(Math.abs(rt[i]! - x[i]!)).toBeLessThanOrEqual((amax / 127) * 0.5001 + (n === 32 ? amax * 2 ** -11 : 0) + 1e-6);
      }
    }
  });
});

describe('W8A8 int8 activations (vLLM scaled_int8_quant, symmetric)', () => {
  const quant = (values: number[], staticScale?: number) => {
    const q = new Int8Array(values.length);
    const s = quantizeActivationRowInt8(Float32Array.from(values), 0, values.length, q, 0, staticScale);
    return { q: Array.from(q), s };
  };

  it('dynamic: scale amax / 127, codes x * (127 / amax) rounded half to even', () => {
    const r = quant([-127, 2.5, -2.5, 0.5, -0.5, 1.5, 126.5, 3]);
    expect(r.s).toBe(1);
    expect(r.q).toEqual([-127, 2, -2, 0, 0, 2, 126, 3]);
    const t = quant([0.1, -0.3, 0.2]);
    expect(t.s).toBe(Math.fround(Math.fround(0.3) / 127));
    const inv = Math.fround(127 / Math.fround(0.3));
    expect(t.q).toEqual([Math.round(Math.fround(Math.fround(0.1) * inv)), -127, Math.round(Math.fround(Math.fround(0.2) * inv))]);
  });

  it('dynamic: a zero row has codes and scale 0; a NaN or infinity makes the scale NaN', () => {
    expect(quant([0, 0, -0])).toEqual({ q: [0, 0, 0], s: 0 });
    expect(quant([1, NaN, 2]).s).toBeNaN();
    expect(quant([1, -Infinity]).s).toBeNaN();
    expect(quant([1, -Infinity]).q).toEqual([0, 0]);
  });

  it('static: codes x / s rounded half to even and saturated to [-128, 127]', () => {
    const r = quant([100, -100, 0.125, 0.375, -0.125, 6.35, -6.4], 0.25);
    expect(r.s).toBe(0.25);
    expect(r.q).toEqual([127, -128, 0, 2, 0, 25, -26]);
  });

  it('round trip: x\' = codes * scale per row, rows independent', () => {
    const x = Float32Array.from([4, -2, 1, 0, 0, 0, 1e-3, 5e-4, -1e-3]);
    const out = roundTripActivationsInt8(x, 3, 3);
    expect(Array.from(out.subarray(0, 3))).toEqual([4, Math.fround(-64 * Math.fround(4 / 127)), Math.fround(32 * Math.fround(4 / 127))]);
    expect(Array.from(out.subarray(3, 6))).toEqual([0, 0, 0]);
    const s = Math.fround(Math.fround(1e-3) / 127);
    expect(out[6]).toBe(Math.fround(127 * s));
    expect(Array.from(roundTripActivationsInt8(x, 3, 3, 0.5).subarray(0, 3))).toEqual([4, -2, 1]);
  });
});

describe("16-bit activation blocks (linear activations 'q16' on int4 weights)", () => {
  it('scale amax / 32767, codes x * (32767 / amax) rounded half to even, clamped to +-32767', () => {
    const x = Float32Array.from([32767, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 32766.5, -3.5, -32767]);
    const q = new Int16Array(x.length);
    expect(quantizeActivationBlockQ16(x, 0, x.length, q, 0)).toBe(1);
    expect([...q]).toEqual([32767, 0, 0, 2, -2, 2, -2, 32766, -4, -32767]);
    const y = Float32Array.from([1, -0.25, 0.75]);
    const s = quantizeActivationBlockQ16(y, 0, 3, q, 0);
    expect(s).toBe(Math.fround(1 / 32767));
    expect([...q.subarray(0, 3)]).toEqual([32767, Math.round(-0.25 * Math.fround(32767)), Math.round(0.75 * 32767)]);
  });

  it('a zero or vanishingly small block gives codes and scale 0; a non-finite value makes the scale NaN', () => {
    const q = new Int16Array(4).fill(7);
    expect(quantizeActivationBlockQ16(new Float32Array(4), 0, 4, q, 0)).toBe(0);
    expect([...q]).toEqual([0, 0, 0, 0]);
    q.fill(7);
    expect(quantizeActivationBlockQ16(Float32Array.from([1e-45, -1e-45, 0, 0]), 0, 4, q, 0)).toBe(0); // 32767 / amax overflows
    expect([...q]).toEqual([0, 0, 0, 0]);
    for (const bad of [NaN, Infinity, -Infinity]) {
      q.fill(7);
      expect(quantizeActivationBlockQ16(Float32Array.from([1, bad, 2, 3]), 0, 4, q, 0)).toBeNaN();
      expect([...q]).toEqual([0, 0, 0, 0]);
    }
  });

  it('round trip: blocks of 128 from each row start (a short last block), error at most amax / 65534 per element', () => {
    const rows = 3;
    const cols = 300; // blocks of 128, 128, 44 in every row
    const x = new Float32Array(rows * cols);
    for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.37) * 10 ** ((i % 7) - 3);
    x[cols + 280] = 5e4; // row 1's last block has a much larger amax than its others
    const out = roundTripActivationsQ16(x, rows, cols);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c += 128) {
        const n = Math.min(128, cols - c);
        let amax = 0;
        for (let j = 0; j < n; j++) amax = Math.max(amax, Math.abs(x[r * cols + c + j]!));
        for (let j = 0; j < n; j++) {
          const i = r * cols + c + j;
          expect(Math.abs(out[i]! - x[i]!)).toBeLessThanOrEqual((amax / 65534) * (1 + 1e-6));
        }
      }
    }
    // A block's scale comes from that block alone: row 1's spike changes only its own (last) block.
    const calm = x.slice(cols, 2 * cols);
    calm[280] = 0;
    const calmOut = roundTripActivationsQ16(calm, 1, cols);
    expect([...out.subarray(cols, cols + 256)]).toEqual([...calmOut.subarray(0, 256)]);
    expect([...out.subarray(cols + 256, cols + 300)]).not.toEqual([...calmOut.subarray(256, 300)]);
  });
});
