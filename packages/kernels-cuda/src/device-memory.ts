/**
 * The GPU backend's device memory (`@kvq/kernels` `DeviceMemory`): device arrays the ops take in place of host
 * activations, and KV pools given to the device, whose device copy is then the only up-to-date one.
 * @module
 */
import {
  checkCount,
  DEVICE_ARRAY,
  KernelError,
  toKernelError,
  type DeviceArray,
  type DeviceArrayKind,
  type DeviceBlockCopy,
  type DeviceMemory,
  type KvLayerCache,
} from '@kvq/kernels';
import type { NativeContext, NativeDeviceBuffer } from './addon-types.js';

const KIND_CODE: Readonly<Record<DeviceArrayKind, number>> = { f32: 0, i32: 1 };

/** A device array of this backend: its native buffer, or null once freed. */
class GpuDeviceArray implements DeviceArray {
  readonly [DEVICE_ARRAY] = true as const;
  constructor(
    readonly kind: DeviceArrayKind,
    readonly length: number,
    readonly backend: string,
    readonly owner: GpuMemory,
    public buffer: NativeDeviceBuffer | null,
  ) {}
}

type Pool = KvLayerCache['key'];
type Attached = { readonly k: NativeDeviceBuffer; readonly v: NativeDeviceBuffer };

/** {@link DeviceMemory} over a native GPU context (CUDA, HIP or the simulator). */
export class GpuMemory implements DeviceMemory {
  readonly #backend: string;
  readonly #ctx: NativeContext;
  readonly #beforeAttach: (cache: KvLayerCache) => void;
  /** Attached caches, by their key pool (the value pool is attached with it). */
  #attached = new WeakMap<Pool, Attached>();
  #attachedBytes = 0;

  /**
   * @param backend - the owning backend's name (recorded in its arrays)
   * @param ctx - the native context
   * @param beforeAttach - called before a cache's pools are uploaded (drops other device copies of them)
   */
  constructor(backend: string, ctx: NativeContext, beforeAttach: (cache: KvLayerCache) => void) {
    this.#backend = backend;
    this.#ctx = ctx;
    this.#beforeAttach = beforeAttach;
  }

  /** Device bytes of the attached KV pools. */
  get attachedBytes(): number {
    return this.#attachedBytes;
  }

  #native<K extends 'alloc' | 'write' | 'read' | 'copy'>(name: K): NonNullable<NativeContext[K]> {
    const f = this.#ctx[name];
    if (typeof f !== 'function') {
      throw new KernelError('UNSUPPORTED', `${name}: this GPU addon was built before device arrays existed; rebuild it (build:gpu)`, { argument: name });
    }
    return f.bind(this.#ctx) as NonNullable<NativeContext[K]>;
  }

  #call<T>(op: string, f: () => T): T {
    try {
      return f();
    } catch (e) {
      throw toKernelError(e, op);
    }
  }

  /**
   * The native buffer of a device array passed to `op`.
   * @throws KernelError `WRONG_ARRAY_TYPE` for another backend's array, `INVALID_ARGUMENT` for a freed one
   */
  handle(op: string, a: DeviceArray): NativeDeviceBuffer {
    if (!(a instanceof GpuDeviceArray) || a.owner !== this) {
      throw new KernelError('WRONG_ARRAY_TYPE', `${op}: a device array of backend '${a.backend}' was passed to backend '${this.#backend}'`);
    }
    if (!a.buffer) throw new KernelError('INVALID_ARGUMENT', `${op}: a device array passed to it has been freed`);
    return a.buffer;
  }

  alloc(kind: DeviceArrayKind, length: number): DeviceArray {
    const code = (KIND_CODE as Record<string, number | undefined>)[kind];
    if (code === undefined) {
      throw new KernelError('INVALID_ARGUMENT', `kind must be 'f32' or 'i32', got ${JSON.stringify(kind)}`, { argument: 'kind' });
    }
    checkCount('length', length, 1);
    const alloc = this.#native('alloc');
    const buffer = this.#call('alloc', () => alloc(code, length));
    return new GpuDeviceArray(kind, length, this.#backend, this, buffer);
  }

  #hostRange(op: string, a: DeviceArray, host: Float32Array | Int32Array, offset: number): NativeDeviceBuffer {
    const buffer = this.handle(op, a);
    const want = a.kind === 'f32' ? 'Float32Array' : 'Int32Array';
    if ((host as { [Symbol.toStringTag]?: string })?.[Symbol.toStringTag] !== want) {
      throw new KernelError('WRONG_ARRAY_TYPE', `${op}: a device array of kind '${a.kind}' needs a ${want}`, { argument: 'array' });
    }
    checkCount('offset', offset, 0);
    if (offset + host.length > a.length) {
      throw new KernelError('OUT_OF_RANGE', `${op}: elements [${offset}, ${offset + host.length}) are outside the device array of ${a.length}`, {
        argument: 'offset',
      });
    }
    return buffer;
  }

  write(dst: DeviceArray, src: Float32Array | Int32Array, offset = 0): void {
    const buffer = this.#hostRange('write', dst, src, offset);
    const write = this.#native('write');
    this.#call('write', () => write(buffer, src, offset));
  }

  read(src: DeviceArray, dst: Float32Array | Int32Array, offset = 0): void {
    const buffer = this.#hostRange('read', src, dst, offset);
    const read = this.#native('read');
    this.#call('read', () => read(buffer, dst, offset));
  }

  free(array: DeviceArray): void {
    if (!(array instanceof GpuDeviceArray) || array.owner !== this || !array.buffer) return;
    array.buffer.free();
    array.buffer = null;
  }

  /** The device pools of an attached cache, or undefined. */
  pools(cache: KvLayerCache): [NativeDeviceBuffer, NativeDeviceBuffer] | undefined {
    const a = this.#attached.get(cache.key);
    return a ? [a.k, a.v] : undefined;
  }

  isAttached(cache: KvLayerCache): boolean {
    return this.#attached.has(cache.key);
  }

  attachCache(cache: KvLayerCache): void {
    if (this.#attached.has(cache.key)) return;
    this.#beforeAttach(cache);
    const k = this.#call('attachCache', () => this.#ctx.upload(cache.key));
    let v: NativeDeviceBuffer;
    try {
      v = this.#call('attachCache', () => this.#ctx.upload(cache.value));
    } catch (e) {
      k.free();
      throw e;
    }
    this.#attached.set(cache.key, { k, v });
    this.#attachedBytes += k.byteLength + v.byteLength;
  }

  /**
   * Elements of one block of a pool of `cache` (pools are exactly `numBlocks` blocks; the K and V pools of a cache whose
   * `valueDtype` differs have different block lengths and element types, so each pool is measured on its own).
   */
  #blockElems(cache: KvLayerCache, pool: Pool): number {
    return pool.length / cache.numBlocks;
  }

  /** Runs of consecutive block ids (sorted, deduplicated): `[first, count]` pairs, each one copy. */
  #runs(cache: KvLayerCache, blocks: readonly number[]): [number, number][] {
    const ids = [...new Set(blocks)].sort((a, b) => a - b);
    for (const b of ids) {
      if (!Number.isInteger(b) || b < 0 || b >= cache.numBlocks) {
        throw new KernelError('OUT_OF_RANGE', `block ${String(b)} is outside the cache's ${cache.numBlocks} blocks`, { argument: 'blocks' });
      }
    }
    const runs: [number, number][] = [];
    for (const b of ids) {
      const last = runs[runs.length - 1];
      if (last && last[0] + last[1] === b) last[1]++;
      else runs.push([b, 1]);
    }
    return runs;
  }

  cacheToHost(cache: KvLayerCache, blocks: readonly number[]): void {
    this.#moveBlocks('cacheToHost', cache, blocks, this.#native('read'));
  }

  cacheFromHost(cache: KvLayerCache, blocks: readonly number[]): void {
    this.#moveBlocks('cacheFromHost', cache, blocks, this.#native('write'));
  }

  /** Runs of `blocks` of an attached cache between its device and host pools, one `move` per pool and run. */
  #moveBlocks(
    op: string,
    cache: KvLayerCache,
    blocks: readonly number[],
    move: (buffer: NativeDeviceBuffer, host: KvLayerCache['key'], offset: number) => void,
  ): void {
    const a = this.#attached.get(cache.key);
    if (!a) return;
    const kPer = this.#blockElems(cache, cache.key);
    const vPer = this.#blockElems(cache, cache.value);
    for (const [first, n] of this.#runs(cache, blocks)) {
      this.#call(op, () => {
        move(a.k, cache.key.subarray(first * kPer, (first + n) * kPer), first * kPer);
        move(a.v, cache.value.subarray(first * vPer, (first + n) * vPer), first * vPer);
      });
    }
  }

  copyCacheBlocks(cache: KvLayerCache, copies: readonly DeviceBlockCopy[]): void {
    const a = this.#attached.get(cache.key);
    const kPer = this.#blockElems(cache, cache.key);
    const vPer = this.#blockElems(cache, cache.value);
    if (!a) {
      for (const { src, dst } of copies) {
        this.#runs(cache, [src, dst]);
        cache.key.copyWithin(dst * kPer, src * kPer, (src + 1) * kPer);
        cache.value.copyWithin(dst * vPer, src * vPer, (src + 1) * vPer);
      }
      return;
    }
    const copy = this.#native('copy');
    const kBytes = kPer * cache.key.BYTES_PER_ELEMENT;
    const vBytes = vPer * cache.value.BYTES_PER_ELEMENT;
    for (const { src, dst } of copies) {
      this.#runs(cache, [src, dst]);
      this.#call('copyCacheBlocks', () => {
        copy(a.k, dst * kBytes, a.k, src * kBytes, kBytes);
        copy(a.v, dst * vBytes, a.v, src * vBytes, vBytes);
      });
    }
  }

  detachCache(cache: KvLayerCache): void {
    const a = this.#attached.get(cache.key);
    if (!a) return;
    const read = this.#native('read');
    this.#call('detachCache', () => {
      read(a.k, cache.key, 0);
      read(a.v, cache.value, 0);
    });
    this.#attached.delete(cache.key);
    this.#attachedBytes -= a.k.byteLength + a.v.byteLength;
    a.k.free();
    a.v.free();
  }

  /** Forget every attached cache (the context is going away). */
  dispose(): void {
    this.#attached = new WeakMap();
    this.#attachedBytes = 0;
  }
}
