import { decodeFp8, encodeFp8, formatInfo, type Fp8Format } from '@kvq/fp8';
import { seededNormal } from '@kvq/test-utils';
import { describe, expect, it } from 'vitest';

import { CalibrateError } from './errors.js';
import { QuantStatsAccumulator, saturationThreshold } from './report.js';
import { convertScaleFormat, reduceQueryScalesPerKvHead, uniformScales, validateCalibratedScales, type CalibratedScales } from './scales.js';

const dims = { numLayers: 2, numHeads: 4, numKvHeads: 2 };

describe('scale format conversion (OCP ↔ FNUZ, factor 2)', () => {
  it('doubles to fnuz and halves back exactly, recording where it came from', () => {
    const s: CalibratedScales = { ...uniformScales(dims, 'attn_head', 'e4m3fn', true), layers: [
      { k: Float32Array.of(0.03, 0.05), v: Float32Array.of(0.002, 0.004), q: Float32Array.of(0.1, 0.2, 0.3, 0.4) },
      { k: Float32Array.of(1e-3, 7), v: Float32Array.of(3, 5), q: undefined },
    ] };
    const f = convertScaleFormat(s, 'e4m3fnuz');
    expect(f.format).toBe('e4m3fnuz');
    expect(f.convertedFrom).toBe('e4m3fn');
    expect([...f.layers[0]!.k]).toEqual([...s.layers[0]!.k].map((x) => x * 2));
    expect(f.layers[1]!.q).toBeUndefined();
    const back = convertScaleFormat(f, 'e4m3fn');
    expect(back.layers).toEqual(s.layers);
    expect(back.convertedFrom).toBeUndefined();
  });

  it('the same byte then means the same value: decode_fnuz(c) * 2s == decode_fn(c) * s', () => {
    for (const [ocp, fnuz] of [['e4m3fn', 'e4m3fnuz'], ['e5m2', 'e5m2fnuz']] as [Fp8Format, Fp8Format][]) {
      for (let c = 1; c < 0x7f; c++) {
        const a = decodeFp8(c, ocp);
        const b = decodeFp8(c, fnuz);
        if (Number.isFinite(a) && Number.isFinite(b)) expect(b * 2).toBe(a);
      }
    }
  });

  it('e4m3 ↔ e5m2 is INCOMPATIBLE_FORMAT', () => {
    try {
      convertScaleFormat(uniformScales(dims, 'tensor', 'e4m3fn', false), 'e5m2');
      expect.unreachable();
    } catch (e) {
      expect((e as CalibrateError).code).toBe('INCOMPATIBLE_FORMAT');
    }
  });
});

describe('GQA reduction and validation', () => {
  it('reduces q per KV head by max over the group', () => {
    expect([...reduceQueryScalesPerKvHead(Float32Array.of(1, 3, 2, 0.5), 4, 2)]).toEqual([3, 2]);
    expect([...reduceQueryScalesPerKvHead(Float32Array.of(0.7), 4, 2)]).toEqual([Math.fround(0.7)]);
  });
  it('rejects wrong shapes and non-positive values naming the layer', () => {
    const s = uniformScales(dims, 'attn_head', 'e4m3fn', false);
    expect(() => validateCalibratedScales({ ...s, layers: [s.layers[0]!, { ...s.layers[1]!, k: Float32Array.of(1) }] })).toThrow(/layer 1 k scale has 1 entries/);
    expect(() => validateCalibratedScales({ ...s, layers: [s.layers[0]!, { ...s.layers[1]!, v: Float32Array.of(1, 0) }] })).toThrow(/layer 1 v scale \[1\] is 0/);
    expect(() => validateCalibratedScales(s, 3)).toThrow(/3/);
  });
});

describe('quantization statistics', () => {
  it('saturation threshold is max finite + ulp/2 (464 for e4m3fn, 61440 for e5m2)', () => {
    expect(saturationThreshold('e4m3fn')).toBe(464);
    expect(saturationThreshold('e5m2')).toBe(61440);
    // Values up to the threshold round to max finite even without saturation; beyond it they are clipped.
    expect(decodeFp8(encodeFp8(464, 'e4m3fn', 'nosat'), 'e4m3fn')).toBe(448);
    expect(saturationThreshold('e4m3fnuz')).toBe(248);
  });

  it('counts clipped, subnormal and flushed elements and the SQNR as a direct computation does', () => {
    const rand = seededNormal(3);
    const heads = 2;
    const dim = 8;
    const tokens = 50;
    const x = new Float32Array(tokens * heads * dim).map(() => rand());
    x[0] = 100; // head 0: clipped at scale 0.1 (1000 > 464)
    x[dim] = 1e-6; // head 1: flushed to zero at scale 0.1
    const scales = Float32Array.of(0.1, 0.1);
    const acc = new QuantStatsAccumulator(heads, dim, 'e4m3fn');
    acc.add(x, tokens, scales);
    const r = acc.result([1, 1], [1, 1], scales);
    const info = formatInfo('e4m3fn');
    let sat = 0;
    let sub = 0;
    let ftz = 0;
    let sig = 0;
    let noise = 0;
    for (const v of x) {
      const y = decodeFp8(encodeFp8(Math.fround(v / 0.1), 'e4m3fn'), 'e4m3fn') * Math.fround(0.1);
      const back = Math.fround(y);
      sig += v * v;
      noise += (v - back) ** 2;
      const m = Math.abs(Math.fround(v / 0.1));
      if (m > 464) sat++;
      else if (m < info.minNormal) sub++;
      if (back === 0) ftz++;
    }
    expect(r.count).toBe(x.length);
    expect(r.saturated).toBeCloseTo(sat / x.length, 12);
    expect(sat).toBe(1);
    expect(r.subnormal).toBeCloseTo(sub / x.length, 12);
    expect(r.flushedToZero).toBeCloseTo(ftz / x.length, 12);
    expect(ftz).toBeGreaterThanOrEqual(1);
    expect(r.sqnrDb).toBeCloseTo(10 * Math.log10(sig / noise), 6);
    expect(r.heads[0]!.saturated).toBeGreaterThan(0);
    expect(r.heads[1]!.saturated).toBe(0);
    expect(r.heads[1]!.flushedToZero).toBeGreaterThan(0);
  });

  it('a power-of-two scale change leaves the SQNR unchanged (FP8 relative precision is scale-free in range)', () => {
    const rand = seededNormal(11);
    // |x| in [0.5, ~5): normal at scale 1 (above 2^-6) and unsaturated at scale 1/64 (below 448).
    const x = new Float32Array(4 * 2 * 16).map(() => {
      const r = rand();
      return Math.sign(r) * (0.5 + Math.min(Math.abs(r), 4.4));
    });
    const sq = (scale: number, data: Float32Array) => {
      const acc = new QuantStatsAccumulator(2, 16, 'e4m3fn');
      acc.add(data, 4, Float32Array.of(scale));
      return acc.result([1], [1], [scale]).sqnrDb;
    };
    expect(sq(1 / 64, x)).toBe(sq(1, x));
    expect(sq(64, x.map((v) => v * 64))).toBe(sq(1, x));
  });
});
