import { EngineError, describeValue } from '../errors.js';

/**
 * FP8 format of the KV cache the scales are resolved for (same names as `@kvq/fp8`'s `Fp8Format`).
 * The `fnuz` formats double checkpoint scales on vLLM's fp8 path; e5m2 skips the "scale 1.0" warning.
 */
export type KvCacheFormat = 'e4m3fn' | 'e5m2' | 'e4m3fnuz' | 'e5m2fnuz';

/** Which of vLLM's loading rules apply (spec/vllm-fp8-kv-cache.md §3). */
export type KvScaleMethod =
  /** `CompressedTensorsKVCacheMethod`: `kv_cache_scheme` present; missing scales stay 1.0, no q := k, no fnuz ×2. */
  | 'compressed-tensors'
  /** `BaseKVCacheMethod` (fp8 / ModelOpt / Quark / legacy names): per-tensor only, missing-scale fallbacks, fnuz ×2. */
  | 'base';

/** A validated compressed-tensors `kv_cache_scheme`. */
export interface KvCacheScheme {
  readonly strategy: 'tensor' | 'attn_head';
  readonly numBits: 8;
  readonly type: 'float';
  readonly symmetric: true;
  /** The observer recorded by the producer, for information. */
  readonly observer: string | undefined;
}

/** The scale tensors found for one layer, flattened to float32, before any fallback rule. */
export interface RawLayerKvScales {
  k?: Float32Array;
  v?: Float32Array;
  q?: Float32Array;
  prob?: Float32Array;
  /** Checkpoint tensor name of each scale found. */
  names: { k?: string; v?: string; q?: string; prob?: string };
}

/** KV scales as stored in a checkpoint (input of {@link resolveKvScales}). */
export interface CheckpointKvScales {
  readonly method: KvScaleMethod;
  /** Present for `compressed-tensors`. */
  readonly scheme: KvCacheScheme | undefined;
  /** One entry per layer (empty objects for layers without scales). */
  readonly layers: readonly RawLayerKvScales[];
  /** Where the rules were inferred from, for messages (e.g. `config.json quantization_config`). */
  readonly origin: string;
}

/** Resolved per-layer scales (vLLM convention: `x ≈ decode(q) * scale`). */
export interface LayerKvScales {
  /** Length 1 (per tensor) or `numKvHeads` (per head). */
  readonly k: Float32Array;
  readonly v: Float32Array;
  /** Query scale for FP8 attention, same length as `k` (per-head q reduced to per-KV-head by max over the group). */
  readonly q: Float32Array;
}

/** Resolved KV-cache scales of a model plus what was done to get them. */
export interface KvScales {
  readonly granularity: 'tensor' | 'head';
  readonly layers: readonly LayerKvScales[];
  readonly method: KvScaleMethod;
  readonly format: KvCacheFormat;
  /** Whether checkpoint scales were doubled for an fnuz format. */
  readonly fnuzAdjusted: boolean;
  /** Number of layers whose K/V scales came from the checkpoint (the rest fell back). */
  readonly layersFromCheckpoint: number;
  /** vLLM's warnings for the fallbacks taken (e.g. "q scale missing, using k scale"). */
  readonly warnings: readonly string[];
}

/** Options of {@link resolveKvScales}. */
export interface ResolveKvScalesOptions {
  readonly numHeads: number;
  readonly numKvHeads: number;
  /** Default `'e4m3fn'`. */
  readonly format?: KvCacheFormat;
  /**
   * Also double compressed-tensors scales on fnuz formats. Default false, matching vLLM, whose compressed-tensors
   * path does not double (spec §3.3; physically the checkpoint scale is amax/448 for e4m3fn, so doubling is what
   * an fnuz byte needs — enable it when running such a checkpoint on fnuz hardware semantics).
   */
  readonly doubleCompressedTensorsOnFnuz?: boolean;
}

type Slot = 'k' | 'v' | 'q' | 'prob';

/** Suffixes after `model.layers.N.self_attn.` and the scale they carry, per producer (spec §3.4). */
const SCALE_SUFFIXES: ReadonlyArray<readonly [string, Slot | 'ignore']> = [
  ['k_scale', 'k'], // compressed-tensors / llm-compressor, AutoFP8
  ['v_scale', 'v'],
  ['q_scale', 'q'],
  ['attn.k_scale', 'k'], // vLLM's own parameter names
  ['attn.v_scale', 'v'],
  ['attn.q_scale', 'q'],
  ['k_proj.k_scale', 'k'], // ModelOpt
  ['v_proj.v_scale', 'v'],
  ['k_proj.output_scale', 'k'], // Quark, legacy compressed-tensors, Fp8Config get_cache_scale
  ['v_proj.output_scale', 'v'],
  ['q_proj.output_scale', 'q'],
  ['prob_output_scale', 'prob'],
  ['kv_scale', 'k'], // deprecated single scale (vLLM maps it to k_scale; v then falls back to it)
  ['k_zero_point', 'ignore'],
  ['v_zero_point', 'ignore'],
  ['q_zero_point', 'ignore'],
];

const LAYER_PREFIX = /^model\.layers\.(\d+)\.self_attn\.(.+)$/;

/** A checkpoint tensor name recognised as a KV-cache scale (or zero point, which is ignored). */
export interface KvScaleTensorName {
  readonly name: string;
  readonly layer: number;
  readonly slot: Slot | 'ignore';
}

/** Classify a tensor name as a KV-cache scale of some layer, or `undefined`. */
export function classifyKvScaleName(name: string): KvScaleTensorName | undefined {
  const m = LAYER_PREFIX.exec(name);
  if (!m) return undefined;
  const entry = SCALE_SUFFIXES.find(([suffix]) => suffix === m[2]);
  return entry ? { name, layer: Number(m[1]), slot: entry[1] } : undefined;
}

/**
 * Decide which loading rules apply from `config.json`'s `quantization_config`:
 * compressed-tensors with a non-null `kv_cache_scheme` → `compressed-tensors` (scheme validated);
 * any other quantization config declaring an FP8 KV cache, or scale tensors present → `base`; else none.
 * @throws EngineError `UNSUPPORTED_KV_SCHEME` naming the field and value for schemes vLLM rejects.
 */
export function kvScaleMethodOf(
  quantizationConfig: unknown,
  hasScaleTensors: boolean,
  file: string,
): { method: KvScaleMethod; scheme: KvCacheScheme | undefined; origin: string } | undefined {
  const qc = typeof quantizationConfig === 'object' && quantizationConfig !== null ? (quantizationConfig as Record<string, unknown>) : undefined;
  const scheme = qc?.kv_cache_scheme;
  if (qc && qc.quant_method === 'compressed-tensors' && scheme !== undefined && scheme !== null) {
    return { method: 'compressed-tensors', scheme: validateScheme(scheme, file), origin: `${file} quantization_config.kv_cache_scheme` };
  }
  const declaresFp8Kv =
    qc !== undefined &&
    ((typeof qc.kv_cache_quant_algo === 'string' && qc.kv_cache_quant_algo.toUpperCase() === 'FP8') ||
      (qc.quant_method !== 'compressed-tensors' && scheme !== undefined && scheme !== null));
  if (declaresFp8Kv || hasScaleTensors) {
    const origin = qc ? `${file} quantization_config (quant_method ${describeValue(qc.quant_method)})` : `scale tensors without a quantization_config in ${file}`;
    return { method: 'base', scheme: undefined, origin };
  }
  return undefined;
}

function validateScheme(value: unknown, file: string): KvCacheScheme {
  const field = 'quantization_config.kv_cache_scheme';
  const bad = (key: string, v: unknown, want: string): EngineError =>
    new EngineError('UNSUPPORTED_KV_SCHEME', `${file}: ${field}.${key} ${describeValue(v)} is not supported (${want})`, {
      file,
      field: `${field}.${key}`,
    });
  if (typeof value !== 'object' || Array.isArray(value)) throw bad('', value, 'an object');
  const s = value as Record<string, unknown>;
  if (s.type !== 'float') throw bad('type', s.type, 'float');
  if ((s.num_bits ?? 8) !== 8) throw bad('num_bits', s.num_bits, '8');
  const strategy = s.strategy ?? 'tensor';
  if (strategy !== 'tensor' && strategy !== 'attn_head') throw bad('strategy', strategy, 'tensor or attn_head');
  if (s.symmetric === false) throw bad('symmetric', s.symmetric, 'true');
  if (s.dynamic !== undefined && s.dynamic !== false) throw bad('dynamic', s.dynamic, 'false: static scales');
  return { strategy, numBits: 8, type: 'float', symmetric: true, observer: typeof s.observer === 'string' ? s.observer : undefined };
}

function validValues(values: Float32Array, name: string): void {
  values.forEach((x, i) => {
    if (!Number.isFinite(x) || x <= 0) {
      throw new EngineError('INVALID_KV_SCALE', `KV-cache scale ${name}[${i}] is ${x}; scales must be finite and > 0`, { field: name });
    }
  });
}

function maxOf(values: Float32Array): number {
  let m = -Infinity;
  for (const x of values) m = Math.max(m, x);
  return m;
}

/**
 * Apply vLLM's loading rules to checkpoint scales (spec/vllm-fp8-kv-cache.md §3.2–3.3).
 *
 * compressed-tensors: `tensor` scales have 1 element, `attn_head` k/v have `numKvHeads` and q `numHeads`
 * (reduced to `numKvHeads` by max over each GQA group); missing scales are 1.0; no fnuz doubling (unless
 * `doubleCompressedTensorsOnFnuz`).
 * base: every scale must be a single value; k and v both present → used; neither → 1.0 and 1.0; one → both take
 * max(k, v); q missing → q := k; all ×2 on fnuz formats.
 * @throws EngineError `INVALID_KV_SCALE` for non-finite / non-positive values or shapes the rules reject.
 */
export function resolveKvScales(ckpt: CheckpointKvScales, options: ResolveKvScalesOptions): KvScales {
  const format = options.format ?? 'e4m3fn';
  const fnuz = format.endsWith('fnuz');
  const warnings: string[] = [];
  const { numHeads, numKvHeads } = options;
  const layers: LayerKvScales[] = [];
  let fromCheckpoint = 0;
  const missing: string[] = [];
  const qFallback: number[] = [];
  const unitLayers: number[] = [];
  for (const [l, raw] of ckpt.layers.entries()) {
    for (const slot of ['k', 'v', 'q', 'prob'] as const) {
      const values = raw[slot];
      if (values) validValues(values, raw.names[slot] ?? `layer ${l} ${slot}`);
    }
    if (raw.k || raw.v) fromCheckpoint++;
    if (ckpt.method === 'compressed-tensors') {
      const perHead = ckpt.scheme?.strategy === 'attn_head';
      const n = perHead ? numKvHeads : 1;
      const take = (slot: 'k' | 'v' | 'q', expected: number): Float32Array => {
        const values = raw[slot];
        if (!values) {
          missing.push(`layer ${l} ${slot}`);
          return new Float32Array(n).fill(1);
        }
        if (values.length !== expected) {
          throw new EngineError(
            'INVALID_KV_SCALE',
            `${raw.names[slot]}: ${values.length} values, but strategy ${ckpt.scheme?.strategy} needs ${expected}`,
            { field: raw.names[slot] },
          );
        }
        return Float32Array.from(values);
      };
      const k = take('k', n);
      const v = take('v', n);
      let q = take('q', perHead ? numHeads : 1);
      if (perHead && q.length === numHeads && numHeads !== numKvHeads) {
        const group = numHeads / numKvHeads;
        q = Float32Array.from({ length: numKvHeads }, (_, h) => maxOf(q.subarray(h * group, (h + 1) * group)));
      }
      const factor = fnuz && options.doubleCompressedTensorsOnFnuz ? 2 : 1;
      layers.push({ k: k.map((x) => x * factor), v: v.map((x) => x * factor), q: q.map((x) => x * factor) });
      continue;
    }
    for (const slot of ['k', 'v', 'q', 'prob'] as const) {
      const values = raw[slot];
      if (values && values.length !== 1) {
        throw new EngineError(
          'INVALID_KV_SCALE',
          `${raw.names[slot]}: ${values.length} values; only per-tensor scaling factors are supported for this checkpoint's fp8 KV cache`,
          { field: raw.names[slot] },
        );
      }
    }
    const factor = fnuz ? 2 : 1;
    let k: number;
    let v: number;
    if (raw.k && raw.v) {
      k = raw.k[0]!;
      v = raw.v[0]!;
    } else if (!raw.k && !raw.v) {
      k = 1;
      v = 1;
    } else {
      k = v = Math.max(raw.k?.[0] ?? -1, raw.v?.[0] ?? -1);
    }
    if (raw.k || raw.v) {
      k *= factor;
      v *= factor;
    }
    let q: number;
    if (raw.q) q = raw.q[0]! * factor;
    else {
      q = k;
      qFallback.push(l);
    }
    if (k === 1 && v === 1) unitLayers.push(l);
    layers.push({ k: Float32Array.of(k), v: Float32Array.of(v), q: Float32Array.of(q) });
  }
  if (missing.length > 0) {
    warnings.push(`compressed-tensors checkpoint has no scale for ${missing.length} of ${layers.length * 3} k/v/q slots (${summarize(missing)}); using 1.0 as vLLM does`);
  }
  if (qFallback.length > 0) {
    warnings.push(
      `Checkpoint does not provide a q scaling factor (layers ${summarize(qFallback.map(String))}). Setting it to k_scale. This only matters for FP8 attention.`,
    );
  }
  if (unitLayers.length > 0 && !format.startsWith('e5m2')) {
    warnings.push(
      `Using KV cache scaling factor 1.0 for fp8_e4m3 (layers ${summarize(unitLayers.map(String))}). If this is unintended, verify that k/v_scale scaling factors are properly set in the checkpoint.`,
    );
  }
  return {
    granularity: ckpt.method === 'compressed-tensors' && ckpt.scheme?.strategy === 'attn_head' ? 'head' : 'tensor',
    layers,
    method: ckpt.method,
    format,
    fnuzAdjusted: fnuz && fromCheckpoint > 0 && (ckpt.method === 'base' || options.doubleCompressedTensorsOnFnuz === true),
    layersFromCheckpoint: fromCheckpoint,
    warnings,
  };
}

function summarize(items: string[]): string {
  return items.length <= 6 ? items.join(', ') : `${items.slice(0, 6).join(', ')}, ... (${items.length} in all)`;
}
