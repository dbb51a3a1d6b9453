import type { Fp8Format } from '@kvq/fp8';

import { CalibrateError, checkChoice } from './errors.js';

/**
 * Scale granularity (compressed-tensors `strategy`): `tensor` = one q/k/v scale per layer (shape `[1]`);
 * `attn_head` = q per query head `[numHeads]`, k/v per KV head `[numKvHeads]`.
 */
export type ScaleStrategy = 'tensor' | 'attn_head';

/** Every {@link ScaleStrategy}. */
export const SCALE_STRATEGIES: readonly ScaleStrategy[] = Object.freeze(['tensor', 'attn_head']);

/** FP8 formats kvq calibrates for (`@kvq/fp8`'s names). */
export const CALIBRATION_FORMATS: readonly Fp8Format[] = Object.freeze(['e4m3fn', 'e5m2', 'e4m3fnuz', 'e5m2fnuz']);

/** One attention layer's scales (vLLM convention: `x ≈ decode(code) * scale`, float32). */
export interface LayerScales {
  /** Length 1 (`tensor`) or `numKvHeads` (`attn_head`). */
  readonly k: Float32Array;
  /** Length 1 or `numKvHeads`. */
  readonly v: Float32Array;
  /** Query scale: length 1 or `numHeads` (per query head), or `undefined` when the query is not quantized. */
  readonly q: Float32Array | undefined;
}

/** A model's calibrated KV-cache (and optionally query) scales. */
export interface CalibratedScales {
  /** The FP8 format the scales are meant for: a byte `c` stands for `decode(c, format) * scale`. */
  readonly format: Fp8Format;
  readonly strategy: ScaleStrategy;
  readonly numHeads: number;
  readonly numKvHeads: number;
  /** One entry per decoder layer. */
  readonly layers: readonly LayerScales[];
  /** The format the scales were converted from by {@link convertScaleFormat}, if any. */
  readonly convertedFrom?: Fp8Format | undefined;
}

/**
 * Scales of one value everywhere (method `none`: vLLM's 1.0 default).
 * @param withQuery also give q scales
 */
export function uniformScales(
  dims: { numLayers: number; numHeads: number; numKvHeads: number },
  strategy: ScaleStrategy,
  format: Fp8Format,
  withQuery: boolean,
  value = 1,
): CalibratedScales {
  const perHead = strategy === 'attn_head';
  return {
    format,
    strategy,
    numHeads: dims.numHeads,
    numKvHeads: dims.numKvHeads,
    layers: Array.from({ length: dims.numLayers }, () => ({
      k: new Float32Array(perHead ? dims.numKvHeads : 1).fill(value),
      v: new Float32Array(perHead ? dims.numKvHeads : 1).fill(value),
      q: withQuery ? new Float32Array(perHead ? dims.numHeads : 1).fill(value) : undefined,
    })),
  };
}

/**
 * Per-query-head q scales reduced to one per KV head by max over each GQA group, as vLLM's compressed-tensors
 * loader does for FlashAttention ("FlashAttn expects [num_kv_heads] instead of [num_heads] for q_scale").
 * A length-1 array is returned as is.
 */
export function reduceQueryScalesPerKvHead(q: Float32Array, numHeads: number, numKvHeads: number): Float32Array {
  if (q.length === 1) return Float32Array.from(q);
  if (q.length !== numHeads || numHeads % numKvHeads !== 0) {
    throw new CalibrateError('INVALID_ARGUMENT', `q scales have ${q.length} entries; expected 1 or numHeads = ${numHeads} (a multiple of numKvHeads = ${numKvHeads})`, {
      field: 'q',
    });
  }
  const group = numHeads / numKvHeads;
  return Float32Array.from({ length: numKvHeads }, (_, g) => Math.max(...q.subarray(g * group, (g + 1) * group)));
}

const FNUZ_PARTNER: Partial<Record<Fp8Format, Fp8Format>> = { e4m3fn: 'e4m3fnuz', e4m3fnuz: 'e4m3fn', e5m2: 'e5m2fnuz', e5m2fnuz: 'e5m2' };

/**
 * Convert scales between an OCP format and its FNUZ twin (`e4m3fn` ↔ `e4m3fnuz`, `e5m2` ↔ `e5m2fnuz`): an FNUZ byte
 * decodes to half the OCP value (exponent bias one larger), so the scale that makes the same byte mean the same
 * real number is twice as large (OCP → FNUZ ×2, FNUZ → OCP ÷2; exact in float32). For e4m3 this also maps the OCP
 * convention `amax / 448` onto vLLM's FNUZ convention `amax / 224`. The result records `convertedFrom`.
 * @throws CalibrateError `INCOMPATIBLE_FORMAT` for any other pair (e4m3 ↔ e5m2 is a re-calibration, not a conversion)
 */
export function convertScaleFormat(scales: CalibratedScales, to: Fp8Format): CalibratedScales {
  checkChoice('to', to, CALIBRATION_FORMATS);
  if (scales.format === to) return scales;
  if (FNUZ_PARTNER[scales.format] !== to) {
    throw new CalibrateError(
      'INCOMPATIBLE_FORMAT',
      `scales for ${scales.format} cannot be converted to ${to}: only ${scales.format} ↔ ${FNUZ_PARTNER[scales.format]} differ by a fixed factor (2); calibrate for ${to} instead`,
      { field: 'format' },
    );
  }
  const factor = to.endsWith('fnuz') ? 2 : 0.5;
  const mul = (a: Float32Array) => a.map((x) => x * factor);
  return {
    ...scales,
    format: to,
    convertedFrom: scales.convertedFrom === to ? undefined : scales.format,
    layers: scales.layers.map((l) => ({ k: mul(l.k), v: mul(l.v), q: l.q ? mul(l.q) : undefined })),
  };
}

/**
 * Check shapes and values of calibrated scales.
 * @throws CalibrateError `INVALID_ARGUMENT` naming the layer, slot and index
 */
export function validateCalibratedScales(scales: CalibratedScales, numLayers?: number): void {
  const perHead = scales.strategy === 'attn_head';
  if (numLayers !== undefined && scales.layers.length !== numLayers) {
    throw new CalibrateError('INVALID_ARGUMENT', `scales have ${scales.layers.length} layers, the model has ${numLayers}`, { field: 'scales.layers' });
  }
  scales.layers.forEach((l, i) => {
    const slots: Array<[string, Float32Array | undefined, number]> = [
      ['k', l.k, perHead ? scales.numKvHeads : 1],
      ['v', l.v, perHead ? scales.numKvHeads : 1],
      ['q', l.q, perHead ? scales.numHeads : 1],
    ];
    for (const [slot, values, n] of slots) {
      if (values === undefined) {
        if (slot === 'q') continue;
        throw new CalibrateError('INVALID_ARGUMENT', `layer ${i} has no ${slot} scale`, { field: `layers[${i}].${slot}` });
      }
      if (values.length !== n) {
        throw new CalibrateError('INVALID_ARGUMENT', `layer ${i} ${slot} scale has ${values.length} entries; strategy ${scales.strategy} needs ${n}`, {
          field: `layers[${i}].${slot}`,
        });
      }
      values.forEach((x, j) => {
        if (!(x > 0) || !Number.isFinite(x)) {
          throw new CalibrateError('INVALID_ARGUMENT', `layer ${i} ${slot} scale [${j}] is ${x}; scales must be finite and > 0`, { field: `layers[${i}].${slot}` });
        }
      });
    }
  });
}
