/**
 * The GPU kernels on the CPU simulator (csrc/sim), warp 32 (NVIDIA) and warp 64 (AMD CDNA): the parity suite of
 * `@kvq/kernels/testing` against the reference, the bad-input suite, long-context attention (4k-16k keys, split-k),
 * resident caches and the device FP8 encoder, through `runGpuCheck` (what `tooling/gpu-check.sh` runs on a real
 * GPU). A missing simulator build skips with the reason, except in CI (`KVQ_REQUIRE_GPU_COMPILERS=1`), where it
 * fails. Decode batches run the register decode kernel by default, and the tiled kernel with KVQ_ATTN_KERNEL=tiled.
 * About a minute for both widths.
 */
import { createReferenceBackend, QUANTIZED_WEIGHT_DTYPES } from '@kvq/kernels';
import { describe, expect, it } from 'vitest';
import { createGpuBackend } from './backend.js';
import { fp8MmaCapable, fp8MmaChecks, formatGpuCheck, quantizedGemvBench, runGpuCheck, withEnv } from './gpu-check.js';
import { createSimBackend, SIM_WARPS, simAvailability, simSpec } from './sim.js';

const required = process.env.KVQ_REQUIRE_GPU_COMPILERS === '1';

for (const warp of SIM_WARPS) {
  const avail = simAvailability(warp);
  describe.skipIf(!avail.available && !required)(
    `GPU kernels on the CUDA simulator, warp ${warp}${avail.available ? '' : `: not built (${avail.reason})`}`,
    () => {
      it('the simulator addon is built and loads', () => {
        expect(avail.available ? 'available' : avail.reason).toBe('available');
      });

      it('parity with the reference, bad input, residency, FP8 encoder', async () => {
        const report = await runGpuCheck({
          create: (o) => createSimBackend({ ...o, warp }),
          parity: 'quick',
          encoderChunk: 2 ** 16,
          benchmarks: false,
          // The device-array parity (every op on device arrays, caches attached) at warp 32; warp 64 runs the same code.
          deviceArrays: warp === 32,
        });
        expect(report.unavailable).toBeUndefined();
        expect(report.backend?.device.warpSize).toBe(warp);
        expect(report.errors, formatGpuCheck(report)).toEqual([]);
        expect(report.parity?.failures, report.parity?.summary).toEqual([]);
        expect(report.parity?.cases).toBeGreaterThan(100);
        expect(report.badInput?.failures).toEqual([]);
        if (warp === 32) {
          expect(report.deviceParity?.failures, report.deviceParity?.summary).toEqual([]);
          expect(report.deviceParity?.cases).toBe(report.parity?.cases);
        }
        expect(report.residency?.ok, report.residency?.detail).toBe(true);
        expect(report.fp8Mma?.tensorCores).toBe(warp === 32);
        for (const c of report.fp8Mma?.cases ?? []) expect(c.ok, `${c.label}: ${c.message ?? ''}`).toBe(true);
        expect(report.longContext?.length).toBe(4);
        for (const c of report.longContext ?? []) expect(c.ok, `${c.label}: ${c.message ?? ''}`).toBe(true);
        for (const v of report.fp8DeviceVsHost ?? []) expect(v.mismatched, `${v.format}/${v.saturation}`).toEqual([]);
        expect(report.fp8DeviceVsHost?.length).toBe(8);
        expect(report.ok, formatGpuCheck(report)).toBe(true);
      }, 600_000);

      it('BackendInfo.fp8Fnuz follows the spec\'s architecture rule (the ROCm package sets it on gfx94x)', () => {
        const plain = createSimBackend({ warp });
        const fnuz = createGpuBackend({ ...simSpec(warp), fp8Fnuz: (arch: string) => arch === `sim-w${warp}` });
        try {
          expect(plain.info.fp8Fnuz).toBeUndefined();
          expect(fnuz.info.fp8Fnuz).toBe(true);
        } finally {
          plain.dispose();
          fnuz.dispose();
        }
      });

      it('the decode benchmark path runs both kernels with finite results', () => {
        const gpu = createSimBackend({ warp });
        try {
          for (const kernel of ['tiled', 'decode']) {
            withEnv({ KVQ_ATTN_KERNEL: kernel }, () => {
              for (const kvDtype of ['bf16', 'e4m3fn'] as const) {
                const r = gpu.benchAttention({ kvDtype, contextLen: 600, numSeqs: 2, numHeads: 8, numKvHeads: 2, headSize: 64, warmup: 0, iters: 1 });
                expect(r.finite, `${kernel} ${kvDtype}`).toBe(true);
                expect(r.splits).toBeGreaterThan(1);  // 4 tasks on the simulated 8-block device: split-k
              }
            });
          }
        } finally {
          gpu.dispose();
        }
      });

      it('the quantized GEMV benchmark runs the kernel of every weight dtype on device-resident blocks', () => {
        const gpu = createSimBackend({ warp });
        try {
          const rows = quantizedGemvBench(gpu, 0, 256, 8);
          expect(rows.map((r) => r.label.split(' ')[1])).toEqual(['bf16', ...QUANTIZED_WEIGHT_DTYPES]);
          for (const r of rows) expect(Number.isFinite(r.ms) && r.ms >= 0, r.label).toBe(true);
          // a GEMM-sized call goes through the same entry
          expect(gpu.benchLinear({ weightDtype: 'q4_k', rows: 16, inFeatures: 256, outFeatures: 8, iters: 1 })).toBeGreaterThanOrEqual(0);
          expect(() => gpu.benchLinear({ weightDtype: 'q8_0', rows: 1, inFeatures: 100, outFeatures: 8, iters: 1 })).toThrow(/multiple of 256/);
        } finally {
          gpu.dispose();
        }
      });

      it.skipIf(warp !== 32)('FP8-query decode on FP8 tensor cores (KVQ_FP8_MMA=1: the mma.m16n8k32 fragments, emulated)', () => {
        const gpu = createSimBackend({ warp });
        try {
          expect(fp8MmaCapable(gpu)).toBe(true);
          const cases = fp8MmaChecks(gpu, createReferenceBackend());
          expect(cases.length).toBe(10);
          for (const c of cases) expect(c.ok, `${c.label}: ${c.message ?? ''}`).toBe(true);
        } finally {
          gpu.dispose();
        }
      });

      it('the tiled attention kernel on decode batches too (KVQ_ATTN_KERNEL=tiled)', async () => {
        const report = await withEnv({ KVQ_ATTN_KERNEL: 'tiled' }, () =>
          runGpuCheck({
            create: (o) => createSimBackend({ ...o, warp }),
            parity: 'quick',
            longContext: false,
            encoderChunk: 2 ** 8,
            benchmarks: false,
          }),
        );
        expect(report.errors, formatGpuCheck(report)).toEqual([]);
        expect(report.parity?.failures, report.parity?.summary).toEqual([]);
        expect(report.ok, formatGpuCheck(report)).toBe(true);
      }, 600_000);
    },
  );
}
