/**
 * Rotary position embedding tables: inverse frequencies (with rope_theta and rope scaling) and the
 * cos/sin table every backend's `rope` op reads, so RoPE angles are identical across backends.
 * @see https://arxiv.org/abs/2104.09864 (RoFormer) for RoPE; Meta's Llama 3.1 reference `apply_scaling` and
 *   Hugging Face `_compute_llama3_parameters` for Llama-3 scaling.
 * @module
 */
import type { RopeTable } from './contract.js';
import { KernelError } from './errors.js';
import { checkCount, checkFinite, describeValue } from './validate.js';

/**
 * RoPE frequency scaling (Hugging Face `rope_type`; see docs/spec/architectures.md §RoPE for the sources).
 * - `linear` (position interpolation): every inverse frequency is divided by `factor`.
 * - `llama3` (Llama 3.1+): with `wavelen = 2π / f`, `lowWavelen = originalMaxPositions / lowFreqFactor`,
 *   `highWavelen = originalMaxPositions / highFreqFactor`: `wavelen < highWavelen` → `f` unchanged;
 *   `wavelen > lowWavelen` → `f / factor`; otherwise
 *   `smooth = (originalMaxPositions / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor)` and
 *   `f' = (1 - smooth) * f / factor + smooth * f`.
 * - `yarn` (YaRN, arXiv 2309.00071): `f' = f/factor * (1 - e_i) + f * e_i` with `e_i = 1 - clamp((i - low) /
 *   (high - low), 0, 1)`, `low`/`high` the correction dims of `betaFast`/`betaSlow` rotations over
 *   `originalMaxPositions` (floored / ceiled when `truncate`); cos and sin are multiplied by the attention factor.
 * - `dynamic` (dynamic NTK): `theta' = theta * (factor * L / maxPositions - (factor - 1)) ^ (d / (d - 2))` with
 *   `L = max(sequenceLength, maxPositions)` (no change while `L <= maxPositions`). kvq fixes `L` once per table (the
 *   table's length), as vLLM does, instead of recomputing it for every forward call as transformers does.
 * - `longrope` (Phi-3 "su"/LongRoPE): `f'_i = f_i / shortFactor[i]` for positions `< originalMaxPositions` and
 *   `f_i / longFactor[i]` beyond (per position, as vLLM's Phi3LongRoPE; transformers switches the whole sequence
 *   once it is longer than `originalMaxPositions`); cos and sin are multiplied by the attention factor.
 */
export type RopeScaling =
  | { readonly type: 'linear'; readonly factor: number }
  | {
      readonly type: 'llama3';
      /** Overall scale (Llama 3.1: 8). */
      readonly factor: number;
      /** Llama 3.1: 1. */
      readonly lowFreqFactor: number;
      /** Llama 3.1: 4. */
      readonly highFreqFactor: number;
      /** Context length the base model was trained with (Llama 3.1: 8192). */
      readonly originalMaxPositions: number;
    }
  | {
      readonly type: 'yarn';
      /** Context extension factor (> 0). */
      readonly factor: number;
      /** Pre-training context length. */
      readonly originalMaxPositions: number;
      /** Rotations bounding extrapolation. Default 32. */
      readonly betaFast?: number | undefined;
      /** Rotations bounding interpolation. Default 1. */
      readonly betaSlow?: number | undefined;
      /** Floor/ceil the correction range. Default true. */
      readonly truncate?: boolean | undefined;
      /**
       * Multiplier of cos and sin. Default: `mscale(factor, mscale) / mscale(factor, mscaleAllDim)` when both are
       * given and non-zero, else `mscale(factor)`, with `mscale(s, m = 1) = s <= 1 ? 1 : 0.1 * m * ln(s) + 1`.
       */
      readonly attentionFactor?: number | undefined;
      readonly mscale?: number | undefined;
      readonly mscaleAllDim?: number | undefined;
    }
  | {
      readonly type: 'dynamic';
      readonly factor: number;
      /** The model's `max_position_embeddings` (the length up to which frequencies are unscaled). */
      readonly maxPositions: number;
    }
  | {
      readonly type: 'longrope';
      /** Divisors of each inverse frequency for positions `< originalMaxPositions`, length `rotaryDim / 2`. */
      readonly shortFactor: ArrayLike<number>;
      /** Divisors for positions `>= originalMaxPositions`, length `rotaryDim / 2`. */
      readonly longFactor: ArrayLike<number>;
      readonly originalMaxPositions: number;
      /** Context ratio used for the default attention factor (HF: `max_position_embeddings / original`). */
      readonly factor: number;
      /** Multiplier of cos and sin. Default `factor <= 1 ? 1 : sqrt(1 + ln(factor) / ln(originalMaxPositions))`. */
      readonly attentionFactor?: number | undefined;
    };

/** Options of {@link ropeInvFreq} and {@link buildRopeTable}. */
export interface RopeConfig {
  /** Rotated dims per head (even, `>= 2`): `headSize` for Llama, `headSize * partial_rotary_factor` otherwise. */
  readonly rotaryDim: number;
  /** Base `rope_theta` (Llama 2: 10000, Llama 3: 500000). Finite, `> 0`. */
  readonly theta: number;
  /** Optional frequency scaling; `undefined` = none (HF `rope_type: "default"`). */
  readonly scaling?: RopeScaling | undefined;
  /**
   * Optional per-pair frequency factors (GGUF `rope_freqs.weight`, llama.cpp semantics; length `rotaryDim / 2`,
   * finite and `> 0`): each inverse frequency, after `scaling`, is divided by its factor.
   */
  readonly frequencyFactors?: Float32Array | undefined;
  /**
   * Longest sequence the frequencies serve (`dynamic` scaling only; {@link buildRopeTable} passes its
   * `maxPositions`). Default: the scaling's `maxPositions` (no change).
   */
  readonly sequenceLength?: number | undefined;
}

function validateFactors(factors: Float32Array, half: number): void {
  if (factors.length !== half) {
    throw new KernelError('INVALID_ARGUMENT', `frequencyFactors has ${factors.length} values, rotaryDim / 2 is ${half}`, {
      argument: 'frequencyFactors',
    });
  }
  factors.forEach((v, i) => checkFinite(`frequencyFactors[${i}]`, v, true));
}

function checkPositiveOpt(name: string, v: number | undefined): void {
  if (v !== undefined) checkFinite(name, v, true);
}

function validateScaling(s: RopeScaling, half: number): void {
  const type = (s as { type?: unknown }).type;
  if (type === 'longrope') {
    const l = s as Extract<RopeScaling, { type: 'longrope' }>;
    for (const key of ['shortFactor', 'longFactor'] as const) {
      const f = l[key] as ArrayLike<number> | undefined;
      if (!f || typeof f.length !== 'number' || f.length !== half) {
        throw new KernelError('INVALID_ARGUMENT', `scaling.${key} must have rotaryDim / 2 = ${half} values, got ${describeValue(f)}`, {
          argument: `scaling.${key}`,
        });
      }
      for (let i = 0; i < half; i++) checkFinite(`scaling.${key}[${i}]`, f[i]!, true);
    }
    checkFinite('scaling.factor', l.factor, true);
    checkFinite('scaling.originalMaxPositions', l.originalMaxPositions, true);
    checkPositiveOpt('scaling.attentionFactor', l.attentionFactor);
    return;
  }
  checkFinite('scaling.factor', s.factor, true);
  if (s.type === 'linear') return;
  if (s.type === 'yarn') {
    checkFinite('scaling.originalMaxPositions', s.originalMaxPositions, true);
    checkPositiveOpt('scaling.betaFast', s.betaFast);
    checkPositiveOpt('scaling.betaSlow', s.betaSlow);
    checkPositiveOpt('scaling.attentionFactor', s.attentionFactor);
    return;
  }
  if (s.type === 'dynamic') {
    checkFinite('scaling.maxPositions', s.maxPositions, true);
    return;
  }
  if (s.type !== 'llama3') {
    throw new KernelError(
      'INVALID_ARGUMENT',
      `scaling.type must be 'linear', 'llama3', 'yarn', 'dynamic' or 'longrope', got ${describeValue(type)}`,
      { argument: 'scaling.type' },
    );
  }
  checkFinite('scaling.lowFreqFactor', s.lowFreqFactor, true);
  checkFinite('scaling.highFreqFactor', s.highFreqFactor, true);
  checkFinite('scaling.originalMaxPositions', s.originalMaxPositions, true);
  if (!(s.highFreqFactor > s.lowFreqFactor)) {
    throw new KernelError(
      'INVALID_ARGUMENT',
      `scaling.highFreqFactor (${s.highFreqFactor}) must exceed scaling.lowFreqFactor (${s.lowFreqFactor})`,
      { argument: 'scaling.highFreqFactor' },
    );
  }
}

/** YaRN's attention-scale helper: `s <= 1 ? 1 : 0.1 * m * ln(s) + 1`. */
function yarnMscale(scale: number, m = 1): number {
  return scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1;
}

/**
 * The multiplier RoPE scaling applies to cos and sin (transformers' `attention_scaling`): `yarn` and `longrope`
 * (see {@link RopeScaling} for the defaults); 1 for every other type and for no scaling.
 */
export function ropeAttentionFactor(s: RopeScaling | undefined): number {
  if (s === undefined) return 1;
  if (s.type === 'yarn') {
    if (s.attentionFactor !== undefined) return s.attentionFactor;
    if (s.mscale && s.mscaleAllDim) return yarnMscale(s.factor, s.mscale) / yarnMscale(s.factor, s.mscaleAllDim);
    return yarnMscale(s.factor);
  }
  if (s.type === 'longrope') {
    if (s.attentionFactor !== undefined) return s.attentionFactor;
    return s.factor <= 1 ? 1 : Math.sqrt(1 + Math.log(s.factor) / Math.log(s.originalMaxPositions));
  }
  return 1;
}

/**
 * Scaled inverse frequencies in float64, before any rounding: the base `theta^(-2i / rotaryDim)` with the scaling
 * applied. `longrope` gives the short-context set unless `long` is true. Validates nothing (see {@link ropeInvFreq}).
 */
function scaledInvFreq64(rotaryDim: number, theta: number, s: RopeScaling | undefined, sequenceLength: number | undefined, long = false): Float64Array {
  const half = rotaryDim / 2;
  let base = theta;
  if (s?.type === 'dynamic') {
    const len = Math.max(sequenceLength ?? s.maxPositions, s.maxPositions);
    base = theta * ((s.factor * len) / s.maxPositions - (s.factor - 1)) ** (rotaryDim / (rotaryDim - 2));
  }
  const out = new Float64Array(half);
  for (let i = 0; i < half; i++) out[i] = 1 / Math.pow(base, (2 * i) / rotaryDim);
  if (s === undefined || s.type === 'dynamic') return out;
  if (s.type === 'longrope') {
    const f = long ? s.longFactor : s.shortFactor;
    return out.map((v, i) => v / f[i]!);
  }
  if (s.type === 'yarn') {
    const correctionDim = (rotations: number): number =>
      (rotaryDim * Math.log(s.originalMaxPositions / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
    let low = correctionDim(s.betaFast ?? 32);
    let high = correctionDim(s.betaSlow ?? 1);
    if (s.truncate ?? true) {
      low = Math.floor(low);
      high = Math.ceil(high);
    }
    low = Math.max(low, 0);
    high = Math.min(high, rotaryDim - 1);
    if (low === high) high += 0.001;
    return out.map((f, i) => {
      const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
      const extrapolation = 1 - ramp;
      return (f / s.factor) * (1 - extrapolation) + f * extrapolation;
    });
  }
  return out.map((f) => scaleFrequency(f, s));
}

/**
 * Inverse frequencies `f_i = theta^(-2i / rotaryDim)`, `i = 0 .. rotaryDim/2 - 1`, then scaled (see
 * {@link RopeScaling}; `longrope`: the short-context set); computed in float64 and rounded to float32 (as HF and vLLM
 * keep them in float32); then, with `frequencyFactors`, divided by each factor in float32 (as llama.cpp applies
 * `rope_freqs`).
 */
export function ropeInvFreq(config: RopeConfig): Float32Array {
  return invFreqSet(config, false);
}

function invFreqSet(config: RopeConfig, long: boolean): Float32Array {
  const rotaryDim = checkCount('rotaryDim', config.rotaryDim, 2);
  if (rotaryDim % 2 !== 0) {
    throw new KernelError('INVALID_ARGUMENT', `rotaryDim must be even, got ${rotaryDim}`, { argument: 'rotaryDim' });
  }
  const theta = checkFinite('theta', config.theta, true);
  const s = config.scaling;
  const half = rotaryDim / 2;
  if (s !== undefined) validateScaling(s, half);
  if (config.sequenceLength !== undefined) checkCount('sequenceLength', config.sequenceLength, 1);
  const factors = config.frequencyFactors;
  if (factors !== undefined) validateFactors(factors, half);
  const out = Float32Array.from(scaledInvFreq64(rotaryDim, theta, s, config.sequenceLength, long));
  if (factors !== undefined) for (let i = 0; i < half; i++) out[i] = out[i]! / factors[i]!;
  return out;
}

/** Apply `linear` or `llama3` {@link RopeScaling} to one inverse frequency (float64 in, float64 out). */
export function scaleFrequency(f: number, s: RopeScaling): number {
  if (s.type === 'linear') return f / s.factor;
  if (s.type !== 'llama3') {
    throw new KernelError('INVALID_ARGUMENT', `scaleFrequency applies linear or llama3 scaling only, got ${s.type}`, { argument: 'scaling.type' });
  }
  const wavelen = (2 * Math.PI) / f;
  const lowWavelen = s.originalMaxPositions / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositions / s.highFreqFactor;
  if (wavelen < highWavelen) return f;
  if (wavelen > lowWavelen) return f / s.factor;
  const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
  return ((1 - smooth) * f) / s.factor + smooth * f;
}

/**
 * Build the shared cos/sin table for positions `[0, maxPositions)`.
 * Angle of position `p`, pair `i`: `fround(p * invFreq[i])` (float32, as HF/vLLM compute `outer(t, inv_freq)` in
 * float32); `cos` / `sin` of that angle in float64, rounded to float32, then (yarn, longrope) multiplied by the
 * attention factor ({@link ropeAttentionFactor}) in float32. `longrope` rows `p >= originalMaxPositions` use the long
 * factors; `dynamic` scaling is computed for `sequenceLength = maxPositions`. `invFreq` of the result is the set of
 * position 0. Memory: `4 * maxPositions * rotaryDim` bytes.
 */
export function buildRopeTable(config: RopeConfig & { readonly maxPositions: number }): RopeTable {
  const maxPositions = checkCount('maxPositions', config.maxPositions, 1);
  const withLength: RopeConfig = { ...config, sequenceLength: config.sequenceLength ?? maxPositions };
  const invFreq = invFreqSet(withLength, false);
  const s = config.scaling;
  const switchAt = s?.type === 'longrope' ? s.originalMaxPositions : Infinity;
  const longFreq = switchAt < maxPositions ? invFreqSet(withLength, true) : invFreq;
  const af = Math.fround(ropeAttentionFactor(s));
  const half = invFreq.length;
  const cos = new Float32Array(maxPositions * half);
  const sin = new Float32Array(maxPositions * half);
  for (let p = 0; p < maxPositions; p++) {
    const f = p < switchAt ? invFreq : longFreq;
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(p * f[i]!);
      cos[p * half + i] = af === 1 ? Math.cos(angle) : Math.fround(Math.cos(angle)) * af;
      sin[p * half + i] = af === 1 ? Math.sin(angle) : Math.fround(Math.sin(angle)) * af;
    }
  }
  return { rotaryDim: config.rotaryDim, maxPositions, invFreq, cos, sin };
}

/** Model-level `config.json` fields some RoPE types fall back to (see {@link ropeScalingFromHf}). */
export interface HfRopeContext {
  /** `max_position_embeddings`: `dynamic`'s length, `longrope`'s default `factor` numerator. */
  readonly maxPositionEmbeddings?: number | undefined;
  /** Top-level `original_max_position_embeddings` (Phi-3 keeps it outside `rope_scaling`). */
  readonly originalMaxPositionEmbeddings?: number | undefined;
  /** Rotated dims, to check `longrope` factor lengths early. */
  readonly rotaryDim?: number | undefined;
}

/**
 * Read a Hugging Face `config.json` `rope_scaling` object (`rope_type` or legacy `type`; snake_case fields) into a
 * {@link RopeScaling}. `null` / `undefined` / `rope_type: "default"` give `undefined`. `su` is read as `longrope`.
 * `dynamic` needs `context.maxPositionEmbeddings`; `longrope` takes `original_max_position_embeddings` from the object
 * or the context, and a missing `factor` is `maxPositionEmbeddings / original` (transformers). Other types throw
 * `UNSUPPORTED` naming `rope_scaling.rope_type`.
 */
export function ropeScalingFromHf(ropeScaling: unknown, context: HfRopeContext = {}): RopeScaling | undefined {
  if (ropeScaling === null || ropeScaling === undefined) return undefined;
  if (typeof ropeScaling !== 'object' || Array.isArray(ropeScaling)) {
    throw new KernelError('INVALID_ARGUMENT', `rope_scaling must be an object or null, got ${describeValue(ropeScaling)}`, {
      argument: 'rope_scaling',
    });
  }
  const o = ropeScaling as Record<string, unknown>;
  const type = o.rope_type ?? o.type;
  const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v > 0;
  const num = (field: string, fallback?: number): number => {
    const v = o[field];
    if ((v === undefined || v === null) && fallback !== undefined) return fallback;
    if (!isNum(v)) {
      throw new KernelError('INVALID_ARGUMENT', `rope_scaling.${field} must be a finite number > 0, got ${describeValue(v)}`, {
        argument: `rope_scaling.${field}`,
      });
    }
    return v;
  };
  const opt = (field: string): number | undefined => (o[field] === undefined || o[field] === null ? undefined : num(field));
  const list = (field: string): number[] => {
    const v = o[field];
    if (!Array.isArray(v) || !v.every(isNum) || (context.rotaryDim !== undefined && v.length !== context.rotaryDim / 2)) {
      const want = context.rotaryDim !== undefined ? `${context.rotaryDim / 2} numbers > 0` : 'a list of numbers > 0';
      throw new KernelError('INVALID_ARGUMENT', `rope_scaling.${field} must be ${want}, got ${describeValue(v)}`, {
        argument: `rope_scaling.${field}`,
      });
    }
    return v;
  };
  const ctxOrig = context.originalMaxPositionEmbeddings;
  switch (type) {
    case 'default':
      return undefined;
    case 'linear':
      return { type: 'linear', factor: num('factor') };
    case 'llama3': {
      const scaling: RopeScaling = {
        type: 'llama3',
        factor: num('factor'),
        lowFreqFactor: num('low_freq_factor'),
        highFreqFactor: num('high_freq_factor'),
        originalMaxPositions: num('original_max_position_embeddings'),
      };
      validateScaling(scaling, 1);
      return scaling;
    }
    case 'yarn': {
      const orig = num('original_max_position_embeddings', ctxOrig ?? context.maxPositionEmbeddings);
      const factor = o.factor === undefined || o.factor === null ? (context.maxPositionEmbeddings ?? NaN) / orig : num('factor');
      if (!isNum(factor)) {
        throw new KernelError('INVALID_ARGUMENT', 'rope_scaling.factor is required for yarn without max_position_embeddings', { argument: 'rope_scaling.factor' });
      }
      const truncate = o.truncate;
      if (truncate !== undefined && typeof truncate !== 'boolean') {
        throw new KernelError('INVALID_ARGUMENT', `rope_scaling.truncate must be a boolean, got ${describeValue(truncate)}`, { argument: 'rope_scaling.truncate' });
      }
      return {
        type: 'yarn',
        factor,
        originalMaxPositions: orig,
        betaFast: opt('beta_fast'),
        betaSlow: opt('beta_slow'),
        truncate,
        attentionFactor: opt('attention_factor'),
        mscale: opt('mscale'),
        mscaleAllDim: opt('mscale_all_dim'),
      };
    }
    case 'dynamic': {
      const maxPositions = context.maxPositionEmbeddings;
      if (!isNum(maxPositions)) {
        throw new KernelError('INVALID_ARGUMENT', 'dynamic rope_scaling needs max_position_embeddings', { argument: 'max_position_embeddings' });
      }
      return { type: 'dynamic', factor: num('factor'), maxPositions };
    }
    case 'longrope':
    case 'su': {
      const orig = num('original_max_position_embeddings', ctxOrig);
      const max = context.maxPositionEmbeddings;
      const factor = o.factor !== undefined && o.factor !== null ? num('factor') : isNum(max) ? max / orig : 1;
      return {
        type: 'longrope',
        shortFactor: list('short_factor'),
        longFactor: list('long_factor'),
        originalMaxPositions: orig,
        factor,
        attentionFactor: opt('attention_factor'),
      };
    }
    default:
      throw new KernelError(
        'UNSUPPORTED',
        `rope_scaling type ${describeValue(type)} is not supported (default, linear, llama3, yarn, dynamic, longrope are)`,
        { argument: 'rope_scaling.rope_type' },
      );
  }
}
