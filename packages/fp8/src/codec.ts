import { Fp8Error } from './errors.js';
import { checkSaturation, formatInfo, type Fp8Format, type Saturation } from './formats.js';
import { f16ToF32Table, f32Bits } from './half.js';
import { SIMD_CHUNK, simdDecodeChunk, simdEncodeChunk, simdKernels, type SimdFormatParams } from './wasm/simd.js';

/** 1.5 * 2^52: adding and subtracting it rounds a double in [0, 2^51) to an integer, ties to even. */
const RNE_MAGIC = 6755399441055744;

/** Precomputed integer constants that drive the branch-light encoder for one (format, saturation). */
interface Encoder {
  /** Mantissa bits dropped from float32: 23 - M. */
  readonly shift: number;
  /** Half an output ulp minus one, in float32-bit units. */
  readonly roundBias: number;
  /** (127 - bias) << M: exponent re-bias applied to the shifted float32 bits. */
  readonly expAdjust: number;
  /** Float32 bits of the format's smallest normal value. */
  readonly minNormalBits: number;
  /** 2^(bias - 1 + M): multiplies a subnormal-range magnitude into units of the smallest subnormal. */
  readonly subScale: number;
  readonly maxCode: number;
  readonly nanCode: number;
  /** Code for positive overflow; the sign bit is or-ed in when `overflowSigned`. */
  readonly overflowCode: number;
  readonly overflowSigned: boolean;
  /** FNUZ formats have no -0: a zero result drops the sign. */
  readonly fnuz: boolean;
  /** The same constants for the WebAssembly SIMD kernel. */
  readonly simd: SimdFormatParams;
}

const encoders = new Map<string, Encoder>();

function encoderFor(format: Fp8Format, saturation: Saturation | undefined): Encoder {
  const sat = checkSaturation(saturation);
  const key = `${format}/${sat}`;
  const cached = encoders.get(key);
  if (cached) return cached;
  const f = formatInfo(format);
  const shift = 23 - f.mantissaBits;
  let overflowCode: number;
  let overflowSigned: boolean;
  if (sat === 'satfinite') {
    overflowCode = f.maxFiniteCode;
    overflowSigned = true;
  } else if (f.fnuz) {
    overflowCode = 0x80;
    overflowSigned = false;
  } else if (f.infCodes) {
    overflowCode = f.infCodes.positive;
    overflowSigned = true;
  } else {
    // e4m3fn has no inf: CUDA's NOSAT overflow is NaN with the input's sign kept (0x7F / 0xFF), as the
    // oracle shows for negative overflow (spec/fp8-formats.md says "positive sign"; CUDA's bytes win).
    overflowCode = 0x7f;
    overflowSigned = true;
  }
  const roundBias = (1 << (shift - 1)) - 1;
  const expAdjust = (127 - f.bias) << f.mantissaBits;
  const minNormalBits = (128 - f.bias) << 23;
  const subScale = 2 ** (f.bias - 1 + f.mantissaBits);
  const enc: Encoder = {
    shift,
    roundBias,
    expAdjust,
    minNormalBits,
    subScale,
    maxCode: f.maxFiniteCode,
    nanCode: f.nanCode,
    overflowCode,
    overflowSigned,
    fnuz: f.fnuz,
    simd: simdParams(format, { shift, roundBias, expAdjust, minNormalBits, subScale, overflowCode, overflowSigned }),
  };
  encoders.set(key, enc);
  return enc;
}

/** Kernel constants for the WebAssembly SIMD path of one (format, saturation). */
function simdParams(
  format: Fp8Format,
  e: { shift: number; roundBias: number; expAdjust: number; minNormalBits: number; subScale: number; overflowCode: number; overflowSigned: boolean },
): SimdFormatParams {
  const f = formatInfo(format);
  const specialFrom = f.fnuz ? 256 : f.infCodes ? f.infCodes.positive : 0x7f;
  return {
    shift: e.shift,
    roundBias: e.roundBias,
    expAdjust: e.expAdjust,
    minNormalBits: e.minNormalBits,
    subScaleBits: f32Bits(e.subScale) | 0,
    maxCode: f.maxFiniteCode,
    nanCode: f.nanCode,
    overflowCode: e.overflowCode,
    overflowSignMask: e.overflowSigned ? 0x80 : 0,
    zeroSignMask: f.fnuz ? 0 : 0x80,
    decodeScaleBits: f32Bits(2 ** (127 - f.bias)) | 0,
    specialFrom,
    infMagnitudeCode: f.infCodes ? f.infCodes.positive : -1,
    fnuzNan: f.fnuz ? -1 : 0,
  };
}

/**
 * Encodes [start, end) like {@link encodeRange}, through the WebAssembly SIMD kernel when available (16 values
 * per step, chunked through its memory), the scalar loop for the rest.
 */
function encodeRangeFast(
  enc: Encoder,
  srcF: Float32Array,
  srcU: Int32Array,
  start: number,
  end: number,
  out: Uint8Array,
  outStart: number,
): void {
  const k = end - start >= 64 ? simdKernels() : null;
  if (k) {
    while (end - start >= 16) {
      const n = Math.min(SIMD_CHUNK, (end - start) & ~15);
      k.f32.set(srcF.subarray(start, start + n));
      simdEncodeChunk(k, n, enc.simd);
      out.set(k.codes.subarray(0, n), outStart);
      start += n;
      outStart += n;
    }
  }
  encodeRange(enc, srcF, srcU, start, end, out, outStart);
}

/**
 * Encodes float32 values [start, end) of `srcF` (with `srcU` the same memory as int32 bits) into `out` from
 * `outStart`. Int32 rather than Uint32 views: V8 boxes Uint32 elements >= 2^31 (every negative float).
 * Round to nearest even; NaN, overflow and underflow as CUDA's `__nv_cvt_float_to_fp8`.
 * NOTE: the hot loop of every encode path; keep it allocation-free and monomorphic.
 */
function encodeRange(
  enc: Encoder,
  srcF: Float32Array,
  srcU: Int32Array,
  start: number,
  end: number,
  out: Uint8Array,
  outStart: number,
): void {
  const { shift, roundBias, expAdjust, minNormalBits, subScale, maxCode, nanCode, overflowCode, fnuz } = enc;
  const overflowSignMask = enc.overflowSigned ? 0x80 : 0;
  const zeroSignMask = fnuz ? 0 : 0x80;
  let o = outStart;
  for (let i = start; i < end; i++, o++) {
    const b = srcU[i]!;
    const a = b & 0x7fffffff;
    const s = (b >>> 24) & 0x80;
    if (a >= minNormalBits) {
      if (a > 0x7f800000) {
        out[o] = nanCode;
        continue;
      }
      const c = ((a + roundBias + ((a >>> shift) & 1)) >>> shift) - expAdjust;
      out[o] = c > maxCode ? overflowCode | (s & overflowSignMask) : s | c;
    } else {
      const v = srcF[i]!;
      const c = (v < 0 ? -v : v) * subScale + RNE_MAGIC - RNE_MAGIC;
      out[o] = c === 0 ? s & zeroSignMask : s | c;
    }
  }
}

/** Options of the bulk encoders. */
export interface EncodeOptions {
  /** Overflow behaviour; default `satfinite` (vLLM). */
  saturation?: Saturation;
  /** Caller-provided output (length >= input length); a new Uint8Array otherwise. */
  out?: Uint8Array;
}

/** Options of the bulk decoders. */
export interface DecodeOptions<T> {
  /** Caller-provided output (length >= input length); a new array otherwise. */
  out?: T;
}

function outputFor<T extends { length: number }>(
  out: T | undefined,
  length: number,
  make: (n: number) => T,
): T {
  if (out === undefined) return make(length);
  if (out.length < length) {
    throw new Fp8Error('OUTPUT_TOO_SMALL', `out has length ${out.length}, needs at least ${length}`);
  }
  return out;
}

const CHUNK = 4096;
const scratchF = new Float32Array(CHUNK);
const scratchU = new Int32Array(scratchF.buffer);

/**
 * Encodes one number (rounded to float32 first, as CUDA's float conversion sees it) to an FP8 byte.
 * @param x value; NaN and +-inf allowed
 * @param format target format
 * @param saturation default `satfinite`
 * @returns the FP8 code, 0..255
 */
export function encodeFp8(x: number, format: Fp8Format, saturation?: Saturation): number {
  const enc = encoderFor(format, saturation);
  scratchF[0] = x;
  const out = new Uint8Array(1);
  encodeRange(enc, scratchF, scratchU, 0, 1, out, 0);
  return out[0]!;
}

/**
 * Encodes float32 values to FP8 codes.
 * @param src float32 values (a Float32Array is read in place; other array-likes are converted to float32)
 * @returns `options.out` or a new Uint8Array of `src.length` codes
 */
export function encodeFp8Array(
  src: Float32Array | ArrayLike<number>,
  format: Fp8Format,
  options: EncodeOptions = {},
): Uint8Array {
  const enc = encoderFor(format, options.saturation);
  const out = outputFor(options.out, src.length, (n) => new Uint8Array(n));
  if (src instanceof Float32Array) {
    const bits = new Int32Array(src.buffer, src.byteOffset, src.length);
    encodeRangeFast(enc, src, bits, 0, src.length, out, 0);
    return out;
  }
  for (let i = 0; i < src.length; i += CHUNK) {
    const n = Math.min(CHUNK, src.length - i);
    for (let j = 0; j < n; j++) scratchF[j] = src[i + j]!;
    encodeRangeFast(enc, scratchF, scratchU, 0, n, out, i);
  }
  return out;
}

/**
 * Encodes bfloat16 values (raw bits) to FP8 codes. bf16 is an exact subset of float32, so the result equals
 * encoding the widened float32 value.
 */
export function encodeFp8FromBf16Bits(src: Uint16Array, format: Fp8Format, options: EncodeOptions = {}): Uint8Array {
  const enc = encoderFor(format, options.saturation);
  const out = outputFor(options.out, src.length, (n) => new Uint8Array(n));
  for (let i = 0; i < src.length; i += CHUNK) {
    const n = Math.min(CHUNK, src.length - i);
    for (let j = 0; j < n; j++) scratchU[j] = src[i + j]! << 16;
    encodeRangeFast(enc, scratchF, scratchU, 0, n, out, i);
  }
  return out;
}

const f16Tables = new Map<string, Uint8Array>();

/** 65536-entry f16-bits -> FP8 table for one (format, saturation), built once from the float32 encoder. */
function f16EncodeTable(format: Fp8Format, saturation: Saturation | undefined): Uint8Array {
  const key = `${format}/${checkSaturation(saturation)}`;
  let table = f16Tables.get(key);
  if (!table) {
    table = encodeFp8Array(f16ToF32Table(), format, { saturation: checkSaturation(saturation) });
    f16Tables.set(key, table);
  }
  return table;
}

/** Encodes IEEE half values (raw bits) to FP8 codes, through a 64 KiB table per (format, saturation). */
export function encodeFp8FromF16Bits(src: Uint16Array, format: Fp8Format, options: EncodeOptions = {}): Uint8Array {
  const table = f16EncodeTable(format, options.saturation);
  const out = outputFor(options.out, src.length, (n) => new Uint8Array(n));
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]!]!;
  return out;
}

interface DecodeTables {
  readonly f32: Float32Array;
  /** Same memory as `f32`, as int32 bit patterns (copying bits keeps NaN payloads and avoids boxing). */
  readonly bits: Int32Array;
  readonly f16: Uint16Array;
  readonly bf16: Uint16Array;
}

const decodeTables = new Map<Fp8Format, DecodeTables>();

/** Byte order of typed-array views; the 4-codes-per-load decode assumes little-endian words. */
const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;

/** Float32 bit pattern CUDA's fp8->half->float conversion gives for NaN codes (positive, all-ones payload). */
const DECODED_NAN_BITS = 0x7fffffff;

function tablesFor(format: Fp8Format): DecodeTables {
  const cached = decodeTables.get(format);
  if (cached) return cached;
  const f = formatInfo(format);
  const f32 = new Float32Array(256);
  const bits = new Int32Array(f32.buffer);
  const f16 = new Uint16Array(256);
  const bf16 = new Uint16Array(256);
  const mMask = (1 << f.mantissaBits) - 1;
  for (let code = 0; code < 256; code++) {
    const negative = (code & 0x80) !== 0;
    const e = (code & 0x7f) >> f.mantissaBits;
    const m = code & mMask;
    if (f.nanCodes.includes(code)) {
      bits[code] = DECODED_NAN_BITS;
      f16[code] = 0x7fff;
      bf16[code] = 0x7fff;
      continue;
    }
    let magnitude: number;
    if (f.infCodes && (code === f.infCodes.positive || code === f.infCodes.negative)) magnitude = Infinity;
    else if (e === 0) magnitude = m * f.minSubnormal;
    else magnitude = 2 ** (e - f.bias) * (1 + m / (mMask + 1));
    const value = negative ? -magnitude : magnitude;
    f32[code] = value;
    // Every FP8 value is exact in f16 and bf16 (fewer mantissa bits, narrower exponent range).
    bf16[code] = bits[code]! >>> 16;
    f16[code] = f32ToF16Exact(value);
  }
  const tables = { f32, bits, f16, bf16 };
  decodeTables.set(format, tables);
  return tables;
}

/** f16 bits of a value known to be exactly representable in f16 (FP8 values are). */
function f32ToF16Exact(value: number): number {
  const b = f32Bits(value);
  const sign = (b >>> 16) & 0x8000;
  const a = b & 0x7fffffff;
  if (a === 0x7f800000) return sign | 0x7c00;
  if (a >= 0x38800000) return sign | ((a >>> 13) - (112 << 10));
  return sign | (Math.abs(value) * 16777216);
}

/**
 * The 256-entry decode table of a format (float32 values; NaN codes hold CUDA's 0x7FFFFFFF pattern).
 * NOTE: shared and read-only by convention: do not write into it.
 */
export function fp8DecodeTable(format: Fp8Format): Float32Array {
  return tablesFor(format).f32;
}

/** Decodes one FP8 code to its value (NaN for NaN codes, +-Infinity for e5m2's inf codes). */
export function decodeFp8(code: number, format: Fp8Format): number {
  if (!Number.isInteger(code) || code < 0 || code > 255) {
    throw new Fp8Error('INVALID_ARGUMENT', `FP8 code must be an integer in 0..255, got ${code}`);
  }
  return tablesFor(format).f32[code]!;
}

/** Decodes FP8 codes to float32, bit-exact with CUDA (NaN codes give the 0x7FFFFFFF pattern). */
export function decodeFp8Array(src: Uint8Array, format: Fp8Format, options: DecodeOptions<Float32Array> = {}): Float32Array {
  const table = tablesFor(format).bits;
  const out = outputFor(options.out, src.length, (n) => new Float32Array(n));
  const outBits = new Int32Array(out.buffer, out.byteOffset, out.length);
  const n = src.length;
  let i = 0;
  const k = n >= 64 ? simdKernels() : null;
  if (k) {
    const params = encoderFor(format, 'satfinite').simd;
    while (n - i >= 8) {
      const m = Math.min(SIMD_CHUNK, (n - i) & ~7);
      k.codes.set(src.subarray(i, i + m));
      simdDecodeChunk(k, m, params);
      out.set(k.f32.subarray(0, m), i);
      i += m;
    }
  }
  // Bytes up to a 4-byte boundary, then four codes per 32-bit load (fewer loads and bounds checks).
  for (; i < n && (src.byteOffset + i) % 4 !== 0; i++) outBits[i] = table[src[i]!]!;
  const words = LITTLE_ENDIAN ? (n - i) >> 2 : 0;
  if (words > 0) {
    const src32 = new Int32Array(src.buffer, src.byteOffset + i, words);
    for (let w = 0; w < words; w++, i += 4) {
      const v = src32[w]!;
      outBits[i] = table[v & 255]!;
      outBits[i + 1] = table[(v >> 8) & 255]!;
      outBits[i + 2] = table[(v >> 16) & 255]!;
      outBits[i + 3] = table[(v >>> 24) & 255]!;
    }
  }
  for (; i < n; i++) outBits[i] = table[src[i]!]!;
  return out;
}

/** Decodes FP8 codes to IEEE half bits (exact; NaN -> 0x7FFF). */
export function decodeFp8ToF16Bits(src: Uint8Array, format: Fp8Format, options: DecodeOptions<Uint16Array> = {}): Uint16Array {
  const table = tablesFor(format).f16;
  const out = outputFor(options.out, src.length, (n) => new Uint16Array(n));
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]!]!;
  return out;
}

/** Decodes FP8 codes to bfloat16 bits (exact; NaN -> 0x7FFF). */
export function decodeFp8ToBf16Bits(src: Uint8Array, format: Fp8Format, options: DecodeOptions<Uint16Array> = {}): Uint16Array {
  const table = tablesFor(format).bf16;
  const out = outputFor(options.out, src.length, (n) => new Uint16Array(n));
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]!]!;
  return out;
}

/**
 * Encodes `count` consecutive float32 bit patterns starting at `firstBits` (wrapping is not allowed).
 * Used to check the encoder against CUDA's oracle over every float32 input; also handy for tables.
 */
export function encodeFp8BitRange(
  firstBits: number,
  count: number,
  format: Fp8Format,
  options: EncodeOptions = {},
): Uint8Array {
  if (!Number.isInteger(firstBits) || firstBits < 0 || !Number.isInteger(count) || count < 0 || firstBits + count > 2 ** 32) {
    throw new Fp8Error('INVALID_ARGUMENT', `bit range [${firstBits}, ${firstBits}+${count}) is outside 0..2^32`);
  }
  const enc = encoderFor(format, options.saturation);
  const out = outputFor(options.out, count, (n) => new Uint8Array(n));
  for (let i = 0; i < count; i += CHUNK) {
    const n = Math.min(CHUNK, count - i);
    const base = firstBits + i;
    for (let j = 0; j < n; j++) scratchU[j] = (base + j) | 0;
    encodeRangeFast(enc, scratchF, scratchU, 0, n, out, i);
  }
  return out;
}

/** @internal Encodes `srcF` (float32 values with bits view `srcU`) range into `out`; used by scaled paths. */
export function encodeFloat32Range(
  format: Fp8Format,
  saturation: Saturation | undefined,
  srcF: Float32Array,
  srcU: Int32Array,
  start: number,
  end: number,
  out: Uint8Array,
  outStart: number,
): void {
  encodeRangeFast(encoderFor(format, saturation), srcF, srcU, start, end, out, outStart);
}
