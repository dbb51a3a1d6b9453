/**
 * GEMV (decode, 1 row) and GEMM (prefill, 128 rows) on a 4096 x 4096 weight, f32, bf16 and f16, against a memcpy of the
 * weight bytes (the memory-bandwidth limit of a decode GEMV). Derive GB/s as weight bytes x hz and GFLOP/s as
 * 2 x rows x 4096 x 4096 x hz. Correctness of these inputs: ./inputs.test.ts.
 */
import { bench, describe } from 'vitest';
import { createBackend } from '../backend.js';
import { linearInputs, LINEAR_DTYPES, LINEAR_SHAPE, weightBytes } from './inputs.js';

const cpu = createBackend();

for (const dtype of LINEAR_DTYPES) {
  const gemv = linearInputs(dtype, 1);
  const bytes = weightBytes(gemv.weight);
  const src = new Uint8Array(gemv.weight.data.buffer, gemv.weight.data.byteOffset, bytes);
  const dst = new Uint8Array(bytes);
  describe(`decode GEMV ${LINEAR_SHAPE.out}x${LINEAR_SHAPE.in} ${dtype} (${(bytes / 2 ** 20).toFixed(0)} MiB of weights, ${cpu.threads} threads)`, () => {
    bench('memcpy of the weight bytes (baseline)', () => dst.set(src), { time: 500 });
    bench(`native linear rows=1`, () => cpu.linear(gemv), { time: 500 });
  });
  const gemm = linearInputs(dtype, 128);
  describe(`prefill GEMM 128x${LINEAR_SHAPE.in} . ${LINEAR_SHAPE.in}x${LINEAR_SHAPE.out} ${dtype} (${cpu.threads} threads)`, () => {
    bench('memcpy of the weight bytes (baseline)', () => dst.set(src), { time: 500 });
    bench(`native linear rows=128`, () => cpu.linear(gemm), { time: 1000 });
  });
}
