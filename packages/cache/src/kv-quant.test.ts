import { encodeFp8, decodeFp8, f16BitsToF32, f32ToF16Bits } from '@kvq/fp8';
import { describe, expect, it } from 'vitest';
import { resolveKvCacheDtype } from './dtype.js';
import { BlockHasher } from './hash.js';
import {
  dequantizeKvHead,
  KV_QUANT_DTYPES,
  kvBlockLayout,
  quantizeKvHead,
  type KvBlockLayout,
  type KvQuantDtype,
} from './kv-quant.js';
import { kvBytesPerToken, kvScaleBytes, planKvCache } from './plan.js';
import { gatherKv, writeKv } from './storage/io.js';
import { copyBlocks, createKvLayerCache, KvCacheStorage } from './storage/storage.js';
import { errorCode, range } from './test-helpers.js';

// ---------------------------------------------------------------------------------------------------------------
// An independent implementation written from docs/spec/kv-dtypes.md §2–3 (no code shared with kv-quant.ts):
// nearest-grid-point search with explicit tie rules, DataView for the little-endian scales.
// ---------------------------------------------------------------------------------------------------------------
const F = Math.fround;
const E2M1 = [0, 0.5, 1, 1.5, 2, 3, 4, 6];

function specGroup(dtype: KvQuantDtype, D: number): number {
  return dtype === 'int4_g16' || dtype === 'nvfp4' ? 16 : dtype === 'int4_g32' || dtype === 'q4_0' || dtype === 'int4_g32_f16' ? 32 : dtype === 'int4_g64' ? 64 : D;
}

/** Nearest integer, ties to even, saturated to ±q. */
function specInt(v: number, q: number): number {
  if (v > q) return q;
  if (v < -q) return -q;
  const lo = Math.floor(v);
  const hi = lo + 1;
  if (v - lo < hi - v) return lo;
  if (hi - v < v - lo) return hi;
  return lo % 2 === 0 ? lo : hi;
}

/** E2M1 code by brute-force nearest search over the 8 magnitudes, ties to the even code, saturating. */
function specE2m1(v: number): number {
  const m = Math.min(Math.abs(v), 6);
  let best = 0;
  for (let c = 1; c < 8; c++) {
    const d = Math.abs(E2M1[c]! - m);
    const bd = Math.abs(E2M1[best]! - m);
    if (d < bd || (d === bd && c % 2 === 0 && best % 2 === 1)) best = c;
  }
  return best === 0 ? 0 : v < 0 ? best | 8 : best;
}

interface SpecHead {
  codes: number[]; // one code per element (int and q4_0: signed value; fp8: byte; nvfp4: 4-bit code)
  scales: number[]; // stored scale per group (nvfp4: e4m3 byte; q4_0: f16 bits)
}

/**
 * q4_0 from ggml's definition (quantize_row_q4_0_ref), with kvq's rules for what ggml leaves undefined: the signed
 * finite value of largest magnitude (first on ties) over -8 as f16 (±65504 when it overflows, then used for id), codes
 * min(15, trunc(x * id + 8.5)) in float32 steps, minus 8; NaN group: f16 NaN, codes 0; zero f16 scale: +0, codes 0.
 */
function specQ4_0(part: readonly number[], codes: number[], scales: number[]): void {
  let max = 0;
  for (const v of part) if (Number.isFinite(v) && Math.abs(v) > Math.abs(max)) max = v;
  if (part.some(Number.isNaN)) {
    scales.push(0x7e00);
    for (let i = 0; i < part.length; i++) codes.push(0);
    return;
  }
  const d = F(max / -8);
  let h = f32ToF16Bits(d);
  let id = d === 0 ? 0 : F(1 / d);
  if (!Number.isFinite(f16BitsToF32(h))) {
    h = d < 0 ? 0xfbff : 0x7bff;
    id = F(1 / f16BitsToF32(h));
  }
  if (f16BitsToF32(h) === 0) h = 0;
  scales.push(h);
  for (const v of part) {
    if (h === 0) {
      codes.push(0);
      continue;
    }
    const t = F(F(v * id) + 8.5);
    codes.push(Math.max(0, Math.min(15, Number.isFinite(t) ? Math.trunc(t) : t)) - 8);
  }
}

/**
 * int4_g32_f16 from docs/spec/kv-dtypes.md §2: d = the smaller in magnitude of +max(-n/8, p/7) and -max(p/8, -n/7)
 * (p, n: the finite extremes, 0 included), f16 (±65504 on overflow, +0 for ±0, NaN group 0x7E00), codes the nearest of
 * -8..7 to x / d, ties to even.
 */
function specInt4F16(part: readonly number[], codes: number[], scales: number[]): void {
  const finite = part.filter(Number.isFinite);
  const p = Math.max(0, ...finite);
  const n = Math.min(0, ...finite);
  if (part.some(Number.isNaN)) {
    scales.push(0x7e00);
    for (let i = 0; i < part.length; i++) codes.push(0);
    return;
  }
  const dPos = Math.max(F(-n / 8), F(p / 7));
  const dNeg = Math.max(F(p / 8), F(-n / 7));
  let h = f32ToF16Bits(dPos <= dNeg ? dPos : -dNeg);
  if (!Number.isFinite(f16BitsToF32(h))) h = dPos <= dNeg ? 0x7bff : 0xfbff;
  if (f16BitsToF32(h) === 0) h = 0;
  scales.push(h);
  const d = f16BitsToF32(h);
  for (const v of part) {
    if (d === 0) codes.push(0);
    else {
      const q = F(v / d);
      codes.push((q > 7 ? 7 : q < -8 ? -8 : specInt(q, 8)) + 0); // + 0: a code is never -0
    }
  }
}

function specQuantize(dtype: KvQuantDtype, x: readonly number[], tensorScale = 1): SpecHead {
  const G = specGroup(dtype, x.length);
  const codes: number[] = [];
  const scales: number[] = [];
  for (let g = 0; g < x.length / G; g++) {
    const part = x.slice(g * G, (g + 1) * G).map(F);
    const hasNaN = part.some(Number.isNaN);
    const finite = part.filter(Number.isFinite);
    const amax = finite.length ? Math.max(...finite.map(Math.abs)) : 0;
    if (dtype === 'q4_0') {
      specQ4_0(part, codes, scales);
      continue;
    }
    if (dtype === 'int4_g32_f16') {
      specInt4F16(part, codes, scales);
      continue;
    }
    if (dtype === 'nvfp4') {
      const s8 = hasNaN ? 0x7f : encodeFp8(F(F(amax / 6) / tensorScale), 'e4m3fn', 'satfinite');
      const S = hasNaN ? NaN : F(decodeFp8(s8, 'e4m3fn') * tensorScale);
      scales.push(s8);
      for (const v of part) codes.push(S > 0 ? specE2m1(F(v / S)) : 0);
      continue;
    }
    const qmax = dtype === 'fp8_per_token_head' ? 448 : dtype === 'int8_per_token_head' ? 127 : 7;
    const s = hasNaN ? NaN : F(amax / qmax);
    scales.push(s);
    for (const v of part) {
      if (!(s > 0)) codes.push(0);
      else if (dtype === 'fp8_per_token_head') codes.push(encodeFp8(F(v / s), 'e4m3fn', 'satfinite'));
      else codes.push(specInt(F(v / s), qmax));
    }
  }
  return { codes, scales };
}

function specDecode(dtype: KvQuantDtype, h: SpecHead, tensorScale = 1): number[] {
  const G = specGroup(dtype, h.codes.length);
  return h.codes.map((c, i) => {
    const s = h.scales[Math.floor(i / G)]!;
    if (dtype === 'nvfp4') {
      const v = (c & 8 ? -1 : 1) * E2M1[c & 7]!;
      return F(v * F(decodeFp8(s, 'e4m3fn') * tensorScale));
    }
    if (dtype === 'q4_0' || dtype === 'int4_g32_f16') return F(c * f16BitsToF32(s));
    return F((dtype === 'fp8_per_token_head' ? decodeFp8(c, 'e4m3fn') : c) * s);
  });
}

/** Read (slot, head) from a pool with the spec's byte layout. */
function specRead(l: KvBlockLayout, pool: Uint8Array, slot: number, head: number): SpecHead {
  const D = l.headSize;
  const G = specGroup(l.dtype, D);
  const eightBit = l.dtype === 'fp8_per_token_head' || l.dtype === 'int8_per_token_head';
  const cb = eightBit ? D : D / 2;
  const pad = (n: number) => Math.ceil(n / 4) * 4;
  const codesBytes = l.blockSize * l.numKvHeads * cb;
  const sb = l.dtype === 'nvfp4' ? 1 : l.dtype === 'q4_0' || l.dtype === 'int4_g32_f16' ? 2 : 4;
  const blockBytes = pad(pad(codesBytes) + l.blockSize * l.numKvHeads * (D / G) * sb);
  const b = Math.floor(slot / l.blockSize);
  const row = (slot % l.blockSize) * l.numKvHeads + head;
  const cAt = b * blockBytes + row * cb;
  const sAt = b * blockBytes + pad(codesBytes) + row * (D / G) * sb;
  const dv = new DataView(pool.buffer, pool.byteOffset, pool.byteLength);
  const codes: number[] = [];
  for (let i = 0; i < D; i++) {
    if (l.dtype === 'fp8_per_token_head') codes.push(pool[cAt + i]!);
    else if (l.dtype === 'int8_per_token_head') codes.push(dv.getInt8(cAt + i));
    else {
      const byte = pool[cAt + Math.floor(i / 2)]!;
      const nib = i % 2 === 0 ? byte & 0xf : byte >> 4;
      codes.push(l.dtype === 'nvfp4' ? nib : nib >= 8 ? nib - 16 : nib);
    }
  }
  const scales: number[] = [];
  for (let g = 0; g < D / G; g++) {
    scales.push(sb === 1 ? pool[sAt + g]! : sb === 2 ? dv.getUint16(sAt + 2 * g, true) : dv.getFloat32(sAt + 4 * g, true));
  }
  return { codes, scales };
}

/** Seeded xorshift32 in [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}

function roundTrip(dtype: KvQuantDtype, x: readonly number[], tensorScale = 1) {
  const l = kvBlockLayout(dtype, 4, 2, x.length);
  const pool = new Uint8Array(3 * l.blockBytes);
  const src = Float32Array.from(x);
  // slot 6 = block 1, offset 2; kv head 1
  quantizeKvHead(l, pool, 6, 1, src, 0, tensorScale);
  const out = new Float32Array(x.length);
  dequantizeKvHead(l, pool, 6, 1, out, 0, tensorScale);
  return { l, pool, stored: specRead(l, pool, 6, 1), out: Array.from(out) };
}

function expectSameBits(a: readonly number[], b: readonly number[]): void {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < a.length; i++) {
    if (Number.isNaN(b[i])) expect(a[i], `index ${i}`).toBeNaN();
    else expect(Object.is(a[i], b[i]), `index ${i}: ${a[i]} vs ${b[i]}`).toBe(true);
  }
}

describe('kvBlockLayout', () => {
  it('gives the byte layout of docs/spec/kv-dtypes.md §3', () => {
    const bytes = (d: KvQuantDtype) => kvBlockLayout(d, 16, 2, 64).blockBytes;
    expect(bytes('fp8_per_token_head')).toBe(16 * 2 * 64 + 16 * 2 * 4);
    expect(bytes('int8_per_token_head')).toBe(16 * 2 * 64 + 16 * 2 * 4);
    expect(bytes('int4_per_token_head')).toBe(16 * 2 * 32 + 16 * 2 * 4);
    expect(bytes('int4_g16')).toBe(16 * 2 * 32 + 16 * 2 * 4 * 4);
    expect(bytes('int4_g32')).toBe(16 * 2 * 32 + 16 * 2 * 2 * 4);
    expect(bytes('int4_g64')).toBe(16 * 2 * 32 + 16 * 2 * 1 * 4);
    expect(bytes('nvfp4')).toBe(16 * 2 * 32 + 16 * 2 * 4);
    expect(bytes('q4_0')).toBe(16 * 2 * 32 + 16 * 2 * 2 * 2);
    expect(bytes('int4_g32_f16')).toBe(bytes('q4_0'));
    // padding: 1 token x 1 head x 2 int4 values = 1 code byte, scales start at byte 4, block is 8 bytes
    const tiny = kvBlockLayout('int4_per_token_head', 1, 1, 2);
    expect([tiny.scalesOffset, tiny.blockBytes]).toEqual([4, 8]);
  });

  it('rejects head sizes the dtype cannot hold, naming dtype and size', () => {
    expect(errorCode(() => kvBlockLayout('nvfp4', 16, 1, 40))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => kvBlockLayout('int4_g64', 16, 1, 96))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => kvBlockLayout('q4_0', 16, 1, 48))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => kvBlockLayout('int4_per_token_head', 16, 1, 7))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => kvBlockLayout('bf16' as KvQuantDtype, 16, 1, 64))).toBe('UNSUPPORTED_DTYPE');
    expect(() => kvBlockLayout('nvfp4', 16, 1, 40)).toThrow(/headSize \(40\).*16.*nvfp4/);
  });
});

describe('quantizeKvHead / dequantizeKvHead against the definition', () => {
  it('int8: scale amax/127, ties to even, -128 never produced', () => {
    const { stored, out } = roundTrip('int8_per_token_head', [127, -63.5, 0, 1, 2.5, -127, 0.5, -0.5]);
    expect(stored.scales).toEqual([1]);
    expect(stored.codes).toEqual([127, -64, 0, 1, 2, -127, 0, 0]);
    expectSameBits(out, [127, -64, 0, 1, 2, -127, 0, 0]);
  });

  it('int4: symmetric -7..7, element 2i in the low nibble', () => {
    const x = [7, 2.5, -3.5, 0, 1, -7, 6.5, -6.5];
    const { pool, l, stored } = roundTrip('int4_per_token_head', x);
    expect(stored.scales).toEqual([1]);
    expect(stored.codes).toEqual([7, 2, -4, 0, 1, -7, 6, -6]);
    const at = l.blockBytes + (2 * 2 + 1) * 4; // block 1, offset 2, head 1, 4 code bytes per head
    expect(Array.from(pool.subarray(at, at + 4))).toEqual([0x27, 0x0c, 0x91, 0xa6]);
  });

  it('nvfp4: e4m3 block scale, E2M1 ties to even, saturation at 6', () => {
    const x = [6, 5, 0.25, 0.75, -1.75, 2.5, 3.5, 1.25, -0.1, 0, 4, 3, 1.5, 0.5, 1, 2];
    const { stored, out } = roundTrip('nvfp4', x);
    expect(stored.scales).toEqual([0x38]); // e4m3(1.0)
    expect(stored.codes).toEqual([7, 6, 0, 2, 0xc, 4, 6, 2, 0, 0, 6, 5, 3, 1, 2, 4]);
    expectSameBits(out, [6, 4, 0, 1, -2, 2, 4, 1, 0, 0, 4, 3, 1.5, 0.5, 1, 2]);
  });

  it("q4_0: ggml's d = max / -8 (f16), codes trunc(x / d + 8.5) clipped to 15, element 2i in the low nibble", () => {
    // max = -8 (the first of largest magnitude), so d = 1: 7.5 and 6.5 clip / round up to 7, -0.5 rounds up to 0
    const x = [-8, 7.5, 6.5, 6.49, -0.5, 0.5, -7.5, 8, ...Array.from({ length: 24 }, (_, i) => (i % 5) - 2)];
    const { pool, l, stored, out } = roundTrip('q4_0', [...x, ...x]);
    expect(stored.scales).toEqual([0x3c00, 0x3c00]); // f16(1.0)
    expect(stored.codes.slice(0, 8)).toEqual([-8, 7, 7, 6, 0, 1, -7, 7]);
    expectSameBits(out.slice(0, 8), [-8, 7, 7, 6, 0, 1, -7, 7]);
    const at = l.blockBytes + (2 * 2 + 1) * 32; // block 1, offset 2, head 1, 32 code bytes per head
    expect(Array.from(pool.subarray(at, at + 4))).toEqual([0x78, 0x67, 0x10, 0x79]);
    // the f16 scale is rounded; the codes use ggml's id = 1 / d of the unrounded d
    const y = Array.from({ length: 64 }, (_, i) => (i === 0 ? 1000.3 : i === 1 ? -937.6 : 0));
    const r = roundTrip('q4_0', y);
    expect(f16BitsToF32(r.stored.scales[0]!)).toBe(-125.0625);
    expect(r.stored.codes.slice(0, 2)).toEqual([-8, 7]); // -937.6 / -125.0375 = 7.4986: rounds to 7
  });

  it('int4_g32_f16: the smallest f16 scale that holds both extremes, nearest codes with ties to even', () => {
    const pad = (x: number[]) => [...x, ...new Array<number>(32 - x.length).fill(0)];
    // extremes ±7: both fit at d = 1 (q4_0 would store +7 at 7/8 of it), 3.5 -> 4 and 2.5 -> 2, -0.5 -> 0
    const a = roundTrip('int4_g32_f16', [...pad([7, -7, 3.5, 2.5, -0.5, 0.5, 1.5]), ...pad([-8, 7, 4])]);
    expect(a.stored.scales).toEqual([0x3c00, 0x3c00]);
    expect(a.stored.codes.slice(0, 7)).toEqual([7, -7, 4, 2, 0, 0, 2]);
    expectSameBits(a.out.slice(0, 7), [7, -7, 4, 2, 0, 0, 2]);
    // -8 and 7: the 16th code serves the larger side (d = 1, not 8 / 7)
    expect(a.stored.codes.slice(32, 35)).toEqual([-8, 7, 4]);
    // a positive extreme alone goes to -8 with a negative d (d = -0.125: 1 -> -8)
    const b = roundTrip('int4_g32_f16', pad([1, 0.25, -0.125]).concat(pad([])));
    expect(f16BitsToF32(b.stored.scales[0]!)).toBe(-0.125);
    expect(b.stored.codes.slice(0, 3)).toEqual([-8, -2, 1]);
  });

  it('fp8: scale amax/448, codes are e4m3fn satfinite', () => {
    const { stored, out } = roundTrip('fp8_per_token_head', [448, -1, 0.5, 3]);
    expect(stored.scales).toEqual([1]);
    expect(stored.codes).toEqual([0x7e, 0xb8, 0x30, 0x44]);
    expectSameBits(out, [448, -1, 0.5, 3]);
  });

  it.each(KV_QUANT_DTYPES)('%s: unit vectors decode to the definition', (dtype) => {
    const D = 64;
    for (const k of [0, 1, 17, 63]) {
      for (const a of [1, -3.75, 1e-3, 6e4]) {
        const x = Array.from({ length: D }, (_, i) => (i === k ? a : 0));
        const { stored, out } = roundTrip(dtype, x);
        const want = specQuantize(dtype, x);
        expect(stored).toEqual(want);
        expectSameBits(out, specDecode(dtype, want));
        // every other element is exactly +0 (f16-scaled dtypes: ±0, the sign of d); the unit element keeps its sign
        const zero = (v: number) => (dtype === 'q4_0' || dtype === 'int4_g32_f16' ? v === 0 : Object.is(v, 0));
        out.forEach((v, i) => expect(i === k ? v === 0 || Math.sign(v) === Math.sign(a) : zero(v)).toBe(true));
      }
    }
  });

  it.each(KV_QUANT_DTYPES)('%s: saturation of ±Inf, which stay out of the amax', (dtype) => {
    const x = Array.from({ length: 64 }, (_, i) => (i % 7) - 3);
    x[3] = Infinity;
    x[10] = -Infinity;
    const { stored, out } = roundTrip(dtype, x);
    expect(stored).toEqual(specQuantize(dtype, x));
    expect(out[3]).toBeGreaterThan(0);
    expect(Number.isFinite(out[3])).toBe(true);
    if (dtype === 'q4_0') {
      // max = -3 (the first of |3|): d = 0.375, +Inf clips to 7 d, -Inf to -8 d
      expect([out[3], out[10]]).toEqual([2.625, -3]);
      return;
    }
    if (dtype === 'int4_g32_f16') {
      // extremes ±3: d = f16(3 / 7) > 0, +Inf clips to 7 d, -Inf to -8 d
      const d = f16BitsToF32(f32ToF16Bits(3 / 7));
      expect([out[3], out[10]]).toEqual([F(7 * d), F(-8 * d)]);
      return;
    }
    expect(out[10]).toBe(-out[3]!);
    expect(out[3]).toBeGreaterThanOrEqual(dtype === 'nvfp4' ? 3 : 3 * (1 - 2 ** -3));
  });

  it.each(KV_QUANT_DTYPES)('%s: a NaN poisons its group only', (dtype) => {
    const D = 64;
    const x = Array.from({ length: D }, (_, i) => Math.sin(i + 1));
    x[5] = NaN;
    const { stored, out } = roundTrip(dtype, x);
    const want = specQuantize(dtype, x);
    expect(stored.codes).toEqual(want.codes);
    expectSameBits(stored.scales, want.scales);
    const G = specGroup(dtype, D);
    out.forEach((v, i) => (i < G ? expect(v).toBeNaN() : expect(Number.isFinite(v)).toBe(true)));
  });

  it.each(KV_QUANT_DTYPES)('%s: zero groups (and -0) decode to +0 with scale 0', (dtype) => {
    const x = Array.from({ length: 64 }, (_, i) => (i % 2 ? -0 : 0));
    const { stored, out } = roundTrip(dtype, x);
    expect(stored.codes.every((c) => c === 0)).toBe(true);
    expect(stored.scales.every((s) => s === 0)).toBe(true);
    expect(out.every((v) => Object.is(v, 0))).toBe(true);
  });

  it.each(KV_QUANT_DTYPES)('%s: random heads match the definition bit for bit', (dtype) => {
    const r = rng(KV_QUANT_DTYPES.indexOf(dtype) + 7);
    for (let n = 0; n < 150; n++) {
      const mag = 2 ** Math.floor(r() * 60 - 30);
      const x = Array.from({ length: 64 }, () => F((r() * 2 - 1) * mag * (r() < 0.05 ? 40 : 1)));
      const ts = dtype === 'nvfp4' ? F(2 ** Math.floor(r() * 20 - 10) * (1 + r())) : 1;
      const { stored, out } = roundTrip(dtype, x, ts);
      const want = specQuantize(dtype, x, ts);
      expect(stored).toEqual(want);
      expectSameBits(out, specDecode(dtype, want, ts));
    }
  });

  it('int4_g32_f16 errors stay within half a step (no clipping)', () => {
    const r = rng(6);
    for (let n = 0; n < 50; n++) {
      const x = Array.from({ length: 64 }, () => F(r() * 2 - 1));
      const { stored, out } = roundTrip('int4_g32_f16', x);
      out.forEach((v, i) => {
        const d = Math.abs(f16BitsToF32(stored.scales[Math.floor(i / 32)]!));
        expect(Math.abs(v - x[i]!)).toBeLessThanOrEqual(d * 0.5 + 8 * d * 2 ** -11);
      });
    }
  });

  it('q4_0 errors stay within half a step, one step for values opposite the extreme', () => {
    const r = rng(5);
    for (let n = 0; n < 50; n++) {
      const x = Array.from({ length: 64 }, () => F(r() * 2 - 1));
      const { stored, out } = roundTrip('q4_0', x);
      out.forEach((v, i) => {
        const d = Math.abs(f16BitsToF32(stored.scales[Math.floor(i / 32)]!));
        const opposite = stored.codes[i] === 7;
        expect(Math.abs(v - x[i]!)).toBeLessThanOrEqual(d * (opposite ? 1 : 0.5) * (1 + 2 ** -10) + Math.abs(x[i]!) * 2 ** -10);
      });
    }
  });

  it('int8 and int4 errors stay within half a step (scale / 2)', () => {
    const r = rng(3);
    for (const dtype of ['int8_per_token_head', 'int4_g16', 'int4_g32', 'int4_g64', 'int4_per_token_head'] as const) {
      const x = Array.from({ length: 64 }, () => F(r() * 2 - 1));
      const { stored, out } = roundTrip(dtype, x);
      const G = specGroup(dtype, 64);
      out.forEach((v, i) =>
        expect(Math.abs(v - x[i]!)).toBeLessThanOrEqual(stored.scales[Math.floor(i / G)]! * 0.5 * (1 + 1e-6) + Math.abs(x[i]!) * 2 ** -22),
      );
    }
  });
});

describe('storage of the write-time-scaled dtypes', () => {
  it.each(KV_QUANT_DTYPES)('%s: pools, writeKv / gatherKv and block copies carry the scales', (dtype) => {
    const numKvHeads = 2;
    const headSize = 64;
    const blockSize = 4;
    const layer = createKvLayerCache({ dtype, numBlocks: 4, blockSize, numKvHeads, headSize });
    const l = kvBlockLayout(dtype, blockSize, numKvHeads, headSize);
    expect(layer.key).toBeInstanceOf(Uint8Array);
    expect(layer.key.length).toBe(4 * l.blockBytes);
    const r = rng(11);
    const n = 6;
    const key = Float32Array.from({ length: n * numKvHeads * headSize }, () => F(r() * 4 - 2));
    const value = Float32Array.from({ length: n * numKvHeads * headSize }, () => F(r() * 8 - 4));
    if (dtype === 'nvfp4') {
      layer.kScale[0] = 0.01;
      layer.vScale[0] = 0.02;
    }
    const slots = Int32Array.from([4, 5, 6, 7, 12, 13]); // blocks 1 and 3
    writeKv(layer, key, value, slots);
    const got = gatherKv(layer, [1, 3], n);
    const D = numKvHeads * headSize;
    for (let t = 0; t < n; t++) {
      for (let h = 0; h < numKvHeads; h++) {
        const at = t * D + h * headSize;
        const k = Array.from(key.subarray(at, at + headSize));
        const v = Array.from(value.subarray(at, at + headSize));
        expectSameBits(Array.from(got.key.subarray(at, at + headSize)), specDecode(dtype, specQuantize(dtype, k, layer.kScale[0]), layer.kScale[0]));
        expectSameBits(Array.from(got.value.subarray(at, at + headSize)), specDecode(dtype, specQuantize(dtype, v, layer.vScale[0]), layer.vScale[0]));
      }
    }
    copyBlocks(layer, [{ src: 1, dst: 2 }]);
    const copied = gatherKv(layer, [2], 4);
    expectSameBits(Array.from(copied.key), Array.from(got.key.subarray(0, 4 * D)));
    expectSameBits(Array.from(copied.value), Array.from(got.value.subarray(0, 4 * D)));
  });

  it('rejects per-head scale granularity and head sizes the dtype cannot hold', () => {
    expect(errorCode(() => createKvLayerCache({ dtype: 'nvfp4', numBlocks: 2, numKvHeads: 2, headSize: 24 }))).toBe('INVALID_ARGUMENT');
    expect(
      errorCode(() => createKvLayerCache({ dtype: 'int8_per_token_head', numBlocks: 2, numKvHeads: 2, headSize: 16, scaleGranularity: 'head' })),
    ).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => new KvCacheStorage({ dtype: 'int4_g32', numLayers: 1, numBlocks: 2, numKvHeads: 1, headSize: 48 }))).toBe(
      'INVALID_ARGUMENT',
    );
  });

  it('resolves the option names, and refuses fp8_per_token_head on fnuz', () => {
    for (const d of KV_QUANT_DTYPES) expect(resolveKvCacheDtype(d)).toBe(d);
    expect(errorCode(() => resolveKvCacheDtype('fp8_per_token_head', 'bf16', { fnuz: true }))).toBe('UNSUPPORTED_DTYPE');
    expect(errorCode(() => resolveKvCacheDtype('auto', 'nvfp4' as 'bf16'))).toBe('UNSUPPORTED_DTYPE');
  });
});

describe('planner and prefix-cache hash', () => {
  const llama8b = { numLayers: 32, numKvHeads: 8, headSize: 128, numHeads: 32 };

  it('bytes per token are exact for each dtype (docs/spec/kv-dtypes.md §3)', () => {
    const perToken = (dtype: KvQuantDtype) => kvBytesPerToken(llama8b, { dtype });
    const H = 8;
    const D = 128;
    const L = 32;
    expect(perToken('fp8_per_token_head')).toBe(L * 2 * H * (D + 4));
    expect(perToken('int8_per_token_head')).toBe(L * 2 * H * (D + 4));
    expect(perToken('int4_per_token_head')).toBe(L * 2 * H * (D / 2 + 4));
    expect(perToken('int4_g16')).toBe(L * 2 * H * (D / 2 + (4 * D) / 16));
    expect(perToken('int4_g32')).toBe(L * 2 * H * (D / 2 + (4 * D) / 32));
    expect(perToken('int4_g64')).toBe(L * 2 * H * (D / 2 + (4 * D) / 64));
    expect(perToken('nvfp4')).toBe(L * 2 * H * (D / 2 + D / 16));
    expect(perToken('q4_0')).toBe(L * 2 * H * ((D / 2) * 18) / 16); // ggml's 18 bytes per 32 values
    expect(perToken('int4_g32_f16')).toBe(perToken('q4_0'));
    expect(kvScaleBytes(llama8b, { dtype: 'nvfp4' })).toBe(L * 8);
    expect(kvScaleBytes(llama8b, { dtype: 'int4_g32' })).toBe(0);
    // vLLM's int8_per_token_head page: 2 x blockSize x H x D bytes + 2 x blockSize x H x 4 scale bytes
    expect(planKvCache({ model: llama8b, dtype: 'int8_per_token_head', memoryBytes: 2 ** 30 }).pageBytes).toBe(
      2 * 16 * H * D + 2 * 16 * H * 4,
    );
  });

  it('plans each dtype within the budget', () => {
    for (const dtype of KV_QUANT_DTYPES) {
      const p = planKvCache({ model: llama8b, dtype, memoryBytes: 2 ** 30 });
      expect(p.scales).toBe('inline');
      expect(p.usedBytes).toBeLessThanOrEqual(2 ** 30);
      expect((p.numBlocks + 1) * p.bytesPerBlock + p.scaleBytes).toBeGreaterThan(2 ** 30);
    }
  });

  it('typed errors: other sidecars, inline for plain dtypes, bad head size', () => {
    expect(errorCode(() => kvBytesPerToken(llama8b, { dtype: 'int8_per_token_head', scales: 'token_head' }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => kvBytesPerToken(llama8b, { dtype: 'bf16', scales: 'inline' }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => kvBytesPerToken({ ...llama8b, headSize: 72 }, { dtype: 'int4_g64' }))).toBe('INVALID_ARGUMENT');
  });

  it('block hashes differ between dtypes and group sizes', () => {
    const h = new BlockHasher({ seed: 'kv' });
    const t = range(0, 16);
    const hashes = ['e4m3fn', ...KV_QUANT_DTYPES].map((dtype) => h.hashBlock(undefined, { dtype, scaleVersion: 0 }, t, 0, 16, undefined));
    expect(new Set(hashes).size).toBe(hashes.length);
    const storage = new KvCacheStorage({ dtype: 'int4_g16', numLayers: 1, numBlocks: 2, numKvHeads: 1, headSize: 32 });
    expect(h.hashBlock(undefined, storage, t, 0, 16, undefined)).toBe(hashes[1 + KV_QUANT_DTYPES.indexOf('int4_g16')]);
  });
});
