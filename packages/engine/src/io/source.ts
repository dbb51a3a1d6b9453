import { open, stat, type FileHandle } from 'node:fs/promises';
import { endianness } from 'node:os';

import { EngineError } from '../errors.js';
import type { TensorData, WeightDType } from '../tensor.js';

/** Largest single read request (the OS may cap one read near 2 GiB). */
const MAX_READ_CHUNK = 1 << 30;

/**
 * Random-access bytes of one model file: a file on disk (read on demand) or bytes already in memory.
 * Loaders read headers with {@link ByteSource.read} and tensor payloads with {@link readTensorData}, which
 * puts each tensor's bytes straight into its final typed array (one copy from disk, never two).
 */
export interface ByteSource {
  /** File name used in error messages. */
  readonly name: string;
  /** Total size in bytes. */
  readonly size: number;
  /** Bytes `[offset, offset + length)`; the result may be shorter only at end of file. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Fill `dest` with bytes from `offset`. @throws EngineError `TRUNCATED` past end of file. */
  readInto(offset: number, dest: Uint8Array): Promise<void>;
  /** A zero-copy view when the source is in memory, else `undefined`. */
  view(offset: number, length: number): Uint8Array | undefined;
  /** Release the file handle (no-op for memory sources). Idempotent. */
  close(): Promise<void>;
}

function assertLittleEndianHost(): void {
  if (endianness() !== 'LE') {
    throw new EngineError('UNSUPPORTED_FORMAT', 'model files are little-endian; this host is big-endian');
  }
}

function checkRange(source: ByteSource, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new EngineError('MALFORMED', `${source.name}: invalid byte range offset ${offset} length ${length}`, {
      file: source.name,
    });
  }
  if (offset + length > source.size) {
    throw new EngineError(
      'TRUNCATED',
      `${source.name}: needs bytes up to ${offset + length} but the file has ${source.size} bytes`,
      { file: source.name },
    );
  }
}

/** A {@link ByteSource} over bytes already in memory (zero-copy views where alignment allows). */
export class MemorySource implements ByteSource {
  readonly size: number;
  constructor(
    private readonly bytes: Uint8Array,
    readonly name = '<memory>',
  ) {
    assertLittleEndianHost();
    this.size = bytes.length;
  }
  read(offset: number, length: number): Promise<Uint8Array> {
    const end = Math.min(this.size, offset + length);
    return Promise.resolve(this.bytes.subarray(Math.min(offset, end), end));
  }
  readInto(offset: number, dest: Uint8Array): Promise<void> {
    checkRange(this, offset, dest.length);
    dest.set(this.bytes.subarray(offset, offset + dest.length));
    return Promise.resolve();
  }
  view(offset: number, length: number): Uint8Array {
    checkRange(this, offset, length);
    return this.bytes.subarray(offset, offset + length);
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** A {@link ByteSource} reading a file on disk through one file handle. Open with {@link openFileSource}. */
export class FileSource implements ByteSource {
  private handle: FileHandle | undefined;
  constructor(
    handle: FileHandle,
    readonly name: string,
    readonly size: number,
  ) {
    this.handle = handle;
  }
  private live(): FileHandle {
    if (!this.handle) throw new EngineError('IO_ERROR', `${this.name}: file already closed`, { file: this.name });
    return this.handle;
  }
  async read(offset: number, length: number): Promise<Uint8Array> {
    const end = Math.min(this.size, offset + length);
    const out = new Uint8Array(Math.max(0, end - offset));
    if (out.length > 0) await this.readInto(offset, out);
    return out;
  }
  async readInto(offset: number, dest: Uint8Array): Promise<void> {
    checkRange(this, offset, dest.length);
    const handle = this.live();
    let done = 0;
    while (done < dest.length) {
      const want = Math.min(MAX_READ_CHUNK, dest.length - done);
      let bytesRead: number;
      try {
        ({ bytesRead } = await handle.read(dest, done, want, offset + done));
      } catch (cause) {
        throw new EngineError('IO_ERROR', `${this.name}: read failed at byte ${offset + done}`, { file: this.name, cause });
      }
      if (bytesRead === 0) {
        throw new EngineError('TRUNCATED', `${this.name}: unexpected end of file at byte ${offset + done}`, {
          file: this.name,
        });
      }
      done += bytesRead;
    }
  }
  view(): undefined {
    return undefined;
  }
  async close(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    await handle?.close();
  }
}

/**
 * Open a file for random access.
 * @throws EngineError `FILE_NOT_FOUND` / `IO_ERROR`.
 */
export async function openFileSource(path: string): Promise<FileSource> {
  assertLittleEndianHost();
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code === 'ENOENT' ? 'FILE_NOT_FOUND' : 'IO_ERROR';
    throw new EngineError(code, `${path}: cannot open (${(cause as Error).message})`, { file: path, cause });
  }
  try {
    const { size } = await handle.stat();
    return new FileSource(handle, path, size);
  } catch (cause) {
    await handle.close();
    throw new EngineError('IO_ERROR', `${path}: cannot stat`, { file: path, cause });
  }
}

/** Whether a path exists and is a directory / a file (false on any error). */
export async function pathKind(path: string): Promise<'file' | 'directory' | undefined> {
  try {
    const s = await stat(path);
    return s.isDirectory() ? 'directory' : s.isFile() ? 'file' : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Read `count` elements of a little-endian tensor starting at byte `offset` of `source` into a typed array
 * (`Float32Array` for f32, `Uint16Array` of raw bits for f16/bf16). In-memory sources return a zero-copy view
 * when `offset` is aligned to the element size; otherwise (and for files) the bytes are read once into a new array.
 */
export async function readTensorData(
  source: ByteSource,
  offset: number,
  count: number,
  dtype: WeightDType,
): Promise<TensorData> {
  const elementBytes = dtype === 'f32' ? 4 : 2;
  const byteLength = count * elementBytes;
  const view = source.view(offset, byteLength);
  if (view && (view.byteOffset % elementBytes) === 0) {
    return dtype === 'f32'
      ? new Float32Array(view.buffer, view.byteOffset, count)
      : new Uint16Array(view.buffer, view.byteOffset, count);
  }
  const out = dtype === 'f32' ? new Float32Array(count) : new Uint16Array(count);
  await source.readInto(offset, new Uint8Array(out.buffer, out.byteOffset, byteLength));
  return out;
}
