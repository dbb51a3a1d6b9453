/**
 * Decode GEMV (1 row) on a 4096 x 4096 GGML weight (q8_0, q4_0, q4_k, q5_k, q6_k) with float32 activations and with
 * GGML's 8-bit activations (`activations: 'q8'`: int8 dot products on AVX2 / AVX-512), against a memcpy of the
 * weight bytes (the memory-bandwidth limit). GB/s = weight bytes x hz. Correctness of both modes: the parity kit.
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
