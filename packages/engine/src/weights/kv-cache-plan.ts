import { CacheError, resolveKvCacheDtype, type KvCacheDtypeOption } from '@kvq/cache';
import { EngineError } from '../errors.js';
import { KV_CACHE_ROTATIONS, type KvCacheRotation } from '../runtime/kv-rotation.js';

/** File name of a per-layer KV-cache dtype plan in a checkpoint folder (written by `kvq calibrate --plan`). */
export const KV_CACHE_PLAN_FILE = 'kvq_kv_cache_plan.json';

/** The `format` value of {@link KV_CACHE_PLAN_FILE}. */
const PLAN_FORMAT = 'kvq-kv-cache-plan/1';

/**
 * A per-layer KV-cache dtype plan: which `kvCacheDtype` each attention layer stores its K and V in (V in another dtype
 * where `layerValueDtypes` says so), and the rotation the plan was measured with.
 */
export interface KvCachePlanFile {
  /** One dtype per layer, each a `kvCacheDtype` value (`'auto'` = the model dtype): the layer's K (and V) dtype. */
  readonly layerDtypes: readonly KvCacheDtypeOption[];
  /** One V dtype per layer when some layer stores V in another dtype than K; absent = V like K. */
  readonly layerValueDtypes?: readonly KvCacheDtypeOption[];
  /** The rotation the plan was measured with and must run with. */
  readonly rotation: KvCacheRotation;
  /** KV bytes per token of the plan (all layers), as measured when it was made; informational. */
  readonly kvBytesPerToken?: number;
  /** Where the plan was read from (the file path), for messages. */
  readonly origin: string;
}

/**
 * Validates the JSON of a {@link KV_CACHE_PLAN_FILE}:
 * `{ "format": "kvq-kv-cache-plan/1", "layer_dtypes": [...], "layer_value_dtypes"?: [...], "kv_cache_rotation": "none" | "hadamard", "kv_bytes_per_token"?: n, ... }`
 * (other keys, e.g. the measurements that chose it, are kept in the file and ignored here).
 * @param numLayers the model's attention layers
 * @throws EngineError `MALFORMED` (file `origin`, the field at fault named) for another format, a wrong number of
 *   layers, an unknown dtype or rotation
 */
export function parseKvCachePlan(json: unknown, numLayers: number, origin: string): KvCachePlanFile {
  const bad = (field: string, what: string): never => {
    throw new EngineError('MALFORMED', `${origin}: ${field} ${what}`, { file: origin, field });
  };
  if (json === null || typeof json !== 'object' || Array.isArray(json)) bad('(root)', 'must be a JSON object');
  const o = json as Record<string, unknown>;
  if (o.format !== PLAN_FORMAT) bad('format', `must be "${PLAN_FORMAT}", got ${JSON.stringify(o.format)}`);
  const dtypeList = (field: string, list: unknown): KvCacheDtypeOption[] => {
    if (!Array.isArray(list) || list.length !== numLayers) bad(field, `must list ${numLayers} dtypes (one per layer), got ${JSON.stringify(list)}`);
    (list as unknown[]).forEach((d, i) => {
      try {
        if (typeof d !== 'string') throw new CacheError('UNSUPPORTED_DTYPE', 'not a string');
        resolveKvCacheDtype(d as KvCacheDtypeOption, 'bf16');
      } catch (cause) {
        if (!(cause instanceof CacheError)) throw cause;
        bad(`${field}[${i}]`, `${JSON.stringify(d)} is not a kvCacheDtype`);
      }
    });
    return list as KvCacheDtypeOption[];
  };
  const layers = dtypeList('layer_dtypes', o.layer_dtypes);
  const values = o.layer_value_dtypes === undefined ? undefined : dtypeList('layer_value_dtypes', o.layer_value_dtypes);
  const rotation = o.kv_cache_rotation ?? 'none';
  if (!KV_CACHE_ROTATIONS.includes(rotation as KvCacheRotation)) bad('kv_cache_rotation', `must be one of ${KV_CACHE_ROTATIONS.join(', ')}, got ${JSON.stringify(rotation)}`);
  const bytes = o.kv_bytes_per_token;
  if (bytes !== undefined && !(typeof bytes === 'number' && Number.isFinite(bytes) && bytes > 0)) bad('kv_bytes_per_token', `must be a positive number, got ${JSON.stringify(bytes)}`);
  return {
    layerDtypes: layers,
    ...(values ? { layerValueDtypes: values } : {}),
    rotation: rotation as KvCacheRotation,
    ...(bytes !== undefined ? { kvBytesPerToken: bytes as number } : {}),
    origin,
  };
}

/**
 * The JSON text of a plan file (with `extra` keys, e.g. the measurements, after the plan's own).
 * @param plan the layer dtypes and rotation (and optionally bytes per token)
 */
export function kvCachePlanJson(plan: Omit<KvCachePlanFile, 'origin'>, extra: Record<string, unknown> = {}): string {
  return `${JSON.stringify(
    {
      format: PLAN_FORMAT,
      layer_dtypes: plan.layerDtypes,
      ...(plan.layerValueDtypes ? { layer_value_dtypes: plan.layerValueDtypes } : {}),
      kv_cache_rotation: plan.rotation,
      ...(plan.kvBytesPerToken !== undefined ? { kv_bytes_per_token: plan.kvBytesPerToken } : {}),
      ...extra,
    },
    null,
    2,
  )}\n`;
}
