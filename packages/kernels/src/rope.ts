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
 * RoPE frequency scaling.
 * - `linear` (HF `rope_type: "linear"`, position interpolation): every inverse frequency is divided by `factor`.
 * - `llama3` (HF `rope_type: "llama3"`, Llama 3.1+): with `wavelen = 2π / f`,
 *   `lowWavelen = originalMaxPositions / lowFreqFactor`, `highWavelen = originalMaxPositions / highFreqFactor`:
 *   `wavelen < highWavelen` → `f` unchanged; `wavelen > lowWavelen` → `f / factor`; otherwise
 *   `smooth = (originalMaxPositions / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor)` and
 *   `f' = (1 - smooth) * f / factor + smooth * f`.
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
}

function validateFactors(factors: Float32Array, half: number): void {
  if (factors.length !== half) {
    throw new KernelError('INVALID_ARGUMENT', `frequencyFactors has ${factors.length} values, rotaryDim / 2 is ${half}`, {
      argument: 'frequencyFactors',
    });
  }
  factors.forEach((v, i) => checkFinite(`frequencyFactors[${i}]`, v, true));
}

function validateScaling(s: RopeScaling): void {
  checkFinite('scaling.factor', s.factor, true);
  if (s.type === 'linear') return;
  if (s.type !== 'llama3') {
    throw new KernelError(
      'INVALID_ARGUMENT',
      `scaling.type must be 'linear' or 'llama3', got ${describeValue((s as { type?: unknown }).type)}`,
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

/**
 * Inverse frequencies `f_i = theta^(-2i / rotaryDim)`, `i = 0 .. rotaryDim/2 - 1`, then scaled (see
 * {@link RopeScaling}); computed in float64 and rounded to float32 (as HF and vLLM keep them in float32); then, with
 * `frequencyFactors`, divided by each factor in float32 (as llama.cpp applies `rope_freqs`).
 */
export function ropeInvFreq(config: RopeConfig): Float32Array {
  const rotaryDim = checkCount('rotaryDim', config.rotaryDim, 2);
  if (rotaryDim % 2 !== 0) {
    throw new KernelError('INVALID_ARGUMENT', `rotaryDim must be even, got ${rotaryDim}`, { argument: 'rotaryDim' });
  }
  const theta = checkFinite('theta', config.theta, true);
  const s = config.scaling;
  if (s !== undefined) validateScaling(s);
  const half = rotaryDim / 2;
  const factors = config.frequencyFactors;
  if (factors !== undefined) validateFactors(factors, half);
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const f = 1 / Math.pow(theta, (2 * i) / rotaryDim);
    out[i] = s === undefined ? f : scaleFrequency(f, s);
    if (factors !== undefined) out[i] = out[i]! / factors[i]!;
  }
  return out;
}

/** Apply {@link RopeScaling} to one inverse frequency (float64 in, float64 out). */
export function scaleFrequency(f: number, s: RopeScaling): number {
  if (s.type === 'linear') return f / s.factor;
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
 * float32); `cos` / `sin` of that angle in float64, rounded to float32. Memory: `4 * maxPositions * rotaryDim` bytes.
 */
export function buildRopeTable(config: RopeConfig & { readonly maxPositions: number }): RopeTable {
  const maxPositions = checkCount('maxPositions', config.maxPositions, 1);
  const invFreq = ropeInvFreq(config);
  const half = invFreq.length;
  const cos = new Float32Array(maxPositions * half);
  const sin = new Float32Array(maxPositions * half);
  for (let p = 0; p < maxPositions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(p * invFreq[i]!);
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  return { rotaryDim: config.rotaryDim, maxPositions, invFreq, cos, sin };
}

/**
 * Read a Hugging Face `config.json` `rope_scaling` object (`rope_type` or legacy `type`; snake_case fields) into a
 * {@link RopeScaling}. `null` / `undefined` / `rope_type: "default"` give `undefined`. Other types (`dynamic`,
 * `yarn`, `longrope`, ...) throw `UNSUPPORTED`.
 */
export function ropeScalingFromHf(ropeScaling: unknown): RopeScaling | undefined {
  if (ropeScaling === null || ropeScaling === undefined) return undefined;
  if (typeof ropeScaling !== 'object') {
    throw new KernelError('INVALID_ARGUMENT', `rope_scaling must be an object or null, got ${describeValue(ropeScaling)}`, {
      argument: 'rope_scaling',
    });
  }
  const o = ropeScaling as Record<string, unknown>;
  const type = o.rope_type ?? o.type;
  const num = (field: string): number => {
    const v = o[field];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      throw new KernelError('INVALID_ARGUMENT', `rope_scaling.${field} must be a finite number > 0, got ${describeValue(v)}`, {
        argument: `rope_scaling.${field}`,
      });
    }
    return v;
  };
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
      validateScaling(scaling);
      return scaling;
    }
    default:
      throw new KernelError('UNSUPPORTED', `rope_scaling type ${describeValue(type)} is not supported (default, linear, llama3 are)`, {
        argument: 'rope_scaling.rope_type',
      });
  }
}
