import { assertKvStorageDtype, bytesPerElement, isFp8Dtype, type KvStorageDtype } from './dtype.js';
import { CacheError, checkInt, checkPowerOfTwo, describe } from './errors.js';
import { isKvQuantDtype, kvBlockLayout } from './kv-quant.js';

/** The attention shape that sizes a KV cache. */
export interface KvModelConfig {
  /** Attention layers holding a KV cache. Integer >= 1. */
  numLayers: number;
  /** Key/value heads per layer. Integer >= 1. */
  numKvHeads: number;
  /** Elements per head. Integer >= 1. */
  headSize: number;
  /** Query heads (sizes a per-head q scale). Default `numKvHeads`. */
  numHeads?: number;
}

/**
 * Scale sidecars stored with the cache:
 * - `'none'`: no scales (16/32-bit caches);
 * - `'tensor'`: K, V and Q scales of shape [1] per layer (fixed 12 B/layer);
 * - `'head'`: K and V of shape [numKvHeads], Q of shape [numHeads] per layer (fixed);
 * - `'token_head'`: one float32 per (token, kv-head) for K and V, stored in the pages
 *   (vLLM `*_per_token_head` modes add `2 × blockSize × numKvHeads × 4` bytes per page);
 * - `'inline'`: the write-time-scaled dtypes (`int8_per_token_head`, `int4_g32`, `nvfp4`, ...): the scales live in
 *   each block beside the codes (`kvBlockLayout`), plus nvfp4's two float32 tensor scales (K, V) per layer.
 *   The only (and default) choice for those dtypes, invalid for the others.
 */
export type KvScaleSidecar = 'none' | 'tensor' | 'head' | 'token_head' | 'inline';

/** Storage options for capacity computations. */
export interface KvCapacityOptions {
  /** Stored element type. */
  dtype: KvStorageDtype;
  /** Tokens per block, a power of two. Default 16. */
  blockSize?: number;
  /** Scale sidecars. Default `'inline'` for the write-time-scaled dtypes, `'tensor'` for FP8 dtypes, `'none'` otherwise. */
  scales?: KvScaleSidecar;
}

interface Checked {
  readonly numLayers: number;
  readonly numKvHeads: number;
  readonly headSize: number;
  readonly numHeads: number;
  readonly dtype: KvStorageDtype;
  readonly blockSize: number;
  readonly scales: KvScaleSidecar;
}

function check(model: KvModelConfig, opts: KvCapacityOptions): Checked {
  if (typeof model !== 'object' || model === null) {
    throw new CacheError('INVALID_ARGUMENT', `model must be an object, got ${describe(model)}`);
  }
  if (typeof opts !== 'object' || opts === null) {
    throw new CacheError('INVALID_ARGUMENT', `options must be an object, got ${describe(opts)}`);
  }
  assertKvStorageDtype(opts.dtype);
  const numKvHeads = checkInt('numKvHeads', model.numKvHeads, 1);
  const quant = isKvQuantDtype(opts.dtype);
  const scales = opts.scales ?? (quant ? 'inline' : isFp8Dtype(opts.dtype) ? 'tensor' : 'none');
  if (scales !== 'none' && scales !== 'tensor' && scales !== 'head' && scales !== 'token_head' && scales !== 'inline') {
    throw new CacheError('INVALID_ARGUMENT', `scales must be 'none', 'tensor', 'head', 'token_head' or 'inline', got ${describe(scales)}`);
  }
  if (quant !== (scales === 'inline')) {
    throw new CacheError(
      'INVALID_ARGUMENT',
      quant
        ? `scales must be 'inline' for KV dtype '${opts.dtype}' (its scales are stored in each block), got ${describe(scales)}`
        : `scales 'inline' is only for the write-time-scaled KV dtypes, not '${opts.dtype}'`,
    );
  }
  const headSize = checkInt('headSize', model.headSize, 1);
  const blockSize = checkPowerOfTwo('blockSize', opts.blockSize ?? 16);
  const c = {
    numLayers: checkInt('numLayers', model.numLayers, 1),
    numKvHeads,
    headSize,
    numHeads: checkInt('numHeads', model.numHeads ?? numKvHeads, 1),
    dtype: opts.dtype,
    blockSize,
    scales,
  };
  if (isKvQuantDtype(c.dtype)) kvBlockLayout(c.dtype, blockSize, numKvHeads, headSize); // INVALID_ARGUMENT for a bad head size
  return c;
}

/**
 * Bytes of one layer's K+V page (one block): `2 × blockSize × numKvHeads × headSize × bytesPerElement`,
 * plus `2 × blockSize × numKvHeads × 4` for `'token_head'` scales (vLLM `AttentionSpec.page_size_bytes`);
 * for the write-time-scaled dtypes `2 × kvBlockLayout(...).blockBytes` (codes and their scales, docs/spec/kv-dtypes.md §3).
 * @see docs/spec/vllm-fp8-kv-cache.md §6.1
 */
export function kvPageBytes(model: KvModelConfig, opts: KvCapacityOptions): number {
  const c = check(model, opts);
  return pageBytes(c);
}

function pageBytes(c: Checked): number {
  if (isKvQuantDtype(c.dtype)) return 2 * kvBlockLayout(c.dtype, c.blockSize, c.numKvHeads, c.headSize).blockBytes;
  const data = 2 * c.blockSize * c.numKvHeads * c.headSize * bytesPerElement(c.dtype);
  return data + (c.scales === 'token_head' ? 2 * c.blockSize * c.numKvHeads * 4 : 0);
}

/** Bytes per cached token over all layers (K and V, plus per-token scales if any). */
export function kvBytesPerToken(model: KvModelConfig, opts: KvCapacityOptions): number {
  const c = check(model, opts);
  return (pageBytes(c) / c.blockSize) * c.numLayers;
}

/** Bytes per block over all layers (`numLayers × kvPageBytes`). */
export function kvBytesPerBlock(model: KvModelConfig, opts: KvCapacityOptions): number {
  const c = check(model, opts);
  return pageBytes(c) * c.numLayers;
}

/**
 * Fixed scale bytes over all layers (per-tensor or per-head K/V/Q scales, float32); 0 for `'none'`/`'token_head'`;
 * for `'inline'` 8 per layer for nvfp4 (K and V tensor scales), else 0.
 */
export function kvScaleBytes(model: KvModelConfig, opts: KvCapacityOptions): number {
  const c = check(model, opts);
  return fixedScaleBytes(c);
}

function fixedScaleBytes(c: Checked): number {
  if (c.scales === 'tensor') return c.numLayers * 3 * 4;
  if (c.scales === 'head') return c.numLayers * (2 * c.numKvHeads + c.numHeads) * 4;
  if (c.scales === 'inline' && c.dtype === 'nvfp4') return c.numLayers * 2 * 4;
  return 0;
}

/** A KV-cache sizing for a memory budget (see {@link planKvCache}). */
export interface KvCachePlan {
  readonly dtype: KvStorageDtype;
  readonly blockSize: number;
  readonly scales: KvScaleSidecar;
  /** Budget the plan was made for, in bytes. */
  readonly memoryBytes: number;
  /** Bytes per token over all layers. */
  readonly bytesPerToken: number;
  /** Bytes of one layer's page (of a layer of the main `dtype` when `layerDtypes` mixes dtypes). */
  readonly pageBytes: number;
  /** Bytes per block over all layers. */
  readonly bytesPerBlock: number;
  /** Fixed scale bytes over all layers. */
  readonly scaleBytes: number;
  /** Blocks that fit: `floor((memoryBytes − scaleBytes) / bytesPerBlock)` (vLLM `get_num_blocks`), block 0 included. */
  readonly numBlocks: number;
  /** `numBlocks × blockSize` (vLLM's "GPU KV cache size: N tokens"). */
  readonly numTokens: number;
  /** Blocks a manager can hand out: `numBlocks − 1` (block 0 is the null block), or 0. */
  readonly numUsableBlocks: number;
  /** Bytes actually used: `numBlocks × bytesPerBlock + scaleBytes`. */
  readonly usedBytes: number;
}

/** Arguments of {@link planKvCache}. */
export interface PlanKvCacheOptions extends KvCapacityOptions {
  /** The model's attention shape. */
  model: KvModelConfig;
  /** Memory available for the KV cache, bytes (finite, >= 0). */
  memoryBytes: number;
  /**
   * Mixed precision: each layer's dtype (length `model.numLayers`), as `KvCacheStorage`'s `layerDtypes`. Layers of the
   * main `dtype` use `scales`; the others their dtype's default sidecar. Default: every layer `dtype`.
   */
  layerDtypes?: readonly KvStorageDtype[];
  /**
   * Mixed K/V precision: each layer's V dtype (length `model.numLayers`), as `KvCacheStorage`'s `layerValueDtypes`;
   * each layer's page is then half its K dtype's page plus half its V dtype's. Default: V stored like K.
   */
  layerValueDtypes?: readonly KvStorageDtype[];
}

/**
 * Size a KV cache for a memory budget. FP8 (1 byte/element) fits exactly twice the tokens of bf16
 * (2 bytes/element) for the same budget, up to block rounding (one block) and the fixed scale bytes.
 * @throws CacheError `INVALID_ARGUMENT`, `NOT_POWER_OF_TWO`, `UNSUPPORTED_DTYPE`.
 * @see docs/spec/vllm-fp8-kv-cache.md §6.1
 */
export function planKvCache(opts: PlanKvCacheOptions): KvCachePlan {
  if (typeof opts !== 'object' || opts === null) {
    throw new CacheError('INVALID_ARGUMENT', `planKvCache options must be an object, got ${describe(opts)}`);
  }
  const c = check(opts.model, opts);
  const memoryBytes = opts.memoryBytes;
  if (typeof memoryBytes !== 'number' || !Number.isFinite(memoryBytes) || memoryBytes < 0) {
    throw new CacheError('INVALID_ARGUMENT', `memoryBytes must be a finite number >= 0, got ${describe(memoryBytes)}`);
  }
  const page = pageBytes(c);
  let bytesPerBlock = page * c.numLayers;
  let scaleBytes = fixedScaleBytes(c);
  if (opts.layerDtypes !== undefined || opts.layerValueDtypes !== undefined) {
    const keys = perLayerList('layerDtypes', opts.layerDtypes, c.numLayers) ?? new Array<KvStorageDtype>(c.numLayers).fill(c.dtype);
    const values = perLayerList('layerValueDtypes', opts.layerValueDtypes, c.numLayers) ?? keys;
    const layerOf = (dtype: KvStorageDtype): Checked =>
      dtype === c.dtype ? { ...c, numLayers: 1 } : check({ ...opts.model, numLayers: 1 }, { dtype, blockSize: c.blockSize });
    bytesPerBlock = 0;
    scaleBytes = 0;
    for (let l = 0; l < c.numLayers; l++) {
      // K and V pools are each half of their dtype's page (and of its fixed scale bytes).
      const k = layerOf(keys[l]!);
      const v = layerOf(values[l]!);
      bytesPerBlock += (pageBytes(k) + pageBytes(v)) / 2;
      scaleBytes += (fixedScaleBytes(k) + fixedScaleBytes(v)) / 2;
    }
  }
  const numBlocks = Math.max(0, Math.floor((memoryBytes - scaleBytes) / bytesPerBlock));
  return {
    dtype: c.dtype,
    blockSize: c.blockSize,
    scales: c.scales,
    memoryBytes,
    bytesPerToken: bytesPerBlock / c.blockSize,
    pageBytes: page,
    bytesPerBlock,
    scaleBytes,
    numBlocks,
    numTokens: numBlocks * c.blockSize,
    numUsableBlocks: Math.max(0, numBlocks - 1),
    usedBytes: numBlocks > 0 ? numBlocks * bytesPerBlock + scaleBytes : 0,
  };
}

function perLayerList(name: string, list: readonly KvStorageDtype[] | undefined, numLayers: number): readonly KvStorageDtype[] | undefined {
  if (list === undefined) return undefined;
  if (!Array.isArray(list) || list.length !== numLayers) {
    throw new CacheError('INVALID_ARGUMENT', `${name} must be an array of ${numLayers} dtypes (one per layer), got ${describe(list)}`);
  }
  return list;
}

/** Concurrency a plan supports for sequences of `contextLength` tokens (see {@link maxConcurrency}). */
export interface KvConcurrency {
  /** Blocks one sequence of `contextLength` tokens needs: `ceil(contextLength / blockSize)`. */
  readonly blocksPerSequence: number;
  /** `numBlocks / blocksPerSequence`, as vLLM logs "Maximum concurrency for L tokens per request: Cx". */
  readonly ratio: number;
  /** Whole sequences a manager can hold at once: `floor(numUsableBlocks / blocksPerSequence)` (no prefix sharing). */
  readonly sequences: number;
}

/**
 * Maximum concurrency of a plan for a context length (tokens per sequence, integer >= 1).
 * @throws CacheError `INVALID_ARGUMENT`.
 */
export function maxConcurrency(plan: KvCachePlan, contextLength: number): KvConcurrency {
  checkInt('contextLength', contextLength, 1);
  const blocksPerSequence = Math.ceil(contextLength / plan.blockSize);
  return {
    blocksPerSequence,
    ratio: plan.numBlocks / blocksPerSequence,
    sequences: Math.floor(plan.numUsableBlocks / blocksPerSequence),
  };
}
