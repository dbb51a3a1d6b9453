import type { KvPoolArray, KvStorageDtype } from '../dtype.js';

/**
 * One attention layer's paged K and V pools.
 *
 * Layout of `key` and `value` (flash / NHD, as vLLM's `reshape_and_cache_flash`):
 * `[numBlocks, blockSize, numKvHeads, headSize]`, row-major, so element (block b, offset o, head h, dim d)
 * is at `((b * blockSize + o) * numKvHeads + h) * headSize + d`, and slot `s = b * blockSize + o`
 * starts at `s * numKvHeads * headSize`.
 *
 * NOTE: scale arrays are mutable in place (calibration writes them); whoever changes them must tell the
 * owning storage object (see `KvCacheStorage.markScalesChanged`) so the prefix-cache hash changes.
 * @see docs/spec/vllm-fp8-kv-cache.md §5.1–5.2
 */
export interface KvLayerCache {
  /** Element type of `key` (and of `value` unless {@link valueDtype} differs). */
  readonly dtype: KvStorageDtype;
  /**
   * Element type of `value`: `dtype` for a uniform layer, another dtype for a layer whose K and V are stored in
   * different precisions (e.g. K `int8_per_token_head`, V `int4_g32_f16`; see `KvLayerCacheOptions.valueDtype`).
   */
  readonly valueDtype: KvStorageDtype;
  /** Number of blocks in the pool (block 0 is the manager's reserved null block, still allocated here). */
  readonly numBlocks: number;
  /** Tokens per block. */
  readonly blockSize: number;
  /** Key/value heads (GQA groups). */
  readonly numKvHeads: number;
  /** Elements per head. */
  readonly headSize: number;
  /** K pool, `numBlocks * blockSize * numKvHeads * headSize` elements. */
  readonly key: KvPoolArray;
  /** V pool, same layout as `key` in `valueDtype` (same length when the dtypes are equal). */
  readonly value: KvPoolArray;
  /** Dequantization scales (x ≈ decode(q) * scale), length 1 (per-tensor) or numKvHeads (per-head). Ignored for f32/bf16/f16. */
  readonly kScale: Float32Array;
  /** Dequantization scales for V, same length as `kScale`. */
  readonly vScale: Float32Array;
  /** Query scale for FP8-query attention: length 1 or numHeads (query heads). */
  readonly qScale: Float32Array;
}
