import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeFp8Array, encodeFp8Array, encodeFp8BitRange } from '../codec.js';
import { FP8_FORMAT_NAMES } from '../formats.js';
import { f32FromBits } from '../half.js';
import { setFp8Simd } from './simd.js';

const SATURATIONS = ['satfinite', 'nosat'] as const;

function both<T>(run: () => T): [T, T] {
  setFp8Simd(false);
  const scalar = run();
  const active = setFp8Simd(true);
  expect(active, 'WebAssembly SIMD must be available on Node 20').toBe(true);
  return [scalar, run()];
}

describe('WebAssembly SIMD kernels equal the scalar path', () => {
  afterAll(() => void setFp8Simd(true));

  it('decode: every code, every format, odd lengths and offsets (NaN bit patterns included)', () => {
    const codes = new Uint8Array(256 * 5 + 13).map((_, i) => (i * 37) % 256);
    for (const format of FP8_FORMAT_NAMES) {
      for (const offset of [0, 3]) {
        const view = codes.subarray(offset);
        const [a, b] = both(() => new Uint32Array(decodeFp8Array(view, format).buffer));
        expect(b).toEqual(a);
      }
    }
  });

  it('encode: 2^22 consecutive bit patterns around every regime, all formats and modes', () => {
    // starts: zero/denormals, fp8 subnormals, 1.0, both max boundaries, inf/NaN, and their negative twins
    const starts = [0, 0x3a800000, 0x3b000000, 0x37000000, 0x3f800000, 0x43e00000, 0x47600000, 0x7f7f0000, 0x80000000, 0xbb000000, 0xc3e00000, 0xff7f0000];
    for (const format of FP8_FORMAT_NAMES) {
      for (const saturation of SATURATIONS) {
        for (const start of starts) {
          const [a, b] = both(() => encodeFp8BitRange(start, 1 << 18, format, { saturation }));
          expect(b.every((v, i) => v === a[i]), `${format}/${saturation} from 0x${start.toString(16)}`).toBe(true);
        }
      }
    }
  });

  it('encode: random float32 bit patterns', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 65, maxLength: 300 }), (bits) => {
        const x = Float32Array.from(bits, (b) => f32FromBits(b));
        for (const format of FP8_FORMAT_NAMES) {
          const [a, b] = both(() => encodeFp8Array(x, format));
          if (!a.every((v, i) => v === b[i])) return false;
        }
        return true;
      }),
      { numRuns: 50 },
    );
  });
});
