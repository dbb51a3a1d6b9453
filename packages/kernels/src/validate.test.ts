import { describe, expect, it } from 'vitest';
import { KernelError, isKernelError } from './errors.js';
import { createReferenceBackend } from './reference/backend.js';
import { buildRopeTable } from './rope.js';
import { badInputCases } from './testing/bad-input.js';
import { makeKvCache } from './testing/random.js';
import { QUANTIZED_WEIGHT_DTYPES, weightDataLength } from './quant/layout.js';
import { quantizeMatrix } from './quant/quantize.js';
import { checkNoOverlap, qScalePerKvHead, scaleCountFor, validateKvCache, validatePagedAttention, validateWeight } from './validate.js';

const ref = createReferenceBackend();

function caught(fn: () => unknown): KernelError {
  try {
    fn();
  } catch (e) {
    if (e instanceof KernelError) return e;
    throw e;
  }
  throw new Error('expected a KernelError');
}

describe('bad input', () => {
  it.each(badInputCases().map((c) => [`${c.op}: ${c.label}`, c] as const))('%s', (_label, c) => {
    const e = caught(() => c.call(ref));
    expect(e.code).toBe(c.code);
    expect(e.argument).toBe(c.argument);
    expect(e.name).toBe('KernelError');
    // The message names the argument (its base name, before any index or field).
    expect(e.message).toContain(c.argument.split(/[[.]/)[0]!);
    expect(isKernelError(e, c.code)).toBe(true);
  });

  it('validation happens before any write (a bad id late in the batch leaves out untouched)', () => {
    const out = new Float32Array(12).fill(9);
    const table = { dtype: 'f32' as const, data: new Float32Array(20).fill(1), rows: 5, cols: 4 };
    expect(() => ref.embedding({ table, ids: Int32Array.of(0, 1, 5), out, numTokens: 3 })).toThrow(KernelError);
    expect([...out]).toEqual(Array(12).fill(9));
  });

  it('a bad slot late in the batch leaves the cache untouched', () => {
    const cache = makeKvCache({ dtype: 'e4m3fn', numBlocks: 2, blockSize: 2, numKvHeads: 1, headSize: 4 });
    expect(() =>
      ref.reshapeAndCache({ key: new Float32Array(8).fill(1), value: new Float32Array(8).fill(1), slotMapping: Int32Array.of(0, 4), numTokens: 2, cache }),
    ).toThrow(expect.objectContaining({ code: 'OUT_OF_RANGE', argument: 'slotMapping[1]' }));
    expect(cache.key.every((b) => b === 0)).toBe(true);
  });

  it('a bad position late in the batch leaves query and key unrotated', () => {
    const table = buildRopeTable({ rotaryDim: 4, theta: 10000, maxPositions: 4 });
    const q = new Float32Array(8).fill(1);
    const k = new Float32Array(8).fill(1);
    expect(() =>
      ref.rope({ query: q, key: k, positions: Int32Array.of(3, 4), numTokens: 2, numHeads: 1, numKvHeads: 1, headSize: 4, table, style: 'rotate_half' }),
    ).toThrow(expect.objectContaining({ code: 'OUT_OF_RANGE' }));
    expect([...q, ...k].every((v) => v === 1)).toBe(true);
  });

  it('a non-object argument gets INVALID_ARGUMENT, not a TypeError', () => {
    expect(() => ref.linear(undefined as never)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', argument: 'args' }));
    expect(() => ref.linear({ x: new Float32Array(1), weight: null as never, out: new Float32Array(1), rows: 1 })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', argument: 'weight' }),
    );
    expect(() => ref.reshapeAndCache({ key: new Float32Array(1), value: new Float32Array(1), slotMapping: new Int32Array(1), numTokens: 1, cache: 5 as never })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', argument: 'cache' }),
    );
  });
});

describe('helpers', () => {
  it('checkNoOverlap allows disjoint ranges and exact aliasing only when asked', () => {
    const buf = new Float32Array(10);
    expect(() => checkNoOverlap('out', buf.subarray(0, 5), 5, 'x', buf.subarray(5), 5)).not.toThrow();
    expect(() => checkNoOverlap('out', buf, 5, 'x', buf, 5, true)).not.toThrow();
    expect(() => checkNoOverlap('out', buf, 5, 'x', buf, 5)).toThrow(expect.objectContaining({ argument: 'out' }));
    expect(() => checkNoOverlap('out', buf.subarray(1), 5, 'x', buf, 5, true)).toThrow(/partially overlaps/);
    // Different element types over one buffer are compared in bytes.
    const bytes = new Uint8Array(buf.buffer, 20, 4);
    expect(() => checkNoOverlap('out', bytes, 4, 'x', buf, 5)).not.toThrow();
    expect(() => checkNoOverlap('out', bytes, 4, 'x', buf, 6)).toThrow();
    expect(() => checkNoOverlap('out', bytes, 4, 'x', buf.subarray(6), 4)).not.toThrow();
  });

  it('scaleCountFor follows the ScaleLayout of @kvq/fp8', () => {
    expect(scaleCountFor({ granularity: 'tensor' }, 64)).toBe(1);
    expect(scaleCountFor({ granularity: 'head', numHeads: 4, headSize: 8 }, 64)).toBe(4);
    expect(scaleCountFor({ granularity: 'token', tokenSize: 16 }, 64)).toBe(4);
    expect(scaleCountFor({ granularity: 'token_head', numHeads: 4, headSize: 8 }, 64)).toBe(8);
    expect(() => scaleCountFor({ granularity: 'token', tokenSize: 16 }, 60)).toThrow(expect.objectContaining({ code: 'SHAPE_MISMATCH' }));
    expect(() => scaleCountFor({ granularity: 'row' } as never, 60)).toThrow(expect.objectContaining({ argument: 'layout.granularity' }));
  });

  it('qScalePerKvHead broadcasts a per-tensor scale and takes the max over each GQA group', () => {
    expect([...qScalePerKvHead(Float32Array.of(0.5), 8, 2)]).toEqual([0.5, 0.5]);
    expect([...qScalePerKvHead(Float32Array.of(1, 3, 2, 0.5, 4, 4), 6, 3)]).toEqual([3, 2, 4]);
  });

  it('validateKvCache ignores scales of 16/32-bit caches but checks FP8 ones', () => {
    const bf = makeKvCache({ dtype: 'bf16', numBlocks: 1, blockSize: 1, numKvHeads: 2, headSize: 2 });
    expect(validateKvCache('cache', { ...bf, kScale: Float32Array.of(NaN) }).fp8).toBe(false);
    const f8 = makeKvCache({ dtype: 'e4m3fnuz', numBlocks: 1, blockSize: 1, numKvHeads: 2, headSize: 2 });
    expect(() => validateKvCache('cache', { ...f8, kScale: Float32Array.of(NaN) })).toThrow(
      expect.objectContaining({ code: 'INVALID_SCALE', argument: 'cache.kScale[0]' }),
    );
  });

  it('validatePagedAttention resolves defaults', () => {
    const cache = makeKvCache({ dtype: 'f16', numBlocks: 2, blockSize: 4, numKvHeads: 2, headSize: 16 });
    const plan = validatePagedAttention({
      query: new Float32Array(3 * 8 * 16),
      out: new Float32Array(3 * 8 * 16),
      cache,
      queryStartLoc: Int32Array.of(0, 3),
      seqLens: Int32Array.of(5),
      blockTables: Int32Array.of(1, 0),
      maxBlocksPerSeq: 2,
      numSeqs: 1,
      numHeads: 8,
    });
    expect(plan).toMatchObject({ numTokens: 3, groupSize: 4, softmaxScale: 0.25, slidingWindow: 0, fp8Query: false });
  });
});

describe('validateWeight of the quantized dtypes', () => {
  const rows = 3;
  it('accepts a valid matrix of every weight dtype (quantizeMatrix output and dense)', () => {
    const x = Float32Array.from({ length: rows * 512 }, (_, i) => Math.sin(i));
    for (const dtype of QUANTIZED_WEIGHT_DTYPES) {
      const w = quantizeMatrix(x, rows, 512, dtype, dtype === 'int4' ? { symmetric: false, groupSize: 64 } : {});
      expect(validateWeight('weight', w), dtype).toBe(w);
      expect(w.data.length, dtype).toBe(weightDataLength(dtype, rows, 512));
    }
    expect(validateWeight('w', { dtype: 'bf16', rows: 1, cols: 2, data: new Uint16Array(2) }).dtype).toBe('bf16');
  });

  it('names the expected length of truncated blocks in bytes', () => {
    const e = caught(() => validateWeight('weight', { dtype: 'q4_k', rows: 2, cols: 512, data: new Uint8Array(575) }));
    expect(e.code).toBe('SHAPE_MISMATCH');
    expect(e.message).toBe("weight.data has 575 bytes but a [2, 512] 'q4_k' matrix needs exactly 576");
  });

  it('scans scale values once per weight object, again when a field is replaced', () => {
    const w = quantizeMatrix(new Float32Array(64).fill(1), 2, 32, 'int4', { groupSize: 16 });
    validateWeight('weight', w);
    // Contract: weights are immutable. An in-place corruption after the first validation is not rescanned ...
    w.scale![0] = NaN;
    expect(() => validateWeight('weight', w)).not.toThrow();
    // ... but a new object (or a replaced scale array) is.
    const e = caught(() => validateWeight('weight', { ...w }));
    expect([e.code, e.argument]).toEqual(['INVALID_SCALE', 'weight.scale[0]']);
    // Structural checks run on every call.
    const e2 = caught(() => validateWeight('weight', Object.assign(w, { groupSize: 5 })));
    expect([e2.code, e2.argument]).toEqual(['INVALID_ARGUMENT', 'weight.groupSize']);
  });
});
