import { describe, expect, it } from 'vitest';
import { EngineError } from '../errors.js';
import { KvHadamardRotation, kvRotationFor } from './kv-rotation.js';

/** Sylvester's Hadamard matrix of order `n` (a power of two), entries ±1, built independently of the fast transform. */
function sylvester(n: number): number[][] {
  let h = [[1]];
  while (h.length < n) h = [...h.map((r) => [...r, ...r]), ...h.map((r) => [...r, ...r.map((x) => -x)])];
  return h;
}

/** Column `i` of the rotation matrix: the rotation of the unit vector e_i. */
function column(rot: KvHadamardRotation, i: number): Float32Array {
  const e = new Float32Array(rot.headSize);
  e[i] = 1;
  rot.rotate(e, 1);
  return e;
}

describe('KvHadamardRotation', () => {
  it('is H·D: every column is a signed column of the normalized Sylvester matrix of its block, zero elsewhere', () => {
    for (const [headSize, block] of [
      [64, 64],
      [128, 128],
      [96, 32],
      [80, 16],
    ] as const) {
      const rot = new KvHadamardRotation(headSize);
      expect(rot.block).toBe(block);
      const h = sylvester(block);
      const signs: number[] = [];
      for (let i = 0; i < headSize; i++) {
        const col = column(rot, i);
        const b0 = i - (i % block);
        // (R e_i)_j = s_i · H[j - b0][i - b0] / sqrt(B) inside the block of i, 0 outside.
        const s = col[b0]! * h[0]![i - b0]! * Math.sqrt(block);
        expect(Math.abs(s)).toBeCloseTo(1, 6);
        for (let j = 0; j < headSize; j++) {
          const want = j >= b0 && j < b0 + block ? (s * h[j - b0]![i - b0]!) / Math.sqrt(block) : 0;
          expect(col[j]).toBeCloseTo(want, 6);
        }
        signs.push(Math.sign(s));
      }
      // A randomized sign pattern, not all +1 (nor all -1).
      expect(signs.filter((x) => x > 0).length).toBeGreaterThan(headSize / 4);
      expect(signs.filter((x) => x < 0).length).toBeGreaterThan(headSize / 4);
    }
  });

  it('is orthonormal: unrotate undoes rotate, norms and dot products are kept (to float32 rounding)', () => {
    const rot = new KvHadamardRotation(128);
    const n = 5;
    const x = Float32Array.from({ length: n * 128 }, (_, i) => Math.sin(i * 0.37) * (i % 17 === 3 ? 40 : 1));
    const y = Float32Array.from({ length: n * 128 }, (_, i) => Math.cos(i * 0.11));
    const rx = x.slice();
    const ry = y.slice();
    rot.rotate(rx, n);
    rot.rotate(ry, n);
    for (let v = 0; v < n; v++) {
      let dot = 0;
      let rdot = 0;
      let nx = 0;
      let nrx = 0;
      for (let i = v * 128; i < (v + 1) * 128; i++) {
        dot += x[i]! * y[i]!;
        rdot += rx[i]! * ry[i]!;
        nx += x[i]! * x[i]!;
        nrx += rx[i]! * rx[i]!;
      }
      expect(Math.abs(rdot - dot)).toBeLessThan(1e-5 * Math.sqrt(nx) * 10);
      expect(nrx / nx).toBeCloseTo(1, 5);
    }
    const back = rx.slice();
    rot.unrotate(back, n);
    for (let i = 0; i < x.length; i++) expect(Math.abs(back[i]! - x[i]!)).toBeLessThan(1e-5 * (1 + Math.abs(x[i]!)));
  });

  it('spreads a single outlier channel evenly over the block (what a per-head quantization scale wants)', () => {
    const rot = new KvHadamardRotation(64);
    const x = new Float32Array(64);
    x[17] = 100;
    rot.rotate(x, 1);
    for (const v of x) expect(Math.abs(v)).toBeCloseTo(100 / 8, 4);
  });

  it('rotates only the vectors asked for', () => {
    const rot = new KvHadamardRotation(16);
    const x = Float32Array.from({ length: 48 }, (_, i) => i + 1);
    rot.rotate(x, 2);
    expect(Array.from(x.subarray(32))).toEqual(Array.from({ length: 16 }, (_, i) => i + 33));
  });

  it('refuses head sizes without a power-of-two factor >= 8 and unknown option values, naming the field and value', () => {
    for (const bad of [12, 20, 7, 0]) {
      const e = (() => {
        try {
          return new KvHadamardRotation(bad);
        } catch (error) {
          return error;
        }
      })();
      expect(e).toBeInstanceOf(EngineError);
      expect((e as EngineError).code).toBe('INVALID_ARGUMENT');
      expect((e as EngineError).field).toBe('kvCacheRotation');
      expect((e as EngineError).message).toContain(`head size is ${bad}`);
    }
    expect(kvRotationFor(undefined, 64)).toBeUndefined();
    expect(kvRotationFor('none', 64)).toBeUndefined();
    expect(kvRotationFor('hadamard', 64)?.block).toBe(64);
    expect(() => kvRotationFor('walsh', 64)).toThrow(/kvCacheRotation must be one of none, hadamard, got "walsh"/);
  });
});
