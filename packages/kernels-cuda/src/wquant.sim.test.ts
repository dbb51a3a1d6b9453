/**
 * The quantized-weight kernels (csrc/wquant.cu: decode GEMV, tiled GEMM, embedding on GGML q8_0..q6_k blocks and
 * compressed-tensors fp8_e4m3 / int8 / int4) on the CUDA simulator, warp 32 and 64: the parity kit's quantized
 * `linear` / `embedding` cases (quick and full sizes) against the reference backend, embedding bit-exact, plus
 * resident weights (block bytes, scale and zero-point arrays uploaded once) against the copy-per-call path.
 * The whole GPU check (sim.test.ts) runs these cases too; this file isolates them and adds the full size.
 */
import { createReferenceBackend } from '@kvq/kernels';
import { EXACT, parityCases, runParitySuite } from '@kvq/kernels/testing';
import { describe, expect, it } from 'vitest';
import { weightResidencyCheck } from './gpu-check.js';
import { createSimBackend, SIM_WARPS, simAvailability } from './sim.js';

const required = process.env.KVQ_REQUIRE_GPU_COMPILERS === '1';
const QUANTIZED = /^(linear|embedding) (q8_0|q4_0|q4_1|q5_0|q5_1|q4_k|q5_k|q6_k|fp8_e4m3|int8|int4)\b/;

for (const warp of SIM_WARPS) {
  const avail = simAvailability(warp);
  describe.skipIf(!avail.available && !required)(`quantized weights on the CUDA simulator, warp ${warp}`, () => {
    for (const size of ['quick', 'full'] as const) {
      it(`${size} parity: linear (GEMV and GEMM) and embedding on every quantized dtype`, () => {
        const cases = parityCases({ size, ops: ['linear', 'embedding'] }).filter((c) => QUANTIZED.test(c.label));
        const dtypes = new Set(cases.map((c) => c.label.split(' ')[1]!.split('/')[0]));
        expect([...dtypes].sort()).toEqual(['fp8_e4m3', 'int4', 'int8', 'q4_0', 'q4_1', 'q4_k', 'q5_0', 'q5_1', 'q5_k', 'q6_k', 'q8_0']);
        expect(cases.some((c) => c.label.includes(' gemv '))).toBe(true);
        expect(cases.some((c) => c.label.includes(' gemm '))).toBe(true);
        // Embedding must stay bit-exact: its tolerance is EXACT in the kit, checked here so nobody loosens it.
        for (const c of cases) if (c.op === 'embedding') expect(c.tolerance).toEqual(EXACT);
        const gpu = createSimBackend({ warp });
        try {
          const r = runParitySuite(gpu, createReferenceBackend(), { cases });
          expect(r.failures, JSON.stringify(r.failures.slice(0, 5))).toEqual([]);
          expect(r.passed).toBe(cases.length);
        } finally {
          gpu.dispose();
        }
      }, 600_000);
    }

    it('resident weights: block bytes, scales and zero points uploaded once, outputs identical to the copied path', () => {
      const r = weightResidencyCheck((o) => createSimBackend({ ...o, warp }), {});
      expect(r.ok, r.detail).toBe(true);
    }, 600_000);
  });
}
