/**
 * GGUF v3 writer (dense and GGML block-quantized tensors), the inverse of {@link parseGguf}: a streaming file writer for large models
 * ({@link writeGguf}), an in-memory encoder for tests and tools ({@link encodeGguf}), and the header encoder both use.
 * @see docs/spec (ggml's GGUF specification: header, metadata value types, tensor directory, alignment)
 * @module
 */
import { open, rename, rm } from 'node:fs/promises';

import { EngineError, describeValue } from '../errors.js';
import { GGML_BLOCKS, type GgmlWeightDtype } from '../tensor.js';
import { GGML_TYPE_OF, GGML_TYPE_OF_QUANT, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GgufValueType } from './gguf.js';

/** GGUF metadata value type ids (GGUF v3 spec, `gguf_metadata_value_type`): the reader's table. */
export const GgufType = GgufValueType;
/** A GGUF metadata value type id. */
export type GgufType = GgufValueType;

/**
 * The tensor types the writer stores by name, with their ggml type ids (the reader's): the dense F32/F16/BF16 and
 * the GGML block types kvq loads (data = the raw blocks, e.g. from `quantizeMatrix`).
 */
export const GGML_TENSOR_TYPES = {
  F32: GGML_TYPE_OF.f32,
  F16: GGML_TYPE_OF.f16,
  BF16: GGML_TYPE_OF.bf16,
  Q8_0: GGML_TYPE_OF_QUANT.q8_0,
  Q4_0: GGML_TYPE_OF_QUANT.q4_0,
  Q4_1: GGML_TYPE_OF_QUANT.q4_1,
  Q5_0: GGML_TYPE_OF_QUANT.q5_0,
  Q5_1: GGML_TYPE_OF_QUANT.q5_1,
  Q4_K: GGML_TYPE_OF_QUANT.q4_k,
  Q5_K: GGML_TYPE_OF_QUANT.q5_k,
  Q6_K: GGML_TYPE_OF_QUANT.q6_k,
} as const;
/** `F32`, `F16`, `BF16` or a GGML block type name (`Q8_0`, `Q4_K`, ...). */
export type GgmlTensorType = keyof typeof GGML_TENSOR_TYPES;
/** The dense {@link GgmlTensorType}s. */
export type GgmlDenseTensorType = 'F32' | 'F16' | 'BF16';

/** Bytes per element of each dense {@link GgmlTensorType}. */
export const GGML_TYPE_BYTES: Record<GgmlDenseTensorType, number> = { F32: 4, F16: 2, BF16: 2 };

/** The engine dtype of a block {@link GgmlTensorType} (`Q4_K` → `q4_k`), or undefined for a dense one. */
export function ggmlBlockDtypeOf(type: GgmlTensorType): GgmlWeightDtype | undefined {
  return type in GGML_TYPE_BYTES ? undefined : (type.toLowerCase() as GgmlWeightDtype);
}

/** One metadata entry: a scalar or string, or an array of one item type. */
export type GgufEntry =
  | { readonly key: string; readonly type: Exclude<GgufType, typeof GgufType.ARRAY>; readonly value: number | bigint | boolean | string }
  | { readonly key: string; readonly type: typeof GgufType.ARRAY; readonly itemType: Exclude<GgufType, typeof GgufType.ARRAY>; readonly value: readonly (number | bigint | boolean | string)[] };

/**
 * Tensor data: Float32Array for F32, Uint16Array of IEEE half / bfloat16 bit patterns for F16 / BF16, Uint8Array of
 * raw blocks for the block types.
 */
export type GgufTensorData = Float32Array | Uint16Array | Uint8Array;

/**
 * One tensor to write. `dims` are ggml dimensions, innermost (contiguous) first: a Hugging Face `[out, in]` matrix
 * is `dims = [in, out]`. `data` is called once, when the tensor's turn comes (so large models are generated and
 * written one tensor at a time); it must return `product(dims)` elements of `type`.
 */
export interface GgufTensorSpec {
  readonly name: string;
  readonly dims: readonly number[];
  readonly type: GgmlTensorType;
  readonly data: () => GgufTensorData | Promise<GgufTensorData>;
}

/**
 * One tensor of an in-memory file ({@link encodeGguf}). `type` may also be any raw ggml type id (a quantized type,
 * say, to test a reader's refusal): then `data` is written as raw bytes, unchecked.
 */
export interface GgufTensor {
  readonly name: string;
  /** ggml dimensions, innermost first (see {@link GgufTensorSpec}). */
  readonly dims: readonly number[];
  readonly type: GgmlTensorType | number;
  readonly data: GgufTensorData | Uint8Array;
}

/** What the header encoder needs of a tensor: a raw ggml type id needs its `byteLength`. */
export type GgufTensorHeader = Pick<GgufTensorSpec, 'name' | 'dims'> & ({ readonly type: GgmlTensorType } | { readonly type: number; readonly byteLength: number });

const writeError = (message: string, field: string): EngineError => new EngineError('INVALID_ARGUMENT', `GGUF writer: ${message}`, { field });

/** Growable little-endian byte buffer for the header. */
class HeaderWriter {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  length = 0;
  private readonly encoder = new TextEncoder();

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(v: number): void {
    this.reserve(1);
    this.view.setUint8(this.length, v);
    this.length += 1;
  }
  u32(v: number): void {
    this.reserve(4);
    this.view.setUint32(this.length, v, true);
    this.length += 4;
  }
  u64(v: number | bigint): void {
    this.reserve(8);
    this.view.setBigUint64(this.length, BigInt(v), true);
    this.length += 8;
  }
  str(s: string): void {
    const b = this.encoder.encode(s);
    this.u64(b.length);
    this.reserve(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  /** Writes one value of a scalar or string type; `where` names it in errors. */
  scalar(type: GgufType, v: unknown, where: string): void {
    const bad = (want: string): EngineError => writeError(`metadata ${where}: expected ${want}, got ${describeValue(v)}`, where);
    const int = (lo: number, hi: number): number => {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) throw bad(`an integer in [${lo}, ${hi}]`);
      return v;
    };
    this.reserve(8);
    const at = this.length;
    switch (type) {
      case GgufType.UINT8:
        this.view.setUint8(at, int(0, 0xff));
        this.length += 1;
        return;
      case GgufType.INT8:
        this.view.setInt8(at, int(-0x80, 0x7f));
        this.length += 1;
        return;
      case GgufType.UINT16:
        this.view.setUint16(at, int(0, 0xffff), true);
        this.length += 2;
        return;
      case GgufType.INT16:
        this.view.setInt16(at, int(-0x8000, 0x7fff), true);
        this.length += 2;
        return;
      case GgufType.UINT32:
        this.view.setUint32(at, int(0, 0xffffffff), true);
        this.length += 4;
        return;
      case GgufType.INT32:
        this.view.setInt32(at, int(-0x80000000, 0x7fffffff), true);
        this.length += 4;
        return;
      case GgufType.FLOAT32:
        if (typeof v !== 'number') throw bad('a number');
        this.view.setFloat32(at, v, true);
        this.length += 4;
        return;
      case GgufType.FLOAT64:
        if (typeof v !== 'number') throw bad('a number');
        this.view.setFloat64(at, v, true);
        this.length += 8;
        return;
      case GgufType.BOOL:
        if (typeof v !== 'boolean') throw bad('a boolean');
        this.view.setUint8(at, v ? 1 : 0);
        this.length += 1;
        return;
      case GgufType.UINT64:
        if (!((typeof v === 'bigint' && v >= 0n) || (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0))) throw bad('a non-negative integer');
        this.view.setBigUint64(at, BigInt(v), true);
        this.length += 8;
        return;
      case GgufType.INT64:
        if (!(typeof v === 'bigint' || (typeof v === 'number' && Number.isSafeInteger(v)))) throw bad('an integer');
        this.view.setBigInt64(at, BigInt(v), true);
        this.length += 8;
        return;
      case GgufType.STRING:
        if (typeof v !== 'string') throw bad('a string');
        this.str(v);
        return;
      default:
        throw bad(`a value of a known scalar type (type id ${describeValue(type)})`);
    }
  }
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}

/** Element count of `t` (checked dims) and its byte length. */
function tensorBytes(t: GgufTensorHeader): number {
  if (!Array.isArray(t.dims) || t.dims.length < 1 || t.dims.length > 4) {
    throw writeError(`tensor ${t.name}: ${describeValue(t.dims)} dimensions (1 to 4 allowed)`, t.name);
  }
  let count = 1;
  for (const d of t.dims) {
    if (!Number.isSafeInteger(d) || d < 1) throw writeError(`tensor ${t.name}: dimension ${describeValue(d)} is not a positive integer`, t.name);
    count *= d;
  }
  if (typeof t.type === 'number') {
    if (!Number.isInteger(t.type) || t.type < 0 || !('byteLength' in t) || !Number.isSafeInteger(t.byteLength) || t.byteLength < 0) {
      throw writeError(`tensor ${t.name}: raw ggml type ${describeValue(t.type)} needs an integer type id and a byte length`, t.name);
    }
    return t.byteLength;
  }
  if (!(t.type in GGML_TENSOR_TYPES)) throw writeError(`tensor ${t.name}: type ${describeValue(t.type)} is not one of ${Object.keys(GGML_TENSOR_TYPES).join(', ')}`, t.name);
  const block = ggmlBlockDtypeOf(t.type);
  if (block === undefined) return count * GGML_TYPE_BYTES[t.type as GgmlDenseTensorType];
  const { elements, bytes } = GGML_BLOCKS[block];
  if (t.dims[0]! % elements !== 0) throw writeError(`tensor ${t.name}: rows of ${t.dims[0]} elements are not a whole number of ${t.type} blocks (${elements})`, t.name);
  return (count / elements) * bytes;
}

/**
 * The header of a GGUF v3 file (magic, counts, metadata, tensor directory), padded to `alignment`, and the byte
 * offset of each tensor inside the data section that follows it.
 * @throws EngineError `INVALID_ARGUMENT` (field: the key or tensor name) for duplicate keys/names, values that do
 *   not fit their type, bad dims or alignment.
 */
export function encodeGgufHeader(
  metadata: readonly GgufEntry[],
  tensors: readonly GgufTensorHeader[],
  alignment = GGUF_DEFAULT_ALIGNMENT,
): { header: Uint8Array; offsets: number[]; byteLengths: number[] } {
  if (!Number.isInteger(alignment) || alignment < 1 || (alignment & (alignment - 1)) !== 0) {
    throw writeError(`alignment must be a power of two, got ${describeValue(alignment)}`, 'alignment');
  }
  const keys = new Set<string>();
  const w = new HeaderWriter();
  const entries = alignment === GGUF_DEFAULT_ALIGNMENT || metadata.some((m) => m.key === 'general.alignment')
    ? metadata
    : [...metadata, { key: 'general.alignment', type: GgufType.UINT32, value: alignment } as const];
  w.u32(GGUF_MAGIC);
  w.u32(3);
  w.u64(tensors.length);
  w.u64(entries.length);
  for (const e of entries) {
    if (keys.has(e.key)) throw writeError(`duplicate metadata key ${e.key}`, e.key);
    keys.add(e.key);
    w.str(e.key);
    w.u32(e.type);
    if (e.type === GgufType.ARRAY) {
      if (!Array.isArray(e.value)) throw writeError(`metadata ${e.key}: expected an array, got ${describeValue(e.value)}`, e.key);
      w.u32(e.itemType);
      w.u64(e.value.length);
      for (let i = 0; i < e.value.length; i++) w.scalar(e.itemType, e.value[i], `${e.key}[${i}]`);
    } else {
      w.scalar(e.type, e.value, e.key);
    }
  }
  const names = new Set<string>();
  const offsets: number[] = [];
  const byteLengths: number[] = [];
  let offset = 0;
  for (const t of tensors) {
    if (names.has(t.name)) throw writeError(`duplicate tensor name ${t.name}`, t.name);
    names.add(t.name);
    w.str(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    const bytes = tensorBytes(t);
    w.u32(typeof t.type === 'number' ? t.type : GGML_TENSOR_TYPES[t.type]);
    offset = Math.ceil(offset / alignment) * alignment;
    w.u64(offset);
    offsets.push(offset);
    byteLengths.push(bytes);
    offset += bytes;
  }
  const padded = Math.ceil(w.length / alignment) * alignment;
  const header = new Uint8Array(padded);
  header.set(w.bytes());
  return { header, offsets, byteLengths };
}

/**
 * Write a GGUF v3 file, one tensor at a time (peak memory: the header plus the largest tensor). Written to
 * `path + '.partial'` and renamed when complete, so a crash never leaves a truncated file under `path`.
 * @returns the file size in bytes
 * @throws EngineError `INVALID_ARGUMENT` (bad metadata/tensor, data of the wrong length or array type), `IO_ERROR`
 */
export async function writeGguf(path: string, metadata: readonly GgufEntry[], tensors: readonly GgufTensorSpec[], alignment = GGUF_DEFAULT_ALIGNMENT): Promise<number> {
  const { header, offsets, byteLengths } = encodeGgufHeader(metadata, tensors, alignment);
  const partial = `${path}.partial`;
  let handle;
  try {
    handle = await open(partial, 'w');
  } catch (cause) {
    throw new EngineError('IO_ERROR', `cannot create ${partial}: ${(cause as Error).message}`, { file: partial, cause });
  }
  let at = 0;
  try {
    await handle.write(header, 0, header.length, 0);
    at = header.length;
    const base = header.length;
    for (let i = 0; i < tensors.length; i++) {
      const t = tensors[i]!;
      const data = await t.data();
      checkData(t, data, byteLengths[i]!);
      const start = base + offsets[i]!;
      if (start > at) await handle.write(new Uint8Array(start - at), 0, start - at, at);
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      // Big tensors in chunks: one write call is limited to 2 GiB.
      for (let o = 0; o < bytes.length; o += 1 << 28) {
        const chunk = bytes.subarray(o, Math.min(bytes.length, o + (1 << 28)));
        await handle.write(chunk, 0, chunk.length, start + o);
      }
      at = start + bytes.length;
    }
    await handle.close();
    handle = undefined;
    await rename(partial, path);
  } catch (cause) {
    await handle?.close().catch(() => undefined);
    await rm(partial, { force: true }).catch(() => undefined);
    if (cause instanceof EngineError) throw cause;
    throw new EngineError('IO_ERROR', `writing ${path} failed: ${(cause as Error).message}`, { file: path, cause });
  }
  return at;
}

/** Checks a named-type tensor's data: array type and element count. */
function checkData(t: { readonly name: string; readonly dims: readonly number[]; readonly type: GgmlTensorType }, data: unknown, byteLength: number): void {
  const block = ggmlBlockDtypeOf(t.type);
  const wantArray = t.type === 'F32' ? Float32Array : block === undefined ? Uint16Array : Uint8Array;
  if (!(data instanceof wantArray)) {
    throw writeError(`tensor ${t.name}: ${t.type} data must be a ${wantArray.name}, got ${(data as object | null)?.constructor?.name ?? describeValue(data)}`, t.name);
  }
  if (data.byteLength !== byteLength) {
    const unit = block === undefined ? GGML_TYPE_BYTES[t.type as GgmlDenseTensorType] : 1;
    throw writeError(`tensor ${t.name}: ${data.byteLength / unit} ${unit === 1 ? 'bytes' : 'elements'} given, dims [${t.dims.join(', ')}] need ${byteLength / unit}`, t.name);
  }
}

/**
 * A whole GGUF v3 file in memory (for tests and small tools; use {@link writeGguf} for models). Tensors of a named
 * type are checked like {@link writeGguf}'s; a raw ggml type id writes `data`'s bytes as they are.
 * @throws EngineError `INVALID_ARGUMENT` as {@link encodeGgufHeader} and {@link writeGguf}
 */
export function encodeGguf(metadata: readonly GgufEntry[], tensors: readonly GgufTensor[], alignment = GGUF_DEFAULT_ALIGNMENT): Uint8Array {
  const headers: GgufTensorHeader[] = tensors.map((t) => (typeof t.type === 'number' ? { name: t.name, dims: t.dims, type: t.type, byteLength: t.data.byteLength } : { name: t.name, dims: t.dims, type: t.type }));
  const { header, offsets, byteLengths } = encodeGgufHeader(metadata, headers, alignment);
  let size = header.length;
  tensors.forEach((t, i) => {
    if (typeof t.type !== 'number') checkData({ name: t.name, dims: t.dims, type: t.type }, t.data, byteLengths[i]!);
    size = Math.max(size, header.length + offsets[i]! + byteLengths[i]!);
  });
  const out = new Uint8Array(size);
  out.set(header);
  tensors.forEach((t, i) => out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), header.length + offsets[i]!));
  return out;
}
