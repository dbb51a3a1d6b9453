import {
  bf16BitsToF32,
  dequantizeScaled,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  FP8_FORMATS,
  fp8DecodeTable,
  quantizeScaled,
  type Fp8Format,
  type ScaleLayout,
} from '@kvq/fp8';
import { seededRandom } from '@kvq/test-utils';
import { describe, expect, it } from 'vitest';
import type { KvDtype, KvLayerCache, WeightDtype } from '../contract.js';
import { dequantizeRow } from '../quant/dequantize.js';
import { QUANTIZED_WEIGHT_DTYPES } from '../quant/layout.js';
import { quantizeMatrix } from '../quant/quantize.js';
import { buildRopeTable } from '../rope.js';
import { buildAttentionBatch, makeKvCache, randomF32, weightFrom, type SeqSpec } from '../testing/random.js';
import { createReferenceBackend } from './backend.js';

const ref = createReferenceBackend();
const KV: readonly KvDtype[] = ['f32', 'bf16', 'f16', 'e4m3fn', 'e5m2', 'e4m3fnuz', 'e5m2fnuz'];
const FP8: readonly Fp8Format[] = ['e4m3fn', 'e5m2', 'e4m3fnuz', 'e5m2fnuz'];

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('linear', () => {
  it('computes x W^T (W stored [out, in]) plus bias on a hand example', () => {
    // W = [[1, 0], [0, 1], [1, 1]] (3 outputs, 2 inputs); x = [[1, 2], [3, -1]]
    const out = new Float32Array(6);
    ref.linear({
      x: Float32Array.of(1, 2, 3, -1),
      weight: { dtype: 'f32', data: Float32Array.of(1, 0, 0, 1, 1, 1), rows: 3, cols: 2 },
      bias: Float32Array.of(10, 20, 30),
      out,
      rows: 2,
    });
    expect([...out]).toEqual([11, 22, 33, 13, 19, 32]);
  });

  it.each(['f32', 'bf16', 'f16'] as WeightDtype[])('is exact on small integers with %s weights', (dtype) => {
    const rnd = seededRandom(3);
    const rows = 7;
    const inF = 17;
    const outF = 9;
    const x = Float32Array.from({ length: rows * inF }, () => Math.floor(rnd() * 9) - 4);
    const w = Float32Array.from({ length: outF * inF }, () => Math.floor(rnd() * 17) - 8);
    const out = new Float32Array(rows * outF);
    ref.linear({ x, weight: weightFrom(dtype, w, outF, inF), out, rows });
    for (let r = 0; r < rows; r++) {
      for (let o = 0; o < outF; o++) {
        let want = 0;
        for (let i = 0; i < inF; i++) want += x[r * inF + i]! * w[o * inF + i]!;
        expect(out[r * outF + o]).toBe(want);
      }
    }
  });

  it('decodes bf16/f16 weights exactly (against @kvq/fp8 bit conversions)', () => {
    const rnd = seededRandom(4);
    const vals = randomF32(5 * 3, rnd);
    for (const [dtype, dec] of [
      ['bf16', bf16BitsToF32],
      ['f16', f16BitsToF32],
    ] as const) {
      const weight = weightFrom(dtype, vals, 5, 3);
      // x = one-hot rows select weight columns, so out[r, o] = W[o, r] exactly.
      const x = Float32Array.of(1, 0, 0, 0, 1, 0, 0, 0, 1);
      const out = new Float32Array(15);
      ref.linear({ x, weight, out, rows: 3 });
      for (let r = 0; r < 3; r++) for (let o = 0; o < 5; o++) expect(out[r * 5 + o]).toBe(dec(weight.data[o * 3 + r]!));
    }
  });

  it('leaves elements past rows*outFeatures untouched', () => {
    const out = new Float32Array(5).fill(7);
    ref.linear({ x: Float32Array.of(1, 1), weight: { dtype: 'f32', data: Float32Array.of(1, 2, 3, 4), rows: 2, cols: 2 }, out, rows: 1 });
    expect([...out]).toEqual([3, 7, 7, 7, 7]);
  });
});

describe('rmsNorm, add, siluAndMul, softmax', () => {
  it('rmsNorm follows x / sqrt(mean(x^2) + eps) * w', () => {
    const x = Float32Array.of(3, 4, 0, -5, 1, 1);
    const w = Float32Array.of(1, 2, 0.5);
    const out = new Float32Array(6);
    ref.rmsNorm({ x, weight: w, out, rows: 2, hidden: 3, eps: 1e-5 });
    for (let r = 0; r < 2; r++) {
      const row = [...x.subarray(r * 3, r * 3 + 3)];
      const inv = 1 / Math.sqrt(row.reduce((a, v) => a + v * v, 0) / 3 + 1e-5);
      row.forEach((v, i) => expect(out[r * 3 + i]).toBeCloseTo(v * inv * w[i]!, 6));
    }
  });

  it('rmsNorm with unit weight gives rows of RMS 1, also in place', () => {
    const x = randomF32(4 * 64, seededRandom(5), 7);
    ref.rmsNorm({ x, weight: new Float32Array(64).fill(1), out: x, rows: 4, hidden: 64, eps: 0 });
    for (let r = 0; r < 4; r++) {
      let ss = 0;
      for (let i = 0; i < 64; i++) ss += x[r * 64 + i]! ** 2;
      expect(Math.sqrt(ss / 64)).toBeCloseTo(1, 6);
    }
  });

  it('add is elementwise float32 addition, in place allowed', () => {
    const a = Float32Array.of(1, 2.5, -3, 1e30);
    const b = Float32Array.of(0.5, 0.25, 3, 1e30);
    ref.add({ a, b, out: a, length: 4 });
    expect([...a]).toEqual([1.5, 2.75, 0, Math.fround(2e30)]);
  });

  it('siluAndMul is g * sigmoid(g) * u', () => {
    const gate = Float32Array.of(0, 1, -1, 5, -100, 100);
    const up = Float32Array.of(3, 2, 2, 1, 1, 0.5);
    const out = new Float32Array(6);
    ref.siluAndMul({ gate, up, out, length: 6 });
    gate.forEach((g, i) => expect(out[i]).toBeCloseTo(Math.fround((g / (1 + Math.exp(-g))) * up[i]!), 6));
    expect(out[0]).toBe(0);
    expect(Math.abs(out[4]!)).toBeLessThan(1e-40);
    expect(out[5]).toBe(50);
  });

  it('geluTanhAndMul is PyTorch gelu(approximate="tanh") times up', () => {
    const gate = Float32Array.of(0, 1, -1, 3, -3, 0.5, -100, 100, -3e13);
    const up = Float32Array.of(3, 2, 2, 1, 1, -4, 1, 0.5, 1);
    const out = new Float32Array(gate.length);
    ref.geluTanhAndMul({ gate, up, out, length: gate.length });
    const c = Math.sqrt(2 / Math.PI);
    gate.forEach((g, i) => {
      const want = Math.fround(0.5 * g * (1 + Math.tanh(c * (g + 0.044715 * g ** 3))) * up[i]!);
      expect(Math.abs(out[i]! - want)).toBeLessThanOrEqual(2e-7 * Math.abs(want));
    });
    // torch.nn.functional.gelu(torch.tensor([1.0, -1.0]), approximate='tanh') = [0.8411920, -0.1588080]
    expect(out[1]! / 2).toBeCloseTo(0.841192, 6);
    expect(out[2]! / 2).toBeCloseTo(-0.158808, 6);
    expect(out[0]).toBe(0);
    expect(Math.abs(out[6]!)).toBe(0);
    expect(out[7]).toBe(50);
    expect(Object.is(out[8], -0) || out[8] === 0).toBe(true);
  });

  it('softmax: probabilities sum to 1, -Infinity gets 0, no overflow on huge logits', () => {
    const x = Float32Array.of(1, 2, 3, -Infinity, 1000, 1000, 999, -Infinity);
    const out = new Float32Array(8);
    ref.softmax({ x, out, rows: 2, cols: 4 });
    const e = [Math.exp(1), Math.exp(2), Math.exp(3)];
    const s = e[0]! + e[1]! + e[2]!;
    expect(out[0]).toBeCloseTo(e[0]! / s, 7);
    expect(out[2]).toBeCloseTo(e[2]! / s, 7);
    expect(out[3]).toBe(0);
    const d = 2 + Math.exp(-1);
    expect(out[4]).toBeCloseTo(1 / d, 7);
    expect(out[6]).toBeCloseTo(Math.exp(-1) / d, 7);
    expect(out[7]).toBe(0);
  });

  it('softmax: an all -Infinity row or a NaN row gives NaN, other rows unaffected; in place works', () => {
    const x = Float32Array.of(-Infinity, -Infinity, NaN, 0, 0, 0);
    ref.softmax({ x, out: x, rows: 3, cols: 2 });
    expect(Number.isNaN(x[0]!) && Number.isNaN(x[1]!) && Number.isNaN(x[2]!) && Number.isNaN(x[3]!)).toBe(true);
    expect([x[4], x[5]]).toEqual([0.5, 0.5]);
  });
});

describe('argmax', () => {
  it('gives the first index of each row maximum; NaN beats numbers; -0 equals +0; rows past `rows` untouched', () => {
    const x = new Float32Array([
      1, 5, 5, 2, // tie: the first 5
      -Infinity, -Infinity, -Infinity, -Infinity, // all masked: 0
      3, NaN, 9, NaN, // the first NaN, though 9 is larger
      -0, 0, -1, 0, // -0 and +0 tie: index 0
      -3, -2, -7, 1e30, // maximum in the last column
    ]);
    const out = new Int32Array(6).fill(-7);
    ref.argmax({ x, out, rows: 5, cols: 4 });
    expect(Array.from(out)).toEqual([1, 0, 1, 0, 3, -7]);
    ref.argmax({ x, out, rows: 0, cols: 4 });
    expect(out[0]).toBe(1);
  });

  it('rejects a bad width and a non-Int32Array out, naming the argument', () => {
    expect(() => ref.argmax({ x: new Float32Array(4), out: new Int32Array(1), rows: 1, cols: 0 })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', argument: 'cols' }),
    );
    expect(() => ref.argmax({ x: new Float32Array(4), out: new Float32Array(1) as unknown as Int32Array, rows: 1, cols: 4 })).toThrow(
      expect.objectContaining({ code: 'WRONG_ARRAY_TYPE', argument: 'out' }),
    );
  });
});

describe('embedding', () => {
  it.each(['f32', 'bf16', 'f16'] as WeightDtype[])('gathers %s rows and converts to float32', (dtype) => {
    const vals = randomF32(11 * 6, seededRandom(6));
    const table = weightFrom(dtype, vals, 11, 6);
    const ids = Int32Array.of(10, 0, 3, 3);
    const out = new Float32Array(24);
    ref.embedding({ table, ids, out, numTokens: 4 });
    const dec = (v: number): number =>
      dtype === 'f32' ? v : dtype === 'bf16' ? bf16BitsToF32(f32ToBf16Bits(v)) : f16BitsToF32(f32ToF16Bits(v));
    ids.forEach((id, t) => {
      for (let i = 0; i < 6; i++) expect(out[t * 6 + i]).toBe(dec(vals[id * 6 + i]!));
    });
  });
});

describe('rope', () => {
  const theta = 10000;
  const headSize = 16;

  /** Naive RoPE: rotate pair (a, b) by p * theta^(-2i/d), all in float64 (no table). */
  function naive(x: Float32Array, p: number, rotaryDim: number, style: 'rotate_half' | 'interleaved'): number[] {
    const y = [...x];
    const half = rotaryDim / 2;
    for (let i = 0; i < half; i++) {
      const ang = p * Math.pow(theta, (-2 * i) / rotaryDim);
      const [ia, ib] = style === 'rotate_half' ? [i, i + half] : [2 * i, 2 * i + 1];
      const a = x[ia]!;
      const b = x[ib]!;
      y[ia] = a * Math.cos(ang) - b * Math.sin(ang);
      y[ib] = b * Math.cos(ang) + a * Math.sin(ang);
    }
    return y;
  }

  it.each([
    ['rotate_half', 16],
    ['interleaved', 16],
    ['rotate_half', 8],
    ['interleaved', 8],
  ] as const)('matches the formula (%s, rotaryDim %i), leaving non-rotary dims alone', (style, rotaryDim) => {
    const table = buildRopeTable({ rotaryDim, theta, maxPositions: 600 });
    const rnd = seededRandom(7);
    const positions = Int32Array.of(0, 1, 37, 599);
    const q = randomF32(4 * 2 * headSize, rnd);
    const k = randomF32(4 * headSize, rnd);
    const q0 = q.slice();
    const k0 = k.slice();
    ref.rope({ query: q, key: k, positions, numTokens: 4, numHeads: 2, numKvHeads: 1, headSize, table, style });
    positions.forEach((p, t) => {
      for (let h = 0; h < 2; h++) {
        const base = (t * 2 + h) * headSize;
        const want = naive(q0.subarray(base, base + headSize), p, rotaryDim, style);
        // Angles are float32 (as HF/vLLM compute them): error grows like p * 2^-24.
        expect(maxAbsDiff(q.subarray(base, base + headSize), want)).toBeLessThan(1e-5 + p * 2e-7);
        for (let d = rotaryDim; d < headSize; d++) expect(q[base + d]).toBe(q0[base + d]);
      }
      const want = naive(k0.subarray(t * headSize, (t + 1) * headSize), p, rotaryDim, style);
      expect(maxAbsDiff(k.subarray(t * headSize, (t + 1) * headSize), want)).toBeLessThan(1e-5 + p * 2e-7);
    });
    // Position 0 is the identity.
    expect([...q.subarray(0, 2 * headSize)]).toEqual([...q0.subarray(0, 2 * headSize)]);
  });

  it('makes q.k depend only on the relative position', () => {
    const table = buildRopeTable({ rotaryDim: headSize, theta, maxPositions: 64 });
    const rnd = seededRandom(8);
    const q0 = randomF32(headSize, rnd);
    const k0 = randomF32(headSize, rnd);
    const dotAt = (pq: number, pk: number): number => {
      const q = q0.slice();
      const k = k0.slice();
      const qq = new Float32Array(headSize);
      ref.rope({ query: q, key: qq, positions: Int32Array.of(pq), numTokens: 1, numHeads: 1, numKvHeads: 1, headSize, table, style: 'rotate_half' });
      const kk = new Float32Array(headSize);
      ref.rope({ query: k, key: kk, positions: Int32Array.of(pk), numTokens: 1, numHeads: 1, numKvHeads: 1, headSize, table, style: 'rotate_half' });
      return q.reduce((a, v, i) => a + v * k[i]!, 0);
    };
    expect(dotAt(10, 3)).toBeCloseTo(dotAt(40, 33), 4);
    expect(dotAt(5, 5)).toBeCloseTo(dotAt(0, 0), 4);
  });

  it('interleaved RoPE equals rotate-half RoPE on permuted dims (the HF <-> Meta checkpoint permutation)', () => {
    const table = buildRopeTable({ rotaryDim: headSize, theta, maxPositions: 64 });
    const x = randomF32(headSize, seededRandom(9));
    const perm = [...Array(headSize / 2).keys()].flatMap((i) => [i, i + headSize / 2]); // interleaved slot -> half slot
    const xi = Float32Array.from(perm, (src) => x[src]!);
    const a = x.slice();
    const b = xi.slice();
    const pos = Int32Array.of(23);
    const args = { positions: pos, numTokens: 1, numHeads: 1, numKvHeads: 1, headSize, table } as const;
    ref.rope({ ...args, query: a, key: new Float32Array(headSize), style: 'rotate_half' });
    ref.rope({ ...args, query: b, key: new Float32Array(headSize), style: 'interleaved' });
    perm.forEach((src, dst) => expect(b[dst]).toBe(a[src]));
  });
});

describe('reshapeAndCache', () => {
  it.each(KV.flatMap((d) => (FP8.includes(d as Fp8Format) ? [[d, 'tensor'], [d, 'head']] : [[d, 'tensor']])) as [KvDtype, 'tensor' | 'head'][])(
    '%s/%s stores exactly what @kvq/fp8 (or the 16-bit rounding) gives, at the mapped slots only',
    (dtype, scales) => {
      const numKvHeads = 2;
      const headSize = 8;
      const blockSize = 4;
      const cache = makeKvCache({ dtype, numBlocks: 3, blockSize, numKvHeads, headSize, scales, amax: 2 });
      cache.key.fill(3);
      cache.value.fill(3);
      const numTokens = 5;
      const n = numTokens * numKvHeads * headSize;
      const key = randomF32(n, seededRandom(10), 1.5);
      const value = randomF32(n, seededRandom(11), 1.5);
      key[0] = 1e6; // saturates for FP8
      const slotMapping = Int32Array.of(11, -1, 0, 5, 6);
      ref.reshapeAndCache({ key, value, slotMapping, numTokens, cache });
      const tokenSize = numKvHeads * headSize;
      const layout: ScaleLayout = scales === 'head' ? { granularity: 'head', numHeads: numKvHeads, headSize } : { granularity: 'tensor' };
      const encode = (x: Float32Array, s: Float32Array): ArrayLike<number> =>
        dtype === 'f32'
          ? x
          : dtype === 'bf16'
            ? x.map(f32ToBf16Bits)
            : dtype === 'f16'
              ? x.map(f32ToF16Bits)
              : quantizeScaled(x, s, layout, dtype as Fp8Format);
      const wantK = encode(key, cache.kScale);
      const wantV = encode(value, cache.vScale);
      const written = new Set<number>();
      slotMapping.forEach((slot, t) => {
        if (slot < 0) return;
        written.add(slot);
        for (let i = 0; i < tokenSize; i++) {
          expect(cache.key[slot * tokenSize + i]).toBe(wantK[t * tokenSize + i]);
          expect(cache.value[slot * tokenSize + i]).toBe(wantV[t * tokenSize + i]);
        }
      });
      for (let slot = 0; slot < 12; slot++) {
        if (written.has(slot)) continue;
        for (let i = 0; i < tokenSize; i++) expect(cache.key[slot * tokenSize + i]).toBe(3);
      }
      if (dtype !== 'f32' && dtype !== 'bf16' && dtype !== 'f16') {
        // 1e6 / scale saturates to the largest finite code.
        expect(cache.key[11 * tokenSize]).toBe(FP8_FORMATS[dtype as Fp8Format].maxFiniteCode);
      }
    },
  );
});

/** Dense causal attention over unpaged, dequantized K/V: softmax(q K^T * scale + mask) V, in float64. */
function denseAttention(
  batchSeqs: readonly SeqSpec[],
  query: Float32Array,
  keys: readonly Float32Array[],
  values: readonly Float32Array[],
  cache: KvLayerCache,
  numHeads: number,
  opts: { window?: number; fp8Query?: boolean; softmaxScale?: number },
): Float64Array {
  const { numKvHeads, headSize, dtype } = cache;
  const group = numHeads / numKvHeads;
  const scale = opts.softmaxScale ?? 1 / Math.sqrt(headSize);
  const fp8 = FP8.includes(dtype as Fp8Format);
  const layout: ScaleLayout = { granularity: 'head', numHeads: numKvHeads, headSize };
  const perHead = (s: Float32Array): Float32Array => (s.length === 1 ? new Float32Array(numKvHeads).fill(s[0]!) : s);
  const roundTrip = (x: Float32Array, s: Float32Array): Float32Array => {
    if (dtype === 'f32') return x;
    if (dtype === 'bf16') return x.map((v) => bf16BitsToF32(f32ToBf16Bits(v)));
    if (dtype === 'f16') return x.map((v) => f16BitsToF32(f32ToF16Bits(v)));
    const f = dtype as Fp8Format;
    return dequantizeScaled(quantizeScaled(x, perHead(s), layout, f), perHead(s), layout, f);
  };
  const out = new Float64Array(query.length);
  let tok = 0;
  batchSeqs.forEach((sq, s) => {
    const K = roundTrip(keys[s]!, cache.kScale);
    const V = roundTrip(values[s]!, cache.vScale);
    const Kraw = fp8 ? quantizeScaled(keys[s]!, perHead(cache.kScale), layout, dtype as Fp8Format) : undefined;
    for (let i = 0; i < sq.queryLen; i++, tok++) {
      const pos = sq.seqLen - sq.queryLen + i;
      for (let h = 0; h < numHeads; h++) {
        const g = Math.floor(h / group);
        const qv = query.subarray((tok * numHeads + h) * headSize, (tok * numHeads + h + 1) * headSize);
        let qs = 1;
        let q: ArrayLike<number> = qv;
        if (opts.fp8Query) {
          const qScale = cache.qScale;
          qs = qScale.length === 1 ? qScale[0]! : Math.max(...qScale.subarray(g * group, (g + 1) * group));
          const table = fp8DecodeTable(dtype as Fp8Format);
          q = [...quantizeScaled(qv, [qs], { granularity: 'tensor' }, dtype as Fp8Format)].map((c) => table[c]!);
        }
        const scores: number[] = [];
        for (let j = 0; j <= sq.seqLen - 1; j++) {
          const visible = j <= pos && (opts.window === undefined || j > pos - opts.window);
          if (!visible) {
            scores.push(-Infinity);
            continue;
          }
          let dot = 0;
          for (let d = 0; d < headSize; d++) {
            const idx = (j * numKvHeads + g) * headSize + d;
            if (opts.fp8Query) dot += q[d]! * fp8DecodeTable(dtype as Fp8Format)[Kraw![idx]!]!;
            else dot += q[d]! * K[idx]!;
          }
          const ks = cache.kScale.length === 1 ? cache.kScale[0]! : cache.kScale[g]!;
          scores.push(opts.fp8Query ? dot * qs * ks * scale : dot * scale);
        }
        const m = Math.max(...scores);
        const e = scores.map((x) => Math.exp(x - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let d = 0; d < headSize; d++) {
          let acc = 0;
          for (let j = 0; j < sq.seqLen; j++) acc += (e[j]! / z) * V[(j * numKvHeads + g) * headSize + d]!;
          out[(tok * numHeads + h) * headSize + d] = acc;
        }
      }
    }
  });
  return out;
}

describe('pagedAttention against dense softmax(QK^T)V on the unpaged K/V', () => {
  const seqs: SeqSpec[] = [
    { queryLen: 1, seqLen: 19 }, // decode
    { queryLen: 6, seqLen: 6 }, // prefill
    { queryLen: 4, seqLen: 13 }, // chunked prefill over a cached prefix
    { queryLen: 1, seqLen: 1 },
  ];
  const combos = KV.flatMap((d) =>
    FP8.includes(d as Fp8Format) ? [[d, 'tensor'], [d, 'head']] : [[d, 'tensor']],
  ) as [KvDtype, 'tensor' | 'head'][];

  it.each(combos)('%s/%s, GQA 4:2, block size 4', (dtype, scales) => {
    const rnd = seededRandom(12);
    const b = buildAttentionBatch({ dtype, scales, blockSize: 4, numKvHeads: 2, headSize: 16, numHeads: 4, seqs }, rnd, ref);
    const out = new Float32Array(b.query.length);
    ref.pagedAttention({ ...b, out });
    const want = denseAttention(seqs, b.query, b.keys, b.values, b.cache, 4, {});
    expect(maxAbsDiff(out, want)).toBeLessThan(2e-6);
  });

  it.each(FP8.flatMap((f) => [[f, 'tensor'], [f, 'head']]) as [Fp8Format, 'tensor' | 'head'][])(
    'FP8-query mode (%s, %s q scales): scores = dot(q8, k8) * qScale * kScale * softmaxScale',
    (dtype, scales) => {
      const rnd = seededRandom(13);
      const b = buildAttentionBatch({ dtype, scales, blockSize: 16, numKvHeads: 2, headSize: 8, numHeads: 8, seqs }, rnd, ref);
      const q = b.cache.qScale;
      for (let h = 0; h < q.length; h++) q[h] = (3 + h) / FP8_FORMATS[dtype].maxFinite;
      const out = new Float32Array(b.query.length);
      ref.pagedAttention({ ...b, out, fp8Query: {} });
      const want = denseAttention(seqs, b.query, b.keys, b.values, b.cache, 8, { fp8Query: true });
      expect(maxAbsDiff(out, want)).toBeLessThan(2e-6);
      // And it differs measurably from the float-query result (the query really was quantized).
      const plain = new Float32Array(b.query.length);
      ref.pagedAttention({ ...b, out: plain });
      expect(maxAbsDiff(out, plain)).toBeGreaterThan(1e-4);
    },
  );

  it.each([1, 3, 8])('sliding window %i (MQA 4:1, block size 1) masks positions <= pos - window', (window) => {
    const rnd = seededRandom(14);
    const b = buildAttentionBatch({ dtype: 'e4m3fn', scales: 'head', blockSize: 1, numKvHeads: 1, headSize: 8, numHeads: 4, seqs }, rnd, ref);
    const out = new Float32Array(b.query.length);
    ref.pagedAttention({ ...b, out, slidingWindow: window, softmaxScale: 0.5 });
    const want = denseAttention(seqs, b.query, b.keys, b.values, b.cache, 4, { window, softmaxScale: 0.5 });
    expect(maxAbsDiff(out, want)).toBeLessThan(2e-6);
  });

  it('window 1 returns each token its own dequantized value', () => {
    const rnd = seededRandom(15);
    const b = buildAttentionBatch({ dtype: 'f32', blockSize: 16, numKvHeads: 1, headSize: 8, numHeads: 2, seqs: [{ queryLen: 3, seqLen: 5 }] }, rnd, ref);
    const out = new Float32Array(b.query.length);
    ref.pagedAttention({ ...b, out, slidingWindow: 1 });
    for (let i = 0; i < 3; i++) {
      for (let h = 0; h < 2; h++) {
        for (let d = 0; d < 8; d++) expect(out[(i * 2 + h) * 8 + d]).toBe(b.values[0]![(2 + i) * 8 + d]);
      }
    }
  });

  it('GQA: query head h reads kv head floor(h / group)', () => {
    // Two kv heads with constant, distinct values: every output of query heads 0-2 is 1, of heads 3-5 is -2.
    const cache = makeKvCache({ dtype: 'f32', numBlocks: 2, blockSize: 4, numKvHeads: 2, headSize: 4 });
    const value = new Float32Array(3 * 8);
    for (let t = 0; t < 3; t++) value.set([1, 1, 1, 1, -2, -2, -2, -2], t * 8);
    ref.reshapeAndCache({ key: randomF32(24, seededRandom(16)), value, slotMapping: Int32Array.of(4, 5, 6), numTokens: 3, cache });
    const out = new Float32Array(6 * 4);
    ref.pagedAttention({
      query: randomF32(6 * 4, seededRandom(17)),
      out,
      cache,
      queryStartLoc: Int32Array.of(0, 1),
      seqLens: Int32Array.of(3),
      blockTables: Int32Array.of(1),
      maxBlocksPerSeq: 1,
      numSeqs: 1,
      numHeads: 6,
    });
    expect([...out].map((v) => Math.round(v * 1e6) / 1e6)).toEqual([...Array(12).fill(1), ...Array(12).fill(-2)]);
  });

  it('a sequence with zero new tokens is skipped; block table entries past its blocks are never read', () => {
    const rnd = seededRandom(18);
    const b = buildAttentionBatch({ dtype: 'bf16', blockSize: 4, numKvHeads: 1, headSize: 8, numHeads: 1, seqs: [{ queryLen: 0, seqLen: 5 }, { queryLen: 2, seqLen: 2 }] }, rnd, ref);
    const out = new Float32Array(b.query.length);
    // -1 entries are in the unused tail of each row (see buildAttentionBatch); they must not be dereferenced.
    expect([...b.blockTables]).toContain(-1);
    ref.pagedAttention({ ...b, out });
    const want = denseAttention([{ queryLen: 0, seqLen: 5 }, { queryLen: 2, seqLen: 2 }], b.query, b.keys, b.values, b.cache, 1, {});
    expect(maxAbsDiff(out, want)).toBeLessThan(2e-6);
  });
});

describe('amax', () => {
  it('amaxTensor is max |x| over the first length elements, NaN-propagating', () => {
    const x = Float32Array.of(1, -7, 3, 100);
    expect(ref.amaxTensor({ x, length: 3 })).toBe(7);
    expect(ref.amaxTensor({ x, length: 0 })).toBe(0);
    expect(ref.amaxTensor({ x: Float32Array.of(1, NaN, 2), length: 3 })).toBeNaN();
    expect(ref.amaxTensor({ x: Float32Array.of(1, -Infinity), length: 2 })).toBe(Infinity);
  });

  it('amaxPerHead reduces over tokens and dims per head; accumulate keeps the running max', () => {
    // [tokens 2, heads 2, dims 2]
    const x = Float32Array.of(1, -2, 0.5, 0.25, -3, 0, 0.75, NaN);
    const out = Float32Array.of(9, 9);
    ref.amaxPerHead({ x: x.subarray(0, 4), out, numTokens: 1, numHeads: 2, headSize: 2 });
    expect([...out]).toEqual([2, 0.5]);
    ref.amaxPerHead({ x, out, numTokens: 2, numHeads: 2, headSize: 2, accumulate: true });
    expect(out[0]).toBe(3);
    expect(out[1]).toBeNaN();
    const acc = Float32Array.of(5, 0);
    ref.amaxPerHead({ x: x.subarray(0, 4), out: acc, numTokens: 1, numHeads: 2, headSize: 2, accumulate: true });
    expect([...acc]).toEqual([5, 0.5]);
  });
});

describe('quantizeFp8 / dequantizeFp8', () => {
  it.each(FP8)('%s: equals @kvq/fp8 on the first length elements and leaves the rest alone', (format) => {
    const src = randomF32(40, seededRandom(19), 20);
    const scales = Float32Array.of(0.05, 0.2);
    const layout: ScaleLayout = { granularity: 'head', numHeads: 2, headSize: 4 };
    const out = new Uint8Array(42).fill(0xee);
    ref.quantizeFp8({ src, out, length: 32, scales, layout, format, saturation: 'nosat' });
    expect([...out.subarray(0, 32)]).toEqual([...quantizeScaled(src.subarray(0, 32), scales, layout, format, { saturation: 'nosat' })]);
    expect([...out.subarray(32)]).toEqual(Array(10).fill(0xee));
    const back = new Float32Array(33).fill(-1);
    ref.dequantizeFp8({ src: out, out: back, length: 32, scales, layout, format });
    expect([...back.subarray(0, 32)]).toEqual([...dequantizeScaled(out.subarray(0, 32), scales, layout, format)]);
    expect(back[32]).toBe(-1);
  });
});

describe('reference linear and embedding on quantized weights', () => {
  const r = seededRandom(99);
  for (const dtype of QUANTIZED_WEIGHT_DTYPES) {
    it(`${dtype}: linear equals the float64 dot with the dequantized rows; embedding returns them`, () => {
      const rows = 3;
      const outF = 5;
      const inF = 512;
      const w = quantizeMatrix(randomF32(outF * inF, r, 0.05), outF, inF, dtype, dtype === 'int4' ? { groupSize: 32, symmetric: false } : {});
      const deq = new Float32Array(outF * inF);
      for (let o = 0; o < outF; o++) dequantizeRow(w, o, deq, o * inF);
      const x = randomF32(rows * inF, r);
      const bias = randomF32(outF, r);
      const out = new Float32Array(rows * outF);
      ref.linear({ x, weight: w, out, rows, bias });
      for (let t = 0; t < rows; t++) {
        for (let o = 0; o < outF; o++) {
          let acc = 0;
          for (let i = 0; i < inF; i++) acc += x[t * inF + i]! * deq[o * inF + i]!;
          expect(out[t * outF + o]).toBe(Math.fround(acc + bias[o]!));
        }
      }
      const emb = new Float32Array(2 * inF);
      ref.embedding({ table: w, ids: Int32Array.of(4, 1), out: emb, numTokens: 2 });
      expect([...emb.subarray(0, inF)]).toEqual([...deq.subarray(4 * inF, 5 * inF)]);
      expect([...emb.subarray(inF)]).toEqual([...deq.subarray(inF, 2 * inF)]);
    });
  }
});
