import { f16ToF32Table } from '@kvq/fp8';
import { describe, expect, it } from 'vitest';
import type { GgmlWeightDtype, WeightMatrix } from '../contract.js';
import { KernelError } from '../errors.js';
import { dequantizeRow, kScaleMin } from './dequantize.js';
import { GGML_BLOCK, weightDataLength } from './layout.js';
import { quantizeMatrix } from './quantize.js';
import { loadVectors, slice } from './vectors.test-helpers.js';

const { sections, bin } = loadVectors();
const fr = Math.fround;

/** Deterministic generator (mulberry32) and a Gaussian from it. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function gauss(r: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}

function dequantAll(w: WeightMatrix): Float32Array {
  const y = new Float32Array(w.rows * w.cols);
  for (let r = 0; r < w.rows; r++) dequantizeRow(w, r, y, r * w.cols);
  return y;
}

function thrown(fn: () => unknown): KernelError {
  try {
    fn();
  } catch (e) {
    if (e instanceof KernelError) return e;
    throw e;
  }
  throw new Error('nothing thrown');
}

describe('quantizeMatrix q8_0..q5_1: bit-exact with gguf-py quantize_blocks', () => {
  const quantSections = sections.filter((s) => s.kind === 'quantize');
  it('has a quantize section for q8_0, q4_0, q4_1, q5_0, q5_1', () => {
    expect(quantSections.map((s) => s.type).sort()).toEqual(['q4_0', 'q4_1', 'q5_0', 'q5_1', 'q8_0']);
  });
  for (const s of quantSections) {
    const { blockElems } = GGML_BLOCK[s.type];
    it(`${s.type}: ${s.blocks} random and adversarial blocks`, () => {
      const x = new Float32Array(slice(bin, s.input));
      const want = new Uint8Array(slice(bin, s.output));
      for (const perRow of [1, s.blocks / 8]) {
        const w = quantizeMatrix(x, s.blocks / perRow, perRow * blockElems, s.type);
        expect(w.data.length).toBe(want.length);
        const got = w.data as Uint8Array;
        let bad = -1;
        for (let i = 0; i < got.length && bad < 0; i++) if (got[i] !== want[i]) bad = i;
        expect(bad, bad < 0 ? '' : `byte ${bad} (block ${Math.floor(bad / GGML_BLOCK[s.type].blockBytes)})`).toBe(-1);
      }
    });
  }
});

/** Rows that stress a K-quant: Gaussian at mixed scales per sub-block, and adversarial rows. */
function kQuantRows(cols: number): { name: string; x: Float32Array }[] {
  const r = rng(7);
  const make = (f: (i: number) => number): Float32Array => Float32Array.from({ length: cols }, (_, i) => f(i));
  const scales = Array.from({ length: cols / 16 }, () => 10 ** (4 * r() - 3));
  return [
    { name: 'gaussian', x: make(() => gauss(r)) },
    { name: 'gaussian, sub-block scales 1e-3..10', x: make((i) => gauss(r) * scales[i >> 4]!) },
    { name: 'all zeros', x: make(() => 0) },
    { name: 'constant 0.37', x: make(() => 0.37) },
    { name: 'constant -2.5', x: make(() => -2.5) },
    { name: 'one outlier', x: make((i) => (i === 77 ? 1000 : 0.001 * gauss(r))) },
    { name: '±tiny (1e-30)', x: make(() => (r() < 0.5 ? -1e-30 : 1e-30)) },
    { name: 'all negative', x: make(() => -Math.abs(gauss(r)) - 3) },
    { name: 'all positive', x: make(() => Math.abs(gauss(r)) + 3) },
    { name: 'large (|x| ~ 1e4)', x: make(() => 1e4 * gauss(r)) },
  ];
}

/**
 * The effective step `dl` and offset `ml` of weight `i` of a K-quant row (from its stored block), and the bound
 * |x - deq(q(x))| <= dl / 2 + float32 rounding of the dequantization.
 */
function stepOf(dtype: GgmlWeightDtype, w: WeightMatrix, row: number, i: number): { dl: number; ml: number; d: number; dmin: number } {
  const f16 = f16ToF32Table();
  const { blockElems, blockBytes } = GGML_BLOCK[dtype];
  const b = w.data as Uint8Array;
  const o = (row * (w.cols / blockElems) + Math.floor(i / blockElems)) * blockBytes;
  const e = i % blockElems;
  if (dtype === 'q6_k') {
    const d = f16[b[o + 208]! | (b[o + 209]! << 8)]!;
    return { dl: fr(d * ((b[o + 192 + (e >> 4)]! << 24) >> 24)), ml: 0, d, dmin: 0 };
  }
  const d = f16[b[o]! | (b[o + 1]! << 8)]!;
  const dmin = f16[b[o + 2]! | (b[o + 3]! << 8)]!;
  const sm = [0, 0];
  kScaleMin(b, o + 4, e >> 5, sm);
  return { dl: fr(d * sm[0]!), ml: fr(dmin * sm[1]!), d, dmin };
}

describe('quantizeMatrix K-quants: round trip within the format bound', () => {
  for (const dtype of ['q4_k', 'q5_k', 'q6_k'] as const) {
    const levels = dtype === 'q4_k' ? 15 : dtype === 'q5_k' ? 31 : 32;
    const sub = dtype === 'q6_k' ? 16 : 32;
    for (const { name, x } of kQuantRows(512)) {
      it(`${dtype}, ${name}: |x - deq(q(x))| <= step/2 (+ 2^-22 relative), step <= sub-block range / levels + d`, () => {
        const w = quantizeMatrix(x, 1, 512, dtype);
        expect(w.data.length).toBe(weightDataLength(dtype, 1, 512));
        const y = dequantAll(w);
        for (let i = 0; i < 512; i++) {
          const { dl, ml, d, dmin } = stepOf(dtype, w, 0, i);
          const err = Math.abs(x[i]! - y[i]!);
          const bound = dl / 2 + 2 ** -22 * (levels * dl + ml);
          if (!(err <= bound)) expect.fail(`element ${i}: x ${x[i]} y ${y[i]} err ${err} > bound ${bound} (dl ${dl}, ml ${ml})`);
          // The step is the sub-block's own range over the levels, plus at most one unit of the super-block scale.
          const s0 = Math.floor(i / sub) * sub;
          let lo = 0;
          let hi = -Infinity;
          for (let j = s0; j < s0 + sub; j++) {
            lo = Math.min(lo, x[j]!);
            hi = Math.max(hi, x[j]!);
          }
          const need = dtype === 'q6_k' ? Math.max(hi / 31, -lo / 32, 0) : (hi + ml) / levels;
          if (!(dl <= need + d * (1 + 2 ** -20))) expect.fail(`element ${i}: step ${dl} > need ${need} + d ${d}`);
          if (dtype !== 'q6_k' && !(ml <= -lo + dmin * (1 + 2 ** -20))) expect.fail(`element ${i}: ml ${ml} > -min ${-lo} + dmin ${dmin}`);
        }
      });
    }
    it(`${dtype}: Gaussian rows lose at most a few percent (RMSE / std)`, () => {
      const r = rng(11);
      const x = Float32Array.from({ length: 8 * 1024 }, () => gauss(r));
      const y = dequantAll(quantizeMatrix(x, 8, 1024, dtype));
      let se = 0;
      for (let i = 0; i < x.length; i++) se += (x[i]! - y[i]!) ** 2;
      const rel = Math.sqrt(se / x.length);
      // 4-bit range-covering over 32 Gaussian values: step ~ 4.5 sigma / 15, RMSE ~ step / sqrt(12) ~ 0.09.
      expect(rel).toBeLessThan(dtype === 'q4_k' ? 0.11 : dtype === 'q5_k' ? 0.055 : 0.04);
    });
  }

  it('a block whose super-block scale overflows f16 is a typed error naming the row and block', () => {
    const x = new Float32Array(256).fill(1e9);
    const e = thrown(() => quantizeMatrix(x, 1, 256, 'q4_k'));
    expect(e.code).toBe('INVALID_ARGUMENT');
    expect(e.message).toMatch(/row 0, block 0/);
  });
});

describe('quantizeMatrix compressed-tensors types', () => {
  const r = rng(3);
  const rows = 5;
  const cols = 256;
  const x = Float32Array.from({ length: rows * cols }, (_, i) => gauss(r) * (1 + (i % 7)) * 0.01);

  it('fp8_e4m3 per channel: scale = amax / 448, |error| <= 2^-4 |x| + scale * 2^-10', () => {
    const w = quantizeMatrix(x, rows, cols, 'fp8_e4m3');
    expect(w.scale!.length).toBe(rows);
    const y = dequantAll(w);
    for (let row = 0; row < rows; row++) {
      let amax = 0;
      for (let i = 0; i < cols; i++) amax = Math.max(amax, Math.abs(x[row * cols + i]!));
      expect(w.scale![row]).toBe(fr(amax / 448));
      for (let i = 0; i < cols; i++) {
        const k = row * cols + i;
        expect(Math.abs(x[k]! - y[k]!)).toBeLessThanOrEqual(2 ** -4 * Math.abs(x[k]!) + w.scale![row]! * 2 ** -10 + 1e-12);
      }
    }
  });

  it('fp8_e4m3 per tensor has one scale', () => {
    const w = quantizeMatrix(x, rows, cols, 'fp8_e4m3', { granularity: 'tensor' });
    expect(w.scale!.length).toBe(1);
  });

  it('int8 per channel: scale = amax / 127.5 (compressed-tensors), |error| <= scale / 2 + float32 rounding of the scale', () => {
    const w = quantizeMatrix(x, rows, cols, 'int8');
    expect(w.data).toBeInstanceOf(Int8Array);
    const y = dequantAll(w);
    for (let k = 0; k < x.length; k++) {
      const s = w.scale![Math.floor(k / cols)]!;
      // fround(amax / 127.5) may round down: amax / scale exceeds 127.5 by up to 127.5 * 2^-24, then clamps.
      expect(Math.abs(x[k]! - y[k]!)).toBeLessThanOrEqual(s / 2 + s * 2 ** -15);
    }
  });

  it('int8 rounds half to even after clamping, like torch.round', () => {
    // amax 127.5 -> scale 1: 127.5 clamps to 127; -127.5 rounds to -128; 2.5 -> 2; 3.5 -> 4; -0.5 -> -0.
    const w = quantizeMatrix(new Float32Array([127.5, -127.5, 2.5, 3.5, -0.5, 0.49]), 1, 6, 'int8');
    expect(w.scale![0]).toBe(1);
    expect([...(w.data as Int8Array)]).toEqual([127, -128, 2, 4, 0, 0]);
  });

  for (const g of [16, 32, 64, 128, 256]) {
    for (const symmetric of [true, false]) {
      it(`int4 group ${g} ${symmetric ? 'symmetric (amax / 7.5)' : 'asymmetric (zero points)'}: |error| <= scale / 2`, () => {
        const w = quantizeMatrix(x, rows, cols, 'int4', { groupSize: g, symmetric });
        expect(w.groupSize).toBe(g);
        expect(w.scale!.length).toBe((rows * cols) / g);
        expect(w.data.length).toBe((rows * cols) / 2);
        if (symmetric) expect(w.zeroPoint).toBeUndefined();
        else expect(w.zeroPoint!.length).toBe((rows * cols) / g);
        const y = dequantAll(w);
        for (let k = 0; k < x.length; k++) {
          const gi = Math.floor(k / g);
          expect(Math.abs(x[k]! - y[k]!)).toBeLessThanOrEqual(w.scale![gi]! / 2 + w.scale![gi]! * 2 ** -18);
        }
      });
    }
  }

  it('int4 by hand: symmetric scale 7.5 -> 1, asymmetric zero point from the minimum', () => {
    const sym = quantizeMatrix(new Float32Array([7.5, -7.5, 1.5, -2.5]), 1, 4, 'int4', { groupSize: 4 });
    expect(sym.scale![0]).toBe(1);
    // q = [7, -8, 2, -2] stored + 8 = [15, 0, 10, 6]: bytes 0x0f, 0x6a.
    expect([...(sym.data as Uint8Array)]).toEqual([0x0f, 0x6a]);
    const asym = quantizeMatrix(new Float32Array([0, 15, 3, 7]), 1, 4, 'int4', { groupSize: 4, symmetric: false });
    // min 0, max 15 -> scale 1, zp = round(-8 - 0) = -8; q = x - 8 = [-8, 7, -5, -1] stored [0, 15, 3, 7].
    expect(asym.scale![0]).toBe(1);
    expect([...asym.zeroPoint!]).toEqual([-8]);
    expect([...(asym.data as Uint8Array)]).toEqual([0xf0, 0x73]);
  });

  it('an all-zero row gets the epsilon scale (2^-23) and dequantizes to zeros', () => {
    for (const dtype of ['fp8_e4m3', 'int8', 'int4'] as const) {
      const w = quantizeMatrix(new Float32Array(64), 1, 64, dtype);
      expect(w.scale![0], dtype).toBe(2 ** -23);
      expect([...dequantAll(w)].every((v) => v === 0), dtype).toBe(true);
    }
  });
});

describe('quantizeMatrix bad input', () => {
  const x = new Float32Array(64);
  it.each([
    ['dense dtype', () => quantizeMatrix(x, 1, 64, 'f16' as never), 'INVALID_ARGUMENT', 'dtype'],
    ['unknown dtype', () => quantizeMatrix(x, 1, 64, 'q3_k' as never), 'INVALID_ARGUMENT', 'dtype'],
    ['rows 0', () => quantizeMatrix(x, 0, 64, 'q8_0'), 'INVALID_ARGUMENT', 'rows'],
    ['cols not integer', () => quantizeMatrix(x, 1, 1.5, 'q8_0'), 'INVALID_ARGUMENT', 'cols'],
    ['values too short', () => quantizeMatrix(x, 2, 64, 'q8_0'), 'SHAPE_MISMATCH', 'values'],
    ['values not Float32Array', () => quantizeMatrix(new Float64Array(64) as never, 1, 64, 'q8_0'), 'SHAPE_MISMATCH', 'values'],
    ['cols not a block multiple', () => quantizeMatrix(x, 1, 48, 'q4_0'), 'SHAPE_MISMATCH', 'cols'],
    ['K-quant cols not 256-multiple', () => quantizeMatrix(x, 1, 64, 'q6_k'), 'SHAPE_MISMATCH', 'cols'],
    ['odd int4 cols', () => quantizeMatrix(x, 1, 63, 'int4'), 'SHAPE_MISMATCH', 'cols'],
    ['NaN value', () => quantizeMatrix(Float32Array.from({ length: 64 }, (_, i) => (i === 9 ? NaN : 0)), 1, 64, 'int8'), 'INVALID_ARGUMENT', 'values[9]'],
    ['infinite value', () => quantizeMatrix(Float32Array.from({ length: 64 }, (_, i) => (i === 3 ? Infinity : 0)), 1, 64, 'q8_0'), 'INVALID_ARGUMENT', 'values[3]'],
    ['group not dividing cols', () => quantizeMatrix(x, 1, 64, 'int4', { groupSize: 48 }), 'INVALID_ARGUMENT', 'groupSize'],
    ['bad granularity', () => quantizeMatrix(x, 1, 64, 'int8', { granularity: 'row' as never }), 'INVALID_ARGUMENT', 'granularity'],
    ['bad symmetric', () => quantizeMatrix(x, 1, 64, 'int4', { symmetric: 'yes' as never }), 'INVALID_ARGUMENT', 'symmetric'],
  ])('%s', (_, fn, code, argument) => {
    const e = thrown(fn);
    expect(e.code).toBe(code);
    expect(e.argument).toBe(argument);
  });
});
