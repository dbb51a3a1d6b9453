import { bench, describe } from 'vitest';
import { kvWorkload } from '../bench-fixtures.js';
import { gatherKv, writeKv } from './io.js';

/**
 * Reference write/read throughput for one Llama-3.1-8B-shaped layer (8 KV heads × 128), 512 tokens
 * (K and V: 2 × 512 × 1024 float32 = 4 MiB in). Baseline in the same run: memcpy of the same float32 data
 * (TypedArray.set), the floor for any layout change.
 */
const TOKENS = 512;

describe('write 512 tokens (K+V)', () => {
  const base = kvWorkload('f32', 80, TOKENS);
  const dst = new Float32Array(base.key.length);
  bench('baseline: memcpy K and V (Float32Array.set)', () => {
    dst.set(base.key);
    dst.set(base.value);
  });
  for (const dtype of ['f32', 'bf16', 'e4m3fn', 'e5m2'] as const) {
    const w = kvWorkload(dtype, 80, TOKENS);
    bench(`writeKv ${dtype}`, () => {
      writeKv(w.layer, w.key, w.value, w.slotMapping);
    });
  }
});

describe('gather 512 tokens (K+V, dequantized to float32)', () => {
  const base = kvWorkload('f32', 80, TOKENS);
  const dst = new Float32Array(base.key.length);
  bench('baseline: memcpy K and V (Float32Array.set)', () => {
    dst.set(base.key);
    dst.set(base.value);
  });
  for (const dtype of ['f32', 'bf16', 'e4m3fn', 'e5m2'] as const) {
    const w = kvWorkload(dtype, 80, TOKENS);
    writeKv(w.layer, w.key, w.value, w.slotMapping);
    const out = { key: new Float32Array(w.key.length), value: new Float32Array(w.key.length) };
    bench(`gatherKv ${dtype}`, () => {
      gatherKv(w.layer, w.blockTable, TOKENS, out);
    });
  }
});
