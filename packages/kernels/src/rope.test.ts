import { describe, expect, it } from 'vitest';
import { KernelError } from './errors.js';
import { buildRopeTable, ropeAttentionFactor, ropeInvFreq, ropeScalingFromHf, type RopeScaling } from './rope.js';

const LLAMA31: RopeScaling = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 };

/**
 * Llama-3 scaling written the vectorised way (as Hugging Face `_compute_llama3_parameters` states it): compute the
 * low-frequency-divided and smoothed candidates for every frequency, then select with masks.
 */
function llama3Vectorised(base: number[], s: { factor: number; low: number; high: number; orig: number }): number[] {
  const lowWavelen = s.orig / s.low;
  const highWavelen = s.orig / s.high;
  return base.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    const divided = wavelen > lowWavelen ? f / s.factor : f;
    const smooth = (s.orig / wavelen - s.low) / (s.high - s.low);
    const smoothed = ((1 - smooth) * divided) / s.factor + smooth * divided;
    const isMedium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
    return isMedium ? smoothed : divided;
  });
}

describe('ropeInvFreq', () => {
  it('is theta^(-2i/d) without scaling (float32)', () => {
    const f = ropeInvFreq({ rotaryDim: 8, theta: 10000 });
    expect([...f]).toEqual([1, 0.1, 0.01, 0.001].map(Math.fround));
  });

  it('linear scaling divides every frequency by the factor', () => {
    const a = ropeInvFreq({ rotaryDim: 64, theta: 10000 });
    const b = ropeInvFreq({ rotaryDim: 64, theta: 10000, scaling: { type: 'linear', factor: 4 } });
    // Dividing by a power of two commutes with rounding to float32.
    a.forEach((v, i) => expect(b[i]).toBe(v / 4));
    expect(b[0]).toBe(0.25);
  });

  it('Llama-3.1 scaling (theta 500000, d 128): bands fall where the published constants put them', () => {
    const base = ropeInvFreq({ rotaryDim: 128, theta: 500000 });
    const scaled = ropeInvFreq({ rotaryDim: 128, theta: 500000, scaling: LLAMA31 });
    // wavelen_i = 2π · 500000^(i/64): < 8192/4 = 2048 for i <= 28 (kept); > 8192 for i >= 35 (divided by 8).
    for (let i = 0; i <= 28; i++) expect(scaled[i]).toBe(base[i]);
    for (let i = 35; i < 64; i++) expect(scaled[i]).toBe(base[i]! / 8);
    for (let i = 29; i <= 34; i++) {
      // Medium band: strictly between f/8 and f, and decreasing towards f/8 as wavelength grows.
      expect(scaled[i]!).toBeLessThan(base[i]!);
      expect(scaled[i]!).toBeGreaterThan(base[i]! / 8);
    }
    const ratio = [...Array(6).keys()].map((k) => scaled[29 + k]! / base[29 + k]!);
    for (let k = 1; k < 6; k++) expect(ratio[k]!).toBeLessThan(ratio[k - 1]!);
  });

  it('Llama-3 scaling matches the vectorised formula for several configurations', () => {
    for (const [theta, d, s] of [
      [500000, 128, { factor: 8, low: 1, high: 4, orig: 8192 }],
      [500000, 64, { factor: 32, low: 1, high: 4, orig: 8192 }],
      [10000, 96, { factor: 4, low: 2, high: 8, orig: 2048 }],
    ] as const) {
      const base = [...Array(d / 2).keys()].map((i) => 1 / Math.pow(theta, (2 * i) / d));
      const want = llama3Vectorised(base, s).map(Math.fround);
      const got = ropeInvFreq({
        rotaryDim: d,
        theta,
        scaling: { type: 'llama3', factor: s.factor, lowFreqFactor: s.low, highFreqFactor: s.high, originalMaxPositions: s.orig },
      });
      expect([...got]).toEqual(want);
    }
  });

  it('rejects bad configs with the field named', () => {
    const bad: [object, string][] = [
      [{ rotaryDim: 7, theta: 10000 }, 'rotaryDim'],
      [{ rotaryDim: 8, theta: 0 }, 'theta'],
      [{ rotaryDim: 8, theta: 10000, scaling: { type: 'linear', factor: -1 } }, 'scaling.factor'],
      [{ rotaryDim: 8, theta: 10000, scaling: { ...LLAMA31, highFreqFactor: 1 } }, 'scaling.highFreqFactor'],
      [{ rotaryDim: 8, theta: 10000, scaling: { type: 'yarn', factor: 2 } }, 'scaling.originalMaxPositions'],
      [{ rotaryDim: 8, theta: 10000, scaling: { type: 'ntk', factor: 2 } }, 'scaling.type'],
    ];
    for (const [cfg, arg] of bad) {
      try {
        ropeInvFreq(cfg as never);
        expect.fail(`no error for ${arg}`);
      } catch (e) {
        expect(e).toBeInstanceOf(KernelError);
        expect((e as KernelError).argument).toBe(arg);
      }
    }
  });
});

describe('frequencyFactors (GGUF rope_freqs)', () => {
  it('divide each (scaled) inverse frequency by its factor, in the table too', () => {
    const base = ropeInvFreq({ rotaryDim: 8, theta: 10000, scaling: { type: 'linear', factor: 2 } });
    const factors = Float32Array.of(1, 1.5, 4, 32);
    const t = buildRopeTable({ rotaryDim: 8, theta: 10000, scaling: { type: 'linear', factor: 2 }, frequencyFactors: factors, maxPositions: 5 });
    expect(Array.from(t.invFreq)).toEqual(Array.from(base, (f, i) => Math.fround(f / factors[i]!)));
    expect(t.cos[4 * 4 + 3]).toBe(Math.fround(Math.cos(Math.fround(4 * t.invFreq[3]!))));
    expect(t.invFreq[0]).toBe(base[0]);
  });

  it('rejects a wrong length or a factor that is not finite and > 0, naming it', () => {
    expect(() => ropeInvFreq({ rotaryDim: 8, theta: 10000, frequencyFactors: new Float32Array(3) })).toThrow(/frequencyFactors has 3 values, rotaryDim \/ 2 is 4/);
    expect(() => ropeInvFreq({ rotaryDim: 4, theta: 10000, frequencyFactors: Float32Array.of(1, 0) })).toThrow(/frequencyFactors\[1\]/);
    expect(() => ropeInvFreq({ rotaryDim: 4, theta: 10000, frequencyFactors: Float32Array.of(Number.NaN, 1) })).toThrow(KernelError);
  });
});

describe('buildRopeTable', () => {
  it('holds cos/sin of fround(p * invFreq) for every position and pair', () => {
    const t = buildRopeTable({ rotaryDim: 16, theta: 500000, scaling: LLAMA31, maxPositions: 100 });
    expect(t.cos.length).toBe(800);
    for (const p of [0, 1, 57, 99]) {
      for (let i = 0; i < 8; i++) {
        const ang = Math.fround(p * t.invFreq[i]!);
        expect(t.cos[p * 8 + i]).toBe(Math.fround(Math.cos(ang)));
        expect(t.sin[p * 8 + i]).toBe(Math.fround(Math.sin(ang)));
      }
    }
    expect(t.cos[0]).toBe(1);
    expect(t.sin[0]).toBe(0);
  });
});

describe('ropeScalingFromHf', () => {
  it('reads llama3, linear and default/null', () => {
    expect(
      ropeScalingFromHf({ rope_type: 'llama3', factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 }),
    ).toEqual(LLAMA31);
    expect(ropeScalingFromHf({ type: 'linear', factor: 2 })).toEqual({ type: 'linear', factor: 2 });
    expect(ropeScalingFromHf(null)).toBeUndefined();
    expect(ropeScalingFromHf({ rope_type: 'default' })).toBeUndefined();
  });

  it('rejects unsupported types and missing fields', () => {
    expect(() => ropeScalingFromHf({ rope_type: 'mrope', factor: 4 })).toThrow(expect.objectContaining({ code: 'UNSUPPORTED' }));
    expect(() => ropeScalingFromHf({ rope_type: 'yarn', factor: 4 })).toThrow(expect.objectContaining({ argument: 'rope_scaling.original_max_position_embeddings' }));
    expect(() => ropeScalingFromHf({ rope_type: 'llama3', factor: 8 })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT', argument: 'rope_scaling.low_freq_factor' }),
    );
    expect(() => ropeScalingFromHf(3)).toThrow(expect.objectContaining({ argument: 'rope_scaling' }));
  });
});

describe('yarn, dynamic and longrope scaling', () => {
  const base64 = (d: number, theta: number): number[] => [...Array(d / 2).keys()].map((i) => 1 / Math.pow(theta, (2 * i) / d));

  it('yarn keeps high frequencies, divides low ones by the factor, ramps between (Qwen3 4x over 32768)', () => {
    const d = 128;
    const theta = 1000000;
    const s: RopeScaling = { type: 'yarn', factor: 4, originalMaxPositions: 32768 };
    const got = ropeInvFreq({ rotaryDim: d, theta, scaling: s });
    const b = base64(d, theta);
    // Correction dims: d·ln(32768 / (β·2π)) / (2·ln θ) for β = 32 → 23.6 (floor 23), β = 1 → 39.6 (ceil 40).
    for (let i = 0; i <= 23; i++) expect(got[i]).toBe(Math.fround(b[i]!));
    for (let i = 40; i < 64; i++) expect(got[i]).toBe(Math.fround(b[i]! / 4));
    for (let i = 24; i < 40; i++) {
      const ramp = (i - 23) / (40 - 23);
      expect(got[i]).toBe(Math.fround((b[i]! / 4) * ramp + b[i]! * (1 - ramp)));
    }
  });

  it('yarn scales cos and sin by 0.1·ln(factor) + 1 unless attention_factor is given', () => {
    const s: RopeScaling = { type: 'yarn', factor: 4, originalMaxPositions: 64 };
    const t = buildRopeTable({ rotaryDim: 8, theta: 10000, scaling: s, maxPositions: 5 });
    const af = 0.1 * Math.log(4) + 1;
    expect(ropeAttentionFactor(s)).toBeCloseTo(af, 15);
    expect(t.cos[0]).toBe(Math.fround(af));
    const p = 3;
    const angle = Math.fround(p * t.invFreq[1]!);
    expect(t.sin[p * 4 + 1]).toBe(Math.fround(Math.fround(Math.sin(angle)) * Math.fround(af)));
    expect(ropeAttentionFactor({ ...s, attentionFactor: 0.5 })).toBe(0.5);
    expect(ropeAttentionFactor({ ...s, mscale: 0.707, mscaleAllDim: 0.707 })).toBe(1);
  });

  it('dynamic NTK leaves frequencies alone up to max_position_embeddings, then raises the base', () => {
    const s: RopeScaling = { type: 'dynamic', factor: 2, maxPositions: 100 };
    const plain = ropeInvFreq({ rotaryDim: 16, theta: 10000 });
    expect([...buildRopeTable({ rotaryDim: 16, theta: 10000, scaling: s, maxPositions: 100 }).invFreq]).toEqual([...plain]);
    const t = buildRopeTable({ rotaryDim: 16, theta: 10000, scaling: s, maxPositions: 300 });
    const theta2 = 10000 * ((2 * 300) / 100 - 1) ** (16 / 14);
    expect([...t.invFreq]).toEqual(base64(16, theta2).map(Math.fround));
  });

  it('longrope divides by short factors before original_max_position_embeddings and long factors from there', () => {
    const short = [1, 1.5, 2, 3];
    const long = [2, 4, 8, 16];
    const s: RopeScaling = { type: 'longrope', shortFactor: short, longFactor: long, originalMaxPositions: 4, factor: 32 };
    const t = buildRopeTable({ rotaryDim: 8, theta: 10000, scaling: s, maxPositions: 6 });
    const b = base64(8, 10000);
    const af = Math.fround(Math.sqrt(1 + Math.log(32) / Math.log(4)));
    for (const p of [3, 4, 5]) {
      const f = p < 4 ? short : long;
      for (let i = 0; i < 4; i++) {
        const angle = Math.fround(p * Math.fround(b[i]! / f[i]!));
        expect(t.cos[p * 4 + i]).toBe(Math.fround(Math.fround(Math.cos(angle)) * af));
      }
    }
    expect(() => buildRopeTable({ rotaryDim: 8, theta: 1e4, scaling: { ...s, longFactor: [1, 2] }, maxPositions: 6 })).toThrow(/longFactor/);
  });

  it('reads yarn, dynamic, longrope and legacy su from config.json objects', () => {
    expect(ropeScalingFromHf({ rope_type: 'yarn', factor: 4, original_max_position_embeddings: 32768 })).toMatchObject({ type: 'yarn', factor: 4, originalMaxPositions: 32768 });
    expect(ropeScalingFromHf({ type: 'dynamic', factor: 2 }, { maxPositionEmbeddings: 2048 })).toEqual({ type: 'dynamic', factor: 2, maxPositions: 2048 });
    expect(() => ropeScalingFromHf({ type: 'dynamic', factor: 2 })).toThrow(/max_position_embeddings/);
    const phi = ropeScalingFromHf({ type: 'su', short_factor: [1, 1], long_factor: [2, 2] }, { maxPositionEmbeddings: 131072, originalMaxPositionEmbeddings: 4096 });
    expect(phi).toMatchObject({ type: 'longrope', factor: 32, originalMaxPositions: 4096 });
    expect(ropeAttentionFactor(phi)).toBeCloseTo(Math.sqrt(1 + Math.log(32) / Math.log(4096)), 15);
    expect(() => ropeScalingFromHf({ rope_type: 'longrope', short_factor: [1], long_factor: [1] }, { rotaryDim: 4, originalMaxPositionEmbeddings: 8 })).toThrow(KernelError);
    expect(() => ropeScalingFromHf({ rope_type: 'mrope' })).toThrow(/mrope/);
  });
});
