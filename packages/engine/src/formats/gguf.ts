import { EngineError, describeValue } from '../errors.js';
import type { ByteSource } from '../io/source.js';
import type { GgmlWeightDtype, TensorDType, WeightDType } from '../tensor.js';

/** `GGUF` read as a little-endian uint32. */
export const GGUF_MAGIC = 0x46554747;
/** Default `general.alignment` of the tensor data section. */
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** GGUF metadata value type ids (GGUF spec, `gguf_metadata_value_type`). */
export const GgufValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
/** A GGUF metadata value type id. */
export type GgufValueType = (typeof GgufValueType)[keyof typeof GgufValueType];

/** A metadata value: 64-bit integers are `bigint`, other numbers `number`, arrays plain JS arrays. */
export type GgufValue = number | bigint | boolean | string | GgufValue[];

/**
 * ggml tensor type ids and their (block elements, block bytes) (ggml.h `enum ggml_type`, gguf-py
 * `GGML_QUANT_SIZES`; docs/spec/quantized-weights.md). F32/F16/BF16 and the eight types of {@link GGML_TYPE_OF_QUANT}
 * load as weights.
 */
const GGML_TYPES: Record<number, { name: string; blockElements: number; blockBytes: number }> = {
  0: { name: 'F32', blockElements: 1, blockBytes: 4 },
  1: { name: 'F16', blockElements: 1, blockBytes: 2 },
  2: { name: 'Q4_0', blockElements: 32, blockBytes: 18 },
  3: { name: 'Q4_1', blockElements: 32, blockBytes: 20 },
  6: { name: 'Q5_0', blockElements: 32, blockBytes: 22 },
  7: { name: 'Q5_1', blockElements: 32, blockBytes: 24 },
  8: { name: 'Q8_0', blockElements: 32, blockBytes: 34 },
  9: { name: 'Q8_1', blockElements: 32, blockBytes: 36 },
  10: { name: 'Q2_K', blockElements: 256, blockBytes: 84 },
  11: { name: 'Q3_K', blockElements: 256, blockBytes: 110 },
  12: { name: 'Q4_K', blockElements: 256, blockBytes: 144 },
  13: { name: 'Q5_K', blockElements: 256, blockBytes: 176 },
  14: { name: 'Q6_K', blockElements: 256, blockBytes: 210 },
  15: { name: 'Q8_K', blockElements: 256, blockBytes: 292 },
  24: { name: 'I8', blockElements: 1, blockBytes: 1 },
  25: { name: 'I16', blockElements: 1, blockBytes: 2 },
  26: { name: 'I32', blockElements: 1, blockBytes: 4 },
  27: { name: 'I64', blockElements: 1, blockBytes: 8 },
  28: { name: 'F64', blockElements: 1, blockBytes: 8 },
  30: { name: 'BF16', blockElements: 1, blockBytes: 2 },
};

/** ggml type id of each loadable weight dtype. */
export const GGML_TYPE_OF: Record<WeightDType, number> = { f32: 0, f16: 1, bf16: 30 };

/** ggml type id of each GGML block-quantized weight dtype (ggml.h `GGML_TYPE_Q8_0 = 8`, ...). */
export const GGML_TYPE_OF_QUANT: Readonly<Record<GgmlWeightDtype, number>> = {
  q4_0: 2,
  q4_1: 3,
  q5_0: 6,
  q5_1: 7,
  q8_0: 8,
  q4_k: 12,
  q5_k: 13,
  q6_k: 14,
};

const GGML_QUANT_OF_TYPE = new Map<number, GgmlWeightDtype>(Object.entries(GGML_TYPE_OF_QUANT).map(([k, v]) => [v, k as GgmlWeightDtype]));

/**
 * The engine tensor dtype of a ggml type id: `f32`/`f16`/`bf16` or a GGML block dtype (`q8_0`, `q4_k`, ...), or
 * `undefined` for ggml types the engine does not load (Q2_K, Q3_K, IQ*, I8..I64, F64, ...).
 */
export function tensorDTypeOfGgml(type: number): TensorDType | undefined {
  return weightDTypeOfGgml(type) ?? GGML_QUANT_OF_TYPE.get(type);
}

/** Human-readable ggml type name (`Q4_K`, `type 99` for unknown ids). */
export function ggmlTypeName(type: number): string {
  return GGML_TYPES[type]?.name ?? `type ${type}`;
}

/** The engine dtype of a ggml type id, or `undefined` when it is not F32/F16/BF16. */
export function weightDTypeOfGgml(type: number): WeightDType | undefined {
  return type === 0 ? 'f32' : type === 1 ? 'f16' : type === 30 ? 'bf16' : undefined;
}

/** One tensor of a GGUF file. */
export interface GgufTensorInfo {
  readonly name: string;
  /** ggml dimensions, innermost (contiguous) first: a `[out, in]` matrix is stored as `dims = [in, out]`. */
  readonly dims: readonly number[];
  /** ggml type id (0 F32, 1 F16, 30 BF16, ...). */
  readonly type: number;
  /** Absolute byte offset of the tensor data in the file. */
  readonly offset: number;
  /** Size in bytes, or `undefined` for ggml types this parser has no size table for. */
  readonly byteLength: number | undefined;
}

/** A parsed GGUF header: metadata and tensor directory. */
export interface GgufFile {
  readonly file: string;
  /** 2 or 3. */
  readonly version: number;
  readonly metadata: ReadonlyMap<string, GgufValue>;
  readonly tensors: ReadonlyMap<string, GgufTensorInfo>;
  readonly alignment: number;
  /** Absolute offset of the tensor data section. */
  readonly dataOffset: number;
}

/** Thrown internally when the prefix handed to the parser is shorter than the header. */
class NeedMoreBytes extends Error {}

class Cursor {
  pos = 0;
  private readonly view: DataView;
  private readonly decoder = new TextDecoder('utf-8');
  constructor(
    private readonly bytes: Uint8Array,
    private readonly fileSize: number,
    private readonly file: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  /** Ensure `n` more bytes exist in the file (TRUNCATED) and in the prefix (NeedMoreBytes). */
  need(n: number, what: string): void {
    if (this.pos + n > this.fileSize) {
      throw new EngineError('TRUNCATED', `${this.file}: file ends at byte ${this.fileSize} while reading ${what} at byte ${this.pos}`, {
        file: this.file,
      });
    }
    if (this.pos + n > this.bytes.length) throw new NeedMoreBytes();
  }
  remaining(): number {
    return this.fileSize - this.pos;
  }
  u8(what: string): number {
    this.need(1, what);
    return this.view.getUint8(this.pos++);
  }
  u32(what: string): number {
    this.need(4, what);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  u64(what: string): bigint {
    this.need(8, what);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }
  /**
   * A u64 that must not exceed `max`. Bounds derived from the bytes left in the file report `TRUNCATED` (the file
   * ends before what the header announces); other bounds report `MALFORMED`.
   */
  size(what: string, max: number, code: 'TRUNCATED' | 'MALFORMED' = 'TRUNCATED'): number {
    const v = this.u64(what);
    if (v > BigInt(max)) {
      const reason = code === 'TRUNCATED' ? `but only ${this.remaining()} bytes remain in the file` : `more than the limit ${max}`;
      throw new EngineError(code, `${this.file}: ${what} is ${v}, ${reason}`, { file: this.file, field: what });
    }
    return Number(v);
  }
  string(what: string): string {
    const n = this.size(`${what} length`, this.remaining() - 8);
    this.need(n, what);
    const s = this.decoder.decode(this.bytes.subarray(this.pos, this.pos + n));
    this.pos += n;
    return s;
  }
  value(type: number, what: string, depth = 0): GgufValue {
    const v = this.view;
    switch (type) {
      case GgufValueType.UINT8:
        return this.u8(what);
      case GgufValueType.INT8:
        this.need(1, what);
        return v.getInt8(this.pos++);
      case GgufValueType.UINT16:
        this.need(2, what);
        this.pos += 2;
        return v.getUint16(this.pos - 2, true);
      case GgufValueType.INT16:
        this.need(2, what);
        this.pos += 2;
        return v.getInt16(this.pos - 2, true);
      case GgufValueType.UINT32:
        return this.u32(what);
      case GgufValueType.INT32:
        this.need(4, what);
        this.pos += 4;
        return v.getInt32(this.pos - 4, true);
      case GgufValueType.FLOAT32:
        this.need(4, what);
        this.pos += 4;
        return v.getFloat32(this.pos - 4, true);
      case GgufValueType.BOOL: {
        const b = this.u8(what);
        if (b > 1) throw new EngineError('MALFORMED', `${this.file}: ${what} bool byte is ${b}`, { file: this.file, field: what });
        return b === 1;
      }
      case GgufValueType.STRING:
        return this.string(what);
      case GgufValueType.UINT64:
        return this.u64(what);
      case GgufValueType.INT64:
        this.need(8, what);
        this.pos += 8;
        return v.getBigInt64(this.pos - 8, true);
      case GgufValueType.FLOAT64:
        this.need(8, what);
        this.pos += 8;
        return v.getFloat64(this.pos - 8, true);
      case GgufValueType.ARRAY: {
        if (depth > 0) {
          throw new EngineError('UNSUPPORTED_FORMAT', `${this.file}: ${what} is a nested array`, { file: this.file, field: what });
        }
        const itemType = this.u32(`${what} item type`);
        const minBytes = itemType === GgufValueType.STRING ? 8 : (VALUE_BYTES[itemType] ?? 1);
        const count = this.size(`${what} count`, Math.floor(this.remaining() / minBytes));
        const out: GgufValue[] = new Array<GgufValue>(count);
        for (let i = 0; i < count; i++) out[i] = this.value(itemType, what, depth + 1);
        return out;
      }
      default:
        throw new EngineError('MALFORMED', `${this.file}: ${what} has unknown value type ${type}`, { file: this.file, field: what });
    }
  }
}

const VALUE_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

/**
 * Parse a GGUF header (metadata + tensor directory) from a prefix of the file.
 * @param prefix the first bytes of the file; when it is shorter than the header and `prefix.length < fileSize`,
 *   returns `undefined` so that the caller can retry with more bytes.
 * @throws EngineError `TRUNCATED` / `MALFORMED` / `UNSUPPORTED_FORMAT`.
 */
export function parseGguf(prefix: Uint8Array, fileSize: number, file: string): GgufFile | undefined {
  try {
    return parseGgufStrict(prefix, fileSize, file);
  } catch (e) {
    if (e instanceof NeedMoreBytes) return undefined;
    throw e;
  }
}

function parseGgufStrict(prefix: Uint8Array, fileSize: number, file: string): GgufFile {
  const c = new Cursor(prefix, fileSize, file);
  const magic = c.u32('magic');
  if (magic !== GGUF_MAGIC) {
    throw new EngineError('MALFORMED', `${file}: not a GGUF file (magic 0x${magic.toString(16).padStart(8, '0')})`, { file });
  }
  const version = c.u32('version');
  if (version === 1) {
    throw new EngineError('UNSUPPORTED_FORMAT', `${file}: GGUF version 1 is not supported (re-convert the model to GGUF v3)`, {
      file,
      field: 'version',
    });
  }
  if (version !== 2 && version !== 3) {
    const hint = (version & 0xffff) === 0 ? ' (a big-endian GGUF file?)' : '';
    throw new EngineError('UNSUPPORTED_FORMAT', `${file}: unsupported GGUF version ${version}${hint}`, { file, field: 'version' });
  }
  // Each tensor info takes at least 8 (name length) + 4 + 4 + 8 bytes, each key-value at least 8 + 4 + 1.
  const tensorCount = c.size('tensor_count', Math.floor(c.remaining() / 24));
  const kvCount = c.size('metadata_kv_count', Math.floor(c.remaining() / 13));
  const metadata = new Map<string, GgufValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = c.string(`metadata key #${i}`);
    const type = c.u32(`type of ${key}`);
    const value = c.value(type, key);
    if (metadata.has(key)) throw new EngineError('MALFORMED', `${file}: duplicate metadata key ${key}`, { file, field: key });
    metadata.set(key, value);
  }
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const alignValue = metadata.get('general.alignment');
  if (alignValue !== undefined) {
    if (typeof alignValue !== 'number' || alignValue <= 0 || !Number.isInteger(alignValue) || (alignValue & (alignValue - 1)) !== 0) {
      throw new EngineError('MALFORMED', `${file}: general.alignment ${describeValue(alignValue)} is not a power of two`, {
        file,
        field: 'general.alignment',
      });
    }
    alignment = alignValue;
  }
  const raw: Array<{ name: string; dims: number[]; type: number; relOffset: number }> = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const name = c.string(`tensor #${i} name`);
    const nDims = c.u32(`${name} n_dims`);
    if (nDims > 4) throw new EngineError('MALFORMED', `${file}: tensor ${name} has ${nDims} dimensions (max 4)`, { file, field: name });
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(c.size(`${name} dim ${d}`, Number.MAX_SAFE_INTEGER, 'MALFORMED'));
    const type = c.u32(`${name} type`);
    const relOffset = c.size(`${name} offset`, fileSize);
    if (names.has(name)) throw new EngineError('MALFORMED', `${file}: duplicate tensor name ${name}`, { file, field: name });
    names.add(name);
    raw.push({ name, dims, type, relOffset });
  }
  const dataOffset = Math.ceil(c.pos / alignment) * alignment;
  const tensors = new Map<string, GgufTensorInfo>();
  for (const t of raw) {
    if (t.relOffset % alignment !== 0) {
      throw new EngineError('MALFORMED', `${file}: tensor ${t.name} offset ${t.relOffset} is not a multiple of the alignment ${alignment}`, {
        file,
        field: t.name,
      });
    }
    let count = 1;
    for (const d of t.dims) count *= d;
    if (!Number.isSafeInteger(count)) {
      throw new EngineError('MALFORMED', `${file}: tensor ${t.name} dims [${t.dims.join(', ')}] are too large`, { file, field: t.name });
    }
    const traits = GGML_TYPES[t.type];
    let byteLength: number | undefined;
    if (traits) {
      if ((t.dims[0] ?? 1) % traits.blockElements !== 0) {
        throw new EngineError('MALFORMED', `${file}: tensor ${t.name} row of ${t.dims[0]} elements is not a whole number of ${traits.name} blocks`, {
          file,
          field: t.name,
        });
      }
      byteLength = (count / traits.blockElements) * traits.blockBytes;
    }
    const offset = dataOffset + t.relOffset;
    if (offset + (byteLength ?? 0) > fileSize) {
      throw new EngineError(
        'TRUNCATED',
        `${file}: tensor ${t.name} data ends at byte ${offset + (byteLength ?? 0)} but the file has ${fileSize} bytes`,
        { file, field: t.name },
      );
    }
    tensors.set(t.name, { name: t.name, dims: t.dims, type: t.type, offset, byteLength });
  }
  return { file, version, metadata, tensors, alignment, dataOffset };
}

/**
 * Read and parse the header of a GGUF file, reading more of it as needed (metadata of large vocabularies runs
 * to several MB).
 * @throws EngineError `TRUNCATED` / `MALFORMED` / `UNSUPPORTED_FORMAT` / IO errors.
 */
export async function readGgufHeader(source: ByteSource): Promise<GgufFile> {
  let want = Math.min(source.size, 1 << 20);
  for (;;) {
    const prefix = await source.read(0, want);
    const parsed = parseGguf(prefix, source.size, source.name);
    if (parsed) return parsed;
    if (want >= source.size) throw new Error('unreachable: parser asked for bytes past a complete file');
    want = Math.min(source.size, want * 4);
  }
}

/**
 * The shortest decimal that rounds to the same float32 as `x` when `x` is a float32 value (GGUF stores
 * `1e-5` as 9.99999974738e-6; this returns 1e-5), else `x` unchanged.
 */
function shortestFloat32(x: number): number {
  if (Math.fround(x) !== x) return x;
  for (let digits = 1; digits <= 9; digits++) {
    const v = Number(x.toPrecision(digits));
    if (Math.fround(v) === x) return v;
  }
  return x;
}

/** Typed accessors for GGUF metadata with errors naming the file and key. */
export class GgufMetadata {
  constructor(
    readonly file: string,
    readonly values: ReadonlyMap<string, GgufValue>,
  ) {}
  has(key: string): boolean {
    return this.values.has(key);
  }
  private bad(key: string, want: string, value: unknown): EngineError {
    return new EngineError('INVALID_CONFIG', `${this.file}: metadata ${key} should be ${want}, got ${describeValue(value)}`, {
      file: this.file,
      field: key,
    });
  }
  /** An integer value (any integer type), or `fallback` when absent; `required` when no fallback is given. */
  int(key: string, fallback?: number): number {
    const v = this.values.get(key);
    if (v === undefined) {
      if (fallback !== undefined) return fallback;
      throw new EngineError('INVALID_CONFIG', `${this.file}: required metadata ${key} is missing`, { file: this.file, field: key });
    }
    const n = typeof v === 'bigint' ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isSafeInteger(n)) throw this.bad(key, 'an integer', v);
    return n;
  }
  optionalInt(key: string): number | undefined {
    return this.values.has(key) ? this.int(key) : undefined;
  }
  /** A number (float32 values are returned as their shortest decimal, see {@link shortestFloat32}). */
  float(key: string, fallback?: number): number {
    const v = this.values.get(key);
    if (v === undefined) {
      if (fallback !== undefined) return fallback;
      throw new EngineError('INVALID_CONFIG', `${this.file}: required metadata ${key} is missing`, { file: this.file, field: key });
    }
    const n = typeof v === 'bigint' ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isFinite(n)) throw this.bad(key, 'a finite number', v);
    return shortestFloat32(n);
  }
  optionalFloat(key: string): number | undefined {
    return this.values.has(key) ? this.float(key) : undefined;
  }
  string(key: string): string | undefined {
    const v = this.values.get(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw this.bad(key, 'a string', v);
    return v;
  }
  bool(key: string): boolean | undefined {
    const v = this.values.get(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'boolean') throw this.bad(key, 'a bool', v);
    return v;
  }
  stringArray(key: string): string[] | undefined {
    const v = this.values.get(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw this.bad(key, 'an array of strings', v);
    return v as string[];
  }
  numberArray(key: string): number[] | undefined {
    const v = this.values.get(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'number')) throw this.bad(key, 'an array of numbers', v);
    return v as number[];
  }
}
