/**
 * A WebAssembly SIMD kernel for bulk FP8 encode/decode, assembled from opcodes at load time (no toolchain, no
 * binary blob in the repo). Same rounding as the scalar path; tests compare the two on every code and on
 * exhaustive input ranges. Exposed only through `codec.ts`, which falls back to scalar JavaScript when the
 * engine lacks WebAssembly SIMD.
 */

// ---- a minimal assembler -------------------------------------------------------------------------------

const u = (n: number): number[] => {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
};
const s = (n: number): number[] => {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
};
const name = (text: string): number[] => [...u(text.length), ...[...text].map((c) => c.charCodeAt(0))];
const section = (id: number, body: number[]): number[] => [id, ...u(body.length), ...body];
const vec = (items: number[][]): number[] => [...u(items.length), ...items.flat()];

const I32 = 0x7f;
const V128 = 0x7b;
const op = {
  block: [0x02, 0x40],
  loop: [0x03, 0x40],
  end: [0x0b],
  br: (d: number) => [0x0c, ...u(d)],
  brIf: (d: number) => [0x0d, ...u(d)],
  localGet: (i: number) => [0x20, ...u(i)],
  localSet: (i: number) => [0x21, ...u(i)],
  localTee: (i: number) => [0x22, ...u(i)],
  i32Const: (v: number) => [0x41, ...s(v | 0)],
  i32Add: [0x6a],
  i32GeU: [0x4f],
  i32Shl: [0x74],
  simd: (code: number, ...imm: number[]) => [0xfd, ...u(code), ...imm],
};
const memarg = (align: number, offset: number) => [...u(align), ...u(offset)];
const V = {
  load: (offset = 0) => op.simd(0x00, ...memarg(4, offset)),
  store: (offset = 0) => op.simd(0x0b, ...memarg(4, offset)),
  load8x8u: (offset = 0) => op.simd(0x02, ...memarg(3, offset)),
  i32x4Splat: op.simd(0x11),
  i32x4Eq: op.simd(0x37),
  i32x4GtS: op.simd(0x3b),
  i32x4GeS: op.simd(0x3f),
  and: op.simd(0x4e),
  or: op.simd(0x50),
  bitselect: op.simd(0x52),
  i8x16NarrowI16x8U: op.simd(0x66),
  f32x4Nearest: op.simd(0x6a),
  i16x8NarrowI32x4U: op.simd(0x86),
  i32x4ExtendLowI16x8U: op.simd(0xa9),
  i32x4ExtendHighI16x8U: op.simd(0xaa),
  i32x4Shl: op.simd(0xab),
  i32x4ShrU: op.simd(0xad),
  i32x4Add: op.simd(0xae),
  i32x4Sub: op.simd(0xb1),
  f32x4Mul: op.simd(0xe6),
  i32x4TruncSatF32x4S: op.simd(0xf8),
  f32x4ConvertI32x4S: op.simd(0xfa),
};

/** Constants that specialize the kernels to one (format, saturation); passed as i32 params. */
export interface SimdFormatParams {
  /** 23 - mantissaBits. */
  shift: number;
  roundBias: number;
  expAdjust: number;
  minNormalBits: number;
  /** float32 bits of 2^(bias - 1 + M). */
  subScaleBits: number;
  maxCode: number;
  nanCode: number;
  overflowCode: number;
  /** 0x80 when overflow keeps the sign, else 0. */
  overflowSignMask: number;
  /** 0x80 when a zero result keeps the sign (OCP), 0 for FNUZ. */
  zeroSignMask: number;
  /** Decode: float32 bits of 2^(127 - bias). */
  decodeScaleBits: number;
  /** Decode: codes c with (c & 0x7f) >= this are special (NaN, or inf for e5m2); 256 = none. */
  specialFrom: number;
  /** Decode: code (c & 0x7f) that means +-inf, or -1. */
  infMagnitudeCode: number;
  /** Decode: -1 (all bits) for FNUZ, where 0x80 is NaN; 0 otherwise. */
  fnuzNan: number;
}

const ENCODE_PARAMS = 3 + 10; // src, dst, n, then the 10 encode constants
const DECODE_PARAMS = 3 + 6; // src, dst, n, shift, decodeScaleBits, specialFrom, infMagnitudeCode, fnuzNan, (unused)

/**
 * encode(src f32*, dst u8*, n): n must be a multiple of 16. Locals after params: i (i32) then v128 temps.
 */
function encodeBody(): number[] {
  // params: 0 src, 1 dst, 2 n, 3 shift, 4 roundBias, 5 expAdjust, 6 minNormalBits, 7 subScaleBits, 8 maxCode,
  //         9 nanCode, 10 overflowCode, 11 overflowSignMask, 12 zeroSignMask
  const i = 13;
  const [SHIFT, RB, EA, MN, SS, MAXC, NAN, OVF, OVFS, ZS, MASK7F, INF, C0] = [14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26];
  const [X, A, SIGN, NORM, SUB, C, R0, R1, R2, R3, ONE] = [27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37];
  const splat = (param: number, local: number) => [...op.localGet(param), ...V.i32x4Splat, ...op.localSet(local)];
  const splatConst = (v: number, local: number) => [...op.i32Const(v), ...V.i32x4Splat, ...op.localSet(local)];
  // Encodes the 4 floats at src + 16*k into local `dst` (i32 codes). bitselect(a, b, mask) = mask ? a : b.
  const encodeFour = (k: number, dst: number) => [
    ...op.localGet(0),
    ...V.load(16 * k),
    ...op.localTee(X),
    ...op.localGet(MASK7F),
    ...V.and,
    ...op.localSet(A),
    ...op.localGet(X),
    ...op.i32Const(24),
    ...V.i32x4ShrU,
    ...op.localGet(C0),
    ...V.and,
    ...op.localSet(SIGN),
    ...op.localGet(A),
    ...op.localGet(RB),
    ...V.i32x4Add,
    ...op.localGet(A),
    ...op.localGet(3),
    ...V.i32x4ShrU,
    ...op.localGet(ONE),
    ...V.and,
    ...V.i32x4Add,
    ...op.localGet(3),
    ...V.i32x4ShrU,
    ...op.localGet(EA),
    ...V.i32x4Sub,
    ...op.localSet(NORM),
    ...op.localGet(A),
    ...op.localGet(SS),
    ...V.f32x4Mul,
    ...V.f32x4Nearest,
    ...V.i32x4TruncSatF32x4S,
    ...op.localSet(SUB),
    // C = (a >= minNormal) ? NORM : SUB
    ...op.localGet(NORM),
    ...op.localGet(SUB),
    ...op.localGet(A),
    ...op.localGet(MN),
    ...V.i32x4GeS,
    ...V.bitselect,
    ...op.localSet(C),
    // R = (C > maxCode) ? (ovf | (sign & ovfs)) : (sign | C)
    ...op.localGet(OVF),
    ...op.localGet(SIGN),
    ...op.localGet(OVFS),
    ...V.and,
    ...V.or,
    ...op.localGet(SIGN),
    ...op.localGet(C),
    ...V.or,
    ...op.localGet(C),
    ...op.localGet(MAXC),
    ...V.i32x4GtS,
    ...V.bitselect,
    ...op.localSet(dst),
    // R = (C == 0) ? (sign & zeroSign) : R
    ...op.localGet(SIGN),
    ...op.localGet(ZS),
    ...V.and,
    ...op.localGet(dst),
    ...op.localGet(C),
    ...op.simd(0x0c, ...new Array(16).fill(0)),
    ...V.i32x4Eq,
    ...V.bitselect,
    ...op.localSet(dst),
    // R = (a > 0x7f800000) ? nan : R
    ...op.localGet(NAN),
    ...op.localGet(dst),
    ...op.localGet(A),
    ...op.localGet(INF),
    ...V.i32x4GtS,
    ...V.bitselect,
    ...op.localSet(dst),
  ];
  return [
    ...splat(3, SHIFT),
    ...splat(4, RB),
    ...splat(5, EA),
    ...splat(6, MN),
    ...splat(7, SS),
    ...splat(8, MAXC),
    ...splat(9, NAN),
    ...splat(10, OVF),
    ...splat(11, OVFS),
    ...splat(12, ZS),
    ...splatConst(0x7fffffff, MASK7F),
    ...splatConst(0x7f800000, INF),
    ...splatConst(0x80, C0),
    ...splatConst(1, ONE),
    ...op.i32Const(0),
    ...op.localSet(i),
    ...op.block,
    ...op.loop,
    ...op.localGet(i),
    ...op.localGet(2),
    ...op.i32GeU,
    ...op.brIf(1),
    ...encodeFour(0, R0),
    ...encodeFour(1, R1),
    ...encodeFour(2, R2),
    ...encodeFour(3, R3),
    ...op.localGet(1),
    ...op.localGet(R0),
    ...op.localGet(R1),
    ...V.i16x8NarrowI32x4U,
    ...op.localGet(R2),
    ...op.localGet(R3),
    ...V.i16x8NarrowI32x4U,
    ...V.i8x16NarrowI16x8U,
    ...V.store(0),
    ...op.localGet(0),
    ...op.i32Const(64),
    ...op.i32Add,
    ...op.localSet(0),
    ...op.localGet(1),
    ...op.i32Const(16),
    ...op.i32Add,
    ...op.localSet(1),
    ...op.localGet(i),
    ...op.i32Const(16),
    ...op.i32Add,
    ...op.localSet(i),
    ...op.br(0),
    ...op.end,
    ...op.end,
  ];
}

/** decode(src u8*, dst f32*, n): n a multiple of 8. */
function decodeBody(): number[] {
  // params: 0 src, 1 dst, 2 n, 3 shift, 4 decodeScaleBits, 5 specialFrom, 6 infMagnitudeCode, 7 fnuzNan, 8 unused
  const i = 9;
  const [SCALE, SPECIAL, INFC, M7F, S80, NANV, INFV, FNUZ, W, M, R] = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20];
  const splat = (param: number, local: number) => [...op.localGet(param), ...V.i32x4Splat, ...op.localSet(local)];
  const splatConst = (v: number, local: number) => [...op.i32Const(v), ...V.i32x4Splat, ...op.localSet(local)];
  // Decodes 4 codes (extended to i32) and stores them at dst + offset.
  const decodeFour = (extend: number[], offset: number) => [
    ...op.localGet(1),
    // value = f32(m << shift) * scale | sign
    ...op.localGet(W),
    ...extend,
    ...op.localSet(R),
    ...op.localGet(R),
    ...op.localGet(M7F),
    ...V.and,
    ...op.localSet(M),
    ...op.localGet(M),
    ...op.localGet(3),
    ...V.i32x4Shl,
    ...op.localGet(SCALE),
    ...V.f32x4Mul,
    ...op.localGet(R),
    ...op.localGet(S80),
    ...V.and,
    ...op.i32Const(24),
    ...V.i32x4Shl,
    ...op.localTee(18 + 10), // sign bits, local 28
    ...V.or,
    // (m == infCode) ? (inf | sign) : value
    ...op.localSet(29),
    ...op.localGet(INFV),
    ...op.localGet(28),
    ...V.or,
    ...op.localGet(29),
    ...op.localGet(M),
    ...op.localGet(INFC),
    ...V.i32x4Eq,
    ...V.bitselect,
    ...op.localSet(29),
    // (m >= specialFrom && m != infCode) ? NaN : value  -> computed as: ge & ~eqInf
    ...op.localGet(NANV),
    ...op.localGet(29),
    ...op.localGet(M),
    ...op.localGet(SPECIAL),
    ...V.i32x4GeS,
    ...op.localGet(M),
    ...op.localGet(INFC),
    ...V.i32x4Eq,
    ...op.simd(0x4f), // v128.andnot(a, b) = a & ~b
    ...V.bitselect,
    ...op.localSet(29),
    // FNUZ: code == 0x80 -> NaN
    ...op.localGet(NANV),
    ...op.localGet(29),
    ...op.localGet(R),
    ...op.localGet(S80),
    ...V.i32x4Eq,
    ...op.localGet(FNUZ),
    ...V.and,
    ...V.bitselect,
    ...V.store(offset),
  ];
  return [
    ...splat(4, SCALE),
    ...splat(5, SPECIAL),
    ...splat(6, INFC),
    ...splat(7, FNUZ),
    ...splatConst(0x7f, M7F),
    ...splatConst(0x80, S80),
    ...splatConst(0x7fffffff, NANV),
    ...splatConst(0x7f800000, INFV),
    ...op.i32Const(0),
    ...op.localSet(i),
    ...op.block,
    ...op.loop,
    ...op.localGet(i),
    ...op.localGet(2),
    ...op.i32GeU,
    ...op.brIf(1),
    ...op.localGet(0),
    ...V.load8x8u(0),
    ...op.localSet(W),
    ...decodeFour(V.i32x4ExtendLowI16x8U, 0),
    ...decodeFour(V.i32x4ExtendHighI16x8U, 16),
    ...op.localGet(0),
    ...op.i32Const(8),
    ...op.i32Add,
    ...op.localSet(0),
    ...op.localGet(1),
    ...op.i32Const(32),
    ...op.i32Add,
    ...op.localSet(1),
    ...op.localGet(i),
    ...op.i32Const(8),
    ...op.i32Add,
    ...op.localSet(i),
    ...op.br(0),
    ...op.end,
    ...op.end,
  ];
}

function funcBody(locals: [number, number][], code: number[]): number[] {
  const body = [...vec(locals.map(([n, t]) => [...u(n), t])), ...code, ...op.end];
  return [...u(body.length), ...body];
}

/** The module's bytes: memory import "env.memory"; exports `encode` and `decode`. */
export function simdModuleBytes(): Uint8Array {
  const encType = [0x60, ...vec(new Array(ENCODE_PARAMS).fill([I32])), 0x00];
  const decType = [0x60, ...vec(new Array(DECODE_PARAMS).fill([I32])), 0x00];
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec([encType, decType])),
    ...section(2, vec([[...name('env'), ...name('memory'), 0x02, 0x00, 0x01]])),
    ...section(3, vec([u(0), u(1)])),
    ...section(7, vec([
      [...name('encode'), 0x00, ...u(0)],
      [...name('decode'), 0x00, ...u(1)],
    ])),
    ...section(10, vec([
      funcBody([[1, I32], [30, V128]], encodeBody()),
      funcBody([[1, I32], [20, V128]], decodeBody()),
    ])),
  ];
  return Uint8Array.from(bytes);
}
