import { encodeFp8Array, f16BitsToF32, f32ToF16Bits, fp8DecodeTable } from '@kvq/fp8';
import { CacheError, checkInt, describe } from './errors.js';

/**
 * KV dtypes whose scales are computed when the cache is written (issue 17), stored beside the codes in each block:
 * - `'fp8_per_token_head'`: e4m3fn codes, one float32 scale per token per kv head;
 * - `'int8_per_token_head'`: int8 codes (−127..127), one float32 scale per token per kv head;
 * - `'int4_per_token_head'`: packed symmetric int4 (−7..7), one float32 scale per token per kv head;
 * - `'int4_g16'` / `'int4_g32'` / `'int4_g64'`: packed symmetric int4, one float32 scale per 16/32/64 values;
 * - `'nvfp4'`: packed E2M1, one E4M3FN scale per 16 values and one float32 scale per tensor (`kScale[0]`/`vScale[0]`);
 * - `'q4_0'`: GGML q4_0's values (codes −8..7, one f16 scale `d = max / −8` per 32 values, `max` the signed value of
 *   largest magnitude), quantized as ggml's reference quantizer does, in kvq's block layout (4.5 bits per value);
 * - `'int4_g32_f16'`: the same storage as `'q4_0'` (codes −8..7, f16 scale per 32 values), with kvq's scale rule: the
 *   smallest `|d|` whose grid holds both of the group's extremes (no clipping), nearest codes, ties to even.
 * @see docs/spec/kv-dtypes.md
 */
export type KvQuantDtype =
  | 'fp8_per_token_head'
  | 'int8_per_token_head'
  | 'int4_per_token_head'
  | 'int4_g16'
  | 'int4_g32'
  | 'int4_g64'
  | 'nvfp4'
  | 'q4_0'
  | 'int4_g32_f16';

/** Every {@link KvQuantDtype}, in a stable order. */
export const KV_QUANT_DTYPES: readonly KvQuantDtype[] = [
  'fp8_per_token_head',
  'int8_per_token_head',
  'int4_per_token_head',
  'int4_g16',
  'int4_g32',
  'int4_g64',
  'nvfp4',
  'q4_0',
  'int4_g32_f16',
];

/** True when `dtype` is one of the write-time-scaled {@link KvQuantDtype}s. */
export function isKvQuantDtype(dtype: unknown): dtype is KvQuantDtype {
  return typeof dtype === 'string' && (KV_QUANT_DTYPES as readonly string[]).includes(dtype);
}

/** Byte layout of one block of one pool (K or V) of a {@link KvQuantDtype} cache (see docs/spec/kv-dtypes.md §3). */
export interface KvBlockLayout {
  readonly dtype: KvQuantDtype;
  readonly blockSize: number;
  readonly numKvHeads: number;
  readonly headSize: number;
  /** Values per scale (`headSize` for the `*_per_token_head` dtypes). */
  readonly groupSize: number;
  /** Scales per token per kv head: `headSize / groupSize`. */
  readonly groupsPerHead: number;
  /** Bits per code: 8 or 4 (two codes per byte, element 2i in the low nibble). */
  readonly bitsPerCode: 8 | 4;
  /** Code bytes per token per kv head: `headSize` (8-bit) or `headSize / 2` (4-bit). */
  readonly codeBytesPerHead: number;
  /** Bytes per stored scale: 4 (float32 little-endian), 2 (f16 little-endian: q4_0, int4_g32_f16) or 1 (E4M3FN, nvfp4). */
  readonly scaleBytes: 4 | 2 | 1;
  /** Byte offset of the scale region inside a block: the code bytes padded to a multiple of 4. */
  readonly scalesOffset: number;
  /** Bytes per block (codes, padding, scales, padding to a multiple of 4). */
  readonly blockBytes: number;
  /** Float32 per-tensor scales used per pool: 1 for nvfp4 (`kScale[0]` / `vScale[0]`), else 0 (ignored). */
  readonly tensorScales: 0 | 1;
}

const pad4 = (n: number): number => Math.ceil(n / 4) * 4;

function groupOf(dtype: KvQuantDtype, headSize: number): number {
  switch (dtype) {
    case 'int4_g16':
    case 'nvfp4':
      return 16;
    case 'int4_g32':
    case 'q4_0':
    case 'int4_g32_f16':
      return 32;
    case 'int4_g64':
      return 64;
    default:
      return headSize;
  }
}

/**
 * The block layout of a {@link KvQuantDtype} pool.
 * Requirements: `headSize` a multiple of the group size (16/32/64 for `int4_g*`, 16 for nvfp4, 32 for q4_0 and
 * int4_g32_f16) and even for `int4_per_token_head`.
 * @throws CacheError `UNSUPPORTED_DTYPE` for another dtype, `INVALID_ARGUMENT` for a bad size (naming dtype and headSize).
 */
export function kvBlockLayout(dtype: KvQuantDtype, blockSize: number, numKvHeads: number, headSize: number): KvBlockLayout {
  if (!isKvQuantDtype(dtype)) {
    throw new CacheError('UNSUPPORTED_DTYPE', `dtype must be one of ${KV_QUANT_DTYPES.join(', ')}, got ${describe(dtype)}`);
  }
  checkInt('blockSize', blockSize, 1);
  checkInt('numKvHeads', numKvHeads, 1);
  checkInt('headSize', headSize, 1);
  const bitsPerCode: 8 | 4 = dtype === 'fp8_per_token_head' || dtype === 'int8_per_token_head' ? 8 : 4;
  const groupSize = groupOf(dtype, headSize);
  if (headSize % groupSize !== 0) {
    throw new CacheError('INVALID_ARGUMENT', `headSize (${headSize}) must be a multiple of ${groupSize} for KV dtype '${dtype}'`);
  }
  if (bitsPerCode === 4 && headSize % 2 !== 0) {
    throw new CacheError('INVALID_ARGUMENT', `headSize (${headSize}) must be even for the 4-bit KV dtype '${dtype}'`);
  }
  const groupsPerHead = headSize / groupSize;
  const codeBytesPerHead = bitsPerCode === 8 ? headSize : headSize / 2;
  const scaleBytes: 4 | 2 | 1 = dtype === 'nvfp4' ? 1 : dtype === 'q4_0' || dtype === 'int4_g32_f16' ? 2 : 4;
  const scalesOffset = pad4(blockSize * numKvHeads * codeBytesPerHead);
  const blockBytes = pad4(scalesOffset + blockSize * numKvHeads * groupsPerHead * scaleBytes);
  return {
    dtype,
    blockSize,
    numKvHeads,
    headSize,
    groupSize,
    groupsPerHead,
    bitsPerCode,
    codeBytesPerHead,
    scaleBytes,
    scalesOffset,
    blockBytes,
    tensorScales: dtype === 'nvfp4' ? 1 : 0,
  };
}

// ---- float32 <-> 4 little-endian bytes (explicitly little-endian on any host) ----
const f32Scratch = new Float32Array(1);
const u8Scratch = new Uint8Array(f32Scratch.buffer);
const HOST_LE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

function writeF32(pool: Uint8Array, at: number, v: number): void {
  f32Scratch[0] = v;
  if (HOST_LE) for (let i = 0; i < 4; i++) pool[at + i] = u8Scratch[i]!;
  else for (let i = 0; i < 4; i++) pool[at + i] = u8Scratch[3 - i]!;
}

function readF32(pool: Uint8Array, at: number): number {
  if (HOST_LE) for (let i = 0; i < 4; i++) u8Scratch[i] = pool[at + i]!;
  else for (let i = 0; i < 4; i++) u8Scratch[3 - i] = pool[at + i]!;
  return f32Scratch[0]!;
}

/** Round half to even of a finite number. */
function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Integer code of `v` (= fround(x / scale)): nearest integer, ties to even, saturated to ±qmax (also ±Inf). */
function intCode(v: number, qmax: number): number {
  if (v >= qmax) return qmax;
  if (v <= -qmax) return -qmax;
  return roundHalfEven(v);
}

/** E2M1 magnitudes by code 0..7. */
export const E2M1_VALUES: readonly number[] = [0, 0.5, 1, 1.5, 2, 3, 4, 6];

/**
 * E2M1 code (0..15, sign in bit 3) of `v`: nearest of ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}, ties to the even code,
 * saturating at ±6 (also ±Inf); zero (and values that round to zero) is always code 0. `v` must not be NaN.
 */
export function encodeE2m1(v: number): number {
  const m = Math.abs(v);
  let c: number;
  if (m <= 0.25) c = 0;
  else if (m < 0.75) c = 1;
  else if (m <= 1.25) c = 2;
  else if (m < 1.75) c = 3;
  else if (m <= 2.5) c = 4;
  else if (m < 3.5) c = 5;
  else if (m <= 5) c = 6;
  else c = 7;
  return c !== 0 && v < 0 ? c | 8 : c;
}

/** Value of an E2M1 code (0..15). */
export function decodeE2m1(code: number): number {
  const v = E2M1_VALUES[code & 7]!;
  return code & 8 ? -v : v;
}

const E4M3 = fp8DecodeTable('e4m3fn');
const E4M3_NAN = 0x7f;
const scratchIn = new Float32Array(1);
const scratchOut = new Uint8Array(1);

function encodeE4m3(v: number): number {
  scratchIn[0] = v;
  encodeFp8Array(scratchIn, 'e4m3fn', { out: scratchOut, saturation: 'satfinite' });
  return scratchOut[0]!;
}

let fp8Tmp = new Float32Array(0);

/** Byte offset of the codes of (slot, head) and of its first scale in a pool. */
function offsets(l: KvBlockLayout, slot: number, head: number): [number, number] {
  const b = Math.floor(slot / l.blockSize);
  const row = (slot % l.blockSize) * l.numKvHeads + head;
  const base = b * l.blockBytes;
  return [base + row * l.codeBytesPerHead, base + l.scalesOffset + row * l.groupsPerHead * l.scaleBytes];
}

/** amax over the finite values of `src[from, to)`, or NaN when one of them is NaN. */
function groupAmax(src: Float32Array, from: number, to: number): number {
  let amax = 0;
  for (let i = from; i < to; i++) {
    const v = src[i]!;
    if (v !== v) return NaN;
    const a = Math.abs(v);
    if (a > amax && a !== Infinity) amax = a;
  }
  return amax;
}

function setNibble(pool: Uint8Array, codesAt: number, i: number, code: number): void {
  const at = codesAt + (i >> 1);
  pool[at] = i & 1 ? (pool[at]! & 0x0f) | ((code & 0xf) << 4) : (pool[at]! & 0xf0) | (code & 0xf);
}

function getNibble(pool: Uint8Array, codesAt: number, i: number): number {
  const byte = pool[codesAt + (i >> 1)]!;
  return i & 1 ? byte >> 4 : byte & 0xf;
}

/** f16 bits of a quiet NaN (a q4_0 / int4_g32_f16 group holding a NaN). */
const F16_NAN = 0x7e00;

/**
 * The f16 bits stored for a finite group scale `d` (q4_0, int4_g32_f16): round to nearest even, ±65504 where that
 * overflows (|d| >= 65520), +0 for ±0.
 */
function f16ScaleBits(d: number): number {
  let bits = f32ToF16Bits(d);
  if ((bits & 0x7c00) === 0x7c00) bits = d < 0 ? 0xfbff : 0x7bff;
  return (bits & 0x7fff) === 0 ? 0 : bits;
}

/** The scale of one `q4_0` group, as {@link q4_0GroupScale} computes it. */
export interface Q4_0Scale {
  /** The f16 bits stored: `d = fround(max / −8)` rounded to f16, ±65504 when that overflows, `0x7E00` (NaN) for a
   * group holding a NaN, +0 when it rounds to ±0. */
  readonly bits: number;
  /** The multiplier of the codes, `fround(1 / d)` of the unrounded d (of ±65504 when saturated; unused when `zero`). */
  readonly id: number;
  /** True when every code is 0: a NaN group or a zero scale. */
  readonly zero: boolean;
  /** True for a group holding a NaN (it decodes to NaN). */
  readonly nan: boolean;
}

/**
 * The scale of the `q4_0` group `src[from, from + 32)` (docs/spec/kv-dtypes.md §2, ggml's `quantize_row_q4_0_ref`):
 * `max` = the finite value of largest magnitude (the first on ties), `d = fround(max / −8)`, stored as f16.
 * Codes are then `min(15, trunc(fround(fround(x × id) + 8.5)))` (±Inf saturating to 15 / 0), stored minus 8.
 */
export function q4_0GroupScale(src: Float32Array, from: number): Q4_0Scale {
  let amax = 0;
  let max = 0;
  let nan = false;
  for (let i = from; i < from + 32; i++) {
    const v = src[i]!;
    if (v !== v) nan = true;
    const a = Math.abs(v);
    if (a > amax && a !== Infinity) {
      amax = a;
      max = v;
    }
  }
  if (nan) return { bits: F16_NAN, id: 0, zero: true, nan };
  const d = Math.fround(max / -8);
  const bits = f16ScaleBits(d); // +0 where ggml stores −0 (d = 0 / −8): zero groups decode to +0
  if (bits === 0) return { bits, id: 0, zero: true, nan };
  // ggml's id is 1 / d of the unrounded d; where d overflowed f16, of the saturated scale the codes decode with
  const id = Math.fround(1 / (Math.abs(d) >= 65520 ? f16BitsToF32(bits) : d));
  return { bits, id, zero: false, nan };
}

/**
 * Where `x` falls on the `q4_0` grid under multiplier `id`: `fround(fround(x × id) + 8.5)`; its code (before the minus
 * 8) is this truncated and clamped to 0..15, so below 0 or from 16 on the value saturates.
 */
export function q4_0Position(x: number, id: number): number {
  return Math.fround(Math.fround(x * id) + 8.5);
}

/** The `q4_0` code (0..15, before the minus 8) of `x` under multiplier `id`. */
function q4_0Code(x: number, id: number): number {
  const t = q4_0Position(x, id);
  return t >= 15 ? 15 : t <= 0 ? 0 : Math.trunc(t);
}

/** One 32-value group of a `q4_0` row at `src[from, from + 32)` into the pool (see {@link q4_0GroupScale}). */
function quantizeQ4_0Group(pool: Uint8Array, codesAt: number, scalesAt: number, g: number, src: Float32Array, from: number): void {
  const { bits, id, zero } = q4_0GroupScale(src, from);
  pool[scalesAt + 2 * g] = bits & 0xff;
  pool[scalesAt + 2 * g + 1] = bits >>> 8;
  for (let i = 0; i < 32; i++) setNibble(pool, codesAt, g * 32 + i, zero ? 0 : q4_0Code(src[from + i]!, id) ^ 8);
}

/**
 * The f16 scale bits of one `int4_g32_f16` group `src[from, from + 32)` (docs/spec/kv-dtypes.md §2): with `p` the
 * largest finite value (at least 0) and `n` the smallest (at most 0), `dPos = max(fround(−n / 8), fround(p / 7))`
 * (negative values reach −8) and `dNeg = max(fround(p / 8), fround(−n / 7))` (d = −dNeg: positive values reach −8);
 * the smaller magnitude wins (ties: positive d), rounded to f16 (saturated to ±65504). NaN group: `0x7E00`; a scale
 * that rounds to ±0: +0.
 */
export function int4F16GroupScale(src: Float32Array, from: number): number {
  let p = 0;
  let n = 0;
  for (let i = from; i < from + 32; i++) {
    const v = src[i]!;
    if (v !== v) return F16_NAN;
    if (v > p && v !== Infinity) p = v;
    if (v < n && v !== -Infinity) n = v;
  }
  const dPos = Math.max(Math.fround(-n / 8), Math.fround(p / 7));
  const dNeg = Math.max(Math.fround(p / 8), Math.fround(-n / 7));
  return f16ScaleBits(dPos <= dNeg ? dPos : -dNeg);
}

/** One 32-value group of an `int4_g32_f16` row: codes `clamp(round-half-even(fround(x / d)), −8, 7)`, d the f16 scale. */
function quantizeInt4F16Group(pool: Uint8Array, codesAt: number, scalesAt: number, g: number, src: Float32Array, from: number): void {
  const bits = int4F16GroupScale(src, from);
  pool[scalesAt + 2 * g] = bits & 0xff;
  pool[scalesAt + 2 * g + 1] = bits >>> 8;
  const d = f16BitsToF32(bits);
  for (let i = 0; i < 32; i++) {
    let code = 0;
    if (d !== 0 && d === d) {
      const v = Math.fround(src[from + i]! / d);
      code = v >= 7 ? 7 : v <= -8 ? -8 : roundHalfEven(v);
    }
    setNibble(pool, codesAt, g * 32 + i, code);
  }
}

/**
 * Quantize one token's head vector `src[srcOff, srcOff + headSize)` into `pool` at `slot`, kv head `head`, computing
 * its scales (docs/spec/kv-dtypes.md §2). `tensorScale` is the nvfp4 per-tensor scale (ignored otherwise).
 * No argument checks: callers validate shapes, slots and scales first.
 */
export function quantizeKvHead(
  l: KvBlockLayout,
  pool: Uint8Array,
  slot: number,
  head: number,
  src: Float32Array,
  srcOff: number,
  tensorScale: number,
): void {
  const [codesAt, scalesAt] = offsets(l, slot, head);
  const G = l.groupSize;
  if (l.dtype === 'fp8_per_token_head') {
    const amax = groupAmax(src, srcOff, srcOff + G);
    const scale = amax !== amax ? NaN : Math.fround(amax / 448);
    writeF32(pool, scalesAt, scale);
    if (!(scale > 0)) {
      pool.fill(0, codesAt, codesAt + G);
      return;
    }
    if (fp8Tmp.length < G) fp8Tmp = new Float32Array(G);
    for (let i = 0; i < G; i++) fp8Tmp[i] = src[srcOff + i]! / scale;
    encodeFp8Array(fp8Tmp.subarray(0, G), 'e4m3fn', { out: pool.subarray(codesAt, codesAt + G), saturation: 'satfinite' });
    return;
  }
  if (l.dtype === 'int8_per_token_head') {
    const amax = groupAmax(src, srcOff, srcOff + G);
    const scale = amax !== amax ? NaN : Math.fround(amax / 127);
    writeF32(pool, scalesAt, scale);
    for (let i = 0; i < G; i++) {
      pool[codesAt + i] = scale > 0 ? intCode(Math.fround(src[srcOff + i]! / scale), 127) & 0xff : 0;
    }
    return;
  }
  for (let g = 0; g < l.groupsPerHead; g++) {
    const from = srcOff + g * G;
    if (l.dtype === 'q4_0') {
      quantizeQ4_0Group(pool, codesAt, scalesAt, g, src, from);
      continue;
    }
    if (l.dtype === 'int4_g32_f16') {
      quantizeInt4F16Group(pool, codesAt, scalesAt, g, src, from);
      continue;
    }
    const amax = groupAmax(src, from, from + G);
    let scale: number;
    if (l.dtype === 'nvfp4') {
      let s8: number;
      if (amax !== amax) {
        s8 = E4M3_NAN;
        scale = NaN;
      } else {
        s8 = encodeE4m3(Math.fround(Math.fround(amax / 6) / tensorScale));
        scale = Math.fround(E4M3[s8]! * tensorScale);
      }
      pool[scalesAt + g] = s8;
      for (let i = 0; i < G; i++) {
        setNibble(pool, codesAt, g * G + i, scale > 0 ? encodeE2m1(Math.fround(src[from + i]! / scale)) : 0);
      }
    } else {
      scale = amax !== amax ? NaN : Math.fround(amax / 7);
      writeF32(pool, scalesAt + 4 * g, scale);
      for (let i = 0; i < G; i++) {
        setNibble(pool, codesAt, g * G + i, scale > 0 ? intCode(Math.fround(src[from + i]! / scale), 7) : 0);
      }
    }
  }
}

/**
 * Decode the head vector at (`slot`, `head`) of `pool` into `out[outOff, outOff + headSize)`:
 * `fround(value(code) × scale)` with the group's scale (nvfp4: `fround(e4m3 × tensorScale)`).
 */
export function dequantizeKvHead(
  l: KvBlockLayout,
  pool: Uint8Array,
  slot: number,
  head: number,
  out: Float32Array,
  outOff: number,
  tensorScale: number,
): void {
  const [codesAt, scalesAt] = offsets(l, slot, head);
  const G = l.groupSize;
  if (l.dtype === 'fp8_per_token_head' || l.dtype === 'int8_per_token_head') {
    const scale = readF32(pool, scalesAt);
    const fp8 = l.dtype === 'fp8_per_token_head';
    for (let i = 0; i < G; i++) {
      const c = pool[codesAt + i]!;
      out[outOff + i] = Math.fround((fp8 ? E4M3[c]! : (c << 24) >> 24) * scale);
    }
    return;
  }
  const nv = l.dtype === 'nvfp4';
  for (let g = 0; g < l.groupsPerHead; g++) {
    const scale = nv ? Math.fround(E4M3[pool[scalesAt + g]!]! * tensorScale) : groupScale(l, pool, scalesAt, g);
    for (let i = 0; i < G; i++) {
      const c = getNibble(pool, codesAt, g * G + i);
      out[outOff + g * G + i] = Math.fround((nv ? decodeE2m1(c) : (c << 28) >> 28) * scale);
    }
  }
}

/** The float32 or f16 (q4_0) scale of group `g` of a row whose scales start at `scalesAt`. */
function groupScale(l: KvBlockLayout, pool: Uint8Array, scalesAt: number, g: number): number {
  if (l.scaleBytes === 2) return f16BitsToF32(pool[scalesAt + 2 * g]! | (pool[scalesAt + 2 * g + 1]! << 8));
  return readF32(pool, scalesAt + 4 * g);
}

/**
 * The stored scale of group `group` of (slot, head), as a number (nvfp4: the decoded E4M3 block scale, unscaled;
 * q4_0: the f16 `d`).
 */
export function kvHeadScale(l: KvBlockLayout, pool: Uint8Array, slot: number, head: number, group = 0): number {
  const [, scalesAt] = offsets(l, slot, head);
  return l.scaleBytes === 1 ? E4M3[pool[scalesAt + group]!]! : groupScale(l, pool, scalesAt, group);
}
