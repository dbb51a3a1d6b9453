import { bench, describe } from 'vitest';
import { createReferenceBackend } from './backend.js';
import { baselineLinear, decodeInput, linearInput } from './bench-inputs.js';

const ref = createReferenceBackend();

describe('linear 1x1024 -> 1024', () => {
  const f32 = linearInput('f32');
  const bf16 = linearInput('bf16');
  bench('baseline: plain float32 dot loop', () => {
    baselineLinear(f32.x, f32.weight.data as Float32Array, f32.out, 1024, 1024);
  });
  bench('reference linear, f32 weights', () => ref.linear(f32));
  bench('reference linear, bf16 weights', () => ref.linear(bf16));
});

describe('paged decode attention, 4 x 512 tokens, 8/2 heads x 64', () => {
  const f32 = decodeInput('f32', ref);
  const bf16 = decodeInput('bf16', ref);
  const fp8 = decodeInput('e4m3fn', ref);
  bench('baseline: f32 cache', () => ref.pagedAttention(f32));
  bench('bf16 cache', () => ref.pagedAttention(bf16));
  bench('e4m3fn cache (per-head scales)', () => ref.pagedAttention(fp8));
  bench('e4m3fn cache, FP8 query', () => ref.pagedAttention({ ...fp8, fp8Query: {} }));
});
