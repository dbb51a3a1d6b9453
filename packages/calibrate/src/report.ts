import { dequantizeScaled, formatInfo, PER_TENSOR, quantizeScaled, type Fp8Format, type ScaleLayout } from '@kvq/fp8';

import type { ObserverKind } from './observers.js';
import type { ScaleStrategy } from './scales.js';

/** Quantization statistics of one head (or a whole tensor) of a fake-quantized cache. */
export interface QuantStats {
  /** The observer's statistic the scale was computed from (max |x|, or its moving average for `minmax`). */
  readonly amax: number;
  /** The largest |x| observed during calibration (any observer). */
  readonly observedAbsMax: number;
  /** The scale chosen (for a whole tensor under `attn_head`: the largest head scale). */
  readonly scale: number;
  /** Elements measured in the report pass. */
  readonly count: number;
  /**
   * Fraction of elements clipped on write: |x / scale| beyond the format's max finite value by more than rounding
   * (above `maxFinite + ulp/2`, where an unbounded format would round to a larger value; ties round to max).
   */
  readonly saturated: number;
  /** Fraction of nonzero elements with |x / scale| below the smallest normal (stored as subnormals or zero). */
  readonly subnormal: number;
  /** Fraction of nonzero elements that came back as zero. */
  readonly flushedToZero: number;
  /** Signal-to-quantization-noise ratio, 10·log10(Σx² / Σ(x − x̂)²), in dB (Infinity when exact, NaN without data). */
  readonly sqnrDb: number;
}

/** One of q/k/v in one layer: the whole tensor plus each head (query heads for q, KV heads for k/v). */
export interface SlotReport extends QuantStats {
  readonly heads: readonly QuantStats[];
}

/** The q/k/v statistics of one attention layer (`q` absent when the query is not quantized). */
export interface LayerReport {
  readonly layer: number;
  readonly k: SlotReport;
  readonly v: SlotReport;
  readonly q: SlotReport | undefined;
}

/** What a calibration measured (printed by {@link formatReportTable}, written as JSON beside the checkpoint). */
export interface CalibrationReport {
  readonly method: 'none' | 'random' | 'dataset';
  readonly strategy: ScaleStrategy;
  readonly observer: ObserverKind | undefined;
  readonly format: Fp8Format;
  readonly quantizeQuery: boolean;
  /** Calibration samples and tokens processed. */
  readonly samples: number;
  readonly tokens: number;
  /** Samples and tokens of the report pass (statistics under the final, frozen scales). */
  readonly reportSamples: number;
  readonly reportTokens: number;
  readonly layers: readonly LayerReport[];
  readonly warnings: readonly string[];
}

interface Sums {
  count: number;
  saturated: number;
  subnormal: number;
  flushed: number;
  nonzero: number;
  signal: number;
  noise: number;
}

const emptySums = (): Sums => ({ count: 0, saturated: 0, subnormal: 0, flushed: 0, nonzero: 0, signal: 0, noise: 0 });

/**
 * Accumulates per-head quantization statistics of one tensor kind (e.g. layer 3's keys) over many writes.
 * `scales` must be the scales the cache write (or FP8 attention) actually uses, per head or per tensor.
 */
export class QuantStatsAccumulator {
  private readonly sums: Sums[];

  constructor(
    readonly numHeads: number,
    readonly headDim: number,
    readonly format: Fp8Format,
  ) {
    this.sums = Array.from({ length: numHeads }, emptySums);
  }

  /**
   * Quantize `x` (`[numTokens, numHeads, headDim]`) with `scales` (length 1 or numHeads) exactly as the cache
   * does (`encode(fround(x / scale))`, saturating), dequantize, and add the statistics.
   */
  add(x: Float32Array, numTokens: number, scales: Float32Array): void {
    const { numHeads, headDim, format } = this;
    const n = numTokens * numHeads * headDim;
    if (n === 0) return;
    const data = x.subarray(0, n);
    const layout: ScaleLayout = scales.length === 1 ? PER_TENSOR : { granularity: 'head', numHeads, headSize: headDim };
    const back = dequantizeScaled(quantizeScaled(data, scales, layout, format), scales, layout, format);
    const info = formatInfo(format);
    const clip = saturationThreshold(format);
    for (let h = 0; h < numHeads; h++) {
      const s = this.sums[h]!;
      const scale = scales.length === 1 ? scales[0]! : scales[h]!;
      for (let t = 0; t < numTokens; t++) {
        const base = (t * numHeads + h) * headDim;
        for (let i = base; i < base + headDim; i++) {
          const v = data[i]!;
          const e = v - back[i]!;
          s.signal += v * v;
          s.noise += e * e;
          if (v === 0) continue;
          s.nonzero++;
          const m = Math.abs(Math.fround(v / scale));
          if (m > clip) s.saturated++;
          else if (m < info.minNormal) s.subnormal++;
          if (back[i] === 0) s.flushed++;
        }
      }
      s.count += numTokens * headDim;
    }
  }

  /** Statistics per head and for the whole tensor, with the given amax / scale columns. */
  result(amax: ArrayLike<number>, observed: ArrayLike<number>, scales: ArrayLike<number>): SlotReport {
    const stats = (s: Sums, a: number, o: number, scale: number): QuantStats => ({
      amax: a,
      observedAbsMax: o,
      scale,
      count: s.count,
      saturated: s.count ? s.saturated / s.count : 0,
      subnormal: s.nonzero ? s.subnormal / s.nonzero : 0,
      flushedToZero: s.nonzero ? s.flushed / s.nonzero : 0,
      sqnrDb: s.count === 0 ? NaN : s.noise === 0 ? Infinity : 10 * Math.log10(s.signal / s.noise),
    });
    const at = (arr: ArrayLike<number>, h: number) => (arr.length === 1 ? arr[0]! : arr[h]!);
    const heads = this.sums.map((s, h) => stats(s, at(amax, h), at(observed, h), at(scales, h)));
    const total = this.sums.reduce((acc, s) => {
      for (const k of Object.keys(acc) as (keyof Sums)[]) acc[k] += s[k];
      return acc;
    }, emptySums());
    const maxOf = (arr: ArrayLike<number>) => Math.max(...Array.from(arr));
    return { ...stats(total, maxOf(amax), maxOf(observed), maxOf(scales)), heads };
  }
}

/**
 * The magnitude above which saturating FP8 encoding clips rather than rounds: `maxFinite + ulp/2` (464 for e4m3fn,
 * 61440 for e5m2); values up to it round to `maxFinite` as they would in a format with more exponent range.
 */
export function saturationThreshold(format: Fp8Format): number {
  const info = formatInfo(format);
  const ulp = 2 ** (Math.floor(Math.log2(info.maxFinite)) - info.mantissaBits);
  return info.maxFinite + ulp / 2;
}

function fmt(x: number, digits = 4): string {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? '-' : x > 0 ? 'inf' : '-inf';
  if (x !== 0 && (Math.abs(x) < 1e-3 || Math.abs(x) >= 1e5)) return x.toExponential(digits - 1);
  return x.toPrecision(digits);
}

function pct(x: number): string {
  return x === 0 ? '0' : `${(x * 100).toPrecision(3)}%`;
}

/**
 * The report as a fixed-width text table: one row per layer and q/k/v (the whole tensor), and, with `perHead`
 * (default: on for `attn_head`), one row per head below it.
 */
export function formatReportTable(report: CalibrationReport, options: { perHead?: boolean } = {}): string {
  const perHead = options.perHead ?? report.strategy === 'attn_head';
  const header = ['layer', 'slot', 'head', 'amax', 'scale', 'saturated', 'subnormal', 'flushed', 'SQNR dB'];
  const rows: string[][] = [];
  for (const l of report.layers) {
    for (const [slot, r] of [['q', l.q], ['k', l.k], ['v', l.v]] as const) {
      if (!r) continue;
      const row = (head: string, s: QuantStats) => [String(l.layer), slot, head, fmt(s.amax), fmt(s.scale), pct(s.saturated), pct(s.subnormal), pct(s.flushedToZero), fmt(s.sqnrDb, 3)];
      rows.push(row('all', r));
      if (perHead) r.heads.forEach((h, i) => rows.push(row(String(i), h)));
    }
  }
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  const line = (cells: string[]) => cells.map((cell, c) => (c < 3 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ');
  const title =
    `method ${report.method}, strategy ${report.strategy}${report.observer ? `, observer ${report.observer}` : ''}, format ${report.format}` +
    `, ${report.samples} samples / ${report.tokens} tokens; statistics over ${report.reportSamples} samples / ${report.reportTokens} tokens`;
  return [title, line(header), ...rows.map(line), ...report.warnings.map((w) => `warning: ${w}`)].join('\n');
}

/** The report as JSON (non-finite numbers written as strings `"Infinity"`, `"NaN"`, which JSON cannot hold). */
export function reportToJson(report: CalibrationReport): string {
  return JSON.stringify(report, (_, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v), 2);
}
