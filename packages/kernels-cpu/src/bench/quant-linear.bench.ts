/**
 * Decode GEMV (1 row) on a 4096 x 4096 GGML weight (q8_0, q4_0, q4_k, q5_k, q6_k) with float32 activations and with
 * GGML's 8-bit activations (`activations: 'q8'`: int8 dot products on AVX2 / AVX-512), against a memcpy of the
 * weight bytes (hot: the matrix stays in this machine's L3). The streaming setting runs one GEMV on each of several
 * distinct copies (> 128 MiB in all, past the last-level cache, as a decode step streams its layers) against
 * `amaxTensor` over a float32 array of the same byte count (every byte read once, trivial compute: the measured
 * read bandwidth); read time / GEMV time is the fraction of the bandwidth the GEMV reaches. GB/s = bytes x hz.
 * Correctness of both modes: the parity kit.
 */
import { quantizeMatrix, type GgmlWeightDtype, type LinearArgs, type WeightMatrix } from '@kvq/kernels';
import { randomF32, rng } from '@kvq/kernels/testing';
import { bench, describe } from 'vitest';
import { createBackend } from '../backend.js';

const cpu = createBackend();
const N = 4096;
const K = 4096;
const DTYPES: readonly GgmlWeightDtype[] = ['q8_0', 'q4_0', 'q4_k', 'q5_k', 'q6_k'];

/** A [N, K] weight: 256 quantized random rows, tiled (quantizing 16M values in TypeScript would dominate the run). */
function tiledWeight(dtype: GgmlWeightDtype): WeightMatrix {
  const r = rng(7);
  const tile = quantizeMatrix(randomF32(256 * K, r, 1 / Math.sqrt(K)), 256, K, dtype);
  const tileData = tile.data as Uint8Array;
  const data = new Uint8Array(tileData.length * (N / 256));
  for (let t = 0; t < N / 256; t++) data.set(tileData, t * tileData.length);
  return { ...tile, rows: N, data };
}

for (const dtype of DTYPES) {
  const weight = tiledWeight(dtype);
  const bytes = weight.data.byteLength;
  const src = new Uint8Array(weight.data.buffer, weight.data.byteOffset, bytes);
  const dst = new Uint8Array(bytes);
  const args: LinearArgs = { x: randomF32(K, rng(3)), weight, out: new Float32Array(N), rows: 1 };
  describe(`decode GEMV ${N}x${K} ${dtype} (${(bytes / 2 ** 20).toFixed(1)} MiB, isa ${cpu.isa}, ${cpu.threads} threads)`, () => {
    bench('memcpy of the weight bytes (baseline)', () => dst.set(src), { time: 400 });
    bench("activations 'f32'", () => cpu.linear(args), { time: 400 });
    bench("activations 'q8' (int8 dots)", () => cpu.linear({ ...args, activations: 'q8' }), { time: 400 });
  });
}

/** Distinct copies of `w` totalling at least `bytes` (so a pass over them streams from DRAM). */
function copiesOf(w: WeightMatrix, bytes: number): WeightMatrix[] {
  const n = Math.ceil(bytes / w.data.byteLength);
  return Array.from({ length: n }, () => ({ ...w, data: (w.data as Uint8Array).slice() }));
}

const STREAM_BYTES = 128 * 2 ** 20;
for (const dtype of DTYPES) {
  const ws = copiesOf(tiledWeight(dtype), STREAM_BYTES);
  const total = ws.reduce((a, w) => a + w.data.byteLength, 0);
  const read = new Float32Array(total / 4).fill(0.5);
  const x = randomF32(K, rng(3));
  const out = new Float32Array(N);
  describe(`streaming decode GEMV ${ws.length} x ${N}x${K} ${dtype} (${(total / 2 ** 20).toFixed(0)} MiB, isa ${cpu.isa}, ${cpu.threads} threads)`, () => {
    bench('amaxTensor over the same bytes (read bandwidth)', () => void cpu.amaxTensor({ x: read, length: read.length }), { time: 600 });
    bench("activations 'f32'", () => ws.forEach((weight) => cpu.linear({ x, weight, out, rows: 1 })), { time: 600 });
    bench("activations 'q8' (int8 dots)", () => ws.forEach((weight) => cpu.linear({ x, weight, out, rows: 1, activations: 'q8' })), { time: 600 });
  });
}

/**
 * Prefill GEMM: 512 activation rows (one llama.cpp batch) through the 768x12 model's FFN shapes, every GGML type with
 * 8-bit activations against the same shape in bf16 weights (float32 activations) as the baseline. GOP/s = 2 x M x N
 * x K x hz / 1e9 (the op count is in each title).
 */
const PREFILL_M = 512;
for (const [pn, pk] of [
  [2048, 768],
  [768, 2048],
] as const) {
  const x = randomF32(PREFILL_M * pk, rng(5));
  const out = new Float32Array(PREFILL_M * pn);
  const gop = (2 * PREFILL_M * pn * pk) / 1e9;
  const wf = randomF32(pn * pk, rng(9), 1 / Math.sqrt(pk));
  const bf16: WeightMatrix = { dtype: 'bf16', rows: pn, cols: pk, data: new Uint16Array(wf.buffer).filter((_, i) => i % 2 === 1) };
  describe(`prefill GEMM ${PREFILL_M}x${pn}x${pk} (${gop.toFixed(3)} GOP a call, isa ${cpu.isa}, ${cpu.threads} threads)`, () => {
    bench('bf16 weights, f32 activations (baseline)', () => cpu.linear({ x, weight: bf16, out, rows: PREFILL_M }), { time: 600 });
    for (const dtype of ['q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q4_k', 'q5_k', 'q6_k'] as const) {
      const weight = quantizeMatrix(wf, pn, pk, dtype);
      bench(`${dtype}, 8-bit activations`, () => cpu.linear({ x, weight, out, rows: PREFILL_M, activations: 'q8' }), { time: 600 });
    }
  });
}
