/**
 * The `amx` tier (the avx512 kernels plus AMX tiles for the prefill GEMM of the GGML types with 8-bit activations)
 * against the `avx512` tier on model-sized shapes: the parity kit covers small ones on every ISA; here K reaches
 * 2048 (64 groups, both tile sets and the odd-group tail), rows and columns have tails past the 16 x 16 tiles, and
 * one activation row holds a NaN (its outputs, and only its, must be NaN). Both tiers sum the same exact int32 group
 * dots, so they agree to float32 rounding of the accumulation order. Skipped where the CPU, OS or build has no AMX.
 */
import { quantizeMatrix, type GgmlWeightDtype } from '@kvq/kernels';
import { rng } from '@kvq/kernels/testing';
import { describe, expect, it } from 'vitest';
import { cpuAvailability, createBackend } from './backend.js';

const avail = cpuAvailability();
const hasAmx = avail.available && avail.cpu.isas.includes('amx');
const DTYPES: readonly GgmlWeightDtype[] = ['q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q4_k', 'q5_k', 'q6_k'];

function randomF32(r: () => number, n: number, scale = 1): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (r() * 2 - 1) * scale;
  return x;
}

describe.skipIf(!hasAmx)('amx tier: prefill GEMM on AMX tiles (this CPU has AMX-INT8)', () => {
  for (const dtype of DTYPES) {
    it(`${dtype}: agrees with avx512 at model shapes, row/column tails, bias, a NaN row`, () => {
      const amx = createBackend({ isa: 'amx', threads: 2 });
      const ref = createBackend({ isa: 'avx512', threads: 2 });
      try {
        for (const [M, N, K] of [
          [37, 50, 2048],
          [16, 16, 768],
          [5, 33, 256 * 3],
          [130, 24, 512],
        ] as const) {
          const r = rng(M * 7 + N + K);
          const weight = quantizeMatrix(randomF32(r, N * K, 1 / Math.sqrt(K)), N, K, dtype);
          const x = randomF32(r, M * K, 2);
          x[3 * K + 17] = Number.NaN; // row 3
          const bias = randomF32(r, N);
          const a = new Float32Array(M * N);
          const b = new Float32Array(M * N);
          amx.linear({ x, weight, out: a, rows: M, bias, activations: 'q8' });
          ref.linear({ x, weight, out: b, rows: M, bias, activations: 'q8' });
          let scale = 0;
          for (const v of b) if (Number.isFinite(v)) scale = Math.max(scale, Math.abs(v));
          for (let m = 0; m < M; m++) {
            for (let n = 0; n < N; n++) {
              const i = m * N + n;
              if (m === 3) {
                expect(a[i], `${dtype} ${M}x${N}x${K} row 3 col ${n}`).toBeNaN();
                continue;
              }
              expect(Math.abs(a[i]! - b[i]!), `${dtype} ${M}x${N}x${K} at ${m},${n}: ${a[i]} vs ${b[i]}`).toBeLessThanOrEqual(2e-5 * scale);
            }
          }
        }
      } finally {
        amx.dispose();
        ref.dispose();
      }
    });
  }
});
