import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import {
  classifyKvScaleName,
  kvScaleMethodOf,
  resolveKvScales,
  type CheckpointKvScales,
  type KvCacheFormat,
  type KvScaleMethod,
  type KvScales,
  type RawLayerKvScales,
} from '@kvq/engine';
import type { Fp8Format } from '@kvq/fp8';

import { CalibrateError, checkChoice, describeValue } from '../errors.js';
import type { Provenance } from '../provenance.js';
import { CALIBRATION_FORMATS, type CalibratedScales, type LayerScales } from '../scales.js';
import { CALIBRATION_JSON, VLLM_SCALES_JSON, type CheckpointFlavor } from './formats.js';
import { readShardHeaders, readTensorAsFloat32 } from './safetensors.js';

/** A checkpoint's KV scales: as stored, and resolved with vLLM's loading rules. */
export interface CheckpointScales {
  /**
   * The layout the scales were found in: a {@link CheckpointFlavor}, `'vllm'` (vLLM's own `attn.k_scale` names),
   * or `'bare'` (`self_attn.k_scale` / deprecated `kv_scale` tensors without a compressed-tensors config: AutoFP8,
   * fp8 checkpoints).
   */
  readonly flavor: CheckpointFlavor | 'vllm' | 'bare';
  /** Which of vLLM's rule sets applies. */
  readonly method: KvScaleMethod;
  /** The raw scales (the engine's type; re-resolve with `resolveKvScales` for another format). */
  readonly checkpoint: CheckpointKvScales;
  /** Resolved with vLLM's rules for `format` (per-KV-head q, fallbacks, fnuz ×2 on the base path). */
  readonly resolved: KvScales;
  /** The scales as stored (k/v fallbacks applied, q per query head when stored so, no fnuz adjustment). */
  readonly scales: CalibratedScales;
  /** kvq's provenance when the checkpoint was written by kvq. */
  readonly provenance: Provenance | undefined;
  readonly warnings: readonly string[];
}

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CalibrateError('IO_ERROR', `${path}: cannot read (${(cause as Error).message})`, { file: path, cause });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (cause) {
    throw new CalibrateError('MALFORMED_CHECKPOINT', `${path}: invalid JSON (${(cause as Error).message})`, { file: path, cause });
  }
}

function flavorOfName(suffix: string, compressedTensors: boolean): CheckpointScales['flavor'] {
  if (/^[kv]_proj\.[kv]_scale$/.test(suffix)) return 'modelopt';
  if (suffix.endsWith('output_scale')) return 'quark';
  if (suffix.startsWith('attn.')) return 'vllm';
  return compressedTensors ? 'compressed-tensors' : 'bare';
}

/**
 * Parse vLLM's legacy `kv_cache_scales.json` (`QuantParamSchema`, spec §3.5) for TP size 1: `kv_cache.dtype` must
 * be `float8_e4m3fn`, `scaling_factor` must hold rank `"0"` with one positive finite value per layer `0..L-1`, and
 * a non-null `model_type` must equal the model's.
 * @returns one scale per layer (used for both K and V)
 * @throws CalibrateError `MALFORMED_CHECKPOINT` naming the field
 */
export function parseVllmScalesJson(json: unknown, numLayers: number, modelType: string | undefined, file = VLLM_SCALES_JSON): number[] {
  const bad = (field: string, message: string) => new CalibrateError('MALFORMED_CHECKPOINT', `${file}: ${field} ${message}`, { file, field });
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw bad('(root)', 'must be a JSON object');
  const root = json as Record<string, unknown>;
  if (root.model_type !== undefined && root.model_type !== null && modelType !== undefined && root.model_type !== modelType) {
    throw bad('model_type', `${describeValue(root.model_type)} does not match the model's ${JSON.stringify(modelType)}`);
  }
  const kv = root.kv_cache as Record<string, unknown> | undefined;
  if (typeof kv !== 'object' || kv === null) throw bad('kv_cache', 'must be an object');
  if (kv.dtype !== 'float8_e4m3fn') throw bad('kv_cache.dtype', `is ${describeValue(kv.dtype)}; only "float8_e4m3fn" is supported`);
  const sf = kv.scaling_factor as Record<string, unknown> | undefined;
  if (typeof sf !== 'object' || sf === null || Array.isArray(sf)) throw bad('kv_cache.scaling_factor', 'must be an object of TP rank → layer → scale');
  const ranks = Object.keys(sf);
  if (ranks.length !== 1 || ranks[0] !== '0') throw bad('kv_cache.scaling_factor', `has TP ranks [${ranks.join(', ')}]; expected exactly rank "0" (TP size 1)`);
  const layers = sf['0'] as Record<string, unknown>;
  if (typeof layers !== 'object' || layers === null || Array.isArray(layers)) throw bad('kv_cache.scaling_factor.0', 'must be an object of layer → scale');
  const keys = Object.keys(layers);
  if (keys.length !== numLayers) throw bad('kv_cache.scaling_factor.0', `has ${keys.length} layers; the model has ${numLayers}`);
  return Array.from({ length: numLayers }, (_, i) => {
    const v = layers[String(i)];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw bad(`kv_cache.scaling_factor.0.${i}`, `is ${describeValue(v)}; expected a finite number > 0`);
    return v;
  });
}

/**
 * Read the KV-cache scales of a Hugging Face folder in any layout kvq knows: compressed-tensors / llm-compressor,
 * ModelOpt, Quark, vLLM or bare names (through the engine's name table and rules), or vLLM's legacy
 * `kv_cache_scales.json`. Tensor data other than the scales is not read.
 * @param options.format the FP8 format `resolved` is computed for (default `'e4m3fn'`)
 * @throws CalibrateError `UNSUPPORTED_MODEL` (no config / safetensors), `MALFORMED_CHECKPOINT` (no scales at all, bad
 *   legacy JSON, bad scale dtype); EngineError `UNSUPPORTED_KV_SCHEME` / `INVALID_KV_SCALE` from vLLM's rules
 */
export async function readCheckpointScales(dir: string, options: { format?: Fp8Format } = {}): Promise<CheckpointScales> {
  const format = checkChoice('format', options.format ?? 'e4m3fn', CALIBRATION_FORMATS) as KvCacheFormat;
  const configPath = join(dir, 'config.json');
  const raw = (await readJson(configPath)) as Record<string, unknown> | undefined;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new CalibrateError('UNSUPPORTED_MODEL', `${configPath}: missing or not a JSON object; expected a Hugging Face model folder`, { file: configPath });
  }
  const text = (raw.text_config ?? raw) as Record<string, unknown>;
  const numLayers = text.num_hidden_layers;
  const numHeads = text.num_attention_heads;
  const numKvHeads = text.num_key_value_heads ?? numHeads;
  for (const [field, v] of [['num_hidden_layers', numLayers], ['num_attention_heads', numHeads], ['num_key_value_heads', numKvHeads]] as const) {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
      throw new CalibrateError('UNSUPPORTED_MODEL', `${configPath}: ${field} is ${describeValue(v)}; expected a positive integer`, { file: configPath, field });
    }
  }
  const L = numLayers as number;
  const H = numHeads as number;
  const KVH = numKvHeads as number;
  const warnings: string[] = [];

  const { shards } = await readShardHeaders(dir, readJson);
  const rawLayers: RawLayerKvScales[] = Array.from({ length: L }, () => ({ names: {} }));
  let found = 0;
  let flavorName: string | undefined;
  let metaFormat: string | undefined;
  for (const shard of shards) {
    for (const [name, info] of shard.header.tensors) {
      const c = classifyKvScaleName(name);
      if (!c || c.slot === 'ignore') continue;
      if (c.layer >= L) {
        warnings.push(`${name}: layer ${c.layer} does not exist (num_hidden_layers ${L}); ignored`);
        continue;
      }
      const layer = rawLayers[c.layer]!;
      if (layer[c.slot]) {
        throw new CalibrateError('MALFORMED_CHECKPOINT', `${name}: layer ${c.layer} already has a ${c.slot} scale from ${layer.names[c.slot]}`, { file: shard.file, field: name });
      }
      layer[c.slot] = await readTensorAsFloat32(join(dir, shard.file), info);
      layer.names[c.slot] = name;
      flavorName ??= name.replace(/^model\.layers\.\d+\.self_attn\./, '');
      found++;
      metaFormat ??= shard.header.metadata.kvq_scale_format;
    }
  }
  const qc = raw.quantization_config;
  const calibration = (await readJson(join(dir, CALIBRATION_JSON))) as { provenance?: Provenance | null; scaleFormat?: string } | undefined;
  metaFormat ??= calibration?.scaleFormat;
  const storedFormat: Fp8Format = CALIBRATION_FORMATS.includes(metaFormat as Fp8Format) ? (metaFormat as Fp8Format) : 'e4m3fn';

  let flavor: CheckpointScales['flavor'];
  let ckpt: CheckpointKvScales;
  if (found === 0) {
    const legacyPath = join(dir, VLLM_SCALES_JSON);
    const legacy = await readJson(legacyPath);
    if (legacy === undefined) {
      const m = kvScaleMethodOf(qc, false, configPath);
      if (!m) throw new CalibrateError('MALFORMED_CHECKPOINT', `${dir}: no KV-cache scale tensors, no ${VLLM_SCALES_JSON} and no FP8 KV-cache quantization_config`, { file: dir });
      flavor = m.method === 'compressed-tensors' ? 'compressed-tensors' : 'bare';
      ckpt = { ...m, layers: rawLayers };
      warnings.push(`${configPath}: declares an FP8 KV cache but the checkpoint has no scale tensors; vLLM uses its defaults`);
    } else {
      const values = parseVllmScalesJson(legacy, L, typeof raw.model_type === 'string' ? raw.model_type : undefined, legacyPath);
      flavor = 'vllm-json';
      ckpt = {
        method: 'base',
        scheme: undefined,
        origin: legacyPath,
        layers: values.map((s, i) => ({ k: Float32Array.of(s), v: Float32Array.of(s), names: { k: `${VLLM_SCALES_JSON}[${i}]`, v: `${VLLM_SCALES_JSON}[${i}]` } })),
      };
    }
  } else {
    const m = kvScaleMethodOf(qc, true, configPath)!;
    ckpt = { ...m, layers: rawLayers };
    flavor = flavorOfName(flavorName!, m.method === 'compressed-tensors');
  }
  const resolved = resolveKvScales(ckpt, { numHeads: H, numKvHeads: KVH, format });
  warnings.push(...resolved.warnings);

  // As stored: compressed-tensors keeps its shapes (q per query head); base rules give per-tensor k/v/q.
  let layers: LayerScales[];
  let strategy: CalibratedScales['strategy'];
  if (ckpt.method === 'compressed-tensors') {
    strategy = ckpt.scheme?.strategy ?? 'tensor';
    const n = strategy === 'attn_head' ? KVH : 1;
    layers = ckpt.layers.map((l) => ({
      k: l.k ? Float32Array.from(l.k) : new Float32Array(n).fill(1),
      v: l.v ? Float32Array.from(l.v) : new Float32Array(n).fill(1),
      q: l.q ? Float32Array.from(l.q) : undefined,
    }));
  } else {
    strategy = 'tensor';
    const plain = resolveKvScales(ckpt, { numHeads: H, numKvHeads: KVH, format: 'e4m3fn' });
    layers = plain.layers.map((l, i) => ({ k: l.k, v: l.v, q: ckpt.layers[i]!.q ? Float32Array.from(ckpt.layers[i]!.q!) : undefined }));
  }
  return {
    flavor,
    method: ckpt.method,
    checkpoint: ckpt,
    resolved,
    scales: { format: storedFormat, strategy, numHeads: H, numKvHeads: KVH, layers },
    provenance: calibration?.provenance ?? undefined,
    warnings,
  };
}
