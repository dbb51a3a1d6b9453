/**
 * Decode attention: FP8 (e4m3fn) KV vs bf16 KV vs f32 KV, 8 query / 2 kv heads, contexts 512 / 4096 / 16384,
 * head sizes 64 and 128, default threads. Each group's summary gives the ratios of one run.
 * Correctness of these exact inputs: ./inputs.test.ts.
 */
import { bench, describe } from 'vitest';
import { createBackend } from '../backend.js';
import { ATTN_CONTEXTS, ATTN_DTYPES, ATTN_HEAD_SIZES, decodeAttentionArgs } from './inputs.js';

const cpu = createBackend();

for (const hs of ATTN_HEAD_SIZES) {
  for (const ctx of ATTN_CONTEXTS) {
    describe(`decode attention ctx=${ctx} head=${hs} (8 q / 2 kv heads, ${cpu.isa}, ${cpu.threads} threads)`, () => {
      for (const dtype of ATTN_DTYPES) {
        const args = decodeAttentionArgs(dtype, ctx, hs, cpu);
        bench(`${dtype} KV`, () => cpu.pagedAttention(args), { time: 400, warmupTime: 100 });
      }
    });
  }
}
