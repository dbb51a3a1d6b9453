/**
 * Bad-input cases: every backend must reject them with the same {@link KernelError} code and argument name
 * (native facades get this for free by calling the shared `validate*` helpers before the native call), and must
 * not write anything.
 * @module
 */
import type { KernelBackend, KernelErrorCode, KernelOpName, WeightMatrix } from '../contract.js';
import { buildRopeTable } from '../rope.js';
import { makeKvCache } from './random.js';

/** One bad-input case. */
export interface BadInputCase {
  readonly op: KernelOpName;
  readonly label: string;
  /** Expected `KernelError.code`. */
  readonly code: KernelErrorCode;
  /** Expected `KernelError.argument`. */
  readonly argument: string;
  /** Call the op on `backend` with the bad input (it must throw). */
  call(backend: KernelBackend): unknown;
}

/** A failed bad-input expectation. */
export interface BadInputFailure {
  readonly label: string;
  readonly message: string;
}

const f32 = (n: number): Float32Array => new Float32Array(n).fill(0.5);
const w = (rows: number, cols: number): WeightMatrix => ({ dtype: 'f32', data: f32(rows * cols), rows, cols });
const table = buildRopeTable({ rotaryDim: 8, theta: 10000, maxPositions: 8 });
const u8 = (n: number): Uint8Array => new Uint8Array(n);
/** A quantized weight `[rows, cols]` with `over` replacing fields (the base is valid for its dtype). */
function qw(dtype: WeightMatrix['dtype'], rows: number, cols: number, over: Record<string, unknown> = {}): WeightMatrix {
  const base: Record<string, unknown> = { dtype, rows, cols };
  const blocks: Record<string, [number, number]> = {
    q8_0: [32, 34], q4_0: [32, 18], q4_1: [32, 20], q5_0: [32, 22], q5_1: [32, 24], q4_k: [256, 144], q5_k: [256, 176], q6_k: [256, 210],
  };
  const b = blocks[dtype];
  if (b) base['data'] = u8(rows * Math.ceil(cols / b[0]) * b[1]);
  else if (dtype === 'fp8_e4m3') Object.assign(base, { data: u8(rows * cols), scale: f32(rows) });
  else if (dtype === 'int8') Object.assign(base, { data: new Int8Array(rows * cols), scale: f32(rows) });
  else if (dtype === 'int4') Object.assign(base, { data: u8((rows * cols) >> 1), scale: f32((rows * cols) / 16), groupSize: 16 });
  return { ...base, ...over } as unknown as WeightMatrix;
}
/** `linear` of one row through a weight (the weight is the bad part). */
const lin = (weight: WeightMatrix) => (b: KernelBackend) => b.linear({ x: f32(weight.cols), weight, out: f32(weight.rows), rows: 1 });

function attnArgs(over: Record<string, unknown> = {}, cacheOver: Record<string, unknown> = {}): never {
  const cache = {
    ...makeKvCache({ dtype: 'e4m3fn', numBlocks: 4, blockSize: 4, numKvHeads: 2, headSize: 8, numHeads: 4, scales: 'head' }),
    ...cacheOver,
  };
  return {
    query: f32(3 * 4 * 8),
    out: f32(3 * 4 * 8),
    cache,
    queryStartLoc: Int32Array.of(0, 2, 3),
    seqLens: Int32Array.of(2, 5),
    blockTables: Int32Array.of(0, 1, 2, 3),
    maxBlocksPerSeq: 2,
    numSeqs: 2,
    numHeads: 4,
    ...over,
  } as never;
}

function reshapeArgs(over: Record<string, unknown> = {}, cacheOver: Record<string, unknown> = {}): never {
  const cache = { ...makeKvCache({ dtype: 'e5m2', numBlocks: 2, blockSize: 4, numKvHeads: 2, headSize: 8, scales: 'head' }), ...cacheOver };
  return { key: f32(3 * 16), value: f32(3 * 16), slotMapping: Int32Array.of(0, -1, 7), numTokens: 3, cache, ...over } as never;
}

/**
 * Every bad-input case (about 70), covering shapes, typed-array kinds, ranges, scales and options of every op, and
 * the quantized weight dtypes (block multiples, truncated blocks, scale / zero-point / group fields).
 */
export function badInputCases(): BadInputCase[] {
  const c = (
    op: KernelOpName,
    label: string,
    code: KernelErrorCode,
    argument: string,
    call: (b: KernelBackend) => unknown,
  ): BadInputCase => ({ op, label, code, argument, call });
  return [
    c('linear', 'x too short', 'SHAPE_MISMATCH', 'x', (b) => b.linear({ x: f32(5), weight: w(3, 4), out: f32(6), rows: 2 })),
    c('linear', 'out too short', 'SHAPE_MISMATCH', 'out', (b) => b.linear({ x: f32(8), weight: w(3, 4), out: f32(5), rows: 2 })),
    c('linear', "activations 'q8' on a dense weight", 'INVALID_ARGUMENT', 'activations', (b) =>
      b.linear({ x: f32(8), weight: w(3, 4), out: f32(6), rows: 2, activations: 'q8' }),
    ),
    c('linear', "activations 'q16' on an int8 weight", 'INVALID_ARGUMENT', 'activations', (b) =>
      b.linear({ x: f32(8), weight: { dtype: 'int8', data: new Int8Array(12), rows: 3, cols: 4, scale: Float32Array.of(1) }, out: f32(6), rows: 2, activations: 'q16' }),
    ),
    c('linear', "activationScale with activations 'q16' on int4", 'INVALID_ARGUMENT', 'activationScale', (b) =>
      b.linear({ x: f32(8), weight: { dtype: 'int4', data: new Uint8Array(6), rows: 3, cols: 4, scale: new Float32Array(3).fill(1), groupSize: 4 }, out: f32(6), rows: 2, activations: 'q16', activationScale: 0.5 }),
    ),
    c('linear', 'activationScale with float activations on int8', 'INVALID_ARGUMENT', 'activationScale', (b) =>
      b.linear({ x: f32(8), weight: { dtype: 'int8', data: new Int8Array(12), rows: 3, cols: 4, scale: Float32Array.of(1) }, out: f32(6), rows: 2, activationScale: 0.5 }),
    ),
    c('linear', 'activationScale 0 on int8 with q8', 'INVALID_ARGUMENT', 'activationScale', (b) =>
      b.linear({ x: f32(8), weight: { dtype: 'int8', data: new Int8Array(12), rows: 3, cols: 4, scale: Float32Array.of(1) }, out: f32(6), rows: 2, activations: 'q8', activationScale: 0 }),
    ),
    c('linear', "activations 'q4'", 'INVALID_ARGUMENT', 'activations', (b) =>
      b.linear({ x: f32(8), weight: w(3, 4), out: f32(6), rows: 2, activations: 'q4' as never }),
    ),
    c('linear', 'rows 0', 'INVALID_ARGUMENT', 'rows', (b) => b.linear({ x: f32(8), weight: w(3, 4), out: f32(6), rows: 0 })),
    c('linear', 'rows fractional', 'INVALID_ARGUMENT', 'rows', (b) => b.linear({ x: f32(8), weight: w(3, 4), out: f32(6), rows: 1.5 })),
    c('linear', 'x is a Float64Array', 'WRONG_ARRAY_TYPE', 'x', (b) =>
      b.linear({ x: new Float64Array(8) as never, weight: w(3, 4), out: f32(6), rows: 2 }),
    ),
    c('linear', 'bf16 weight stored as Float32Array', 'WRONG_ARRAY_TYPE', 'weight.data', (b) =>
      b.linear({ x: f32(4), weight: { dtype: 'bf16', data: f32(12), rows: 3, cols: 4 }, out: f32(3), rows: 1 }),
    ),
    c('linear', 'weight data longer than rows*cols', 'SHAPE_MISMATCH', 'weight.data', (b) =>
      b.linear({ x: f32(4), weight: { dtype: 'f32', data: f32(13), rows: 3, cols: 4 }, out: f32(3), rows: 1 }),
    ),
    c('linear', 'unknown weight dtype', 'INVALID_ARGUMENT', 'weight.dtype', (b) =>
      b.linear({ x: f32(4), weight: { dtype: 'f64' as never, data: f32(12), rows: 3, cols: 4 }, out: f32(3), rows: 1 }),
    ),
    c('linear', 'q4_0 cols not a multiple of 32', 'SHAPE_MISMATCH', 'weight.cols', lin(qw('q4_0', 2, 48))),
    c('linear', 'q4_k cols not a multiple of 256', 'SHAPE_MISMATCH', 'weight.cols', lin(qw('q4_k', 2, 128))),
    c('linear', 'q8_0 blocks truncated by one byte', 'SHAPE_MISMATCH', 'weight.data', lin(qw('q8_0', 2, 64, { data: u8(2 * 2 * 34 - 1) }))),
    c('linear', 'q5_k blocks one block long', 'SHAPE_MISMATCH', 'weight.data', lin(qw('q5_k', 2, 256, { data: u8(2 * 176 + 176) }))),
    c('linear', 'q6_k blocks as Int8Array', 'WRONG_ARRAY_TYPE', 'weight.data', lin(qw('q6_k', 1, 256, { data: new Int8Array(210) }))),
    c('linear', 'q8_0 with a scale array', 'INVALID_ARGUMENT', 'weight.scale', lin(qw('q8_0', 1, 32, { scale: f32(1) }))),
    c('linear', 'f16 with a groupSize', 'INVALID_ARGUMENT', 'weight.groupSize', (b) =>
      b.linear({ x: f32(4), weight: { dtype: 'f16', data: new Uint16Array(12), rows: 3, cols: 4, groupSize: 4 }, out: f32(3), rows: 1 }),
    ),
    c('linear', 'fp8_e4m3 without a scale', 'WRONG_ARRAY_TYPE', 'weight.scale', lin(qw('fp8_e4m3', 2, 8, { scale: undefined }))),
    c('linear', 'fp8_e4m3 scale neither [1] nor [rows]', 'INVALID_SCALE', 'weight.scale', lin(qw('fp8_e4m3', 2, 8, { scale: f32(3) }))),
    c('linear', 'fp8_e4m3 zero row scale', 'INVALID_SCALE', 'weight.scale[1]', lin(qw('fp8_e4m3', 2, 8, { scale: Float32Array.of(1, 0) }))),
    c('linear', 'fp8_e4m3 codes as Int8Array', 'WRONG_ARRAY_TYPE', 'weight.data', lin(qw('fp8_e4m3', 2, 8, { data: new Int8Array(16) }))),
    c('linear', 'int8 values as Uint8Array', 'WRONG_ARRAY_TYPE', 'weight.data', lin(qw('int8', 2, 8, { data: u8(16) }))),
    c('linear', 'int8 NaN scale', 'INVALID_SCALE', 'weight.scale[0]', lin(qw('int8', 2, 8, { scale: Float32Array.of(NaN, 1) }))),
    c('linear', 'int8 with zero points', 'INVALID_ARGUMENT', 'weight.zeroPoint', lin(qw('int8', 2, 8, { zeroPoint: new Int8Array(2) }))),
    c('linear', 'int4 without groupSize', 'INVALID_ARGUMENT', 'weight.groupSize', lin(qw('int4', 2, 32, { groupSize: undefined }))),
    c('linear', 'int4 groupSize not dividing cols', 'INVALID_ARGUMENT', 'weight.groupSize', lin(qw('int4', 2, 32, { groupSize: 12 }))),
    c('linear', 'int4 odd cols', 'SHAPE_MISMATCH', 'weight.cols', lin(qw('int4', 2, 31, { data: u8(31) }))),
    c('linear', 'int4 nibbles one byte short', 'SHAPE_MISMATCH', 'weight.data', lin(qw('int4', 2, 32, { data: u8(31) }))),
    c('linear', 'int4 scale of the wrong length', 'INVALID_SCALE', 'weight.scale', lin(qw('int4', 2, 32, { scale: f32(2) }))),
    c('linear', 'int4 negative group scale', 'INVALID_SCALE', 'weight.scale[3]', lin(qw('int4', 2, 32, { scale: Float32Array.of(1, 1, 1, -1) }))),
    c('linear', 'int4 zero points as Uint8Array', 'WRONG_ARRAY_TYPE', 'weight.zeroPoint', lin(qw('int4', 2, 32, { zeroPoint: u8(4) }))),
    c('linear', 'int4 zero points missing a group', 'SHAPE_MISMATCH', 'weight.zeroPoint', lin(qw('int4', 2, 32, { zeroPoint: new Int8Array(3) }))),
    c('linear', 'int4 zero point 8 (outside [-8, 7])', 'INVALID_ARGUMENT', 'weight.zeroPoint[1]', lin(qw('int4', 2, 32, { zeroPoint: Int8Array.of(0, 8, 0, 0) }))),
    c('embedding', 'q4_k table truncated', 'SHAPE_MISMATCH', 'table.data', (b) =>
      b.embedding({ table: qw('q4_k', 3, 256, { data: u8(3 * 144 - 10) }), ids: Int32Array.of(0), out: f32(256), numTokens: 1 }),
    ),
    c('embedding', 'int4 table without scales', 'WRONG_ARRAY_TYPE', 'table.scale', (b) =>
      b.embedding({ table: qw('int4', 3, 32, { scale: undefined }), ids: Int32Array.of(0), out: f32(32), numTokens: 1 }),
    ),
    c('linear', 'bias too short', 'SHAPE_MISMATCH', 'bias', (b) => b.linear({ x: f32(4), weight: w(3, 4), out: f32(3), rows: 1, bias: f32(2) })),
    c('linear', 'out aliases x', 'INVALID_ARGUMENT', 'out', (b) => {
      const x = f32(16);
      return b.linear({ x, weight: w(4, 4), out: x, rows: 1 });
    }),
    c('rmsNorm', 'eps NaN', 'INVALID_ARGUMENT', 'eps', (b) => b.rmsNorm({ x: f32(8), weight: f32(4), out: f32(8), rows: 2, hidden: 4, eps: NaN })),
    c('rmsNorm', 'weight too short', 'SHAPE_MISMATCH', 'weight', (b) =>
      b.rmsNorm({ x: f32(8), weight: f32(3), out: f32(8), rows: 2, hidden: 4, eps: 1e-5 }),
    ),
    c('rmsNorm', 'out partially overlaps x', 'INVALID_ARGUMENT', 'out', (b) => {
      const buf = f32(12);
      return b.rmsNorm({ x: buf.subarray(0, 8), weight: f32(4), out: buf.subarray(2, 10), rows: 2, hidden: 4, eps: 1e-5 });
    }),
    c('add', 'b too short', 'SHAPE_MISMATCH', 'b', (b) => b.add({ a: f32(4), b: f32(3), out: f32(4), length: 4 })),
    c('add', 'negative length', 'INVALID_ARGUMENT', 'length', (b) => b.add({ a: f32(4), b: f32(4), out: f32(4), length: -1 })),
    c('geluTanhAndMul', 'out too short', 'SHAPE_MISMATCH', 'out', (b) =>
      b.geluTanhAndMul({ gate: f32(4), up: f32(4), out: f32(3), length: 4 }),
    ),
    c('siluAndMul', 'up is an Array', 'WRONG_ARRAY_TYPE', 'up', (b) =>
      b.siluAndMul({ gate: f32(4), up: [1, 2, 3, 4] as never, out: f32(4), length: 4 }),
    ),
    c('embedding', 'id past the vocabulary', 'OUT_OF_RANGE', 'ids[2]', (b) =>
      b.embedding({ table: w(5, 4), ids: Int32Array.of(0, 4, 5), out: f32(12), numTokens: 3 }),
    ),
    c('embedding', 'negative id', 'OUT_OF_RANGE', 'ids[0]', (b) => b.embedding({ table: w(5, 4), ids: Int32Array.of(-1), out: f32(4), numTokens: 1 })),
    c('embedding', 'ids as Uint32Array', 'WRONG_ARRAY_TYPE', 'ids', (b) =>
      b.embedding({ table: w(5, 4), ids: Uint32Array.of(1) as never, out: f32(4), numTokens: 1 }),
    ),
    c('rope', 'position past the table', 'OUT_OF_RANGE', 'positions[1]', (b) =>
      b.rope({ query: f32(16), key: f32(16), positions: Int32Array.of(0, 8), numTokens: 2, numHeads: 1, numKvHeads: 1, headSize: 8, table, style: 'rotate_half' }),
    ),
    c('rope', 'unknown style', 'INVALID_ARGUMENT', 'style', (b) =>
      b.rope({ query: f32(8), key: f32(8), positions: Int32Array.of(0), numTokens: 1, numHeads: 1, numKvHeads: 1, headSize: 8, table, style: 'neox' as never }),
    ),
    c('rope', 'rotaryDim > headSize', 'SHAPE_MISMATCH', 'table.rotaryDim', (b) =>
      b.rope({ query: f32(6), key: f32(6), positions: Int32Array.of(0), numTokens: 1, numHeads: 1, numKvHeads: 1, headSize: 6, table, style: 'rotate_half' }),
    ),
    c('softmax', 'cols 0', 'INVALID_ARGUMENT', 'cols', (b) => b.softmax({ x: f32(4), out: f32(4), rows: 1, cols: 0 })),
    c('argmax', 'cols 0', 'INVALID_ARGUMENT', 'cols', (b) => b.argmax({ x: f32(4), out: new Int32Array(1), rows: 1, cols: 0 })),
    c('argmax', 'out is a Float32Array', 'WRONG_ARRAY_TYPE', 'out', (b) =>
      b.argmax({ x: f32(8), out: f32(2) as unknown as Int32Array, rows: 2, cols: 4 }),
    ),
    c('argmax', 'out too short', 'SHAPE_MISMATCH', 'out', (b) => b.argmax({ x: f32(8), out: new Int32Array(1), rows: 2, cols: 4 })),
    c('reshapeAndCache', 'slot past the cache', 'OUT_OF_RANGE', 'slotMapping[2]', (b) =>
      b.reshapeAndCache(reshapeArgs({ slotMapping: Int32Array.of(0, 1, 8) })),
    ),
    c('reshapeAndCache', 'NaN k scale', 'INVALID_SCALE', 'cache.kScale[1]', (b) =>
      b.reshapeAndCache(reshapeArgs({}, { kScale: Float32Array.of(1, NaN) })),
    ),
    c('reshapeAndCache', 'zero v scale', 'INVALID_SCALE', 'cache.vScale[0]', (b) =>
      b.reshapeAndCache(reshapeArgs({}, { vScale: Float32Array.of(0, 1) })),
    ),
    c('reshapeAndCache', 'scale count neither 1 nor numKvHeads', 'INVALID_SCALE', 'cache.kScale', (b) =>
      b.reshapeAndCache(reshapeArgs({}, { kScale: Float32Array.of(1, 1, 1) })),
    ),
    c('reshapeAndCache', 'k and v scale counts differ', 'INVALID_SCALE', 'cache.vScale', (b) =>
      b.reshapeAndCache(reshapeArgs({}, { vScale: Float32Array.of(1) })),
    ),
    c('reshapeAndCache', 'fp8 pool as Uint16Array', 'WRONG_ARRAY_TYPE', 'cache.key', (b) =>
      b.reshapeAndCache(reshapeArgs({}, { key: new Uint16Array(64) })),
    ),
    c('reshapeAndCache', 'pool shorter than its dims', 'SHAPE_MISMATCH', 'cache.value', (b) =>
      b.reshapeAndCache(reshapeArgs({}, { value: new Uint8Array(63) })),
    ),
    c('reshapeAndCache', 'unknown cache dtype', 'INVALID_ARGUMENT', 'cache.dtype', (b) =>
      b.reshapeAndCache(reshapeArgs({}, { dtype: 'fp8' })),
    ),
    c('reshapeAndCache', 'key too short', 'SHAPE_MISMATCH', 'key', (b) => b.reshapeAndCache(reshapeArgs({ key: f32(47) }))),
    // write-time-scaled KV dtypes (docs/spec/kv-dtypes.md): rejected by the shared validation before any kernel
    c('reshapeAndCache', 'nvfp4 head size not a multiple of 16', 'INVALID_ARGUMENT', 'cache.headSize', (b) =>
      b.reshapeAndCache(reshapeArgs({}, { ...makeKvCache({ dtype: 'nvfp4', numBlocks: 2, blockSize: 4, numKvHeads: 2, headSize: 16 }), headSize: 8 })),
    ),
    c('reshapeAndCache', 'int8_per_token_head pool one block short', 'SHAPE_MISMATCH', 'cache.value', (b) => {
      const q = makeKvCache({ dtype: 'int8_per_token_head', numBlocks: 2, blockSize: 4, numKvHeads: 2, headSize: 8 });
      return b.reshapeAndCache(reshapeArgs({}, { ...q, value: q.value.subarray(0, q.value.length / 2) }));
    }),
    c('reshapeAndCache', 'mixed cache: a V pool sized for the K dtype', 'SHAPE_MISMATCH', 'cache.value', (b) => {
      const m = makeKvCache({ dtype: 'int8_per_token_head', valueDtype: 'int4_g32_f16', numBlocks: 2, blockSize: 4, numKvHeads: 2, headSize: 32 });
      return b.reshapeAndCache(reshapeArgs({ key: f32(3 * 64), value: f32(3 * 64) }, { ...m, value: new Uint8Array(m.key.length) }));
    }),
    c('reshapeAndCache', 'nvfp4 with per-head tensor scales', 'INVALID_SCALE', 'cache.kScale', (b) =>
      b.reshapeAndCache(
        reshapeArgs({}, { ...makeKvCache({ dtype: 'nvfp4', numBlocks: 2, blockSize: 4, numKvHeads: 2, headSize: 16 }), kScale: Float32Array.of(1, 1) }),
      ),
    ),
    c('pagedAttention', 'fp8Query on an int8_per_token_head cache', 'INVALID_ARGUMENT', 'fp8Query', (b) =>
      b.pagedAttention(
        attnArgs({ fp8Query: {} }, { ...makeKvCache({ dtype: 'int8_per_token_head', numBlocks: 4, blockSize: 4, numKvHeads: 2, headSize: 8, numHeads: 4 }) }),
      ),
    ),

    c('pagedAttention', 'numHeads not a multiple of numKvHeads', 'SHAPE_MISMATCH', 'numHeads', (b) =>
      b.pagedAttention(attnArgs({ numHeads: 3 })),
    ),
    c('pagedAttention', 'seqLen shorter than the query', 'INVALID_ARGUMENT', 'seqLens[0]', (b) =>
      b.pagedAttention(attnArgs({ seqLens: Int32Array.of(1, 5) })),
    ),
    c('pagedAttention', 'decreasing queryStartLoc', 'INVALID_ARGUMENT', 'queryStartLoc[2]', (b) =>
      b.pagedAttention(attnArgs({ queryStartLoc: Int32Array.of(0, 2, 1) })),
    ),
    c('pagedAttention', 'block id past the cache', 'OUT_OF_RANGE', 'blockTables[3]', (b) =>
      b.pagedAttention(attnArgs({ blockTables: Int32Array.of(0, -1, 2, 4) })),
    ),
    c('pagedAttention', 'context longer than the block table row', 'OUT_OF_RANGE', 'seqLens[1]', (b) =>
      b.pagedAttention(attnArgs({ seqLens: Int32Array.of(2, 9) })),
    ),
    c('pagedAttention', 'infinite softmaxScale', 'INVALID_ARGUMENT', 'softmaxScale', (b) =>
      b.pagedAttention(attnArgs({ softmaxScale: Infinity })),
    ),
    c('pagedAttention', 'slidingWindow 0', 'INVALID_ARGUMENT', 'slidingWindow', (b) => b.pagedAttention(attnArgs({ slidingWindow: 0 }))),
    c('pagedAttention', 'lse shorter than numTokens x numHeads', 'SHAPE_MISMATCH', 'lse', (b) => b.pagedAttention(attnArgs({ lse: new Float32Array(1) }))),
    c('pagedAttention', 'lse a Float64Array', 'WRONG_ARRAY_TYPE', 'lse', (b) =>
      b.pagedAttention(attnArgs({ lse: new Float64Array(64) as unknown as Float32Array })),
    ),
    c('pagedAttention', 'negative q scale in fp8-query mode', 'INVALID_SCALE', 'cache.qScale[2]', (b) =>
      b.pagedAttention(attnArgs({ fp8Query: {} }, { qScale: Float32Array.of(1, 1, -1, 1) })),
    ),
    c('pagedAttention', 'fp8-query mode on a bf16 cache', 'INVALID_ARGUMENT', 'fp8Query', (b) =>
      b.pagedAttention(
        attnArgs({ fp8Query: {} }, { dtype: 'bf16', valueDtype: 'bf16', key: new Uint16Array(256), value: new Uint16Array(256) }),
      ),
    ),
    c('pagedAttention', 'fp8-query mode on a mixed e4m3fn / e5m2 cache', 'INVALID_ARGUMENT', 'fp8Query', (b) =>
      b.pagedAttention(attnArgs({ fp8Query: {} }, { valueDtype: 'e5m2' })),
    ),
    c('pagedAttention', 'query too short', 'SHAPE_MISMATCH', 'query', (b) => b.pagedAttention(attnArgs({ query: f32(95) }))),
    c('amaxPerHead', 'out too short', 'SHAPE_MISMATCH', 'out', (b) =>
      b.amaxPerHead({ x: f32(16), out: f32(1), numTokens: 2, numHeads: 2, headSize: 4 }),
    ),
    c('amaxTensor', 'length beyond x', 'SHAPE_MISMATCH', 'x', (b) => b.amaxTensor({ x: f32(4), length: 5 })),
    c('quantizeFp8', 'scale count mismatch', 'INVALID_SCALE', 'scales', (b) =>
      b.quantizeFp8({ src: f32(16), out: new Uint8Array(16), length: 16, scales: Float32Array.of(1), layout: { granularity: 'head', numHeads: 2, headSize: 4 }, format: 'e4m3fn' }),
    ),
    c('quantizeFp8', 'infinite scale', 'INVALID_SCALE', 'scales[0]', (b) =>
      b.quantizeFp8({ src: f32(4), out: new Uint8Array(4), length: 4, scales: Float32Array.of(Infinity), layout: { granularity: 'tensor' }, format: 'e5m2' }),
    ),
    c('quantizeFp8', 'unknown format', 'INVALID_ARGUMENT', 'format', (b) =>
      b.quantizeFp8({ src: f32(4), out: new Uint8Array(4), length: 4, scales: Float32Array.of(1), layout: { granularity: 'tensor' }, format: 'e3m4' as never }),
    ),
    c('dequantizeFp8', 'length not whole tokens', 'SHAPE_MISMATCH', 'length', (b) =>
      b.dequantizeFp8({ src: new Uint8Array(10), out: f32(10), length: 10, scales: Float32Array.of(1), layout: { granularity: 'token', tokenSize: 4 }, format: 'e4m3fn' }),
    ),
    c('dequantizeFp8', 'out as Uint8Array', 'WRONG_ARRAY_TYPE', 'out', (b) =>
      b.dequantizeFp8({ src: new Uint8Array(4), out: new Uint8Array(4) as never, length: 4, scales: Float32Array.of(1), layout: { granularity: 'tensor' }, format: 'e4m3fn' }),
    ),
  ];
}

/**
 * Check that `backend` rejects every {@link badInputCases} case with the expected code and argument.
 * Errors are matched by `name === 'KernelError'`, `code` and `argument` (not `instanceof`, so a second copy of
 * this package in a dependency tree still matches). Returns the failures (empty = all good).
 */
export function runBadInputSuite(backend: KernelBackend, cases: readonly BadInputCase[] = badInputCases()): BadInputFailure[] {
  const failures: BadInputFailure[] = [];
  for (const c of cases) {
    try {
      c.call(backend);
      failures.push({ label: `${c.op}: ${c.label}`, message: `did not throw (expected ${c.code} on ${c.argument})` });
    } catch (e) {
      const err = e as { name?: unknown; code?: unknown; argument?: unknown; message?: unknown };
      if (err?.name !== 'KernelError' || err.code !== c.code || err.argument !== c.argument) {
        failures.push({
          label: `${c.op}: ${c.label}`,
          message: `threw ${String(err?.name)} ${String(err?.code)} on ${String(err?.argument)} (${String(err?.message)}); expected KernelError ${c.code} on ${c.argument}`,
        });
      }
    }
  }
  return failures;
}
