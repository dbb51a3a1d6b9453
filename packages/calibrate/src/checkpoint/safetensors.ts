import { open } from 'node:fs/promises';
import { join } from 'node:path';

import { openFileSource, readSafetensorsHeader, tensorToFloat32, type SafetensorsHeader, type SafetensorsTensorInfo } from '@kvq/engine';

import { CalibrateError, describeValue } from '../errors.js';

/** One safetensors file of a model folder with its parsed header. */
export interface ShardHeader {
  /** File name inside the folder. */
  readonly file: string;
  readonly header: SafetensorsHeader;
}

/**
 * The safetensors files of a Hugging Face folder: those named by `model.safetensors.index.json`'s `weight_map`,
 * else `model.safetensors`. Headers only (no tensor data is read).
 * @returns the shards and whether an index file exists (and its parsed JSON)
 * @throws CalibrateError `UNSUPPORTED_MODEL` (no safetensors), `MALFORMED_CHECKPOINT` (bad index); EngineError for
 *   unreadable headers
 */
export async function readShardHeaders(dir: string, readJson: (path: string) => Promise<unknown>): Promise<{ shards: ShardHeader[]; index: Record<string, unknown> | undefined }> {
  const indexPath = join(dir, 'model.safetensors.index.json');
  const index = (await readJson(indexPath)) as Record<string, unknown> | undefined;
  let files: string[];
  if (index !== undefined) {
    const map = index.weight_map;
    if (typeof map !== 'object' || map === null || Array.isArray(map)) {
      throw new CalibrateError('MALFORMED_CHECKPOINT', `${indexPath}: weight_map must be an object of tensor name → file`, { file: indexPath, field: 'weight_map' });
    }
    const set = new Set<string>();
    for (const [name, f] of Object.entries(map as Record<string, unknown>)) {
      if (typeof f !== 'string' || f.includes('/') || f.includes('\\') || f === '..' || f === '.') {
        throw new CalibrateError('MALFORMED_CHECKPOINT', `${indexPath}: weight_map[${JSON.stringify(name)}] = ${describeValue(f)} is not a file in the folder`, {
          file: indexPath,
          field: `weight_map.${name}`,
        });
      }
      set.add(f);
    }
    files = [...set].sort();
  } else {
    files = ['model.safetensors'];
  }
  const shards: ShardHeader[] = [];
  for (const file of files) {
    const path = join(dir, file);
    let source;
    try {
      source = await openFileSource(path);
    } catch (cause) {
      throw new CalibrateError('UNSUPPORTED_MODEL', `${path}: cannot open (${(cause as Error).message}); expected a Hugging Face folder with safetensors weights`, {
        file: path,
        cause,
      });
    }
    try {
      shards.push({ file, header: await readSafetensorsHeader(source) });
    } finally {
      await source.close();
    }
  }
  return { shards, index };
}

/** Read one tensor of a safetensors file as float32 values (F32, F16 or BF16 only). */
export async function readTensorAsFloat32(path: string, info: SafetensorsTensorInfo): Promise<Float32Array> {
  const dtype = info.dtype === 'F32' ? 'f32' : info.dtype === 'F16' ? 'f16' : info.dtype === 'BF16' ? 'bf16' : undefined;
  if (!dtype) {
    throw new CalibrateError('MALFORMED_CHECKPOINT', `${path}: scale tensor ${info.name} has dtype ${info.dtype}; expected F32, F16 or BF16`, { file: path, field: info.name });
  }
  const source = await openFileSource(path);
  try {
    const bytes = await source.read(info.begin, info.end - info.begin);
    const copy = bytes.slice();
    const shape = [...info.shape];
    const data = dtype === 'f32' ? new Float32Array(copy.buffer, 0, copy.byteLength / 4) : new Uint16Array(copy.buffer, 0, copy.byteLength / 2);
    return Float32Array.from(tensorToFloat32({ dtype, shape, data } as never));
  } finally {
    await source.close();
  }
}

/**
 * Write a copy of a safetensors file without some tensors: the other tensors' bytes are copied unchanged (same
 * dtype, shape and order), the header's `__metadata__` kept. Used when a source shard holds old KV-cache scales.
 * @returns the bytes of tensor data written
 */
export async function copySafetensorsWithout(srcPath: string, header: SafetensorsHeader, dstPath: string, drop: ReadonlySet<string>): Promise<number> {
  const kept = [...header.tensors.values()].filter((t) => !drop.has(t.name)).sort((a, b) => a.begin - b.begin);
  const json: Record<string, unknown> = {};
  if (Object.keys(header.metadata).length > 0) json.__metadata__ = { ...header.metadata };
  let offset = 0;
  for (const t of kept) {
    const size = t.end - t.begin;
    json[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + size] };
    offset += size;
  }
  const text = new TextEncoder().encode(JSON.stringify(json));
  const padded = Math.ceil(text.length / 8) * 8;
  const prefix = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(padded), true);
  prefix.set(text, 8);
  const src = await open(srcPath, 'r');
  let dst;
  try {
    dst = await open(dstPath, 'wx');
  } catch (cause) {
    await src.close();
    throw new CalibrateError('IO_ERROR', `${dstPath}: cannot create (${(cause as Error).message})`, { file: dstPath, cause });
  }
  try {
    await dst.write(prefix, 0, prefix.length, 0);
    let at = prefix.length;
    const chunk = Buffer.allocUnsafe(1 << 24);
    for (const t of kept) {
      for (let pos = t.begin; pos < t.end; ) {
        const n = Math.min(chunk.length, t.end - pos);
        const { bytesRead } = await src.read(chunk, 0, n, pos);
        if (bytesRead === 0) throw new CalibrateError('MALFORMED_CHECKPOINT', `${srcPath}: ends inside tensor ${t.name}`, { file: srcPath, field: t.name });
        await dst.write(chunk, 0, bytesRead, at);
        pos += bytesRead;
        at += bytesRead;
      }
    }
  } catch (cause) {
    if (cause instanceof CalibrateError) throw cause;
    throw new CalibrateError('IO_ERROR', `${dstPath}: write failed (${(cause as Error).message})`, { file: dstPath, cause });
  } finally {
    await src.close();
    await dst.close();
  }
  return offset;
}
