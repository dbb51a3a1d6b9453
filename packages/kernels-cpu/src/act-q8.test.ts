/**
 * GGML's 8-bit activation quantization (the first step of `linear` with `activations: 'q8'`) on every ISA this CPU
 * runs, bit-exact against @kvq/kernels' `quantizeActivationBlockQ8` (the TypeScript twin of act_q8.h): the AVX2 /
 * AVX-512 builds quantize in vectors (csrc/act_q8_simd.h), and a one-off rounding difference would stay inside the
 * linear tolerance of the parity kit, so this holds the codes and scales themselves.
 */
import { quantizeActivationBlockQ8 } from '@kvq/kernels';
import { rng } from '@kvq/kernels/testing';
import { describe, expect, it } from 'vitest';
import type { CpuIsa } from './addon-types.js';
import { cpuAvailability } from './backend.js';
import { loadAddon } from './load.js';

const avail = cpuAvailability();
const isas = avail.available ? avail.cpu.isas : [];

/**
 * Blocks of `n` that pin every rule, then random blocks over 60 decades: exact halves of the step (Q8_0 rounds them
 * away from zero, Q8_K to even), ties for the largest magnitude (Q8_K keeps the first one's sign), zero / -0 blocks,
 * subnormals, values near FLT_MAX, NaN and both infinities (the block's codes 0 and scale NaN).
 */
function inputs(n: 32 | 256, seed: number): Float32Array {
  const r = rng(seed);
  const special: number[][] = [];
  const halves = [0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 62.5, -62.5, 126.5, -126.5, 3.4999998, -3.5000002];
  special.push([n === 32 ? 127 : -127, ...halves]);
  special.push([n === 32 ? -127 : 127, ...halves]);
  special.push([-5, 5, 1, 2, 3]);
  special.push([5, -5, 1, 2, 3]);
  special.push([]);
  special.push([-0, -0, 0]);
  special.push([1e-45, -3e-39, 1.2e-38, -1e-40]);
  special.push([3.4028234e38, -3.4028234e38, 1e38, -1]);
  special.push([1, 2, NaN, 3]);
  special.push([1, Infinity, 3]);
  special.push([-Infinity, 0.25]);
  const blocks = special.length + 40;
  const x = new Float32Array(blocks * n);
  special.forEach((vals, b) => vals.forEach((v, i) => (x[b * n + i] = v)));
  for (let b = special.length; b < blocks; b++) {
    const mag = 10 ** (r() * 60 - 30);
    for (let i = 0; i < n; i++) x[b * n + i] = (r() * 2 - 1) * mag;
    // Some blocks also get a value sitting exactly on a half step of their own scale.
    if (b % 3 === 0) x[b * n + 7] = x[b * n]! * (63.5 / 127);
  }
  return x;
}

describe.skipIf(!avail.available)('8-bit activation quantization: native vs @kvq/kernels, bit-exact', () => {
  const load = loadAddon();
  /** A context of `isa` on one thread. */
  const context = (isa: CpuIsa) => {
    if (!load.ok) throw new Error(load.reason);
    return new load.addon.Context(1, isa, 0);
  };
  for (const isa of isas) {
    for (const n of [32, 256] as const) {
      it(`${isa}: block ${n}, every rule and 40 random blocks, 1 and 3 rows`, () => {
        const ctx = context(isa);
        try {
          const x = inputs(n, 17 + n);
          const cols = x.length;
          for (const rows of [1, 3]) {
            const xs = new Float32Array(rows * cols);
            for (let r = 0; r < rows; r++) xs.set(r === 0 ? x : x.map((v) => v * (r + 0.37)), r * cols);
            const q = new Int8Array(rows * cols).fill(99);
            const scales = new Float32Array((rows * cols) / n).fill(99);
            ctx.quantizeActivationsQ8(xs, rows, cols, n, q, scales);
            const wantQ = new Int8Array(n);
            for (let b = 0; b < (rows * cols) / n; b++) {
              const s = quantizeActivationBlockQ8(xs, b * n, n, wantQ, 0);
              const got = scales[b]!;
              if (!(Object.is(got, s) || (Number.isNaN(got) && Number.isNaN(s)))) expect.fail(`${isa} block ${b}: scale ${got}, want ${s}`);
              for (let j = 0; j < n; j++) {
                if (q[b * n + j] !== wantQ[j]) expect.fail(`${isa} block ${b} element ${j} (x = ${xs[b * n + j]}): code ${q[b * n + j]}, want ${wantQ[j]}`);
              }
            }
          }
        } finally {
          ctx.dispose();
        }
      });
    }
  }

  it('bad arguments are typed errors', () => {
    const ctx = context('scalar');
    try {
      const call = (f: () => void): string => {
        try {
          f();
        } catch (e) {
          return (e as { code?: string }).code ?? String(e);
        }
        return 'no error';
      };
      const x = new Float32Array(64);
      expect(call(() => ctx.quantizeActivationsQ8(x, 1, 64, 64 as 32, new Int8Array(64), new Float32Array(1)))).toBe('INVALID_ARGUMENT');
      expect(call(() => ctx.quantizeActivationsQ8(x, 1, 48, 32, new Int8Array(48), new Float32Array(2)))).toBe('SHAPE_MISMATCH');
      expect(call(() => ctx.quantizeActivationsQ8(x, 2, 64, 32, new Int8Array(128), new Float32Array(4)))).toBe('SHAPE_MISMATCH');
      expect(call(() => ctx.quantizeActivationsQ8(x, 1, 64, 32, new Uint8Array(64) as unknown as Int8Array, new Float32Array(2)))).toBe('WRONG_ARRAY_TYPE');
      expect(call(() => ctx.quantizeActivationsQ8(x, 1, 64, 32, new Int8Array(64), new Float32Array(1)))).toBe('SHAPE_MISMATCH');
    } finally {
      ctx.dispose();
    }
  });
});
