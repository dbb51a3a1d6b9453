import { open } from 'node:fs/promises';

import { EngineError, describeValue } from '../errors.js';
import type { ByteSource } from '../io/source.js';
import { dtypeBytes, isDenseDType, shapeSize, type Tensor, type WeightDType } from '../tensor.js';

/** Largest JSON header accepted (the safetensors reference implementation uses the same 100 MB cap). */
const SAFETENSORS_MAX_HEADER_BYTES = 100_000_000;

/** Bytes per element of the safetensors dtype names (https://github.com/huggingface/safetensors, `Dtype`). */
const SAFETENSORS_DTYPE_BYTES: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  F8_E8M0: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
};

const WEIGHT_DTYPES: Record<string, WeightDType> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

/** One entry of a safetensors header. `begin`/`end` are absolute byte offsets in the file. */
export interface SafetensorsTensorInfo {
  readonly name: string;
  /** The dtype string as written in the file (`F32`, `BF16`, `F8_E4M3`, ...). */
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly begin: number;
  readonly end: number;
}

/** A parsed safetensors header. */
export interface SafetensorsHeader {
  readonly file: string;
  readonly tensors: ReadonlyMap<string, SafetensorsTensorInfo>;
  /** The optional `__metadata__` string map. */
  readonly metadata: Readonly<Record<string, string>>;
  /** Absolute offset of the first data byte (8 + header length). */
  readonly dataOffset: number;
}

/** The engine dtype of a safetensors dtype string, or `undefined` when it is not F32/F16/BF16. */
function weightDTypeOfSafetensors(dtype: string): WeightDType | undefined {
  return WEIGHT_DTYPES[dtype];
}

function malformed(file: string, message: string, field?: string): EngineError {
  return new EngineError('MALFORMED', `${file}: ${message}`, { file, ...(field === undefined ? {} : { field }) });
}

/**
 * Parse a safetensors header from the first bytes of a file.
 * @param prefix at least the first 8 bytes; the whole header must be present or `TRUNCATED` is thrown.
 * @param fileSize total file size, used to check every tensor's data range.
 * @throws EngineError `TRUNCATED` / `MALFORMED`.
 */
export function parseSafetensorsHeader(prefix: Uint8Array, fileSize: number, file: string): SafetensorsHeader {
  if (prefix.length < 8 || fileSize < 8) {
    throw new EngineError('TRUNCATED', `${file}: ${fileSize} bytes is too short for a safetensors file (8-byte header length)`, {
      file,
    });
  }
  const headerLength = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (headerLength > BigInt(SAFETENSORS_MAX_HEADER_BYTES)) {
    throw malformed(file, `header length ${headerLength} exceeds the ${SAFETENSORS_MAX_HEADER_BYTES}-byte limit`);
  }
  const n = Number(headerLength);
  if (8 + n > fileSize) {
    throw new EngineError('TRUNCATED', `${file}: header of ${n} bytes does not fit in a ${fileSize}-byte file`, { file });
  }
  if (prefix.length < 8 + n) {
    throw new EngineError('TRUNCATED', `${file}: only ${prefix.length} of ${8 + n} header bytes available`, { file });
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(prefix.subarray(8, 8 + n)));
  } catch (cause) {
    throw new EngineError('MALFORMED', `${file}: header is not valid UTF-8 JSON (${(cause as Error).message})`, {
      file,
      cause,
    });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw malformed(file, `header must be a JSON object, got ${describeValue(json)}`);
  }
  const dataOffset = 8 + n;
  const dataLength = fileSize - dataOffset;
  const tensors = new Map<string, SafetensorsTensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
        throw malformed(file, `__metadata__ must be an object of strings, got ${describeValue(entry)}`, name);
      }
      metadata = {};
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') throw malformed(file, `__metadata__.${k} must be a string, got ${describeValue(v)}`, name);
        metadata[k] = v;
      }
      continue;
    }
    if (typeof entry !== 'object' || entry === null) throw malformed(file, `tensor entry is ${describeValue(entry)}`, name);
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (typeof dtype !== 'string') throw malformed(file, `tensor ${name}: dtype ${describeValue(dtype)} is not a string`, name);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      throw malformed(file, `tensor ${name}: shape ${describeValue(shape)} is not a list of non-negative integers`, name);
    }
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((d) => Number.isSafeInteger(d) && (d as number) >= 0) ||
      (offsets[0] as number) > (offsets[1] as number)
    ) {
      throw malformed(file, `tensor ${name}: data_offsets ${describeValue(offsets)} is not [begin, end] with begin <= end`, name);
    }
    const [begin, end] = offsets as [number, number];
    if (end > dataLength) {
      throw new EngineError(
        'TRUNCATED',
        `${file}: tensor ${name} data ends at byte ${end} of the data section but only ${dataLength} bytes follow the header`,
        { file, field: name },
      );
    }
    const elementBytes = SAFETENSORS_DTYPE_BYTES[dtype];
    const dims = shape as number[];
    if (elementBytes !== undefined) {
      let count = 1;
      for (const d of dims) {
        count *= d;
        if (!Number.isSafeInteger(count)) throw malformed(file, `tensor ${name}: shape ${describeValue(shape)} is too large`, name);
      }
      if (count * elementBytes !== end - begin) {
        throw malformed(
          file,
          `tensor ${name}: ${dtype} shape [${dims.join(', ')}] needs ${count * elementBytes} bytes but data_offsets span ${end - begin}`,
          name,
        );
      }
    }
    tensors.set(name, { name, dtype, shape: dims, begin: dataOffset + begin, end: dataOffset + end });
  }
  // As in the reference implementation, the data ranges must tile the data section exactly: no gap, no overlap,
  // nothing after the last tensor.
  const sorted = [...tensors.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expected = dataOffset;
  for (const info of sorted) {
    if (info.begin !== expected) {
      throw malformed(
        file,
        `tensor ${info.name} data starts at byte ${info.begin - dataOffset} of the data section, expected ${expected - dataOffset} (gap or overlap)`,
        info.name,
      );
    }
    expected = info.end;
  }
  if (expected !== fileSize) {
    throw malformed(file, `${fileSize - expected} bytes after the last tensor are not described by the header`);
  }
  return { file, tensors, metadata, dataOffset };
}

/** Read and parse the header of a safetensors file. @throws EngineError `TRUNCATED` / `MALFORMED` / IO errors. */
export async function readSafetensorsHeader(source: ByteSource): Promise<SafetensorsHeader> {
  const lengthBytes = await source.read(0, 8);
  if (lengthBytes.length < 8) return parseSafetensorsHeader(lengthBytes, source.size, source.name);
  const n = new DataView(lengthBytes.buffer, lengthBytes.byteOffset, 8).getBigUint64(0, true);
  const want = n > BigInt(SAFETENSORS_MAX_HEADER_BYTES) ? 8 : 8 + Number(n);
  return parseSafetensorsHeader(await source.read(0, Math.min(want, source.size)), source.size, source.name);
}

/**
 * The engine dtype of a header entry meant to hold a weight.
 * @throws EngineError `UNSUPPORTED_DTYPE` naming the file, tensor and dtype.
 */
export function requireWeightDType(header: SafetensorsHeader, info: SafetensorsTensorInfo): WeightDType {
  const dtype = weightDTypeOfSafetensors(info.dtype);
  if (!dtype) {
    throw new EngineError(
      'UNSUPPORTED_DTYPE',
      `${header.file}: tensor ${info.name} has dtype ${info.dtype}; only F32, F16 and BF16 weights are supported`,
      { file: header.file, field: info.name },
    );
  }
  if (SAFETENSORS_DTYPE_BYTES[info.dtype] !== dtypeBytes(dtype)) throw new Error('unreachable: dtype table mismatch');
  return dtype;
}

const SAFETENSORS_NAME: Record<WeightDType, string> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

/**
 * A tensor to write with an explicit safetensors dtype name (`F8_E4M3`, `I32`, `I8`, `I64`, `BF16`, ...): the
 * quantized checkpoints `kvq quantize` writes. `data` holds exactly `product(shape) * bytes(dtype)` bytes, little-endian.
 */
export interface SafetensorsRawTensor {
  /** A safetensors dtype name (see the safetensors `Dtype` enum). */
  readonly safetensorsDtype: string;
  readonly shape: readonly number[];
  readonly data: ArrayBufferView;
}

/** What the writers accept: an engine {@link Tensor} of a dense dtype, or a {@link SafetensorsRawTensor}. */
export type SafetensorsWritable = Tensor | SafetensorsRawTensor;

function rawOf(name: string, t: SafetensorsWritable): SafetensorsRawTensor {
  if ('safetensorsDtype' in t) {
    if (SAFETENSORS_DTYPE_BYTES[t.safetensorsDtype] === undefined) {
      throw new EngineError('INVALID_ARGUMENT', `tensor ${name}: unknown safetensors dtype ${describeValue(t.safetensorsDtype)}`, { field: name });
    }
    return t;
  }
  if (!isDenseDType(t.dtype)) {
    throw new EngineError(
      'UNSUPPORTED_DTYPE',
      `tensor ${name}: a ${t.dtype} tensor has no single safetensors form (write its compressed-tensors parts as raw tensors)`,
      { field: name },
    );
  }
  return { safetensorsDtype: SAFETENSORS_NAME[t.dtype], shape: t.shape, data: t.data };
}

/** Header bytes (length prefix + padded JSON) and data order for a set of tensors. */
function layoutSafetensors(
  tensors: Iterable<readonly [string, SafetensorsWritable]>,
  metadata: Readonly<Record<string, string>> | undefined,
): { prefix: Uint8Array; ordered: SafetensorsRawTensor[]; dataBytes: number } {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = { ...metadata };
  // Contiguous data (the format allows no gaps); wider elements first so that every tensor stays aligned.
  const width = (t: SafetensorsRawTensor): number => SAFETENSORS_DTYPE_BYTES[t.safetensorsDtype]!;
  const entries = [...tensors].map(([name, t]) => [name, rawOf(name, t)] as const).sort((a, b) => width(b[1]) - width(a[1]));
  let offset = 0;
  const ordered: SafetensorsRawTensor[] = [];
  for (const [name, tensor] of entries) {
    const bytes = shapeSize(tensor.shape) * width(tensor);
    if (bytes !== tensor.data.byteLength) {
      throw new EngineError('INVALID_ARGUMENT', `tensor ${name}: shape [${tensor.shape.join(', ')}] of ${tensor.safetensorsDtype} needs ${bytes} bytes, got ${tensor.data.byteLength}`, {
        field: name,
      });
    }
    header[name] = { dtype: tensor.safetensorsDtype, shape: [...tensor.shape], data_offsets: [offset, offset + bytes] };
    ordered.push(tensor);
    offset += bytes;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const prefix = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(padded), true);
  prefix.set(json, 8);
  return { prefix, ordered, dataBytes: offset };
}

function tensorBytes(t: SafetensorsRawTensor): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

/**
 * Serialize tensors to safetensors bytes in memory (same layout as {@link writeSafetensors}). For small models
 * and tests; large models should be written with {@link writeSafetensors}, which streams.
 */
export function encodeSafetensors(tensors: Iterable<readonly [string, SafetensorsWritable]>, metadata?: Readonly<Record<string, string>>): Uint8Array {
  const { prefix, ordered, dataBytes } = layoutSafetensors(tensors, metadata);
  const out = new Uint8Array(prefix.length + dataBytes);
  out.set(prefix);
  let at = prefix.length;
  for (const t of ordered) {
    out.set(tensorBytes(t), at);
    at += t.data.byteLength;
  }
  return out;
}

/**
 * Write tensors as one safetensors file: header JSON padded with spaces to a multiple of 8 bytes, then the data
 * ranges back to back (wider dtypes first: 8-, 4-, 2-, then 1-byte ones, so every tensor is aligned to its element size).
 * Tensor bytes are written straight from their arrays (no whole-file buffer).
 * @param tensors name → tensor (stable order within each element size).
 * @param metadata optional `__metadata__` strings.
 * @throws EngineError `IO_ERROR`; `INVALID_ARGUMENT` when a tensor's shape and data disagree.
 */
export async function writeSafetensors(
  path: string,
  tensors: Iterable<readonly [string, SafetensorsWritable]>,
  metadata?: Readonly<Record<string, string>>,
): Promise<void> {
  const { prefix, ordered } = layoutSafetensors(tensors, metadata);
  let handle;
  try {
    handle = await open(path, 'w');
  } catch (cause) {
    throw new EngineError('IO_ERROR', `${path}: cannot create (${(cause as Error).message})`, { file: path, cause });
  }
  try {
    let at = 0;
    for (const bytes of [prefix, ...ordered.map(tensorBytes)]) {
      let done = 0;
      while (done < bytes.length) {
        const { bytesWritten } = await handle.write(bytes, done, Math.min(bytes.length - done, 1 << 30), at + done);
        done += bytesWritten;
      }
      at += bytes.length;
    }
  } catch (cause) {
    throw new EngineError('IO_ERROR', `${path}: write failed (${(cause as Error).message})`, { file: path, cause });
  } finally {
    await handle.close();
  }
}
