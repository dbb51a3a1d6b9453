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
 * Applies `kvCacheDtypeSkipLayers` to per-layer KV dtypes: the listed layers get `skipDtype` (the model dtype: vLLM runs
 * them with `auto`), the others keep theirs from `layers` (the cache dtype, or a per-layer plan's).
 * @param layers each layer's storage dtype before skipping (length `c.numLayers`)
 * @returns a new array of each layer's storage dtype
 * @throws EngineError `INVALID_ARGUMENT` (field `kvCacheDtypeSkipLayers`) for a non-array, an entry that is neither a
 *   layer index in `[0, numLayers)` nor `'sliding_window'` (named with its position), or `'sliding_window'` on a model
 *   without sliding-window layers
 */
export function kvLayerDtypes(option: unknown, c: ModelConfig, layers: readonly KvStorageDtype[], skipDtype: KvStorageDtype): KvStorageDtype[] {
  if (option === undefined) return [...layers];
  const fail = (what: string): never => {
    throw new EngineError('INVALID_ARGUMENT', `kvCacheDtypeSkipLayers ${what}`, { field: 'kvCacheDtypeSkipLayers' });
  };
  if (!Array.isArray(option)) fail(`must be an array of layer indices or 'sliding_window', got ${JSON.stringify(option)}`);
  const skipped = new Set<number>();
  (option as unknown[]).forEach((entry, i) => {
    if (entry === 'sliding_window') {
      const sliding = slidingLayers(c);
      if (sliding.length === 0) fail(`[${i}] 'sliding_window': this model (${c.modelType}) has no sliding-window attention layers`);
      for (const l of sliding) skipped.add(l);
      return;
    }
    const index = typeof entry === 'string' && /^\d+$/.test(entry) ? Number(entry) : entry;
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= c.numLayers) {
      fail(`[${i}] = ${JSON.stringify(entry)} is not a layer index in [0, ${c.numLayers}) or 'sliding_window'`);
    }
    skipped.add(index as number);
  });
  return layers.map((d, l) => (skipped.has(l) ? skipDtype : d));
}
