import { bytesPerElement, assertKvStorageDtype, isFp8Dtype, kvArrayFor, type KvStorageDtype } from '../dtype.js';
import { CacheError, checkInt, checkPowerOfTwo, describe } from '../errors.js';
import { isKvQuantDtype, kvBlockLayout } from '../kv-quant.js';
import type { KvFormatSource } from '../hash.js';
import type { BlockCopy } from '../manager.js';
import type { KvLayerCache } from './layer.js';

/** Granularity of the K/V (and Q) scales: one per layer (`'tensor'`, shape [1]) or one per head (`'head'`). */
export type KvScaleGranularity = 'tensor' | 'head';

/** Shape and format of one layer's pools (see {@link createKvLayerCache}). */
export interface KvLayerCacheOptions {
  /** Element type stored (in the K pool, and in the V pool unless `valueDtype` is given). */
  dtype: KvStorageDtype;
  /**
   * Element type of the V pool when it differs from K's (mixed K/V precision, e.g. K `int8_per_token_head` with V
   * `int4_g32_f16`: keys are the more sensitive half). Default `dtype`. Per-head scales (`scaleGranularity: 'head'`)
   * are refused when either dtype is a write-time-scaled one (as for a uniform layer).
   */
  valueDtype?: KvStorageDtype;
  /** Blocks in the pool (including the manager's null block 0). Integer >= 1. */
  numBlocks: number;
  /** Tokens per block, a power of two. Default 16. */
  blockSize?: number;
  /** Key/value heads. Integer >= 1. */
  numKvHeads: number;
  /** Elements per head. Integer >= 1. */
  headSize: number;
  /** Query heads (for per-head `qScale`), a multiple of `numKvHeads`. Default `numKvHeads`. */
  numHeads?: number;
  /** K/V scale granularity: `'tensor'` → length 1, `'head'` → length numKvHeads. Default `'tensor'`. */
  scaleGranularity?: KvScaleGranularity;
  /** Q scale granularity: `'tensor'` → length 1, `'head'` → length numHeads. Default `'tensor'`. */
  qScaleGranularity?: KvScaleGranularity;
}

interface CheckedShape {
  readonly dtype: KvStorageDtype;
  readonly valueDtype: KvStorageDtype;
  readonly numBlocks: number;
  readonly blockSize: number;
  readonly numKvHeads: number;
  readonly headSize: number;
  readonly numHeads: number;
  readonly scaleGranularity: KvScaleGranularity;
  readonly qScaleGranularity: KvScaleGranularity;
}

function checkGranularity(name: string, g: unknown): KvScaleGranularity {
  if (g !== 'tensor' && g !== 'head') {
    throw new CacheError('INVALID_ARGUMENT', `${name} must be 'tensor' or 'head', got ${describe(g)}`);
  }
  return g;
}

function checkShape(opts: KvLayerCacheOptions): CheckedShape {
  if (typeof opts !== 'object' || opts === null) {
    throw new CacheError('INVALID_ARGUMENT', `KV cache options must be an object, got ${describe(opts)}`);
  }
  assertKvStorageDtype(opts.dtype);
  const valueDtype = opts.valueDtype ?? opts.dtype;
  assertKvStorageDtype(valueDtype, 'valueDtype');
  const numBlocks = checkInt('numBlocks', opts.numBlocks, 1);
  const blockSize = checkPowerOfTwo('blockSize', opts.blockSize ?? 16);
  const numKvHeads = checkInt('numKvHeads', opts.numKvHeads, 1);
  const headSize = checkInt('headSize', opts.headSize, 1);
  const numHeads = checkInt('numHeads', opts.numHeads ?? numKvHeads, 1);
  if (numHeads % numKvHeads !== 0) {
    throw new CacheError('INVALID_ARGUMENT', `numHeads (${numHeads}) must be a multiple of numKvHeads (${numKvHeads})`);
  }
  const scaleGranularity = checkGranularity('scaleGranularity', opts.scaleGranularity ?? 'tensor');
  for (const d of valueDtype === opts.dtype ? [opts.dtype] : [opts.dtype, valueDtype]) {
    if (isKvQuantDtype(d)) {
      kvBlockLayout(d, blockSize, numKvHeads, headSize); // throws INVALID_ARGUMENT for a bad head size
      if (scaleGranularity !== 'tensor') {
        throw new CacheError(
          'INVALID_ARGUMENT',
          `scaleGranularity must be 'tensor' for KV dtype '${d}' (its scales are computed per token when written; only nvfp4 uses kScale[0]/vScale[0]), got ${describe(scaleGranularity)}`,
        );
      }
    }
  }
  return {
    dtype: opts.dtype,
    valueDtype,
    numBlocks,
    blockSize,
    numKvHeads,
    headSize,
    numHeads,
    scaleGranularity,
    qScaleGranularity: checkGranularity('qScaleGranularity', opts.qScaleGranularity ?? 'tensor'),
  };
}

function allocatePool(shape: CheckedShape, name: 'key' | 'value') {
  const dtype = name === 'key' ? shape.dtype : shape.valueDtype;
  const length = shape.numBlocks * poolBlockLength({ ...shape, dtype });
  try {
    return kvArrayFor(dtype, length);
  } catch (cause) {
    if (cause instanceof CacheError) throw cause;
    throw new CacheError(
      'INVALID_ARGUMENT',
      `cannot allocate the ${name} pool of ${length} ${dtype} elements (${length * bytesPerElement(dtype)} bytes)`,
      { cause },
    );
  }
}

type PoolShape = Pick<KvLayerCache, 'dtype' | 'blockSize' | 'numKvHeads' | 'headSize'>;

/** The shape of a layer's V pool as a {@link PoolShape} (its `dtype` is the layer's `valueDtype`). */
export function valuePoolShape(layer: KvLayerCache): PoolShape {
  return { dtype: layer.valueDtype, blockSize: layer.blockSize, numKvHeads: layer.numKvHeads, headSize: layer.headSize };
}

function poolBlockLength(s: PoolShape): number {
  if (isKvQuantDtype(s.dtype)) return kvBlockLayout(s.dtype, s.blockSize, s.numKvHeads, s.headSize).blockBytes;
  return s.blockSize * s.numKvHeads * s.headSize;
}

/**
 * Pool array elements per block of a layer's K pool (pass {@link valuePoolShape} for its V pool):
 * `blockSize × numKvHeads × headSize`, or for the write-time-scaled dtypes the block's bytes
 * (`kvBlockLayout(...).blockBytes`: codes and their scales). A pool holds `numBlocks ×` this many elements.
 * @throws CacheError `INVALID_ARGUMENT` for a head size the dtype cannot hold.
 */
export function kvPoolBlockLength(layer: PoolShape): number {
  return poolBlockLength(layer);
}

/**
 * Allocate one layer's zeroed K and V pools, layout `[numBlocks, blockSize, numKvHeads, headSize]` (the quantized
 * dtypes: `numBlocks` blocks of `kvBlockLayout(...).blockBytes` bytes, see docs/spec/kv-dtypes.md §3), with all
 * scales 1.0 (vLLM's default when a checkpoint has none).
 * @throws CacheError `INVALID_ARGUMENT`, `NOT_POWER_OF_TWO`, `UNSUPPORTED_DTYPE`.
 */
export function createKvLayerCache(opts: KvLayerCacheOptions): KvLayerCache {
  const s = checkShape(opts);
  const kvScaleLen = s.scaleGranularity === 'head' ? s.numKvHeads : 1;
  return {
    dtype: s.dtype,
    valueDtype: s.valueDtype,
    numBlocks: s.numBlocks,
    blockSize: s.blockSize,
    numKvHeads: s.numKvHeads,
    headSize: s.headSize,
    key: allocatePool(s, 'key'),
    value: allocatePool(s, 'value'),
    kScale: new Float32Array(kvScaleLen).fill(1),
    vScale: new Float32Array(kvScaleLen).fill(1),
    qScale: new Float32Array(s.qScaleGranularity === 'head' ? s.numHeads : 1).fill(1),
  };
}

/** Options of {@link KvCacheStorage}: one layer's shape plus the number of layers. */
export interface KvCacheStorageOptions extends KvLayerCacheOptions {
  /** Attention layers. Integer >= 1. */
  numLayers: number;
  /**
   * Mixed precision: the storage dtype of each layer (length `numLayers`), e.g. the model dtype for the layers of
   * vLLM's `kv_cache_dtype_skip_layers` and `dtype` elsewhere. Default: every layer `dtype`. `dtype` stays the
   * cache's main dtype (reported, and the one per-head scale options refer to: a layer whose dtype takes no such
   * scales gets per-tensor ones).
   */
  layerDtypes?: readonly KvStorageDtype[];
  /**
   * Mixed K/V precision per layer: each layer's V dtype (length `numLayers`). Default: each layer's `layerDtypes`
   * entry (or `valueDtype`, or `dtype`), i.e. V stored like K.
   */
  layerValueDtypes?: readonly KvStorageDtype[];
}

/** New scales for one layer; each is a number (per-tensor) or an array of the layer's scale length. */
export interface KvScaleUpdate {
  kScale?: number | ArrayLike<number>;
  vScale?: number | ArrayLike<number>;
  qScale?: number | ArrayLike<number>;
}

/**
 * Validate a scale array: length 1 or `perHeadLength`, every entry finite and > 0 (as float32).
 * @throws CacheError `SCALE_SHAPE` or `INVALID_SCALE` naming `name`, the index and the value.
 */
export function checkScales(name: string, scales: ArrayLike<number>, allowedLengths: readonly number[]): void {
  if (!allowedLengths.includes(scales.length)) {
    throw new CacheError(
      'SCALE_SHAPE',
      `${name} has ${scales.length} entries, expected ${[...new Set(allowedLengths)].join(' or ')}`,
    );
  }
  for (let i = 0; i < scales.length; i++) {
    const v = scales[i]!;
    const f = Math.fround(v);
    if (typeof v !== 'number' || !(f > 0) || f === Infinity) {
      throw new CacheError('INVALID_SCALE', `${name}[${i}] = ${describe(v)} must be a finite float32 > 0`);
    }
  }
}

/**
 * The KV storage of one model: a {@link KvLayerCache} per attention layer, all with the same shape and dtype,
 * plus a `scaleVersion` counter that is part of every prefix-cache block hash (pass this object as the
 * manager's `format`). Scale changes must go through {@link setScales} or be followed by
 * {@link markScalesChanged}.
 */
export class KvCacheStorage implements KvFormatSource {
  /** One entry per layer. */
  readonly layers: readonly KvLayerCache[];
  readonly dtype: KvStorageDtype;
  /** Every layer's K storage dtype (all `dtype` unless the cache was made with `layerDtypes`). */
  readonly layerDtypes: readonly KvStorageDtype[];
  /** Every layer's V storage dtype (equal to `layerDtypes` unless K and V differ somewhere). */
  readonly layerValueDtypes: readonly KvStorageDtype[];
  readonly numLayers: number;
  readonly numBlocks: number;
  readonly blockSize: number;
  readonly numKvHeads: number;
  readonly headSize: number;
  /** Query heads. */
  readonly numHeads: number;
  readonly scaleGranularity: KvScaleGranularity;
  readonly qScaleGranularity: KvScaleGranularity;
  private version = 0;

  /** @throws CacheError `INVALID_ARGUMENT`, `NOT_POWER_OF_TWO`, `UNSUPPORTED_DTYPE`. */
  constructor(opts: KvCacheStorageOptions) {
    const s = checkShape(opts);
    this.numLayers = checkInt('numLayers', opts.numLayers, 1);
    this.dtype = s.dtype;
    this.numBlocks = s.numBlocks;
    this.blockSize = s.blockSize;
    this.numKvHeads = s.numKvHeads;
    this.headSize = s.headSize;
    this.numHeads = s.numHeads;
    this.scaleGranularity = s.scaleGranularity;
    this.qScaleGranularity = s.qScaleGranularity;
    this.layerDtypes = checkLayerDtypes('layerDtypes', opts.layerDtypes, this.numLayers, s.dtype);
    const valueDefault = opts.valueDtype === undefined || opts.layerDtypes !== undefined ? this.layerDtypes : new Array<KvStorageDtype>(this.numLayers).fill(s.valueDtype);
    this.layerValueDtypes = checkLayerDtypes('layerValueDtypes', opts.layerValueDtypes ?? valueDefault, this.numLayers, s.dtype);
    const layers: KvLayerCache[] = [];
    for (let l = 0; l < this.numLayers; l++) {
      const dtype = this.layerDtypes[l]!;
      const valueDtype = this.layerValueDtypes[l]!;
      const same = dtype === s.dtype && valueDtype === s.valueDtype;
      // A layer that differs from the main dtypes takes per-head scales only when both of its dtypes are FP8.
      const perTensorOnly = !same && !(isFp8Dtype(dtype) && isFp8Dtype(valueDtype));
      layers.push(createKvLayerCache(same ? opts : { ...opts, dtype, valueDtype, ...(perTensorOnly ? { scaleGranularity: 'tensor' } : {}) }));
    }
    this.layers = layers;
  }

  /** Bumped by every {@link setScales} and {@link markScalesChanged}; part of the prefix-cache hash. */
  get scaleVersion(): number {
    return this.version;
  }

  /** Bytes held: K and V pools of every layer plus the scale arrays (K, V, Q; 4 bytes each). */
  get byteLength(): number {
    let n = 0;
    for (const l of this.layers) {
      n += l.key.byteLength + l.value.byteLength + l.kScale.byteLength + l.vScale.byteLength + l.qScale.byteLength;
    }
    return n;
  }

  /** The layer at `index`. @throws CacheError `INVALID_ARGUMENT`. */
  layer(index: number): KvLayerCache {
    checkInt('layer', index, 0, this.numLayers - 1);
    return this.layers[index]!;
  }

  /**
   * Set a layer's scales (copied in place, so kernels holding the arrays see them) and bump `scaleVersion`.
   * A number sets every entry. Everything is validated before anything is written.
   * @throws CacheError `INVALID_ARGUMENT` (layer), `SCALE_SHAPE`, `INVALID_SCALE`.
   */
  setScales(layerIndex: number, update: KvScaleUpdate): void {
    const l = this.layer(layerIndex);
    if (typeof update !== 'object' || update === null) {
      throw new CacheError('INVALID_ARGUMENT', `scale update must be an object, got ${describe(update)}`);
    }
    const plan: Array<[Float32Array, ArrayLike<number>]> = [];
    const entries: Array<[string, number | ArrayLike<number> | undefined, Float32Array]> = [
      ['kScale', update.kScale, l.kScale],
      ['vScale', update.vScale, l.vScale],
      ['qScale', update.qScale, l.qScale],
    ];
    for (const [name, v, target] of entries) {
      if (v === undefined) continue;
      const arr = typeof v === 'number' ? new Array<number>(target.length).fill(v) : v;
      if (arr === null || typeof arr !== 'object' || typeof arr.length !== 'number') {
        throw new CacheError('INVALID_ARGUMENT', `layers[${layerIndex}].${name} must be a number or an array, got ${describe(v)}`);
      }
      checkScales(`layers[${layerIndex}].${name}`, arr, [target.length]);
      plan.push([target, arr]);
    }
    for (const [target, arr] of plan) for (let i = 0; i < target.length; i++) target[i] = arr[i]!;
    if (plan.length > 0) this.version++;
  }

  /** Declare that scales were changed in place (e.g. by a calibration kernel): bumps `scaleVersion`. */
  markScalesChanged(): void {
    this.version++;
  }

  /** Apply copy-on-write copies to every layer (see {@link copyBlocks}). */
  copyBlocks(copies: readonly BlockCopy[]): void {
    for (const l of this.layers) copyBlocks(l, copies);
  }

  /**
   * Validate every layer's scales (after in-place edits).
   * @throws CacheError `SCALE_SHAPE` or `INVALID_SCALE` naming the layer.
   */
  validate(): void {
    this.layers.forEach((l, i) => checkLayerScales(l, `layers[${i}]`));
  }
}

function checkLayerDtypes(name: string, given: readonly KvStorageDtype[] | undefined, numLayers: number, dtype: KvStorageDtype): readonly KvStorageDtype[] {
  if (given === undefined) return Object.freeze(new Array<KvStorageDtype>(numLayers).fill(dtype));
  if (!Array.isArray(given) || given.length !== numLayers) {
    throw new CacheError('INVALID_ARGUMENT', `${name} must be an array of ${numLayers} dtypes (one per layer), got ${describe(given)}`);
  }
  given.forEach((d, l) => {
    try {
      assertKvStorageDtype(d);
    } catch (cause) {
      throw new CacheError('UNSUPPORTED_DTYPE', `${name}[${l}]: ${(cause as Error).message}`, { cause });
    }
  });
  return Object.freeze([...given]);
}

/** Validate a layer's K/V scales (length 1 or numKvHeads, equal lengths, finite > 0); Q scale too when FP8. */
export function checkLayerScales(layer: KvLayerCache, name = 'layer'): void {
  const ok = [1, layer.numKvHeads];
  checkScales(`${name}.kScale`, layer.kScale, ok);
  checkScales(`${name}.vScale`, layer.vScale, ok);
  if (layer.kScale.length !== layer.vScale.length) {
    throw new CacheError(
      'SCALE_SHAPE',
      `${name}.kScale and vScale must have the same shape, got ${layer.kScale.length} and ${layer.vScale.length}`,
    );
  }
  if (layer.qScale.length < 1) throw new CacheError('SCALE_SHAPE', `${name}.qScale is empty`);
  checkScales(`${name}.qScale`, layer.qScale, [1, layer.qScale.length]);
}

/**
 * Copy whole blocks inside one layer (both pools): `dst ← src` for each pair, in order
 * (the copy-on-write copies reported by the manager). For the quantized dtypes a block carries its scales.
 * @throws CacheError `SLOT_OUT_OF_RANGE` for a block id outside the pool.
 */
export function copyBlocks(layer: KvLayerCache, copies: readonly BlockCopy[]): void {
  const blockElems = poolBlockLength(layer);
  const valueElems = poolBlockLength(valuePoolShape(layer));
  for (const { src, dst } of copies) {
    for (const [name, id] of [['src', src], ['dst', dst]] as const) {
      if (!Number.isInteger(id) || id < 0 || id >= layer.numBlocks) {
        throw new CacheError('SLOT_OUT_OF_RANGE', `copy ${name} block ${describe(id)} is outside [0, ${layer.numBlocks})`);
      }
    }
  }
  for (const { src, dst } of copies) {
    if (src === dst) continue;
    layer.key.copyWithin(dst * blockElems, src * blockElems, (src + 1) * blockElems);
    layer.value.copyWithin(dst * valueElems, src * valueElems, (src + 1) * valueElems);
  }
}

