import {
  dequantizeScaled,
  f16ToF32Table,
  f32ToBf16Bits,
  f32ToF16Bits,
  PER_TENSOR,
  quantizeScaled,
  type Fp8Format,
  type ScaleLayout,
} from '@kvq/fp8';
import { isFp8Dtype, type KvStorageDtype } from '../dtype.js';
import { dequantizeKvHead, isKvQuantDtype, kvBlockLayout, quantizeKvHead } from '../kv-quant.js';
import { CacheError, checkInt, describe } from '../errors.js';
import type { KvLayerCache } from './layer.js';
import { checkLayerScales } from './storage.js';

/** Dequantized K and V of one sequence, each `[numTokens, numKvHeads, headSize]` float32. */
export interface GatheredKv {
  readonly key: Float32Array;
  readonly value: Float32Array;
}

function scaleLayoutOf(layer: KvLayerCache, scales: Float32Array): ScaleLayout {
  return scales.length === 1
    ? PER_TENSOR
    : { granularity: 'head', numHeads: layer.numKvHeads, headSize: layer.headSize };
}

function checkLayer(layer: KvLayerCache): void {
  if (typeof layer !== 'object' || layer === null) {
    throw new CacheError('INVALID_ARGUMENT', `layer must be a KvLayerCache, got ${describe(layer)}`);
  }
  const valueDtype = layer.valueDtype ?? layer.dtype;
  for (const [name, dtype, pool] of [['key', layer.dtype, layer.key], ['value', valueDtype, layer.value]] as const) {
    const quant = isKvQuantDtype(dtype);
    const expected = quant
      ? layer.numBlocks * kvBlockLayout(dtype, layer.blockSize, layer.numKvHeads, layer.headSize).blockBytes
      : layer.numBlocks * layer.blockSize * layer.numKvHeads * layer.headSize;
    if (pool.length !== expected) {
      throw new CacheError(
        'SHAPE_MISMATCH',
        `layer ${name} pool ('${dtype}') must hold ${quant ? 'numBlocks*blockBytes' : 'numBlocks*blockSize*numKvHeads*headSize'} = ${expected} elements, got ${pool.length}`,
      );
    }
    if (quant && !(pool instanceof Uint8Array)) {
      throw new CacheError('INVALID_ARGUMENT', `layer ${name} pool of dtype '${dtype}' must be a Uint8Array`);
    }
  }
  const dtypes = [layer.dtype, valueDtype];
  if (dtypes.some((d) => isFp8Dtype(d) || d === 'nvfp4')) checkLayerScales(layer);
  if (dtypes.includes('nvfp4') && layer.kScale.length !== 1) {
    throw new CacheError('SCALE_SHAPE', `nvfp4 layers need one tensor scale (kScale/vScale of length 1), got ${layer.kScale.length}`);
  }
}

// Local bindings: hot loops call these directly (no namespace lookup per element under module transforms).
const toBf16 = f32ToBf16Bits;
const toF16 = f32ToF16Bits;

/** Store rows [t0, t0+n) of `src` at slots starting at `slot` (contiguous), converting to the pool dtype. */
function storeRun(
  layer: KvLayerCache,
  dtype: KvStorageDtype,
  pool: KvLayerCache['key'],
  scales: Float32Array,
  src: Float32Array,
  t0: number,
  n: number,
  slot: number,
): void {
  const row = layer.numKvHeads * layer.headSize;
  const from = src.subarray(t0 * row, (t0 + n) * row);
  const at = slot * row;
  if (isKvQuantDtype(dtype)) {
    const l = kvBlockLayout(dtype, layer.blockSize, layer.numKvHeads, layer.headSize);
    for (let r = 0; r < n; r++) {
      for (let h = 0; h < layer.numKvHeads; h++) {
        quantizeKvHead(l, pool as Uint8Array, slot + r, h, src, (t0 + r) * row + h * layer.headSize, scales[0]!);
      }
    }
  } else if (dtype === 'f32') {
    (pool as Float32Array).set(from, at);
  } else if (dtype === 'bf16') {
    const out = pool as Uint16Array;
    for (let i = 0; i < from.length; i++) out[at + i] = toBf16(from[i]!);
  } else if (dtype === 'f16') {
    const out = pool as Uint16Array;
    for (let i = 0; i < from.length; i++) out[at + i] = toF16(from[i]!);
  } else {
    const out = (pool as Uint8Array).subarray(at, at + from.length);
    quantizeScaled(from, scales, scaleLayoutOf(layer, scales), dtype, { out });
  }
}

/**
 * Reference KV write (vLLM `reshape_and_cache_flash` semantics): token `t` of `key`/`value`
 * (`[numTokens, numKvHeads, headSize]` float32) goes to slot `slotMapping[t]` = `blockId * blockSize + offset`.
 * Slots < 0 are padding and skipped; `key` may hold more rows than `slotMapping` (CUDA-graph padding).
 * FP8 pools store `encode(fround(x / scale))` with the layer's per-tensor or per-head scale, saturating
 * (exactly `@kvq/fp8` `quantizeScaled`); bf16/f16 round to nearest even; f32 is a plain copy; the write-time-scaled
 * dtypes compute each token's scales (`quantizeKvHead`, docs/spec/kv-dtypes.md).
 * @throws CacheError `SHAPE_MISMATCH`, `SLOT_OUT_OF_RANGE`, `INVALID_SCALE`, `SCALE_SHAPE`.
 * @see docs/spec/vllm-fp8-kv-cache.md §5.1–5.2
 */
export function writeKv(layer: KvLayerCache, key: Float32Array, value: Float32Array, slotMapping: Int32Array): void {
  checkLayer(layer);
  if (!(key instanceof Float32Array) || !(value instanceof Float32Array)) {
    throw new CacheError('INVALID_ARGUMENT', `key and value must be Float32Arrays, got ${describe(key)} and ${describe(value)}`);
  }
  if (!(slotMapping instanceof Int32Array)) {
    throw new CacheError('INVALID_ARGUMENT', `slotMapping must be an Int32Array, got ${describe(slotMapping)}`);
  }
  const row = layer.numKvHeads * layer.headSize;
  const n = slotMapping.length;
  for (const [name, arr] of [['key', key], ['value', value]] as const) {
    if (arr.length % row !== 0 || arr.length < n * row) {
      throw new CacheError(
        'SHAPE_MISMATCH',
        `${name} has ${arr.length} elements; expected [numTokens >= ${n}, numKvHeads=${layer.numKvHeads}, headSize=${layer.headSize}]`,
      );
    }
  }
  const numSlots = layer.numBlocks * layer.blockSize;
  for (let t = 0; t < n; t++) {
    const s = slotMapping[t]!;
    if (s >= numSlots) {
      throw new CacheError('SLOT_OUT_OF_RANGE', `slotMapping[${t}] = ${s} is outside [0, ${numSlots}) (numBlocks*blockSize)`);
    }
  }
  // Contiguous runs of slots are stored with one call each.
  let t = 0;
  while (t < n) {
    const s = slotMapping[t]!;
    if (s < 0) {
      t++;
      continue;
    }
    let len = 1;
    while (t + len < n && slotMapping[t + len] === s + len) len++;
    storeRun(layer, layer.dtype, layer.key, layer.kScale, key, t, len, s);
    storeRun(layer, layer.valueDtype ?? layer.dtype, layer.value, layer.vScale, value, t, len, s);
    t += len;
  }
}

/** Per-scale 256-entry dequantization tables, each computed by `@kvq/fp8` `dequantizeScaled`. */
function dequantTables(format: Fp8Format, scales: Float32Array): Float32Array[] {
  const codes = new Uint8Array(256);
  for (let c = 0; c < 256; c++) codes[c] = c;
  const out: Float32Array[] = [];
  for (let h = 0; h < scales.length; h++) out.push(dequantizeScaled(codes, scales[h]!, PER_TENSOR, format));
  return out;
}

function loadRun(
  layer: KvLayerCache,
  dtype: KvStorageDtype,
  pool: KvLayerCache['key'],
  scales: Float32Array,
  tables: Float32Array[] | undefined,
  out: Float32Array,
  pos: number,
  n: number,
  slot: number,
): void {
  const row = layer.numKvHeads * layer.headSize;
  const at = slot * row;
  const len = n * row;
  const o = pos * row;
  if (isKvQuantDtype(dtype)) {
    const l = kvBlockLayout(dtype, layer.blockSize, layer.numKvHeads, layer.headSize);
    const ts = scales[0]!;
    for (let r = 0; r < n; r++) {
      for (let h = 0; h < layer.numKvHeads; h++) {
        dequantizeKvHead(l, pool as Uint8Array, slot + r, h, out, o + r * row + h * layer.headSize, ts);
      }
    }
  } else if (dtype === 'f32') {
    out.set((pool as Float32Array).subarray(at, at + len), o);
  } else if (dtype === 'bf16') {
    // bf16 → f32 is exact: the 16 bits become the top half of the float32 pattern (= bf16BitsToF32).
    const src = pool as Uint16Array;
    const o32 = new Uint32Array(out.buffer, out.byteOffset + o * 4, len);
    for (let i = 0; i < len; i++) o32[i] = src[at + i]! << 16;
  } else if (dtype === 'f16') {
    const src = pool as Uint16Array;
    const table = f16ToF32Table();
    for (let i = 0; i < len; i++) out[o + i] = table[src[at + i]!]!;
  } else {
    const src = pool as Uint8Array;
    const t = tables!;
    if (t.length === 1) {
      const table = t[0]!;
      for (let i = 0; i < len; i++) out[o + i] = table[src[at + i]!]!;
    } else {
      const d = layer.headSize;
      let i = 0;
      for (let r = 0; r < n; r++) {
        for (let h = 0; h < layer.numKvHeads; h++) {
          const table = t[h]!;
          const end = i + d;
          for (; i < end; i++) out[o + i] = table[src[at + i]!]!;
        }
      }
    }
  }
}

/**
 * Reference KV read: gather the first `numTokens` positions of a sequence (position `p` at block
 * `blockTable[floor(p / blockSize)]`, offset `p % blockSize`) into float32 `[numTokens, numKvHeads, headSize]`,
 * dequantized as `fround(decode(q) * scale)` (exactly `@kvq/fp8` `dequantizeScaled`; the write-time-scaled dtypes with
 * their stored scales, `dequantizeKvHead`); bf16/f16 widened exactly.
 * @param out optional destination arrays (at least `numTokens * numKvHeads * headSize` each).
 * @throws CacheError `INVALID_ARGUMENT`, `SLOT_OUT_OF_RANGE`, `SHAPE_MISMATCH`, `INVALID_SCALE`, `SCALE_SHAPE`.
 */
export function gatherKv(
  layer: KvLayerCache,
  blockTable: ArrayLike<number>,
  numTokens: number,
  out?: { key: Float32Array; value: Float32Array },
): GatheredKv {
  checkLayer(layer);
  checkInt('numTokens', numTokens, 0);
  const bs = layer.blockSize;
  const needBlocks = Math.ceil(numTokens / bs);
  if (blockTable === null || typeof blockTable !== 'object' || typeof blockTable.length !== 'number') {
    throw new CacheError('INVALID_ARGUMENT', `blockTable must be an array of block ids, got ${describe(blockTable)}`);
  }
  if (blockTable.length < needBlocks) {
    throw new CacheError(
      'SLOT_OUT_OF_RANGE',
      `numTokens ${numTokens} needs ${needBlocks} blocks of ${bs}, but blockTable has ${blockTable.length}`,
    );
  }
  for (let i = 0; i < needBlocks; i++) {
    const b = blockTable[i]!;
    if (!Number.isInteger(b) || b < 0 || b >= layer.numBlocks) {
      throw new CacheError('SLOT_OUT_OF_RANGE', `blockTable[${i}] = ${describe(b)} is outside [0, ${layer.numBlocks})`);
    }
  }
  const row = layer.numKvHeads * layer.headSize;
  const len = numTokens * row;
  let key: Float32Array;
  let value: Float32Array;
  if (out !== undefined) {
    if (!(out.key instanceof Float32Array) || !(out.value instanceof Float32Array) || out.key.length < len || out.value.length < len) {
      throw new CacheError('SHAPE_MISMATCH', `out.key and out.value must be Float32Arrays of at least ${len} elements`);
    }
    key = out.key;
    value = out.value;
  } else {
    key = new Float32Array(len);
    value = new Float32Array(len);
  }
  const valueDtype = layer.valueDtype ?? layer.dtype;
  const kTables = isFp8Dtype(layer.dtype) ? dequantTables(layer.dtype, layer.kScale) : undefined;
  const vTables = isFp8Dtype(valueDtype) ? dequantTables(valueDtype, layer.vScale) : undefined;
  for (let i = 0; i < needBlocks; i++) {
    const pos = i * bs;
    const n = Math.min(bs, numTokens - pos);
    const slot = blockTable[i]! * bs;
    loadRun(layer, layer.dtype, layer.key, layer.kScale, kTables, key, pos, n, slot);
    loadRun(layer, valueDtype, layer.value, layer.vScale, vTables, value, pos, n, slot);
  }
  return { key, value };
}
