// Test support only (not exported from the package): a minimal GGUF v3 writer used to build GGUF files from the
// shared models (byte-level tokenizer, BF16/F16 tensors, permuted Q/K) and to exercise the GGUF loader.
import { GGML_TYPE_OF, GGUF_MAGIC, GgufValueType } from '../formats/gguf.js';
import type { Tensor } from '../tensor.js';

/** One metadata entry with its GGUF type (`itemType` for arrays). */
export interface GgufKv {
  key: string;
  type: GgufValueType;
  value: unknown;
  itemType?: GgufValueType;
}

/** One tensor; `shape` in HF order (`[out, in]`), written reversed as ggml dims. */
export interface GgufTensorIn {
  name: string;
  tensor: Tensor;
  /** Write this ggml type id instead of the tensor's own (the data bytes are written as they are). */
  ggmlType?: number;
}

class Writer {
  private chunks: Uint8Array[] = [];
  length = 0;
  bytes(b: Uint8Array): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  private num(size: number, set: (v: DataView) => void): void {
    const b = new Uint8Array(size);
    set(new DataView(b.buffer));
    this.bytes(b);
  }
  u8(v: number): void {
    this.num(1, (d) => d.setUint8(0, v));
  }
  u32(v: number): void {
    this.num(4, (d) => d.setUint32(0, v, true));
  }
  i32(v: number): void {
    this.num(4, (d) => d.setInt32(0, v, true));
  }
  u64(v: number | bigint): void {
    this.num(8, (d) => d.setBigUint64(0, BigInt(v), true));
  }
  f32(v: number): void {
    this.num(4, (d) => d.setFloat32(0, v, true));
  }
  str(s: string): void {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    this.bytes(b);
  }
  value(type: GgufValueType, v: unknown, itemType?: GgufValueType): void {
    switch (type) {
      case GgufValueType.UINT8:
        return this.u8(v as number);
      case GgufValueType.UINT32:
        return this.u32(v as number);
      case GgufValueType.INT32:
        return this.i32(v as number);
      case GgufValueType.FLOAT32:
        return this.f32(v as number);
      case GgufValueType.BOOL:
        return this.u8(v ? 1 : 0);
      case GgufValueType.STRING:
        return this.str(v as string);
      case GgufValueType.UINT64:
        return this.u64(v as number);
      case GgufValueType.ARRAY: {
        const list = v as unknown[];
        this.u32(itemType!);
        this.u64(list.length);
        for (const x of list) this.value(itemType!, x);
        return;
      }
      default:
        throw new Error(`gguf-writer: type ${type} not implemented`);
    }
  }
  concat(): Uint8Array {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

/** Serialize a GGUF v3 file. */
export function encodeGguf(kvs: readonly GgufKv[], tensors: readonly GgufTensorIn[], alignment = 32): Uint8Array {
  const w = new Writer();
  w.u32(GGUF_MAGIC);
  w.u32(3);
  w.u64(tensors.length);
  w.u64(kvs.length);
  for (const kv of kvs) {
    w.str(kv.key);
    w.u32(kv.type);
    w.value(kv.type, kv.value, kv.itemType);
  }
  let offset = 0;
  const offsets: number[] = [];
  for (const { name, tensor, ggmlType } of tensors) {
    w.str(name);
    w.u32(tensor.shape.length);
    for (const d of [...tensor.shape].reverse()) w.u64(d);
    w.u32(ggmlType ?? GGML_TYPE_OF[tensor.dtype]);
    offset = Math.ceil(offset / alignment) * alignment;
    w.u64(offset);
    offsets.push(offset);
    offset += tensor.data.byteLength;
  }
  const pad = (Math.ceil(w.length / alignment) * alignment) - w.length;
  w.bytes(new Uint8Array(pad));
  let at = 0;
  tensors.forEach(({ tensor }, i) => {
    const gap = offsets[i]! - at;
    if (gap > 0) w.bytes(new Uint8Array(gap));
    w.bytes(new Uint8Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength).slice());
    at = offsets[i]! + tensor.data.byteLength;
  });
  return w.concat();
}
