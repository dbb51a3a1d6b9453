import { readFile } from 'node:fs/promises';
import { EngineError, describeValue } from '../errors.js';
import type { CheckpointKvScales, RawLayerKvScales } from './kv-scales.js';

/**
 * The only `kv_cache.dtype` a legacy scales file may declare (vLLM's `KVCacheQuantSchema.check_is_fp8`).
 * @see ../../../../docs/spec/vllm-fp8-kv-cache.md §3.5
 */
export const KV_CACHE_SCALES_JSON_DTYPE = 'float8_e4m3fn';

/** What a legacy scales file is checked against (vLLM's validation context, with tensor-parallel size 1). */
export interface KvCacheScalesJsonContext {
  /** The model's `num_hidden_layers`: rank 0 must have exactly one scale for each layer `0..numLayers-1`. */
  readonly numLayers: number;
  /** The model's HF `model_type`; the file's `model_type` must equal it (vLLM `QuantParamSchema.check_model_type`). */
  readonly modelType: string;
}

/**
 * Validates a parsed vLLM `--quantization-param-path` document (`kv_cache_scales.json`,
 * `{"model_type": "llama", "kv_cache": {"dtype": "float8_e4m3fn", "scaling_factor": {"0": {"0": 0.023, ...}}}}`)
 * and returns it as checkpoint KV scales for vLLM's base (`fp8`) rules: one per-tensor scale per layer, used for
 * both K and V (`resolveKvScales` then sets q := k and doubles on FNUZ formats, as vLLM did on ROCm).
 *
 * kvq runs one tensor-parallel rank, so `scaling_factor` must hold exactly rank `0`. vLLM logged a validation failure
 * and fell back to 1.0; kvq throws instead (a scales file the user named is never silently dropped).
 * @param file the path, named in messages and errors
 * @throws EngineError `MALFORMED` (not the schema's shape, non-integer rank/layer keys),
 * `UNSUPPORTED_KV_SCHEME` (`kv_cache.dtype` other than `float8_e4m3fn`), `INVALID_CONFIG` (`model_type` differs
 * from the model's), `INVALID_KV_SCALE` (a rank other than 0, a layer count mismatch, a missing layer, a scale that
 * is not a finite number > 0); `file` and `field` are set.
 * @see ../../../../docs/spec/vllm-fp8-kv-cache.md §3.5
 */
export function parseKvCacheScalesJson(json: unknown, file: string, context: KvCacheScalesJsonContext): CheckpointKvScales {
  const fail = (code: 'MALFORMED' | 'UNSUPPORTED_KV_SCHEME' | 'INVALID_CONFIG' | 'INVALID_KV_SCALE', field: string, message: string): EngineError =>
    new EngineError(code, `${file}: ${field === '' ? '' : `${field} `}${message}`, { file, field });
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(json)) throw fail('MALFORMED', '', `must be a JSON object {"model_type", "kv_cache"}, got ${describeValue(json)}`);
  if (!('model_type' in json)) throw fail('MALFORMED', 'model_type', 'is missing (a string, e.g. "llama")');
  const modelType = json.model_type;
  if (modelType !== context.modelType) {
    throw fail('INVALID_CONFIG', 'model_type', `is ${describeValue(modelType)}, but the model's model_type is ${JSON.stringify(context.modelType)}`);
  }
  const kv = json.kv_cache;
  if (!isObject(kv)) throw fail('MALFORMED', 'kv_cache', `must be an object {"dtype", "scaling_factor"}, got ${describeValue(kv)}`);
  if (typeof kv.dtype !== 'string') throw fail('MALFORMED', 'kv_cache.dtype', `must be a string, got ${describeValue(kv.dtype)}`);
  if (kv.dtype !== KV_CACHE_SCALES_JSON_DTYPE) {
    throw fail('UNSUPPORTED_KV_SCHEME', 'kv_cache.dtype', `is ${JSON.stringify(kv.dtype)}; scaling factors are only defined for ${JSON.stringify(KV_CACHE_SCALES_JSON_DTYPE)}`);
  }
  const byRank = kv.scaling_factor;
  if (!isObject(byRank)) throw fail('MALFORMED', 'kv_cache.scaling_factor', `must be an object {tp_rank: {layer: scale}}, got ${describeValue(byRank)}`);
  const intKey = (key: string, field: string): number => {
    if (!/^(0|[1-9]\d*)$/.test(key.trim())) throw fail('MALFORMED', field, `key ${JSON.stringify(key)} is not a non-negative integer`);
    return Number(key.trim());
  };
  const ranks = Object.keys(byRank).map((k) => intKey(k, 'kv_cache.scaling_factor'));
  if (ranks.length !== 1 || ranks[0] !== 0) {
    throw fail(
      'INVALID_KV_SCALE',
      'kv_cache.scaling_factor',
      `has tensor-parallel ranks [${ranks.join(', ')}]; kvq runs a single rank, so the file must hold exactly rank 0 (a file written for tensor-parallel size ${Math.max(ranks.length, 1)})`,
    );
  }
  const rankKey = Object.keys(byRank)[0]!;
  const layerMap = byRank[rankKey];
  const rankField = `kv_cache.scaling_factor.${rankKey}`;
  if (!isObject(layerMap)) throw fail('MALFORMED', rankField, `must be an object {layer: scale}, got ${describeValue(layerMap)}`);
  const entries = Object.entries(layerMap).map(([k, v]) => [intKey(k, rankField), k, v] as const);
  if (entries.length !== context.numLayers) {
    throw fail('INVALID_KV_SCALE', rankField, `has ${entries.length} layers, but the model has num_hidden_layers ${context.numLayers}`);
  }
  const scales = new Map<number, { key: string; value: unknown }>();
  for (const [layer, key, value] of entries) {
    if (scales.has(layer)) throw fail('MALFORMED', rankField, `has layer ${layer} twice (keys ${JSON.stringify(scales.get(layer)!.key)} and ${JSON.stringify(key)})`);
    scales.set(layer, { key, value });
  }
  const layers: RawLayerKvScales[] = [];
  for (let l = 0; l < context.numLayers; l++) {
    const entry = scales.get(l);
    if (!entry) throw fail('INVALID_KV_SCALE', rankField, `has no scale for layer ${l} (layers 0..${context.numLayers - 1} are needed)`);
    const field = `${rankField}.${entry.key}`;
    if (typeof entry.value !== 'number' || !Number.isFinite(entry.value) || entry.value <= 0) {
      throw fail('INVALID_KV_SCALE', field, `is ${typeof entry.value === 'number' ? String(entry.value) : describeValue(entry.value)}; a scaling factor must be a finite number > 0`);
    }
    const scale = Float32Array.of(entry.value);
    if (!Number.isFinite(scale[0]!) || scale[0]! <= 0) {
      throw fail('INVALID_KV_SCALE', field, `is ${entry.value}, which is not a finite float32 > 0`);
    }
    const name = `${file} ${field}`;
    layers.push({ k: scale, v: Float32Array.from(scale), names: { k: name, v: name } });
  }
  return { method: 'base', scheme: undefined, layers, origin: `${file} (quantization param path)` };
}

/**
 * Reads and validates a `kv_cache_scales.json` ({@link parseKvCacheScalesJson}).
 * @throws EngineError `FILE_NOT_FOUND` / `IO_ERROR` / `MALFORMED` (bad JSON), and every error of
 * {@link parseKvCacheScalesJson}.
 */
export async function readKvCacheScalesJson(path: string, context: KvCacheScalesJsonContext): Promise<CheckpointKvScales> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code === 'ENOENT' ? 'FILE_NOT_FOUND' : 'IO_ERROR';
    throw new EngineError(code, `${path}: cannot read the KV-cache scales file (${(cause as Error).message})`, { file: path, field: 'quantizationParamPath', cause });
  }
  let json: unknown;
  try {
    json = JSON.parse(text) as unknown;
  } catch (cause) {
    throw new EngineError('MALFORMED', `${path}: not valid JSON (${(cause as Error).message})`, { file: path, cause });
  }
  return parseKvCacheScalesJson(json, path, context);
}
