import { describe, expect, it } from 'vitest';
import { decodeFp8Array, encodeFp8, encodeFp8Array, FP8_FORMAT_NAMES } from './index.js';

// Companion of codec.bench.ts: the benchmark's input generator and code paths give correct results.
describe('benchmark inputs', () => {
  it('the 4-codes-per-load decode path equals per-code decoding on unaligned views and tails', () => {
    const n = 4099;
    const x = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.7) * 30 + Math.cos(i * 0.013) * 5);
    for (const format of FP8_FORMAT_NAMES) {
      const q = encodeFp8Array(x, format);
      for (const offset of [0, 1, 2, 3]) {
        const view = q.subarray(offset);
        const out = decodeFp8Array(view, format);
        for (let i = 0; i < view.length; i += 1) {
          expect(encodeFp8(out[i]!, format)).toBe(view[i]);
        }
      }
    }
  });
});
