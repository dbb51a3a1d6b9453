import type { KvStorageDtype } from '@kvq/cache';
import type { ModelConfig } from '../config/model-config.js';
import { EngineError } from '../errors.js';

/**
 * One entry of `kvCacheDtypeSkipLayers` (vLLM's `kv_cache_dtype_skip_layers`): a layer index (a number, or its
 * decimal string as vLLM takes it), or `'sliding_window'` for every sliding-window attention layer.
 */
export type KvSkipLayer = number | string;

/** The layers a model runs with sliding-window attention (Gemma 2/3 `layer_types`, or every layer of Mistral-style configs). */
function slidingLayers(c: ModelConfig): number[] {
  if (c.slidingWindow === undefined || c.slidingWindow === null) return [];
  if (c.layerTypes) return c.layerTypes.flatMap((t, l) => (t === 'sliding_attention' ? [l] : []));
  return Array.from({ length: c.numLayers }, (_, l) => l);
}

/**
 * The per-layer KV dtypes of `kvCacheDtypeSkipLayers`: the listed layers keep `skipDtype` (the model dtype: vLLM runs
 * them with `auto`), the others `kvDtype`.
 * @returns undefined when nothing is skipped or the skipped layers would get the same dtype anyway (a uniform cache)
 * @throws EngineError `INVALID_ARGUMENT` (field `kvCacheDtypeSkipLayers`) for a non-array, an entry that is neither a
 *   layer index in `[0, numLayers)` nor `'sliding_window'` (named with its position), or `'sliding_window'` on a model
 *   without sliding-window layers
 */
export function kvLayerDtypes(option: unknown, c: ModelConfig, kvDtype: KvStorageDtype, skipDtype: KvStorageDtype): KvStorageDtype[] | undefined {
  if (option === undefined) return undefined;
  const fail = (what: string): never => {
    throw new EngineError('INVALID_ARGUMENT', `kvCacheDtypeSkipLayers ${what}`, { field: 'kvCacheDtypeSkipLayers' });
  };
  if (!Array.isArray(option)) fail(`must be an array of layer indices or 'sliding_window', got ${JSON.stringify(option)}`);
  const skipped = new Set<number>();
  (option as unknown[]).forEach((entry, i) => {
    if (entry === 'sliding_window') {
      const layers = slidingLayers(c);
      if (layers.length === 0) fail(`[${i}] 'sliding_window': this model (${c.modelType}) has no sliding-window attention layers`);
      for (const l of layers) skipped.add(l);
      return;
    }
    const index = typeof entry === 'string' && /^\d+$/.test(entry) ? Number(entry) : entry;
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= c.numLayers) {
      fail(`[${i}] = ${JSON.stringify(entry)} is not a layer index in [0, ${c.numLayers}) or 'sliding_window'`);
    }
    skipped.add(index as number);
  });
  if (skipped.size === 0 || kvDtype === skipDtype) return undefined;
  return Array.from({ length: c.numLayers }, (_, l) => (skipped.has(l) ? skipDtype : kvDtype));
}
