/**
 * Decode attention: FP8 (e4m3fn) KV vs bf16 KV vs f32 KV, 8 query / 2 kv heads, contexts 512 / 4096 / 16384,
 * head sizes 64 and 128, default threads. Each group's summary gives the ratios of one run.
 *
 * Two settings:
 * - `hot`: the same layer's cache every call, so from 512 to 4096 tokens it stays in L2/L3 between calls (the
 *   kernel's compute cost alone);
 * - `stream`: one decode step over 32 layers' caches in order (distinct memory, as a forward pass reads them:
 *   each layer's K/V once per step), where the bytes per token decide once the caches outgrow the LLC.
 *
 * Correctness of these exact inputs: ./inputs.test.ts.
 */
import { bench, describe } from 'vitest';
import { createBackend } from '../backend.js';
import { ATTN_CONTEXTS, ATTN_DTYPES, ATTN_HEAD_SIZES, ATTN_STREAM_LAYERS, decodeAttentionArgs, decodeAttentionLayerArgs } from './inputs.js';

const cpu = createBackend();
const mode = process.env.KVQ_BENCH_ATTN ?? 'hot,stream';

let streamKey = '';
let streamArgs: ReturnType<typeof decodeAttentionLayerArgs> = [];
function streamLayers(dtype: (typeof ATTN_DTYPES)[number], ctx: number, hs: number) {
  const key = `${dtype}/${ctx}/${hs}`;
  if (key !== streamKey) {
    streamArgs = [];
    streamArgs = decodeAttentionLayerArgs(dtype, ctx, hs, cpu);
    streamKey = key;
  }
  return streamArgs;
}

for (const hs of ATTN_HEAD_SIZES) {
  for (const ctx of ATTN_CONTEXTS) {
    if (mode.includes('hot')) {
      describe(`decode attention hot ctx=${ctx} head=${hs} (8 q / 2 kv heads, ${cpu.isa}, ${cpu.threads} threads)`, () => {
        for (const dtype of ATTN_DTYPES) {
          const args = decodeAttentionArgs(dtype, ctx, hs, cpu);
          bench(`${dtype} KV`, () => cpu.pagedAttention(args), { time: 400, warmupTime: 100 });
        }
      });
    }
    if (mode.includes('stream')) {
      describe(`decode attention stream ctx=${ctx} head=${hs} x ${ATTN_STREAM_LAYERS} layers (8 q / 2 kv heads, ${cpu.isa}, ${cpu.threads} threads)`, () => {
        for (const dtype of ATTN_DTYPES) {
          // Built on first use (inside warm-up) and dropped when the next bench starts: one set in memory at a time.
          bench(`${dtype} KV`, () => {
            for (const args of streamLayers(dtype, ctx, hs)) cpu.pagedAttention(args);
          }, { time: 600, warmupTime: 100 });
        }
      });
    }
  }
}
