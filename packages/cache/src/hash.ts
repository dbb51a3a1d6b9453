import { CacheError, describe } from './errors.js';
import { sha256 } from './sha256.js';

/** A block hash: lowercase hex of the hash function's digest (64 characters for SHA-256). */
export type BlockHash = string;

/** One extra hash key: an adapter (LoRA) id, a cache salt, a multimodal item id, ... */
export type ExtraKey = string | number;

/** Digest function used for block hashes: bytes in, digest bytes out (at least 16 bytes). Default: SHA-256. */
export type HashFunction = (data: Uint8Array) => Uint8Array;

/**
 * What a block hash covers besides the tokens: the KV storage format. Any object with these two fields
 * works (a `KvCacheStorage` is one), read at hashing time, so a scale change is seen immediately.
 */
export interface KvFormatSource {
  /** Storage dtype name, e.g. `'e4m3fn'` or `'bf16'`. */
  readonly dtype: string;
  /** Counter bumped whenever any K/V scale changes. */
  readonly scaleVersion: number;
  /**
   * Per-layer storage dtypes when layers differ (mixed precision, e.g. `kvCacheDtypeSkipLayers`); absent or all equal
   * to `dtype` for a uniform cache (whose hashes are then exactly those of a format without this field).
   */
  readonly layerDtypes?: readonly string[];
  /**
   * Per-layer V storage dtypes when some layer stores V in another dtype than K; absent or equal to `layerDtypes`
   * (or to `dtype`) otherwise, with the hashes of a format without this field.
   */
  readonly layerValueDtypes?: readonly string[];
}

/**
 * The dtype part of a format's identity: `dtype`, or for a mixed-precision cache `dtype[l0,l1,...]` with every layer's
 * dtype, so blocks of caches that differ in any layer never share a hash.
 */
export function kvFormatDtypeId(format: KvFormatSource): string {
  const layers = format.layerDtypes;
  const values = format.layerValueDtypes;
  const keysUniform = layers === undefined || layers.every((d) => d === format.dtype);
  const valuesLikeKeys = values === undefined || values.every((d, l) => d === (layers?.[l] ?? format.dtype));
  if (valuesLikeKeys) return keysUniform ? format.dtype : `${format.dtype}[${layers!.join(',')}]`;
  // Mixed K/V precision: every layer as `k/v`.
  return `${format.dtype}[${values.map((v, l) => `${layers?.[l] ?? format.dtype}/${v}`).join(',')}]`;
}

const HEX: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Lowercase hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += HEX[bytes[i]!]!;
  return s;
}

const encoder = new TextEncoder();

/** Growable little-endian byte writer for the canonical hash input. */
class ByteWriter {
  buf = new Uint8Array(256);
  len = 0;

  private ensure(extra: number): void {
    if (this.len + extra <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + extra) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  u8(v: number): void {
    this.ensure(1);
    this.buf[this.len++] = v;
  }

  u32(v: number): void {
    this.ensure(4);
    const b = this.buf;
    let i = this.len;
    b[i++] = v & 0xff;
    b[i++] = (v >>> 8) & 0xff;
    b[i++] = (v >>> 16) & 0xff;
    b[i++] = (v >>> 24) & 0xff;
    this.len = i;
  }

  f64(v: number): void {
    this.ensure(8);
    new DataView(this.buf.buffer, this.buf.byteOffset + this.len, 8).setFloat64(0, v, true);
    this.len += 8;
  }

  str(s: string): void {
    // ASCII fast path (hashes are hex, dtypes are ASCII); anything else goes through UTF-8.
    const n = s.length;
    this.ensure(4 + n);
    let ascii = true;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c > 0x7f) {
        ascii = false;
        break;
      }
      this.buf[this.len + 4 + i] = c;
    }
    if (ascii) {
      this.u32(n);
      this.len += n;
      return;
    }
    const bytes = encoder.encode(s);
    this.u32(bytes.length);
    this.ensure(bytes.length);
    this.buf.set(bytes, this.len);
    this.len += bytes.length;
  }

  bytes(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}

/** Validate a token id (integer in [0, 2^32)); throws `INVALID_ARGUMENT` naming `name`. */
export function checkTokenId(name: string, id: unknown): number {
  if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > 0xffffffff) {
    throw new CacheError('INVALID_ARGUMENT', `${name} must be an integer token id in [0, 2^32), got ${describe(id)}`);
  }
  return id;
}

/** Validate one extra key (a string or a finite number). */
export function checkExtraKey(name: string, key: unknown): ExtraKey {
  if (typeof key === 'string' || (typeof key === 'number' && Number.isFinite(key))) return key;
  throw new CacheError('INVALID_ARGUMENT', `${name} must be a string or a finite number, got ${describe(key)}`);
}

/**
 * Chained block hasher (vLLM `hash_block_tokens` semantics, plus the KV format).
 *
 * hash(block i) = H( "kvq-block/1" ‖ parent ‖ dtype ‖ scaleVersion ‖ token ids of the block ‖ extra keys ‖ salt ),
 * where parent is hash(block i−1), or the root hash for block 0. Every field is length-prefixed, token ids
 * as u32 little-endian, so no two different inputs serialize to the same bytes.
 *
 * NOTE: vLLM does not hash the KV dtype (its cache is per engine); we do, and the scale version, so a block
 * is never reused under a different format or different scales.
 * @see docs/spec/vllm-fp8-kv-cache.md §6.3
 */
export class BlockHasher {
  /** The root ("none") hash that block 0 chains from. */
  readonly rootHash: BlockHash;
  private readonly hashFn: HashFunction;
  private readonly writer = new ByteWriter();

  /**
   * @param opts.seed  Seed of the root hash. Omitted: 32 random bytes (as vLLM's `NONE_HASH` without
   *   `PYTHONHASHSEED`), so hashes differ between processes; set it for reproducible hashes (events, tests).
   * @param opts.hashFn  Digest function (default: our SHA-256).
   */
  constructor(opts: { seed?: string; hashFn?: HashFunction } = {}) {
    this.hashFn = opts.hashFn ?? sha256;
    let seedBytes: Uint8Array;
    if (opts.seed !== undefined) {
      if (typeof opts.seed !== 'string') {
        throw new CacheError('INVALID_ARGUMENT', `hashSeed must be a string, got ${describe(opts.seed)}`);
      }
      seedBytes = encoder.encode(`kvq-root/1:${opts.seed}`);
    } else {
      seedBytes = new Uint8Array(32);
      globalThis.crypto.getRandomValues(seedBytes);
    }
    this.rootHash = this.digest(seedBytes);
  }

  private digest(data: Uint8Array): BlockHash {
    const d = this.hashFn(data);
    if (!(d instanceof Uint8Array) || d.length < 16) {
      throw new CacheError('INVALID_ARGUMENT', `hashFn must return a Uint8Array of at least 16 bytes, got ${describe(d)}`);
    }
    return toHex(d);
  }

  /**
   * Hash of one full block.
   * @param parent  Hash of the previous block, or `undefined` for the first block.
   * @param tokenIds  All token ids of the sequence; the block is `tokenIds[start, end)`.
   * @param extraKeys  Keys mixed into this block (already validated), or `undefined`.
   * @param salt  Cache salt (vLLM mixes it into the first block only), or `undefined`.
   */
  hashBlock(
    parent: BlockHash | undefined,
    format: KvFormatSource,
    tokenIds: ArrayLike<number>,
    start: number,
    end: number,
    extraKeys: readonly ExtraKey[] | undefined,
    salt?: string,
  ): BlockHash {
    const w = this.writer;
    w.len = 0;
    w.str('kvq-block/1');
    w.str(parent ?? this.rootHash);
    w.str(kvFormatDtypeId(format));
    w.f64(format.scaleVersion);
    w.u32(end - start);
    for (let i = start; i < end; i++) w.u32(tokenIds[i]!);
    const keys = extraKeys ?? [];
    w.u32(keys.length);
    for (const k of keys) {
      if (typeof k === 'string') {
        w.u8(1);
        w.str(k);
      } else {
        w.u8(2);
        w.f64(k);
      }
    }
    if (salt === undefined) w.u8(0);
    else {
      w.u8(1);
      w.str(salt);
    }
    return this.digest(w.bytes());
  }
}
