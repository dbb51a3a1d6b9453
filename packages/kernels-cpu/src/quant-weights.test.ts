/**
 * `linear` and `embedding` on quantized weights (GGML q8_0..q6_k blocks, compressed-tensors fp8_e4m3 / int8 / int4),
 * on every ISA this CPU runs, against a straightforward oracle written here: each weight row dequantized with
 * `dequantizeRow` (@kvq/kernels, bit-exact with gguf-py's vectors), then a float64 dot product.
 * - linear: within the contract's linear tolerance, for decode shapes (rows 1..4, the GEMV) and prefill shapes
 *   (rows > 4, the dequantized-panel GEMM; > 64 rows and > 256 columns cross its tile edges), 1 and 2 threads;
 * - embedding: bit-exact with `dequantizeRow` (the contract makes embedding exact across backends);
 * - bad input straight into the native reader (bypassing the TypeScript validation): typed errors, no crash.
 */
import {
  dequantizeRow,
  quantizeMatrix,
  type QuantizeOptions,
  type WeightDtype,
  type WeightMatrix,
} from '@kvq/kernels';
import { DTYPE_CODE } from '@kvq/kernels/native';
import { rng } from '@kvq/kernels/testing';
import { describe, expect, it } from 'vitest';
import { cpuAvailability, createBackend } from './backend.js';
import { loadAddon } from './load.js';

const avail = cpuAvailability();
const isas = avail.available ? avail.cpu.isas : [];

/** Random weights with per-row magnitudes spread over three decades (exercises the block scales). */
function values(r: () => number, rows: number, cols: number): Float32Array {
  const v = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    const mag = 10 ** (r() * 3 - 2);
    for (let j = 0; j < cols; j++) v[i * cols + j] = (r() * 2 - 1) * mag;
  }
  return v;
}

function randomF32(r: () => number, n: number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = r() * 4 - 2;
  return x;
}

/**
 * The oracle: y = x W^T (+ bias), W's rows dequantized with dequantizeRow, dot products in float64; `bound` is each
 * output's allowed error, {@link REL} times `sum_k |x_k w_k|` (+ {@link ABS}): what float32 accumulation of the same
 * products may lose (a relative tolerance on the result alone fails on outputs that cancel to near zero).
 */
function oracleLinear(x: Float32Array, w: WeightMatrix, rows: number, bias?: Float32Array): { want: Float64Array; bound: Float64Array } {
  const K = w.cols;
  const N = w.rows;
  const want = new Float64Array(rows * N);
  const bound = new Float64Array(rows * N);
  const row = new Float32Array(K);
  for (let n = 0; n < N; n++) {
    dequantizeRow(w, n, row);
    for (let m = 0; m < rows; m++) {
      let s = 0;
      let a = 0;
      for (let k = 0; k < K; k++) {
        const p = x[m * K + k]! * row[k]!;
        s += p;
        a += Math.abs(p);
      }
      want[m * N + n] = s + (bias ? bias[n]! : 0);
      bound[m * N + n] = REL * a + ABS * (1 + Math.abs(want[m * N + n]!));
    }
  }
  return { want, bound };
}

/**
 * Allowed error relative to `sum |x w|`. float32 accumulation typically loses about sqrt(K) * 2^-24 of it; one wrong
 * weight element costs about 1/K of it (>= 1/768 here), two orders of magnitude above this bound.
 */
const REL = 1e-5;
const ABS = 1e-6;

/** '' when every |got - want| <= bound (NaN only where want is NaN), else the first offender. */
function mismatch(got: Float32Array, want: Float64Array, bound: Float64Array): string {
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    if (Number.isNaN(w) ? !Number.isNaN(g) : !(Math.abs(g - w) <= bound[i]!)) {
      return `[${i}]: got ${g}, want ${w} (bound ${bound[i]!.toExponential(2)})`;
    }
  }
  return '';
}

/** One weight configuration: dtype, quantizer options, the column counts to try. */
interface Config {
  readonly label: string;
  readonly dtype: Exclude<WeightDtype, 'f32' | 'bf16' | 'f16'>;
  readonly opts?: QuantizeOptions;
  readonly cols: readonly number[];
}

const K_COLS = [256, 768];
const B32_COLS = [32, 96, 288];
const CONFIGS: readonly Config[] = [
  { label: 'q8_0', dtype: 'q8_0', cols: B32_COLS },
  { label: 'q4_0', dtype: 'q4_0', cols: B32_COLS },
  { label: 'q4_1', dtype: 'q4_1', cols: B32_COLS },
  { label: 'q5_0', dtype: 'q5_0', cols: B32_COLS },
  { label: 'q5_1', dtype: 'q5_1', cols: B32_COLS },
  { label: 'q4_k', dtype: 'q4_k', cols: K_COLS },
  { label: 'q5_k', dtype: 'q5_k', cols: K_COLS },
  { label: 'q6_k', dtype: 'q6_k', cols: K_COLS },
  { label: 'fp8_e4m3 per channel', dtype: 'fp8_e4m3', opts: { granularity: 'channel' }, cols: [7, 40, 128, 300, 320] }, // 64k: the AVX-512 byte-table GEMV
  { label: 'fp8_e4m3 per tensor', dtype: 'fp8_e4m3', opts: { granularity: 'tensor' }, cols: [40, 192] },
  { label: 'int8 per channel', dtype: 'int8', opts: { granularity: 'channel' }, cols: [7, 40, 300] },
  { label: 'int8 per tensor', dtype: 'int8', opts: { granularity: 'tensor' }, cols: [40] },
  // int4 GEMV paths (csrc/wquant_impl.h): groups of whole 128-blocks by table permutes on AVX-512, whole 2W-chunks by
  // widened nibbles (g32 / g64 on AVX-512, g16+ on AVX2, every even group on NEON / scalar), else the unpack buffer.
  { label: 'int4 g128 symmetric', dtype: 'int4', opts: { groupSize: 128 }, cols: [256, 640] },
  { label: 'int4 g128 asymmetric', dtype: 'int4', opts: { groupSize: 128, symmetric: false }, cols: [384, 2560] },
  { label: 'int4 g32 asymmetric', dtype: 'int4', opts: { groupSize: 32, symmetric: false }, cols: [64, 160] },
  { label: 'int4 g64 symmetric', dtype: 'int4', opts: { groupSize: 64 }, cols: [192] },
  { label: 'int4 g256 (two blocks per group)', dtype: 'int4', opts: { groupSize: 256, symmetric: false }, cols: [512] },
  { label: 'int4 per channel', dtype: 'int4', opts: { groupSize: 300 }, cols: [300] },
  { label: 'int4 odd groups (3)', dtype: 'int4', opts: { groupSize: 3, symmetric: false }, cols: [6, 18] },
  { label: 'int4 g20 asymmetric', dtype: 'int4', opts: { groupSize: 20, symmetric: false }, cols: [40, 300] },
];

const ROWS = [1, 2, 3, 4, 5, 70];
const OUT_FEATURES = [1, 7, 130];

describe('quantized weights: dtype codes', () => {
  it('DTYPE_CODE matches csrc/ops.h (GGML 16..23, compressed-tensors 24..26)', () => {
    const want = { q8_0: 16, q4_0: 17, q4_1: 18, q5_0: 19, q5_1: 20, q4_k: 21, q5_k: 22, q6_k: 23, fp8_e4m3: 24, int8: 25, int4: 26 };
    for (const [k, v] of Object.entries(want)) expect(DTYPE_CODE[k as keyof typeof DTYPE_CODE], k).toBe(v);
  });
});

for (const isa of isas) {
  describe(`quantized weights on ${isa}`, () => {
    for (const c of CONFIGS) {
      it(`linear ${c.label}: GEMV and GEMM shapes match dequantize-then-dot`, () => {
        const r = rng(0x5eed + c.label.length * 7919 + c.cols[0]!);
        const backends = [createBackend({ isa, threads: 1 }), createBackend({ isa, threads: 2 })];
        try {
          for (const K of c.cols) {
            for (const N of OUT_FEATURES) {
              const w = quantizeMatrix(values(r, N, K), N, K, c.dtype, c.opts);
              for (const rows of ROWS) {
                const x = randomF32(r, rows * K);
                const bias = r() < 0.5 ? randomF32(r, N) : undefined;
                const { want, bound } = oracleLinear(x, w, rows, bias);
                for (const b of backends) {
                  if (b.threads === 1 && rows > 5) continue;
                  const out = new Float32Array(rows * N).fill(NaN);
                  b.linear({ x, weight: w, out, rows, bias });
                  const bad = mismatch(out, want, bound);
                  expect(bad, `${c.label} threads=${b.threads} rows=${rows} in=${K} out=${N}`).toBe('');
                }
              }
            }
          }
        } finally {
          for (const b of backends) b.dispose();
        }
      });

      it(`embedding ${c.label}: rows bit-exact with dequantizeRow`, () => {
        const r = rng(0xe11b + c.label.length);
        const b = createBackend({ isa, threads: 2 });
        try {
          for (const K of c.cols) {
            const vocab = 37;
            const table = quantizeMatrix(values(r, vocab, K), vocab, K, c.dtype, c.opts);
            const numTokens = 300; // enough elements for the threaded path
            const ids = Int32Array.from({ length: numTokens }, () => Math.floor(r() * vocab));
            const out = new Float32Array(numTokens * K + 3).fill(7);
            b.embedding({ table, ids, out, numTokens });
            const want = new Float32Array(numTokens * K + 3).fill(7);
            for (let t = 0; t < numTokens; t++) dequantizeRow(table, ids[t]!, want, t * K);
            const got32 = new Uint32Array(out.buffer);
            const want32 = new Uint32Array(want.buffer);
            const i = got32.findIndex((v, j) => v !== want32[j]);
            expect(i < 0 ? '' : `[${i}]: got ${out[i]}, want ${want[i]}`, `${c.label} cols=${K}`).toBe('');
          }
        } finally {
          b.dispose();
        }
      });
    }

    it('linear gives the same bits wherever x starts (decode GEMVs copy an x off a 64-byte boundary into one that is on it)', () => {
      const r = rng(0xa11e);
      const b = createBackend({ isa, threads: 2 });
      const K = 512;
      const N = 48;
      const bf16 = new Uint16Array(N * K);
      for (let i = 0; i < bf16.length; i++) bf16[i] = 0x3c00 + Math.floor(r() * 0x800) + (r() < 0.5 ? 0x8000 : 0);
      const weights: WeightMatrix[] = [
        { dtype: 'bf16', data: bf16, rows: N, cols: K },
        quantizeMatrix(values(r, N, K), N, K, 'int4', { groupSize: 128, symmetric: false }),
        quantizeMatrix(values(r, N, K), N, K, 'fp8_e4m3', { granularity: 'channel' }),
        quantizeMatrix(values(r, N, K), N, K, 'q4_k'),
      ];
      try {
        for (const w of weights) {
          for (const rows of [1, 3, 4, 5]) {
            const x0 = randomF32(r, rows * K);
            const buf = new Float32Array(rows * K + 16);
            let first: Uint32Array | undefined;
            // 16 consecutive float offsets of one buffer: one of them starts on a 64-byte boundary, the rest do not.
            for (let off = 0; off < 16; off++) {
              const x = buf.subarray(off, off + rows * K);
              x.set(x0);
              const out = new Float32Array(rows * N);
              b.linear({ x, weight: w, out, rows });
              const bits = new Uint32Array(out.buffer);
              first ??= bits;
              const i = bits.findIndex((v, j) => v !== first![j]);
              expect(i, `${w.dtype} rows=${rows} x offset ${off} floats: output [${i}] differs from offset 0`).toBe(-1);
            }
          }
        }
      } finally {
        b.dispose();
      }
    });

    it('random GGML block bytes (every scale / bit pattern, finite f16 scales): GEMV and GEMM agree with the oracle', () => {
      const r = rng(99);
      const b = createBackend({ isa, threads: 2 });
      // Offsets of the f16 scale fields per block (kept finite so the oracle's sums are finite).
      const f16At: Record<string, readonly number[]> = { q8_0: [0], q4_0: [0], q4_1: [0, 2], q5_0: [0], q5_1: [0, 2], q4_k: [0, 2], q5_k: [0, 2], q6_k: [208] };
      const block: Record<string, [number, number]> = { q8_0: [32, 34], q4_0: [32, 18], q4_1: [32, 20], q5_0: [32, 22], q5_1: [32, 24], q4_k: [256, 144], q5_k: [256, 176], q6_k: [256, 210] };
      try {
        for (const dtype of Object.keys(block) as (keyof typeof block & WeightDtype)[]) {
          const [elems, bytes] = block[dtype]!;
          const N = 9;
          const K = elems * 3;
          const data = new Uint8Array(N * (K / elems) * bytes);
          for (let i = 0; i < data.length; i++) data[i] = Math.floor(r() * 256);
          const view = new DataView(data.buffer);
          for (let blk = 0; blk < data.length / bytes; blk++) {
            for (const off of f16At[dtype]!) {
              // A random finite f16 in about [2^-10, 2^2], either sign.
              const e = 5 + Math.floor(r() * 12);
              view.setUint16(blk * bytes + off, (r() < 0.5 ? 0x8000 : 0) | (e << 10) | Math.floor(r() * 1024), true);
            }
          }
          const w: WeightMatrix = { dtype, data, rows: N, cols: K };
          for (const rows of [1, 4, 6]) {
            const x = randomF32(r, rows * K);
            const out = new Float32Array(rows * N);
            b.linear({ x, weight: w, out, rows });
            const { want, bound } = oracleLinear(x, w, rows);
            expect(mismatch(out, want, bound), `${dtype} rows=${rows}`).toBe('');
          }
        }
      } finally {
        b.dispose();
      }
    });

    it('8-bit activations: 32-element types give the same bits wherever their bytes start (aligned or split loads)', () => {
      // The AVX-512 VNNI decode GEMV loads each group of four blocks as two aligned cache lines where it fits them
      // (and its offset is even), else unaligned: every byte offset of the data must give the same outputs.
      const r = rng(7);
      const b = createBackend({ isa, threads: 1 });
      const bytesOf: Record<string, number> = { q4_0: 18, q4_1: 20, q5_0: 22, q5_1: 24, q8_0: 34 };
      try {
        for (const dtype of Object.keys(bytesOf) as WeightDtype[]) {
          const N = 5;
          const K = 384;
          const n = N * (K / 32) * bytesOf[dtype]!;
          const src = new Uint8Array(n);
          for (let i = 0; i < n; i++) src[i] = Math.floor(r() * 256);
          for (let blk = 0; blk < n / bytesOf[dtype]!; blk++) src[blk * bytesOf[dtype]!] = 0, src[blk * bytesOf[dtype]! + 1] = 0x30;
          if (dtype === 'q4_1' || dtype === 'q5_1') for (let blk = 0; blk < n / bytesOf[dtype]!; blk++) src[blk * bytesOf[dtype]! + 3] = 0xb0;
          const x = randomF32(r, 2 * K);
          const run = (data: Uint8Array, rows: number): Float32Array => {
            const out = new Float32Array(rows * N);
            b.linear({ x, weight: { dtype, data, rows: N, cols: K }, out, rows, activations: 'q8' });
            return out;
          };
          for (const rows of [1, 2]) {
            const want = run(src, rows);
            for (let off = 1; off < 64; off++) {
              const buf = new Uint8Array(n + 64);
              buf.set(src, off);
              expect(Array.from(run(buf.subarray(off, off + n), rows)), `${dtype} rows=${rows} offset=${off}`).toEqual(Array.from(want));
            }
          }
        }
      } finally {
        b.dispose();
      }
    });

    it('fp8_e4m3 NaN codes give NaN outputs (exact decode), other rows stay finite', () => {
      const b = createBackend({ isa, threads: 1 });
      try {
        // 6 weight rows, streamed one at a time (row 1 holds the NaN): the NaN code in a whole 64-element step (K =
        // 128), in the tail after one (K = 98) or in a row shorter than a step (K = 40).
        for (const [K, at] of [[40, 5], [128, 5], [98, 90]] as const) {
          const N = 6;
          const data = new Uint8Array(N * K).fill(0x38); // 1.0
          data[K + at] = 0x7f; // NaN in row 1
          const scale = Float32Array.of(0.5, 2, 3, 4, 5, 6);
          const w: WeightMatrix = { dtype: 'fp8_e4m3', data, rows: N, cols: K, scale };
          for (const rows of [1, 3, 5]) {
            const out = new Float32Array(rows * N);
            b.linear({ x: new Float32Array(rows * K).fill(1), weight: w, out, rows });
            for (let m = 0; m < rows; m++) {
              for (let n = 0; n < N; n++) {
                if (n === 1) expect(Number.isNaN(out[m * N + n]!), `rows=${rows} m=${m} n=${n}`).toBe(true);
                else expect(out[m * N + n], `K=${K} rows=${rows} m=${m} n=${n}`).toBe(K * scale[n]!);
              }
            }
          }
        }
      } finally {
        b.dispose();
      }
    });

    it('fp8_e4m3 GEMV stays exact for activations near float32 limits (prescaled x) and past them (per-lane decode)', () => {
      const b = createBackend({ isa, threads: 1 });
      try {
        // Codes 0x38 (1.0) and 0x01 (2^-9, subnormal); every sum below is exact in float32, so any ISA must match it.
        const K = 200, N = 5;
        const data = new Uint8Array(N * K).fill(0x38);
        for (let e = 0; e < K; e += 2) data[2 * K + e] = 0x01;
        const scale = Float32Array.of(1, 0.5, 2, 4, 0.25);
        const w: WeightMatrix = { dtype: 'fp8_e4m3', data, rows: N, cols: K, scale };
        // 2^70 and 2^100 exceed the prescale's 2^62 bound; 2^-100 and 2^-140 (a subnormal) stay exact prescaled.
        for (const v of [2 ** 70, 2 ** 100, 2 ** -100, 2 ** -140, 2 ** -10, 8]) {
          const out = new Float32Array(N);
          b.linear({ x: new Float32Array(K).fill(v), weight: w, out, rows: 1 });
          const xv = Math.fround(v);
          for (let n = 0; n < N; n++) {
            const dot = n === 2 ? (K / 2) * xv + (K / 2) * Math.fround(xv * 2 ** -9) : K * xv;
            expect(out[n], `x=${v} n=${n}`).toBe(Math.fround(Math.fround(dot) * scale[n]!));
          }
        }
      } finally {
        b.dispose();
      }
    });
  });
}

describe.skipIf(!avail.available)('quantized weights: bad input straight into the native reader', () => {
  const load = loadAddon();
  const f = (n: number): Float32Array => new Float32Array(n).fill(0.25);
  /** Positional linear arguments: x [2, cols], weight (7), no bias, out [2, rows]. */
  const lin = (data: unknown, dtype: number, rows: number, cols: number, scale: unknown = null, zp: unknown = null, gs = 0): unknown[] => [
    f(2 * cols),
    2,
    data,
    dtype,
    rows,
    cols,
    scale,
    zp,
    gs,
    null,
    f(2 * rows),
  ];
  const cases: [string, unknown[], string, string][] = [
    ['q4_0 data one byte short', lin(new Uint8Array(3 * 18 * 2 - 1), 17, 3, 64), 'SHAPE_MISMATCH', 'weight.data'],
    ['q4_k data one byte long', lin(new Uint8Array(2 * 144 + 1), 21, 2, 256), 'SHAPE_MISMATCH', 'weight.data'],
    ['q6_k cols not a multiple of 256', lin(new Uint8Array(2 * 210), 23, 2, 255), 'SHAPE_MISMATCH', 'weight.cols'],
    ['q8_0 data as Int8Array', lin(new Int8Array(34), 16, 1, 32), 'WRONG_ARRAY_TYPE', 'weight.data'],
    ['int8 data as Uint8Array', lin(new Uint8Array(8), 25, 2, 4, Float32Array.of(1)), 'WRONG_ARRAY_TYPE', 'weight.data'],
    ['fp8 without scale', lin(new Uint8Array(8), 24, 2, 4), 'INVALID_SCALE', 'weight.scale'],
    ['fp8 scale of length 3 for 2 rows', lin(new Uint8Array(8), 24, 2, 4, Float32Array.of(1, 1, 1)), 'SHAPE_MISMATCH', 'weight.scale'],
    ['int4 odd cols', lin(new Uint8Array(4), 26, 2, 3, Float32Array.of(1, 1), null, 3), 'SHAPE_MISMATCH', 'weight.cols'],
    ['int4 group size not dividing cols', lin(new Uint8Array(4), 26, 2, 4, Float32Array.of(1, 1), null, 3), 'SHAPE_MISMATCH', 'weight.groupSize'],
    ['int4 scale too short', lin(new Uint8Array(4), 26, 2, 4, Float32Array.of(1, 1, 1), null, 2), 'SHAPE_MISMATCH', 'weight.scale'],
    ['int4 zero point too short', lin(new Uint8Array(4), 26, 2, 4, Float32Array.of(1, 1, 1, 1), new Int8Array(3), 2), 'SHAPE_MISMATCH', 'weight.zeroPoint'],
    ['int4 group size 0', lin(new Uint8Array(4), 26, 2, 4, Float32Array.of(1, 1, 1, 1), null, 0), 'INVALID_ARGUMENT', 'weight.groupSize'],
    ['a scale on a GGML weight', lin(new Uint8Array(34), 16, 1, 32, Float32Array.of(1)), 'INVALID_ARGUMENT', 'weight.scale'],
    ['a zero point on int8', lin(new Int8Array(8), 25, 2, 4, Float32Array.of(1), new Int8Array(2)), 'INVALID_ARGUMENT', 'weight.zeroPoint'],
    ['an unknown dtype code', lin(new Uint8Array(8), 12, 2, 4), 'INVALID_ARGUMENT', 'weight.dtype'],
    ['8-bit activations on fp8', [...lin(new Uint8Array(8), 24, 2, 4, Float32Array.of(1)), 1, 0], 'INVALID_ARGUMENT', 'activations'],
    ['a static activation scale on q8_0', [...lin(new Uint8Array(34), 16, 1, 32), 1, 0.5], 'INVALID_ARGUMENT', 'activationScale'],
    ['a static activation scale with float activations', [...lin(new Int8Array(8), 25, 2, 4, Float32Array.of(1)), 0, 0.5], 'INVALID_ARGUMENT', 'activationScale'],
    ['a negative static activation scale', [...lin(new Int8Array(8), 25, 2, 4, Float32Array.of(1)), 1, -1], 'INVALID_ARGUMENT', 'activationScale'],
    ['a static activation scale that is 0 in float32', [...lin(new Int8Array(8), 25, 2, 4, Float32Array.of(1)), 1, 1e-50], 'INVALID_ARGUMENT', 'activationScale'],
  ];
  for (const [label, args, code, argument] of cases) {
    it(`linear: ${label} -> ${code} (${argument})`, () => {
      if (!load.ok) throw new Error(load.reason);
      const ctx = new load.addon.Context(1, 'scalar', 0);
      try {
        let err: { code?: string; argument?: string } | undefined;
        try {
          (ctx.linear as (...a: unknown[]) => void)(...args);
        } catch (e) {
          err = e as { code?: string; argument?: string };
        }
        expect(err, 'expected a throw').toBeDefined();
        expect([err?.code, err?.argument]).toEqual([code, argument]);
      } finally {
        ctx.dispose();
      }
    });
  }
  it('embedding: a truncated q5_k table -> SHAPE_MISMATCH (table.data)', () => {
    if (!load.ok) throw new Error(load.reason);
    const ctx = new load.addon.Context(1, 'scalar', 0);
    try {
      const call = (): void =>
        (ctx.embedding as (...a: unknown[]) => void)(new Uint8Array(3 * 176 - 5), 22, 3, 256, null, null, 0, Int32Array.of(2), f(256), 1);
      expect(call).toThrow(expect.objectContaining({ code: 'SHAPE_MISMATCH', argument: 'table.data' }));
    } finally {
      ctx.dispose();
    }
  });
});
