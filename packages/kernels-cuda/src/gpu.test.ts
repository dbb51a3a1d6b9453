/**
 * The GPU suite (`pnpm --filter @kvq/kernels-cuda test:gpu`, which sets KVQ_TEST_GPU=1): parity with the reference,
 * the bad-input suite, long-context attention, residency and the device-side FP8 checks on a real device. Skipped
 * in the default `test` run; with KVQ_TEST_GPU=1 a missing GPU is a failure, not a skip.
 */
import { describe, expect, it } from 'vitest';
import { cudaAvailability } from './backend.js';
import { formatGpuCheck, runGpuCheck } from './gpu-check.js';

describe.skipIf(!process.env.KVQ_TEST_GPU)('GPU check on a real device', () => {
  it('a CUDA device is usable here', () => {
    const a = cudaAvailability();
    expect(a.available ? 'available' : a.reason).toBe('available');
  });

  it('every correctness check passes', async () => {
    const report = await runGpuCheck({ parity: 'quick', benchmarks: process.env.KVQ_GPU_BENCH === '1' });
    expect(report.unavailable).toBeUndefined();
    expect(report.errors, formatGpuCheck(report)).toEqual([]);
    expect(report.parity?.failures, report.parity?.summary).toEqual([]);
    expect(report.badInput?.failures).toEqual([]);
    expect(report.longContext?.filter((c) => !c.ok)).toEqual([]);
    expect(report.residency?.ok).toBe(true);
    for (const c of report.fp8Mma?.cases ?? []) expect(c.ok, `FP8 MMA ${c.label}: ${c.message ?? ''}`).toBe(true);
    for (const v of report.fp8Vendor ?? []) expect([v.format, v.saturation, v.encodeMismatches, v.decodeMismatches]).toEqual([v.format, v.saturation, 0, 0]);
    for (const v of report.fp8DeviceVsHost ?? []) expect(v.mismatched, `${v.format}/${v.saturation}`).toEqual([]);
    expect(report.ok, formatGpuCheck(report)).toBe(true);
  }, 600_000);
});
