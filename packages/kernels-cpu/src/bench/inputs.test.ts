import { createReferenceBackend } from '@kvq/kernels';
import { DEFAULT_TOLERANCES, compareOutput } from '@kvq/kernels/testing';
import { describe, expect, it } from 'vitest';
import { cpuAvailability, createBackend } from '../backend.js';
import { ATTN_DTYPES, ATTN_HEAD_SIZES, attentionKvBytes, decodeAttentionArgs, decodeAttentionLayerArgs, linearInputs, LINEAR_DTYPES } from './inputs.js';

const avail = cpuAvailability();
const reference = createReferenceBackend();

describe.skipIf(!avail.available)('benchmark inputs give correct native results', () => {
  it('decode attention (512-token context, every benchmarked dtype and head size) matches the reference', () => {
    const b = createBackend();
    try {
      for (const dtype of ATTN_DTYPES) {
        for (const hs of ATTN_HEAD_SIZES) {
          const args = decodeAttentionArgs(dtype, 512, hs, b);
          const want = new Float32Array(args.out.length);
          reference.pagedAttention({ ...args, out: want });
          b.pagedAttention(args);
          expect(compareOutput('out', args.out, want, DEFAULT_TOLERANCES.pagedAttention)?.message, `${dtype} hs=${hs}`).toBeUndefined();
        }
      }
    } finally {
      b.dispose();
    }
  });

  it('the streaming benchmark runs distinct copies of one layer: same results, separate memory', () => {
    const b = createBackend();
    try {
      for (const dtype of ATTN_DTYPES) {
        const layers = decodeAttentionLayerArgs(dtype, 512, 64, b, 3);
        expect(layers).toHaveLength(3);
        expect(layers[1]!.cache.key.buffer).not.toBe(layers[0]!.cache.key.buffer);
        expect(layers[2]!.cache.value.buffer).not.toBe(layers[1]!.cache.value.buffer);
        expect(layers[0]!.cache.key.byteLength).toBeGreaterThanOrEqual(attentionKvBytes(dtype, 512, 64) / 2);
        for (const a of layers) b.pagedAttention(a);
        expect(layers[2]!.out).toEqual(layers[0]!.out);
        expect(layers[0]!.out.some((x) => x !== 0)).toBe(true);
      }
    } finally {
      b.dispose();
    }
  });

  it('GEMV and GEMM on the benchmark weights (a 256-row slice) match the reference', () => {
    const b = createBackend();
    try {
      for (const dtype of LINEAR_DTYPES) {
        for (const rows of [1, 128]) {
          const inp = linearInputs(dtype, rows, 256);
          const want = new Float32Array(inp.out.length);
          reference.linear({ ...inp, out: want });
          b.linear(inp);
          expect(compareOutput('out', inp.out, want, DEFAULT_TOLERANCES.linear)?.message, `${dtype} rows=${rows}`).toBeUndefined();
        }
      }
    } finally {
      b.dispose();
    }
  });
});
