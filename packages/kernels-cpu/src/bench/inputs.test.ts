import { createReferenceBackend } from '@kvq/kernels';
import { DEFAULT_TOLERANCES, compareOutput } from '@kvq/kernels/testing';
import { describe, expect, it } from 'vitest';
import { cpuAvailability, createBackend } from '../backend.js';
import { ATTN_DTYPES, ATTN_HEAD_SIZES, decodeAttentionArgs, linearInputs, LINEAR_DTYPES } from './inputs.js';

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
