import { CacheError, checkInt, describe } from './errors.js';
import type { BlockHash } from './hash.js';
import { sha256 } from './sha256.js';
import { kvFormatDtypeId, toHex } from './hash.js';
import type { KvCacheStorage } from './storage/storage.js';
import { kvPoolBlockLength, valuePoolShape } from './storage/storage.js';

/**
 * What a serialized KV block must match to be loaded into a cache: written into every block's header by
 * {@link encodeKvBlock} and compared field by field by {@link decodeKvBlock}.
 */
export interface KvBlockFormat {
  /** Storage dtype of the pools, e.g. `'e4m3fn'` or `'bf16'`. */
  readonly dtype: string;
  /**
   * The block's memory layout: pool layout name, layers, tokens per block, KV heads, head size and pool elements per
   * block (see {@link kvBlockFormatOf}). Two caches with equal layouts hold byte-compatible blocks.
   */
  readonly layout: string;
  /** The storage's `scaleVersion` (the counter also mixed into block hashes). */
  readonly scaleVersion: number;
  /** Hex digest of the K/V scale values of every layer: equal version counters with different scales still differ. */
  readonly scaleFingerprint: string;
  /** Identifies the model the KV was computed with (weights and configuration), chosen by the engine. */
  readonly modelFingerprint: string;
}

/** Version of the serialized block format written by {@link encodeKvBlock}. */
export const KV_BLOCK_FORMAT_VERSION = 1;

const MAGIC = [0x4b, 0x56, 0x51, 0x42]; // "KVQB"
const PREFIX_BYTES = 4 + 2 + 4; // magic, u16 version, u32 header length
const SUFFIX_HEADER_BYTES = 4 + 4; // u32 payload length, u32 CRC-32 of the payload

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (IEEE 802.3, as zlib's `crc32`) of `bytes`. */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Serialize one KV block: `"KVQB"`, u16 version, u32 header length, the UTF-8 JSON header
 * (`{ hash, dtype, layout, scaleVersion, scaleFingerprint, modelFingerprint }`), u32 payload length, u32 CRC-32 of
 * the payload, then the payload (little-endian integers).
 * @param hash  The block's chained hash (the key it is stored under), so a value planted under another key is caught.
 * @param payload  The block's bytes (see {@link readKvBlock}); not copied.
 */
export function encodeKvBlock(hash: BlockHash, format: KvBlockFormat, payload: Uint8Array): Uint8Array {
  const header = encoder.encode(
    JSON.stringify({
      hash,
      dtype: format.dtype,
      layout: format.layout,
      scaleVersion: format.scaleVersion,
      scaleFingerprint: format.scaleFingerprint,
      modelFingerprint: format.modelFingerprint,
    }),
  );
  const out = new Uint8Array(PREFIX_BYTES + header.length + SUFFIX_HEADER_BYTES + payload.length);
  const view = new DataView(out.buffer);
  out.set(MAGIC, 0);
  view.setUint16(4, KV_BLOCK_FORMAT_VERSION, true);
  view.setUint32(6, header.length, true);
  out.set(header, PREFIX_BYTES);
  let at = PREFIX_BYTES + header.length;
  view.setUint32(at, payload.length, true);
  view.setUint32(at + 4, crc32(payload), true);
  at += SUFFIX_HEADER_BYTES;
  out.set(payload, at);
  return out;
}

/**
 * Check a serialized block against the block and format expected, and return its payload (a view into `bytes`).
 * @throws CacheError `CORRUPT_BLOCK` (bad magic, truncated, unreadable header, length or CRC mismatch);
 *   `FOREIGN_BLOCK` (another format version, or a header field that differs from `hash` / `format`, named).
 */
export function decodeKvBlock(bytes: Uint8Array, hash: BlockHash, format: KvBlockFormat): Uint8Array {
  if (!(bytes instanceof Uint8Array)) throw new CacheError('CORRUPT_BLOCK', `a KV block must be bytes, got ${describe(bytes)}`);
  if (bytes.length < PREFIX_BYTES || MAGIC.some((m, i) => bytes[i] !== m)) {
    throw new CacheError('CORRUPT_BLOCK', `KV block ${short(hash)}: no "KVQB" magic (${bytes.length} bytes)`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint16(4, true);
  if (version !== KV_BLOCK_FORMAT_VERSION) {
    throw new CacheError('FOREIGN_BLOCK', `KV block ${short(hash)}: format version ${version}, this kvq reads ${KV_BLOCK_FORMAT_VERSION}`);
  }
  const headerLength = view.getUint32(6, true);
  const payloadAt = PREFIX_BYTES + headerLength + SUFFIX_HEADER_BYTES;
  if (payloadAt > bytes.length) throw new CacheError('CORRUPT_BLOCK', `KV block ${short(hash)}: truncated header (${bytes.length} bytes)`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(decoder.decode(bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + headerLength))) as Record<string, unknown>;
  } catch (cause) {
    throw new CacheError('CORRUPT_BLOCK', `KV block ${short(hash)}: unreadable header`, { cause });
  }
  if (header === null || typeof header !== 'object') throw new CacheError('CORRUPT_BLOCK', `KV block ${short(hash)}: header is not an object`);
  const payloadLength = view.getUint32(PREFIX_BYTES + headerLength, true);
  const crc = view.getUint32(PREFIX_BYTES + headerLength + 4, true);
  if (payloadAt + payloadLength !== bytes.length) {
    throw new CacheError('CORRUPT_BLOCK', `KV block ${short(hash)}: payload of ${bytes.length - payloadAt} bytes, header says ${payloadLength}`);
  }
  const payload = bytes.subarray(payloadAt);
  if (crc32(payload) !== crc) throw new CacheError('CORRUPT_BLOCK', `KV block ${short(hash)}: payload checksum mismatch`);
  const expected: Record<string, unknown> = { hash, ...format };
  for (const field of ['hash', 'modelFingerprint', 'dtype', 'layout', 'scaleVersion', 'scaleFingerprint']) {
    if (header[field] !== expected[field]) {
      throw new CacheError(
        'FOREIGN_BLOCK',
        `KV block ${short(hash)}: ${field} ${describe(header[field])} does not match this cache's ${describe(expected[field])}`,
      );
    }
  }
  return payload;
}

function short(hash: BlockHash): string {
  return typeof hash === 'string' ? hash.slice(0, 16) : describe(hash);
}

interface FingerprintMemo {
  version: number;
  fingerprint: string;
}
const scaleMemo = new WeakMap<KvCacheStorage, FingerprintMemo>();

/**
 * The {@link KvBlockFormat} of a storage's blocks now (dtype, layout, scale version and a digest of its K/V scales),
 * for KV computed by the model `modelFingerprint` identifies. The scale digest is memoized per `scaleVersion`.
 */
export function kvBlockFormatOf(storage: KvCacheStorage, modelFingerprint: string): KvBlockFormat {
  if (typeof modelFingerprint !== 'string' || modelFingerprint.length === 0) {
    throw new CacheError('INVALID_ARGUMENT', `modelFingerprint must be a non-empty string, got ${describe(modelFingerprint)}`);
  }
  let memo = scaleMemo.get(storage);
  if (memo === undefined || memo.version !== storage.scaleVersion) {
    const parts: Uint8Array[] = [];
    for (const l of storage.layers) {
      parts.push(new Uint8Array(l.kScale.buffer, l.kScale.byteOffset, l.kScale.byteLength).slice());
      parts.push(new Uint8Array(l.vScale.buffer, l.vScale.byteOffset, l.vScale.byteLength).slice());
    }
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    memo = { version: storage.scaleVersion, fingerprint: toHex(sha256(all)).slice(0, 32) };
    scaleMemo.set(storage, memo);
  }
  const elems = kvPoolBlockLength(storage.layers[0]!);
  const dtypeId = kvFormatDtypeId(storage);
  return {
    dtype: storage.dtype,
    // A mixed-precision cache adds its per-layer dtypes (and so its per-layer block sizes) to the layout.
    layout: `nhd;layers=${storage.numLayers};block=${storage.blockSize};kv_heads=${storage.numKvHeads};head=${storage.headSize};elems=${elems}${dtypeId === storage.dtype ? '' : `;dtypes=${dtypeId.slice(storage.dtype.length + 1, -1)}`}`,
    scaleVersion: storage.scaleVersion,
    scaleFingerprint: memo.fingerprint,
    modelFingerprint,
  };
}

/** Bytes of one block's payload: K and V pool bytes of every layer. */
export function kvBlockPayloadBytes(storage: KvCacheStorage): number {
  let n = 0;
  for (const l of storage.layers) n += kvPoolBlockLength(l) * l.key.BYTES_PER_ELEMENT + kvPoolBlockLength(valuePoolShape(l)) * l.value.BYTES_PER_ELEMENT;
  return n;
}

/** Views of block `blockId` in every layer's K and V pools (layer 0 K, layer 0 V, layer 1 K, ...). */
function blockViews(storage: KvCacheStorage, blockId: number): Uint8Array[] {
  checkInt('blockId', blockId, 1, storage.numBlocks - 1);
  const views: Uint8Array[] = [];
  for (const l of storage.layers) {
    for (const [pool, shape] of [[l.key, l], [l.value, valuePoolShape(l)]] as const) {
      const per = kvPoolBlockLength(shape) * pool.BYTES_PER_ELEMENT;
      views.push(new Uint8Array(pool.buffer, pool.byteOffset + blockId * per, per));
    }
  }
  return views;
}

/**
 * Copy block `blockId` out of every layer's K and V pools: layer 0 K, layer 0 V, layer 1 K, ... (the pools' own
 * element bytes, little-endian as the platform's typed arrays on every supported target).
 * @returns a new array of {@link kvBlockPayloadBytes} bytes
 * @throws CacheError `INVALID_ARGUMENT` for a block id outside `[1, numBlocks)` (block 0 is the null block)
 */
export function readKvBlock(storage: KvCacheStorage, blockId: number): Uint8Array {
  const views = blockViews(storage, blockId);
  const out = new Uint8Array(views.reduce((n, v) => n + v.length, 0));
  let at = 0;
  for (const v of views) {
    out.set(v, at);
    at += v.length;
  }
  return out;
}

/**
 * Write a payload read by {@link readKvBlock} (from a cache of the same {@link KvBlockFormat}) into block `blockId`.
 * @throws CacheError `INVALID_ARGUMENT` for a bad block id; `SHAPE_MISMATCH` when the payload length differs
 */
export function writeKvBlock(storage: KvCacheStorage, blockId: number, payload: Uint8Array): void {
  const views = blockViews(storage, blockId);
  const total = views.reduce((n, v) => n + v.length, 0);
  if (!(payload instanceof Uint8Array) || payload.length !== total) {
    throw new CacheError('SHAPE_MISMATCH', `a KV block payload of this cache has ${total} bytes, got ${describe(payload)}`);
  }
  let at = 0;
  for (const v of views) {
    v.set(payload.subarray(at, at + v.length));
    at += v.length;
  }
}
