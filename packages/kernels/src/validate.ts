/**
 * Argument validation shared by every backend facade, so the same bad input raises the same
 * {@link KernelError} (code, argument, message) whichever backend runs the op.
 *
 * Each `validate<Op>` checks types, dimensions, buffer lengths, index ranges and scales, and returns the
 * derived sizes a kernel needs. Validators never write to any buffer.
 * @module
 */
import { CacheError, isKvQuantDtype, kvBlockLayout, type KvBlockLayout, type KvLayerCache } from '@kvq/cache';
import type { Fp8Format, ScaleLayout } from '@kvq/fp8';
import type {
  AddArgs,
  AmaxPerHeadArgs,
  AmaxTensorArgs,
  ArgmaxArgs,
  DequantizeFp8Args,
  EmbeddingArgs,
  GeluTanhAndMulArgs,
  KernelBackend,
  KernelOpName,
  LinearArgs,
  PagedAttentionArgs,
  QuantizeFp8Args,
  ReshapeAndCacheArgs,
  RmsNormArgs,
  RopeArgs,
  RopeTable,
  SiluAndMulArgs,
  SoftmaxArgs,
  WeightMatrix,
} from './contract.js';
import { isDeviceArray, type Activation, type DeviceArray } from './device.js';
import { KernelError } from './errors.js';
import {
  colsMultiple,
  isCompressedDtype,
  isDenseDtype,
  isGgmlDtype,
  isWeightDtype,
  WEIGHT_DTYPES,
  weightArrayKind,
  weightDataLength,
} from './quant/layout.js';

/** The four FP8 formats, in `@kvq/fp8` order. */
export const FP8_DTYPES: readonly Fp8Format[] = ['e4m3fn', 'e5m2', 'e4m3fnuz', 'e5m2fnuz'];

/** True when `dtype` names an FP8 format. */
export function isFp8(dtype: unknown): dtype is Fp8Format {
  return typeof dtype === 'string' && (FP8_DTYPES as readonly string[]).includes(dtype);
}

/** Short printable form of a value for error messages. */
export function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (ArrayBuffer.isView(v)) {
    const tag = (v as unknown as { [Symbol.toStringTag]?: string })[Symbol.toStringTag] ?? 'DataView';
    return `${tag}(${(v as unknown as { length?: number }).length ?? v.byteLength})`;
  }
  if (Array.isArray(v)) return `Array(${v.length})`;
  return typeof v;
}

type ArrayKind = 'Float32Array' | 'Uint16Array' | 'Uint8Array' | 'Int8Array' | 'Int32Array';

/** True when `v` is a typed array of the given kind (works across realms). */
function isKind(v: unknown, kind: ArrayKind): boolean {
  return ArrayBuffer.isView(v) && (v as unknown as { [Symbol.toStringTag]?: string })[Symbol.toStringTag] === kind;
}

/**
 * Require an integer `>= min` (and `<= max` when given). Throws `INVALID_ARGUMENT` naming `name`.
 */
export function checkCount(name: string, value: unknown, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer in [${min}, ${max}]`;
    throw new KernelError('INVALID_ARGUMENT', `${name} must be ${range}, got ${describeValue(value)}`, {
      argument: name,
    });
  }
  return value;
}

function checkArray<T extends ArrayBufferView>(name: string, value: unknown, kind: ArrayKind, needed: number): T {
  if (!isKind(value, kind)) {
    throw new KernelError('WRONG_ARRAY_TYPE', `${name} must be a ${kind}, got ${describeValue(value)}`, {
      argument: name,
    });
  }
  const len = (value as unknown as { length: number }).length;
  if (len < needed) {
    throw new KernelError('SHAPE_MISMATCH', `${name} has ${len} elements but the stated shape needs ${needed}`, {
      argument: name,
    });
  }
  return value as T;
}

/** Require a `Float32Array` with at least `needed` elements (`WRONG_ARRAY_TYPE` / `SHAPE_MISMATCH`). */
export function checkF32(name: string, value: unknown, needed: number): Float32Array {
  return checkArray<Float32Array>(name, value, 'Float32Array', needed);
}

/**
 * Require an activation: a `Float32Array`, or a float32 {@link DeviceArray} (which only a backend with device memory
 * can use; the others refuse it in their own check), with at least `needed` elements.
 */
export function checkActivation(name: string, value: unknown, needed: number): Activation {
  if (!isDeviceArray(value)) return checkF32(name, value, needed);
  if (value.kind !== 'f32') {
    throw new KernelError('WRONG_ARRAY_TYPE', `${name} must be a Float32Array or a float32 device array, got a device array of kind '${value.kind}'`, {
      argument: name,
    });
  }
  if (value.length < needed) {
    throw new KernelError('SHAPE_MISMATCH', `${name} (device) has ${value.length} elements but the stated shape needs ${needed}`, { argument: name });
  }
  return value;
}

/** Require an `Int32Array` with at least `needed` elements. */
export function checkI32(name: string, value: unknown, needed: number): Int32Array {
  return checkArray<Int32Array>(name, value, 'Int32Array', needed);
}

/** Require a `Uint8Array` with at least `needed` elements. */
export function checkU8(name: string, value: unknown, needed: number): Uint8Array {
  return checkArray<Uint8Array>(name, value, 'Uint8Array', needed);
}

/** Require a `Uint16Array` with at least `needed` elements. */
export function checkU16(name: string, value: unknown, needed: number): Uint16Array {
  return checkArray<Uint16Array>(name, value, 'Uint16Array', needed);
}

/**
 * Reject partial overlap of two typed-array ranges (first `aCount` / `bCount` elements). Exact aliasing (same
 * buffer, same start) is allowed only when `allowExactAlias` is true. Throws `INVALID_ARGUMENT` naming `aName`.
 */
export function checkNoOverlap(
  aName: string,
  a: ArrayBufferView | DeviceArray,
  aCount: number,
  bName: string,
  b: ArrayBufferView | DeviceArray,
  bCount: number,
  allowExactAlias = false,
): void {
  if (isDeviceArray(a) || isDeviceArray(b)) {
    // Device arrays are whole allocations (no views): they overlap only when they are the same array.
    if (a !== b || aCount === 0 || bCount === 0 || (allowExactAlias && aCount === bCount)) return;
    throw new KernelError('INVALID_ARGUMENT', allowExactAlias ? `${aName} partially overlaps ${bName}` : `${aName} overlaps ${bName}; the op needs disjoint buffers`, {
      argument: aName,
    });
  }
  if (a.buffer !== b.buffer) return;
  const aBytes = aCount * ((a as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT ?? 1);
  const bBytes = bCount * ((b as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT ?? 1);
  if (aBytes === 0 || bBytes === 0) return;
  const a0 = a.byteOffset;
  const b0 = b.byteOffset;
  if (a0 + aBytes <= b0 || b0 + bBytes <= a0) return;
  if (allowExactAlias && a0 === b0 && aBytes === bBytes) return;
  throw new KernelError(
    'INVALID_ARGUMENT',
    allowExactAlias
      ? `${aName} partially overlaps ${bName}; it may only be the very same range (in place) or disjoint`
      : `${aName} overlaps ${bName}; the op needs disjoint buffers`,
    { argument: aName },
  );
}

/** Require a finite number (`> 0` when `positive`, else `>= 0`). Throws `INVALID_ARGUMENT`. */
export function checkFinite(name: string, value: unknown, positive: boolean): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || (positive ? value <= 0 : value < 0)) {
    throw new KernelError(
      'INVALID_ARGUMENT',
      `${name} must be a finite number ${positive ? '> 0' : '>= 0'}, got ${describeValue(value)}`,
      { argument: name },
    );
  }
  return value;
}

/**
 * Require a scale array of one of the `allowed` lengths whose entries are all finite and `> 0`.
 * Throws `WRONG_ARRAY_TYPE`, or `INVALID_SCALE` (bad length or value, naming `name[i]`).
 */
export function checkScales(name: string, value: unknown, allowed: readonly number[]): Float32Array {
  if (!isKind(value, 'Float32Array')) {
    throw new KernelError('WRONG_ARRAY_TYPE', `${name} must be a Float32Array, got ${describeValue(value)}`, {
      argument: name,
    });
  }
  const s = value as Float32Array;
  if (!allowed.includes(s.length)) {
    throw new KernelError(
      'INVALID_SCALE',
      `${name} must have length ${[...new Set(allowed)].join(' or ')}, got ${s.length}`,
      { argument: name },
    );
  }
  for (let i = 0; i < s.length; i++) {
    const v = s[i]!;
    if (!Number.isFinite(v) || v <= 0) {
      throw new KernelError('INVALID_SCALE', `${name}[${i}] must be finite and > 0, got ${v}`, {
        argument: `${name}[${i}]`,
      });
    }
  }
  return s;
}

/** Field identities of a weight whose value scans (scales, zero points) already passed; see {@link validateWeight}. */
interface CheckedWeight {
  readonly dtype: unknown;
  readonly rows: unknown;
  readonly cols: unknown;
  readonly data: unknown;
  readonly scale: unknown;
  readonly zeroPoint: unknown;
  readonly groupSize: unknown;
}
const checkedWeights = new WeakMap<object, CheckedWeight>();

function sameAsChecked(m: WeightMatrix, c: CheckedWeight | undefined): boolean {
  return (
    c !== undefined &&
    c.dtype === m.dtype &&
    c.rows === m.rows &&
    c.cols === m.cols &&
    c.data === m.data &&
    c.scale === m.scale &&
    c.zeroPoint === m.zeroPoint &&
    c.groupSize === m.groupSize
  );
}

function forbidField(name: string, m: WeightMatrix, field: 'scale' | 'zeroPoint' | 'groupSize', why: string): void {
  if (m[field] !== undefined) {
    throw new KernelError(
      'INVALID_ARGUMENT',
      `${name}.${field} must be absent for dtype '${m.dtype}' (${why}), got ${describeValue(m[field])}`,
      { argument: `${name}.${field}` },
    );
  }
}

/**
 * Validate a {@link WeightMatrix} of any {@link WeightDtype}:
 * - `dtype` one of the weight dtypes; `rows`, `cols` integers `>= 1`; `cols` a multiple of the block size (32 for
 *   `q8_0`..`q5_1`, 256 for the K-quants, 2 for `int4`) -> `SHAPE_MISMATCH` naming `.cols`;
 * - `data` of the dtype's array kind (`Float32Array` f32, `Uint16Array` bf16/f16, `Int8Array` int8, `Uint8Array` GGML
 *   blocks / fp8 codes / packed int4) -> `WRONG_ARRAY_TYPE`; exactly `weightDataLength(dtype, rows, cols)` elements ->
 *   `SHAPE_MISMATCH`;
 * - `fp8_e4m3` / `int8`: `scale` a `Float32Array` of length 1 or `rows`, every entry finite and `> 0`
 *   (`INVALID_SCALE`); no `zeroPoint` / `groupSize`;
 * - `int4`: `groupSize` an integer `>= 1` dividing `cols` (`INVALID_ARGUMENT`); `scale` of length
 *   `rows * cols / groupSize`, finite and `> 0`; optional `zeroPoint` an `Int8Array` of the same length with values in
 *   [-8, 7] (`WRONG_ARRAY_TYPE` / `SHAPE_MISMATCH` / `INVALID_ARGUMENT`);
 * - dense and GGML dtypes: no `scale`, `zeroPoint` or `groupSize` (`INVALID_ARGUMENT`).
 * NOTE: weights are immutable by contract, so the O(n) scans of scale and zero-point values run once per
 * WeightMatrix object (while its fields keep their identities); the structural checks run on every call. GGML block
 * contents (their f16 scales) are not scanned.
 */
export function validateWeight(name: string, w: unknown): WeightMatrix {
  if (w === null || typeof w !== 'object') {
    throw new KernelError('INVALID_ARGUMENT', `${name} must be a WeightMatrix object, got ${describeValue(w)}`, {
      argument: name,
    });
  }
  const m = w as WeightMatrix;
  if (!isWeightDtype(m.dtype)) {
    throw new KernelError(
      'INVALID_ARGUMENT',
      `${name}.dtype must be one of ${WEIGHT_DTYPES.map((d) => `'${d}'`).join(', ')}, got ${describeValue(m.dtype)}`,
      { argument: `${name}.dtype` },
    );
  }
  const dtype = m.dtype;
  const rows = checkCount(`${name}.rows`, m.rows, 1);
  const cols = checkCount(`${name}.cols`, m.cols, 1);
  const mult = colsMultiple(dtype);
  if (cols % mult !== 0) {
    throw new KernelError(
      'SHAPE_MISMATCH',
      `${name}.cols (${cols}) must be a multiple of ${mult} for dtype '${dtype}'`,
      { argument: `${name}.cols` },
    );
  }
  const expected = weightDataLength(dtype, rows, cols);
  checkArray(`${name}.data`, m.data, weightArrayKind(dtype), 0);
  if (m.data.length !== expected) {
    const unit = weightArrayKind(dtype) === 'Uint8Array' ? ' bytes' : ' elements';
    throw new KernelError(
      'SHAPE_MISMATCH',
      `${name}.data has ${m.data.length}${unit} but a [${rows}, ${cols}] '${dtype}' matrix needs exactly ${expected}`,
      { argument: `${name}.data` },
    );
  }
  if (!isCompressedDtype(dtype)) {
    const why = isDenseDtype(dtype) ? 'dense weights carry no scales' : 'GGML blocks carry their own scales';
    forbidField(name, m, 'scale', why);
    forbidField(name, m, 'zeroPoint', why);
    forbidField(name, m, 'groupSize', why);
    return m;
  }
  const scanned = sameAsChecked(m, checkedWeights.get(m));
  if (dtype === 'fp8_e4m3' || dtype === 'int8') {
    forbidField(name, m, 'zeroPoint', 'only int4 has zero points');
    forbidField(name, m, 'groupSize', 'only int4 has groups');
    if (!scanned) checkScales(`${name}.scale`, m.scale, [1, rows]);
    else checkScaleShape(`${name}.scale`, m.scale, [1, rows]);
  } else {
    const g = m.groupSize;
    if (typeof g !== 'number' || !Number.isInteger(g) || g < 1 || cols % g !== 0) {
      throw new KernelError(
        'INVALID_ARGUMENT',
        `${name}.groupSize must be a positive integer dividing cols (${cols}), got ${describeValue(g)}`,
        { argument: `${name}.groupSize` },
      );
    }
    const groups = rows * (cols / g);
    if (!scanned) checkScales(`${name}.scale`, m.scale, [groups]);
    else checkScaleShape(`${name}.scale`, m.scale, [groups]);
    if (m.zeroPoint !== undefined) {
      if (!isKind(m.zeroPoint, 'Int8Array')) {
        throw new KernelError('WRONG_ARRAY_TYPE', `${name}.zeroPoint must be an Int8Array, got ${describeValue(m.zeroPoint)}`, {
          argument: `${name}.zeroPoint`,
        });
      }
      if (m.zeroPoint.length !== groups) {
        throw new KernelError(
          'SHAPE_MISMATCH',
          `${name}.zeroPoint has ${m.zeroPoint.length} elements but [${rows}, ${cols} / ${g}] = ${groups}`,
          { argument: `${name}.zeroPoint` },
        );
      }
      if (!scanned) {
        for (let i = 0; i < groups; i++) {
          const z = m.zeroPoint[i]!;
          if (z < -8 || z > 7) {
            throw new KernelError('INVALID_ARGUMENT', `${name}.zeroPoint[${i}] must be in [-8, 7], got ${z}`, {
              argument: `${name}.zeroPoint[${i}]`,
            });
          }
        }
      }
    }
  }
  if (!scanned) {
    checkedWeights.set(m, {
      dtype: m.dtype,
      rows: m.rows,
      cols: m.cols,
      data: m.data,
      scale: m.scale,
      zeroPoint: m.zeroPoint,
      groupSize: m.groupSize,
    });
  }
  return m;
}

/** Kind and length half of {@link checkScales} (no value scan). */
function checkScaleShape(name: string, value: unknown, allowed: readonly number[]): void {
  if (!isKind(value, 'Float32Array')) {
    throw new KernelError('WRONG_ARRAY_TYPE', `${name} must be a Float32Array, got ${describeValue(value)}`, {
      argument: name,
    });
  }
  const len = (value as Float32Array).length;
  if (!allowed.includes(len)) {
    throw new KernelError('INVALID_SCALE', `${name} must have length ${[...new Set(allowed)].join(' or ')}, got ${len}`, {
      argument: name,
    });
  }
}

function requireObject(name: string, v: unknown): void {
  if (v === null || typeof v !== 'object') {
    throw new KernelError('INVALID_ARGUMENT', `${name} must be an object, got ${describeValue(v)}`, { argument: name });
  }
}

/** Validate {@link LinearArgs}. */
export function validateLinear(args: LinearArgs<Activation>): { rows: number; inFeatures: number; outFeatures: number } {
  requireObject('args', args);
  const weight = validateWeight('weight', args.weight);
  const rows = checkCount('rows', args.rows, 1);
  const inFeatures = weight.cols;
  const outFeatures = weight.rows;
  const x = checkActivation('x', args.x, rows * inFeatures);
  const out = checkActivation('out', args.out, rows * outFeatures);
  if (args.bias !== undefined) checkF32('bias', args.bias, outFeatures);
  checkNoOverlap('out', out, rows * outFeatures, 'x', x, rows * inFeatures);
  const act = args.activations;
  if (act !== undefined && act !== 'f32' && act !== 'q8' && act !== 'q16') {
    throw new KernelError('INVALID_ARGUMENT', `activations must be 'f32', 'q8' or 'q16', got ${describeValue(act)}`, { argument: 'activations' });
  }
  if (act === 'q16' && weight.dtype !== 'int4') {
    throw new KernelError('INVALID_ARGUMENT', `activations 'q16' needs an int4 weight dtype, got weight.dtype '${weight.dtype}'`, { argument: 'activations' });
  }
  if (act === 'q8' && !isGgmlDtype(weight.dtype) && weight.dtype !== 'int8') {
    throw new KernelError('INVALID_ARGUMENT', `activations 'q8' needs a GGML (q8_0 ... q6_k) or int8 weight dtype, got weight.dtype '${weight.dtype}'`, {
      argument: 'activations',
    });
  }
  const s = args.activationScale;
  if (s !== undefined) {
    if (act !== 'q8' || weight.dtype !== 'int8') {
      throw new KernelError('INVALID_ARGUMENT', `activationScale needs activations 'q8' on an int8 weight (got activations ${describeValue(act)}, weight.dtype '${weight.dtype}')`, {
        argument: 'activationScale',
      });
    }
    if (typeof s !== 'number' || !(Math.fround(s) > 0) || !Number.isFinite(Math.fround(s))) {
      throw new KernelError('INVALID_ARGUMENT', `activationScale must be a finite float32 > 0, got ${describeValue(s)}`, { argument: 'activationScale' });
    }
  }
  return { rows, inFeatures, outFeatures };
}

/** Validate {@link RmsNormArgs}. */
export function validateRmsNorm(args: RmsNormArgs<Activation>): { rows: number; hidden: number } {
  requireObject('args', args);
  const rows = checkCount('rows', args.rows, 1);
  const hidden = checkCount('hidden', args.hidden, 1);
  const x = checkActivation('x', args.x, rows * hidden);
  checkF32('weight', args.weight, hidden);
  const out = checkActivation('out', args.out, rows * hidden);
  checkFinite('eps', args.eps, false);
  checkNoOverlap('out', out, rows * hidden, 'x', x, rows * hidden, true);
  return { rows, hidden };
}

/** Validate {@link AddArgs}. */
export function validateAdd(args: AddArgs<Activation>): { length: number } {
  requireObject('args', args);
  const length = checkCount('length', args.length, 0);
  const a = checkActivation('a', args.a, length);
  const b = checkActivation('b', args.b, length);
  const out = checkActivation('out', args.out, length);
  checkNoOverlap('out', out, length, 'a', a, length, true);
  checkNoOverlap('out', out, length, 'b', b, length, true);
  return { length };
}

/** Validate {@link SiluAndMulArgs}. */
export function validateSiluAndMul(args: SiluAndMulArgs<Activation>): { length: number } {
  requireObject('args', args);
  const length = checkCount('length', args.length, 0);
  const gate = checkActivation('gate', args.gate, length);
  const up = checkActivation('up', args.up, length);
  const out = checkActivation('out', args.out, length);
  checkNoOverlap('out', out, length, 'gate', gate, length, true);
  checkNoOverlap('out', out, length, 'up', up, length, true);
  return { length };
}

/** Validate {@link GeluTanhAndMulArgs}. */
export function validateGeluTanhAndMul(args: GeluTanhAndMulArgs<Activation>): { length: number } {
  return validateSiluAndMul(args);
}

/** Validate {@link EmbeddingArgs}, including every id against the table. */
export function validateEmbedding(args: EmbeddingArgs<Activation>): { numTokens: number; hidden: number; vocab: number } {
  requireObject('args', args);
  const table = validateWeight('table', args.table);
  const numTokens = checkCount('numTokens', args.numTokens, 0);
  const ids = checkI32('ids', args.ids, numTokens);
  checkActivation('out', args.out, numTokens * table.cols);
  for (let t = 0; t < numTokens; t++) {
    const id = ids[t]!;
    if (id < 0 || id >= table.rows) {
      throw new KernelError('OUT_OF_RANGE', `ids[${t}] = ${id} is outside the table's [0, ${table.rows})`, {
        argument: `ids[${t}]`,
      });
    }
  }
  return { numTokens, hidden: table.cols, vocab: table.rows };
}

/** Validate a {@link RopeTable}'s internal consistency. */
export function validateRopeTable(name: string, table: unknown): RopeTable {
  requireObject(name, table);
  const t = table as RopeTable;
  const rotaryDim = checkCount(`${name}.rotaryDim`, t.rotaryDim, 2);
  if (rotaryDim % 2 !== 0) {
    throw new KernelError('INVALID_ARGUMENT', `${name}.rotaryDim must be even, got ${rotaryDim}`, {
      argument: `${name}.rotaryDim`,
    });
  }
  const maxPositions = checkCount(`${name}.maxPositions`, t.maxPositions, 1);
  const half = rotaryDim / 2;
  checkF32(`${name}.invFreq`, t.invFreq, half);
  checkF32(`${name}.cos`, t.cos, maxPositions * half);
  checkF32(`${name}.sin`, t.sin, maxPositions * half);
  return t;
}

/** Validate {@link RopeArgs}, including every position against the table. */
export function validateRope(args: RopeArgs<Activation>): {
  numTokens: number;
  numHeads: number;
  numKvHeads: number;
  headSize: number;
  rotaryDim: number;
} {
  requireObject('args', args);
  const numTokens = checkCount('numTokens', args.numTokens, 0);
  const numHeads = checkCount('numHeads', args.numHeads, 1);
  const numKvHeads = checkCount('numKvHeads', args.numKvHeads, 1);
  const headSize = checkCount('headSize', args.headSize, 2);
  const table = validateRopeTable('table', args.table);
  if (table.rotaryDim > headSize) {
    throw new KernelError(
      'SHAPE_MISMATCH',
      `table.rotaryDim (${table.rotaryDim}) exceeds headSize (${headSize})`,
      { argument: 'table.rotaryDim' },
    );
  }
  if (args.style !== 'rotate_half' && args.style !== 'interleaved') {
    throw new KernelError(
      'INVALID_ARGUMENT',
      `style must be 'rotate_half' or 'interleaved', got ${describeValue(args.style)}`,
      { argument: 'style' },
    );
  }
  const q = checkActivation('query', args.query, numTokens * numHeads * headSize);
  const k = checkActivation('key', args.key, numTokens * numKvHeads * headSize);
  checkNoOverlap('key', k, numTokens * numKvHeads * headSize, 'query', q, numTokens * numHeads * headSize);
  const positions = checkI32('positions', args.positions, numTokens);
  for (let t = 0; t < numTokens; t++) {
    const p = positions[t]!;
    if (p < 0 || p >= table.maxPositions) {
      throw new KernelError(
        'OUT_OF_RANGE',
        `positions[${t}] = ${p} is outside the rope table's [0, ${table.maxPositions})`,
        { argument: `positions[${t}]` },
      );
    }
  }
  return { numTokens, numHeads, numKvHeads, headSize, rotaryDim: table.rotaryDim };
}

/** Validate {@link SoftmaxArgs}. */
export function validateSoftmax(args: SoftmaxArgs<Activation>): { rows: number; cols: number } {
  requireObject('args', args);
  const rows = checkCount('rows', args.rows, 0);
  const cols = checkCount('cols', args.cols, 1);
  const x = checkActivation('x', args.x, rows * cols);
  const out = checkActivation('out', args.out, rows * cols);
  checkNoOverlap('out', out, rows * cols, 'x', x, rows * cols, true);
  return { rows, cols };
}

/** Validate {@link ArgmaxArgs}. */
export function validateArgmax(args: ArgmaxArgs<Activation>): { rows: number; cols: number } {
  requireObject('args', args);
  const rows = checkCount('rows', args.rows, 0);
  const cols = checkCount('cols', args.cols, 1, 2 ** 31 - 1);
  checkActivation('x', args.x, rows * cols);
  checkI32('out', args.out, rows);
  return { rows, cols };
}

/** Derived sizes of a validated {@link KvLayerCache}. */
export interface KvCacheDims {
  readonly numBlocks: number;
  readonly blockSize: number;
  readonly numKvHeads: number;
  readonly headSize: number;
  /** `numBlocks * blockSize` (number of slots). */
  readonly numSlots: number;
  /** Whether the cache stores FP8 codes with per-tensor / per-head scales (`e4m3fn`, ...; not `fp8_per_token_head`). */
  readonly fp8: boolean;
  /**
   * The block layout when the cache has a write-time-scaled dtype (`int8_per_token_head`, `nvfp4`, ...; see
   * docs/spec/kv-dtypes.md), else `undefined`. For a mixed cache ({@link mixed}): the K pool's.
   */
  readonly quant?: KvBlockLayout | undefined;
  /** Whether the V pool has another dtype than the K pool (`cache.valueDtype !== cache.dtype`). */
  readonly mixed: boolean;
}

/** Array kind and exact length of one pool of `dtype`, and its block layout for the write-time-scaled dtypes. */
function poolSpec(
  name: string,
  field: 'dtype' | 'valueDtype',
  dtype: unknown,
  dims: { numBlocks: number; blockSize: number; numKvHeads: number; headSize: number },
): { kind: ArrayKind; elems: number; quant: KvBlockLayout | undefined } {
  const { numBlocks, blockSize, numKvHeads, headSize } = dims;
  let quant: KvBlockLayout | undefined;
  if (isKvQuantDtype(dtype)) {
    try {
      quant = kvBlockLayout(dtype, blockSize, numKvHeads, headSize);
    } catch (e) {
      if (!(e instanceof CacheError)) throw e;
      throw new KernelError('INVALID_ARGUMENT', `${name}: ${e.message}`, { argument: `${name}.headSize`, cause: e });
    }
  }
  const elems = quant ? numBlocks * quant.blockBytes : numBlocks * blockSize * numKvHeads * headSize;
  let kind: ArrayKind;
  if (dtype === 'f32') kind = 'Float32Array';
  else if (dtype === 'bf16' || dtype === 'f16') kind = 'Uint16Array';
  else if (isFp8(dtype) || quant) kind = 'Uint8Array';
  else {
    throw new KernelError(
      'INVALID_ARGUMENT',
      `${name}.${field} must be f32, bf16, f16, an FP8 format or a write-time-scaled KV dtype, got ${describeValue(dtype)}`,
      { argument: `${name}.${field}` },
    );
  }
  return { kind, elems, quant };
}

/**
 * Validate a {@link KvLayerCache}: dims, dtype, pool array kinds and exact lengths, and (FP8 caches only) that
 * `kScale` / `vScale` have length 1 or numKvHeads, equal lengths, and finite positive entries. Write-time-scaled
 * dtypes: byte pools of `numBlocks × kvBlockLayout(...).blockBytes`, a head size the dtype can hold
 * (`INVALID_ARGUMENT`), and for nvfp4 one finite positive tensor scale each in `kScale` / `vScale`.
 * A mixed cache (`valueDtype` other than `dtype`; absent = `dtype`) has each pool checked against its own dtype, and
 * each scale array against its pool's dtype.
 */
export function validateKvCache(name: string, cache: unknown): KvCacheDims {
  requireObject(name, cache);
  const c = cache as KvLayerCache;
  const numBlocks = checkCount(`${name}.numBlocks`, c.numBlocks, 1);
  const blockSize = checkCount(`${name}.blockSize`, c.blockSize, 1);
  const numKvHeads = checkCount(`${name}.numKvHeads`, c.numKvHeads, 1);
  const headSize = checkCount(`${name}.headSize`, c.headSize, 1);
  const valueDtype: unknown = c.valueDtype ?? c.dtype;
  const mixed = valueDtype !== c.dtype;
  const shape = { numBlocks, blockSize, numKvHeads, headSize };
  const kSpec = poolSpec(name, 'dtype', c.dtype, shape);
  const vSpec = mixed ? poolSpec(name, 'valueDtype', valueDtype, shape) : kSpec;
  const quant = kSpec.quant;
  for (const [field, spec, dtype] of [['key', kSpec, c.dtype], ['value', vSpec, valueDtype]] as const) {
    const { kind, elems } = spec;
    const arr = checkArray<ArrayBufferView>(`${name}.${field}`, c[field], kind, elems);
    const len = (arr as unknown as { length: number }).length;
    if (len !== elems) {
      throw new KernelError(
        'SHAPE_MISMATCH',
        spec.quant
          ? `${name}.${field} has ${len} bytes but ${numBlocks} '${String(dtype)}' blocks of ${spec.quant.blockBytes} bytes = ${elems}`
          : `${name}.${field} has ${len} elements but [${numBlocks}, ${blockSize}, ${numKvHeads}, ${headSize}] = ${elems}`,
        { argument: `${name}.${field}` },
      );
    }
  }
  if (kSpec.quant?.tensorScales === 1) checkScales(`${name}.kScale`, c.kScale, [1]);
  if (vSpec.quant?.tensorScales === 1) checkScales(`${name}.vScale`, c.vScale, [1]);
  const fp8 = isFp8(c.dtype);
  const kFp8 = fp8;
  const vFp8 = isFp8(valueDtype);
  if (kFp8) checkScales(`${name}.kScale`, c.kScale, [1, numKvHeads]);
  if (vFp8) checkScales(`${name}.vScale`, c.vScale, [1, numKvHeads]);
  if (kFp8 && vFp8) {
    const ks = c.kScale;
    const vs = c.vScale;
    if (ks.length !== vs.length) {
      throw new KernelError(
        'INVALID_SCALE',
        `${name}.kScale (length ${ks.length}) and ${name}.vScale (length ${vs.length}) must have the same length`,
        { argument: `${name}.vScale` },
      );
    }
  }
  return { numBlocks, blockSize, numKvHeads, headSize, numSlots: numBlocks * blockSize, fp8, quant, mixed };
}

/** Validate {@link ReshapeAndCacheArgs}, including every slot (`< 0` = skip, `>= numSlots` = `OUT_OF_RANGE`). */
export function validateReshapeAndCache(args: ReshapeAndCacheArgs<Activation>): KvCacheDims & { numTokens: number } {
  requireObject('args', args);
  const dims = validateKvCache('cache', args.cache);
  const numTokens = checkCount('numTokens', args.numTokens, 0);
  const n = numTokens * dims.numKvHeads * dims.headSize;
  checkActivation('key', args.key, n);
  checkActivation('value', args.value, n);
  const slots = checkI32('slotMapping', args.slotMapping, numTokens);
  for (let t = 0; t < numTokens; t++) {
    const s = slots[t]!;
    if (s >= dims.numSlots) {
      throw new KernelError(
        'OUT_OF_RANGE',
        `slotMapping[${t}] = ${s} is outside the cache's ${dims.numSlots} slots (${dims.numBlocks} blocks x ${dims.blockSize})`,
        { argument: `slotMapping[${t}]` },
      );
    }
  }
  // NOTE: the fields are spelled out: `{ ...dims, more }` took ~12 us in V8 (Node 20, a slow clone-and-extend
  // path; 3.6% of a 768x12 decode step over 12 layers when validatePagedAttention did it), a literal ~0.1 us.
  const { numBlocks, blockSize, numKvHeads, headSize, numSlots, fp8, quant, mixed } = dims;
  return { numBlocks, blockSize, numKvHeads, headSize, numSlots, fp8, quant, mixed, numTokens };
}

/** Derived sizes of validated {@link PagedAttentionArgs}. */
export interface PagedAttentionPlan extends KvCacheDims {
  readonly numSeqs: number;
  readonly numTokens: number;
  readonly numHeads: number;
  /** Query heads per kv head (`numHeads / numKvHeads`). */
  readonly groupSize: number;
  /** Resolved softmax scale (default `1 / sqrt(headSize)`). */
  readonly softmaxScale: number;
  /** Resolved window, or 0 for none. */
  readonly slidingWindow: number;
  /** Whether FP8-query mode is on. */
  readonly fp8Query: boolean;
  /** The validated `lse` output, when asked for. */
  readonly lse: Float32Array | undefined;
}

/**
 * Validate {@link PagedAttentionArgs}: varlen metadata (monotone `queryStartLoc`, `seqLens >= queryLen`), every
 * block-table entry a sequence uses (in `[0, numBlocks)`), head counts, options and (FP8-query mode) `cache.qScale`.
 */
export function validatePagedAttention(args: PagedAttentionArgs<Activation>): PagedAttentionPlan {
  requireObject('args', args);
  const dims = validateKvCache('cache', args.cache);
  const numSeqs = checkCount('numSeqs', args.numSeqs, 1);
  const numHeads = checkCount('numHeads', args.numHeads, 1);
  if (numHeads % dims.numKvHeads !== 0) {
    throw new KernelError(
      'SHAPE_MISMATCH',
      `numHeads (${numHeads}) must be a multiple of cache.numKvHeads (${dims.numKvHeads})`,
      { argument: 'numHeads' },
    );
  }
  const maxBlocksPerSeq = checkCount('maxBlocksPerSeq', args.maxBlocksPerSeq, 1);
  const qsl = checkI32('queryStartLoc', args.queryStartLoc, numSeqs + 1);
  const seqLens = checkI32('seqLens', args.seqLens, numSeqs);
  const tables = checkI32('blockTables', args.blockTables, numSeqs * maxBlocksPerSeq);
  if (qsl[0] !== 0) {
    throw new KernelError('INVALID_ARGUMENT', `queryStartLoc[0] must be 0, got ${qsl[0]}`, {
      argument: 'queryStartLoc[0]',
    });
  }
  for (let s = 0; s < numSeqs; s++) {
    const qLen = qsl[s + 1]! - qsl[s]!;
    if (qLen < 0) {
      throw new KernelError(
        'INVALID_ARGUMENT',
        `queryStartLoc must be non-decreasing, but queryStartLoc[${s + 1}] = ${qsl[s + 1]} < queryStartLoc[${s}] = ${qsl[s]}`,
        { argument: `queryStartLoc[${s + 1}]` },
      );
    }
    const seqLen = seqLens[s]!;
    if (seqLen < qLen) {
      throw new KernelError(
        'INVALID_ARGUMENT',
        `seqLens[${s}] = ${seqLen} is less than that sequence's query length ${qLen} (seqLens include the new tokens)`,
        { argument: `seqLens[${s}]` },
      );
    }
    const blocksUsed = Math.ceil(seqLen / dims.blockSize);
    if (blocksUsed > maxBlocksPerSeq) {
      throw new KernelError(
        'OUT_OF_RANGE',
        `seqLens[${s}] = ${seqLen} needs ${blocksUsed} blocks but maxBlocksPerSeq is ${maxBlocksPerSeq}`,
        { argument: `seqLens[${s}]` },
      );
    }
    // Only blocks holding attended positions matter; with a sliding window the first ones may be skipped.
    for (let b = 0; b < blocksUsed; b++) {
      const id = tables[s * maxBlocksPerSeq + b]!;
      if (id < 0 || id >= dims.numBlocks) {
        throw new KernelError(
          'OUT_OF_RANGE',
          `blockTables[${s * maxBlocksPerSeq + b}] (sequence ${s}, block ${b}) = ${id} is outside the cache's [0, ${dims.numBlocks})`,
          { argument: `blockTables[${s * maxBlocksPerSeq + b}]` },
        );
      }
    }
  }
  const numTokens = qsl[numSeqs]!;
  const qElems = numTokens * numHeads * dims.headSize;
  const query = checkActivation('query', args.query, qElems);
  const out = checkActivation('out', args.out, qElems);
  checkNoOverlap('out', out, qElems, 'query', query, qElems);
  const softmaxScale =
    args.softmaxScale === undefined ? 1 / Math.sqrt(dims.headSize) : checkFinite('softmaxScale', args.softmaxScale, true);
  const slidingWindow = args.slidingWindow === undefined ? 0 : checkCount('slidingWindow', args.slidingWindow, 1);
  let fp8Query = false;
  if (args.fp8Query !== undefined) {
    requireObject('fp8Query', args.fp8Query);
    if (!dims.fp8) {
      throw new KernelError(
        'INVALID_ARGUMENT',
        `fp8Query needs an FP8 cache, but cache.dtype is ${describeValue(args.cache.dtype)}`,
        { argument: 'fp8Query' },
      );
    }
    if (dims.mixed) {
      throw new KernelError(
        'INVALID_ARGUMENT',
        `fp8Query needs K and V in one FP8 dtype, but cache.dtype is '${args.cache.dtype}' and cache.valueDtype '${args.cache.valueDtype}'`,
        { argument: 'fp8Query' },
      );
    }
    const sat = args.fp8Query.saturation;
    if (sat !== undefined && sat !== 'satfinite' && sat !== 'nosat') {
      throw new KernelError(
        'INVALID_ARGUMENT',
        `fp8Query.saturation must be 'satfinite' or 'nosat', got ${describeValue(sat)}`,
        { argument: 'fp8Query.saturation' },
      );
    }
    checkScales('cache.qScale', args.cache.qScale, [1, numHeads]);
    fp8Query = true;
  }
  let lse: Float32Array | undefined;
  if (args.lse !== undefined) {
    lse = checkF32('lse', args.lse, numTokens * numHeads);
    checkNoOverlap('lse', lse, numTokens * numHeads, 'query', query, qElems);
    checkNoOverlap('lse', lse, numTokens * numHeads, 'out', out, qElems);
  }
  const { numBlocks, blockSize, numKvHeads, headSize, numSlots, fp8, quant, mixed } = dims; // spelled out: see validateReshapeAndCache
  return {
    numBlocks,
    blockSize,
    numKvHeads,
    headSize,
    numSlots,
    fp8,
    quant,
    mixed,
    numSeqs,
    numTokens,
    numHeads,
    groupSize: numHeads / dims.numKvHeads,
    softmaxScale,
    slidingWindow,
    fp8Query,
    lse,
  };
}

/**
 * The query scale of each kv head's GQA group for FP8-query mode: `qScale` of length 1 is broadcast; of length
 * numHeads is reduced by `max` over each group of `numHeads / numKvHeads` consecutive query heads (vLLM's FA3
 * loader does the same). Writes and returns `out` (`[numKvHeads]`).
 */
export function qScalePerKvHead(
  qScale: Float32Array,
  numHeads: number,
  numKvHeads: number,
  out: Float32Array = new Float32Array(numKvHeads),
): Float32Array {
  const group = numHeads / numKvHeads;
  for (let g = 0; g < numKvHeads; g++) {
    if (qScale.length === 1) {
      out[g] = qScale[0]!;
      continue;
    }
    let m = -Infinity;
    for (let i = 0; i < group; i++) m = Math.max(m, qScale[g * group + i]!);
    out[g] = m;
  }
  return out;
}

/** Validate {@link AmaxTensorArgs}. */
export function validateAmaxTensor(args: AmaxTensorArgs): { length: number } {
  requireObject('args', args);
  const length = checkCount('length', args.length, 0);
  checkF32('x', args.x, length);
  return { length };
}

/** Validate {@link AmaxPerHeadArgs}. */
export function validateAmaxPerHead(args: AmaxPerHeadArgs): { numTokens: number; numHeads: number; headSize: number } {
  requireObject('args', args);
  const numTokens = checkCount('numTokens', args.numTokens, 0);
  const numHeads = checkCount('numHeads', args.numHeads, 1);
  const headSize = checkCount('headSize', args.headSize, 1);
  checkF32('x', args.x, numTokens * numHeads * headSize);
  checkF32('out', args.out, numHeads);
  return { numTokens, numHeads, headSize };
}

/**
 * Number of scales a {@link ScaleLayout} needs for `length` elements, checking the layout's own fields and that
 * `length` divides into whole tokens. Throws `INVALID_ARGUMENT` / `SHAPE_MISMATCH` naming `layout.*` / `length`.
 */
export function scaleCountFor(layout: ScaleLayout, length: number): number {
  requireObject('layout', layout);
  const gran = (layout as { granularity?: unknown }).granularity;
  switch (layout.granularity) {
    case 'tensor':
      return 1;
    case 'head': {
      const numHeads = checkCount('layout.numHeads', layout.numHeads, 1);
      const headSize = checkCount('layout.headSize', layout.headSize, 1);
      if (length % (numHeads * headSize) !== 0) {
        throw new KernelError(
          'SHAPE_MISMATCH',
          `length ${length} is not a whole number of tokens of ${numHeads} heads x ${headSize}`,
          { argument: 'length' },
        );
      }
      return numHeads;
    }
    case 'token': {
      const tokenSize = checkCount('layout.tokenSize', layout.tokenSize, 1);
      if (length % tokenSize !== 0) {
        throw new KernelError('SHAPE_MISMATCH', `length ${length} is not a multiple of layout.tokenSize ${tokenSize}`, {
          argument: 'length',
        });
      }
      return length / tokenSize;
    }
    case 'token_head': {
      const numHeads = checkCount('layout.numHeads', layout.numHeads, 1);
      const headSize = checkCount('layout.headSize', layout.headSize, 1);
      if (length % (numHeads * headSize) !== 0) {
        throw new KernelError(
          'SHAPE_MISMATCH',
          `length ${length} is not a whole number of tokens of ${numHeads} heads x ${headSize}`,
          { argument: 'length' },
        );
      }
      return (length / (numHeads * headSize)) * numHeads;
    }
    default:
      throw new KernelError(
        'INVALID_ARGUMENT',
        `layout.granularity must be 'tensor', 'head', 'token' or 'token_head', got ${describeValue(gran)}`,
        { argument: 'layout.granularity' },
      );
  }
}

function checkFormat(name: string, format: unknown): Fp8Format {
  if (!isFp8(format)) {
    throw new KernelError('INVALID_ARGUMENT', `${name} must be one of ${FP8_DTYPES.join(', ')}, got ${describeValue(format)}`, {
      argument: name,
    });
  }
  return format;
}

/** Validate {@link QuantizeFp8Args}. */
export function validateQuantizeFp8(args: QuantizeFp8Args): { length: number; scaleCount: number } {
  requireObject('args', args);
  const length = checkCount('length', args.length, 0);
  checkF32('src', args.src, length);
  checkU8('out', args.out, length);
  checkFormat('format', args.format);
  const sat = args.saturation;
  if (sat !== undefined && sat !== 'satfinite' && sat !== 'nosat') {
    throw new KernelError('INVALID_ARGUMENT', `saturation must be 'satfinite' or 'nosat', got ${describeValue(sat)}`, {
      argument: 'saturation',
    });
  }
  const scaleCount = scaleCountFor(args.layout, length);
  checkScales('scales', args.scales, [scaleCount]);
  return { length, scaleCount };
}

/** Validate {@link DequantizeFp8Args}. */
export function validateDequantizeFp8(args: DequantizeFp8Args): { length: number; scaleCount: number } {
  requireObject('args', args);
  const length = checkCount('length', args.length, 0);
  checkU8('src', args.src, length);
  checkF32('out', args.out, length);
  checkFormat('format', args.format);
  const scaleCount = scaleCountFor(args.layout, length);
  checkScales('scales', args.scales, [scaleCount]);
  return { length, scaleCount };
}

/**
 * The ops of the standard native shape (csrc/ops.h `KVQ_STANDARD_OPS`), declared once for every native backend:
 * each entry validates the op's contract arguments (throwing the same {@link KernelError} as every backend) and
 * returns the positional arguments of the addons' method, in the order its N-API reader in csrc/ops.h reads them.
 * `NativeKernelBackend` (`@kvq/kernels/native`) installs one backend method per entry and `NativeKernelOps` types
 * the addon methods from it, so a new standard op is written here, not in each backend.
 * For backend authors.
 */
export const STANDARD_NATIVE_OPS = {
  rmsNorm(a: RmsNormArgs<Activation>) {
    const { rows, hidden } = validateRmsNorm(a);
    return [a.x, a.weight, a.out, rows, hidden, a.eps] as [x: Activation, weight: Float32Array, out: Activation, rows: number, hidden: number, eps: number];
  },
  add(a: AddArgs<Activation>) {
    const { length } = validateAdd(a);
    return [a.a, a.b, a.out, length] as [a: Activation, b: Activation, out: Activation, length: number];
  },
  siluAndMul(a: SiluAndMulArgs<Activation>) {
    const { length } = validateSiluAndMul(a);
    return [a.gate, a.up, a.out, length] as [gate: Activation, up: Activation, out: Activation, length: number];
  },
  geluTanhAndMul(a: GeluTanhAndMulArgs<Activation>) {
    const { length } = validateGeluTanhAndMul(a);
    return [a.gate, a.up, a.out, length] as [gate: Activation, up: Activation, out: Activation, length: number];
  },
  rope(a: RopeArgs<Activation>) {
    const { numTokens, numHeads, numKvHeads, headSize, rotaryDim } = validateRope(a);
    const t = a.table;
    return [a.query, a.key, a.positions, numTokens, numHeads, numKvHeads, headSize, rotaryDim, t.maxPositions, t.cos, t.sin, a.style === 'interleaved'] as [
      query: Activation,
      key: Activation,
      positions: Int32Array,
      numTokens: number,
      numHeads: number,
      numKvHeads: number,
      headSize: number,
      rotaryDim: number,
      maxPositions: number,
      cos: Float32Array,
      sin: Float32Array,
      interleaved: boolean,
    ];
  },
  softmax(a: SoftmaxArgs<Activation>) {
    const { rows, cols } = validateSoftmax(a);
    return [a.x, a.out, rows, cols] as [x: Activation, out: Activation, rows: number, cols: number];
  },
  argmax(a: ArgmaxArgs<Activation>) {
    const { rows, cols } = validateArgmax(a);
    return [a.x, a.out, rows, cols] as [x: Activation, out: Int32Array, rows: number, cols: number];
  },
} satisfies { [K in KernelOpName]?: (args: Parameters<KernelBackend[K]>[0]) => unknown[] };

/** Names of the standard native ops ({@link STANDARD_NATIVE_OPS}). */
export type StandardNativeOpName = keyof typeof STANDARD_NATIVE_OPS;
