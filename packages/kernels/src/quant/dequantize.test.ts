import { describe, expect, it } from 'vitest';
import type { WeightMatrix } from '../contract.js';
import { KernelError } from '../errors.js';
import { dequantizeRow } from './dequantize.js';
import { GGML_BLOCK, GGML_WEIGHT_DTYPES } from './layout.js';
import { loadVectors, slice } from './vectors.test-helpers.js';

const { sections, bin } = loadVectors();

describe('dequantizeRow against gguf-py (llama.cpp) vectors', () => {
  it('has a dequantize section for every GGML dtype', () => {
    expect(sections.filter((s) => s.kind === 'dequantize').map((s) => s.type).sort()).toEqual([...GGML_WEIGHT_DTYPES].sort());
  });

  for (const s of sections.filter((x) => x.kind === 'dequantize')) {
    const { blockElems, blockBytes } = GGML_BLOCK[s.type];
    it(`${s.type}: ${s.blocks} random blocks bit-exact, one block per row and ${s.blocks / 8} blocks per row`, () => {
      const data = new Uint8Array(slice(bin, s.input));
      const want = new Uint32Array(slice(bin, s.output));
      expect(data.length).toBe(s.blocks * blockBytes);
      expect(want.length).toBe(s.blocks * blockElems);
      for (const perRow of [1, s.blocks / 8]) {
        const rows = s.blocks / perRow;
        const w: WeightMatrix = { dtype: s.type, rows, cols: perRow * blockElems, data };
        const got = new Float32Array(s.blocks * blockElems);
        for (let r = 0; r < rows; r++) dequantizeRow(w, r, got, r * w.cols);
        const bits = new Uint32Array(got.buffer);
        let bad = -1;
        for (let i = 0; i < bits.length && bad < 0; i++) if (bits[i] !== want[i]) bad = i;
        expect(bad, bad < 0 ? '' : `element ${bad}: got ${got[bad]} want ${new Float32Array(want.buffer)[bad]}`).toBe(-1);
      }
    });
  }
});

describe('dequantizeRow of the dense and compressed-tensors dtypes', () => {
  it('f32 copies, bf16 / f16 decode their bit patterns exactly', () => {
    const out = new Float32Array(3);
    dequantizeRow({ dtype: 'f32', rows: 2, cols: 3, data: new Float32Array([1, 2, 3, 4, 5, 6]) }, 1, out);
    expect([...out]).toEqual([4, 5, 6]);
    dequantizeRow({ dtype: 'bf16', rows: 1, cols: 3, data: new Uint16Array([0x3f80, 0xc040, 0x0001]) }, 0, out);
    expect([...out]).toEqual([1, -3, 2 ** -133]);
    dequantizeRow({ dtype: 'f16', rows: 1, cols: 3, data: new Uint16Array([0x3c00, 0xc200, 0x0001]) }, 0, out);
    expect([...out]).toEqual([1, -3, 2 ** -24]);
  });

  it('fp8_e4m3: decode(code) * scale, per tensor and per row', () => {
    // e4m3fn codes: 0x38 = 1.0, 0xc0 = -2.0, 0x7e = 448, 0x01 = 2^-9.
    const data = new Uint8Array([0x38, 0xc0, 0x7e, 0x01]);
    const out = new Float32Array(2);
    dequantizeRow({ dtype: 'fp8_e4m3', rows: 2, cols: 2, data, scale: new Float32Array([0.5]) }, 1, out);
    expect([...out]).toEqual([224, 2 ** -10]);
    dequantizeRow({ dtype: 'fp8_e4m3', rows: 2, cols: 2, data, scale: new Float32Array([3, 0.25]) }, 0, out);
    expect([...out]).toEqual([3, -6]);
  });

  it('int8: q * scale (row scale)', () => {
    const out = new Float32Array(3);
    const w: WeightMatrix = { dtype: 'int8', rows: 2, cols: 3, data: new Int8Array([1, -128, 127, 0, 5, -5]), scale: new Float32Array([0.5, 0.1]) };
    dequantizeRow(w, 0, out);
    expect([...out]).toEqual([0.5, -64, 63.5]);
    dequantizeRow(w, 1, out);
    expect([...out]).toEqual([0, Math.fround(5 * Math.fround(0.1)), Math.fround(-5 * Math.fround(0.1))]);
  });

  it('int4: element 2j in the low nibble, stored q + 8, (q - zeroPoint) * group scale', () => {
    // Row 0: q = [-8, 7, 0, 1]; row 1: q = [3, -3, -1, 2]. Groups of 2 columns.
    const data = new Uint8Array([0x0 | (0xf << 4), 0x8 | (0x9 << 4), 0xb | (0x5 << 4), 0x7 | (0xa << 4)]);
    const scale = new Float32Array([1, 2, 0.5, 4]);
    const out = new Float32Array(4);
    const sym: WeightMatrix = { dtype: 'int4', rows: 2, cols: 4, data, scale, groupSize: 2 };
    dequantizeRow(sym, 0, out);
    expect([...out]).toEqual([-8, 7, 0, 2]);
    dequantizeRow(sym, 1, out);
    expect([...out]).toEqual([1.5, -1.5, -4, 8]);
    const asym: WeightMatrix = { ...sym, zeroPoint: new Int8Array([-8, 1, 2, -1]) };
    dequantizeRow(asym, 0, out);
    expect([...out]).toEqual([0, 15, -2, 0]);
    dequantizeRow(asym, 1, out);
    expect([...out]).toEqual([0.5, -2.5, 0, 12]);
  });
});

describe('dequantizeRow bad input', () => {
  const w: WeightMatrix = { dtype: 'q8_0', rows: 2, cols: 32, data: new Uint8Array(68) };
  it.each([
    ['row past the matrix', () => dequantizeRow(w, 2, new Float32Array(32)), 'OUT_OF_RANGE', 'row'],
    ['fractional row', () => dequantizeRow(w, 0.5, new Float32Array(32)), 'OUT_OF_RANGE', 'row'],
    ['out too short for the offset', () => dequantizeRow(w, 0, new Float32Array(40), 9), 'SHAPE_MISMATCH', 'out'],
    ['negative offset', () => dequantizeRow(w, 0, new Float32Array(40), -1), 'INVALID_ARGUMENT', 'outOffset'],
    ['truncated blocks', () => dequantizeRow({ ...w, data: new Uint8Array(67) }, 0, new Float32Array(32)), 'SHAPE_MISMATCH', 'weight.data'],
  ])('%s', (_, fn, code, argument) => {
    try {
      fn();
    } catch (e) {
      expect(e).toBeInstanceOf(KernelError);
      expect([(e as KernelError).code, (e as KernelError).argument]).toEqual([code, argument]);
      return;
    }
    expect.fail('nothing thrown');
  });
});
