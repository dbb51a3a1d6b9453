/**
 * The device-resident part of the kernel contract: arrays a backend keeps in its own memory (device memory on a GPU),
 * the explicit points where the host reads or writes them, and KV pools that live on the device.
 *
 * A backend with device memory exposes {@link KernelBackend.memory}. Ops then accept a {@link DeviceArray} wherever
 * their argument is typed {@link Activation} (the float32 activations: `x` / `out` of linear, RMSNorm, the
 * element-wise ops, softmax and argmax's input; embedding's output; RoPE's query and key; the cache write's key and
 * value; attention's query and output). Passing device arrays between ops moves nothing between host and device; the
 * host sees their contents only through {@link DeviceMemory.read} (the sync point) and changes them only through
 * {@link DeviceMemory.write}. Ops whose outputs are all device arrays may return before the device has run them
 * (asynchronous submission): the next read, or the next op with a host output, waits, and reports any device error.
 *
 * Backends without device memory (the CPU backends, the reference) have no `memory`: their host arrays already are
 * "the backend's memory", with no copies. They refuse device arrays with `WRONG_ARRAY_TYPE`.
 * @module
 */
import type { KvLayerCache } from '@kvq/cache';
import { KernelError } from './errors.js';

/** The brand of {@link DeviceArray} objects (a registered symbol, so it holds across package copies). */
export const DEVICE_ARRAY: unique symbol = Symbol.for('kvq.deviceArray') as never;

/** Element types of device arrays: float32 activations and int32 ids / indexes. */
export type DeviceArrayKind = 'f32' | 'i32';

/**
 * An array in a backend's own memory, made by {@link DeviceMemory.alloc}. Only the backend that made it can use it;
 * its elements are not host memory (read them with {@link DeviceMemory.read}).
 */
export interface DeviceArray {
  readonly [DEVICE_ARRAY]: true;
  /** Element type. */
  readonly kind: DeviceArrayKind;
  /** Number of elements. */
  readonly length: number;
  /** Name of the backend that owns it (`KernelBackend.name`). */
  readonly backend: string;
}

/** A float32 activation argument: a host `Float32Array`, or a {@link DeviceArray} of kind `'f32'` on backends with memory. */
export type Activation = Float32Array | DeviceArray;

/** True when `v` is a {@link DeviceArray}. */
export function isDeviceArray(v: unknown): v is DeviceArray {
  return typeof v === 'object' && v !== null && (v as { [DEVICE_ARRAY]?: unknown })[DEVICE_ARRAY] === true;
}

/** A {@link KvLayerCache} block copy (copy-on-write): block `src`'s K and V rows into block `dst`. */
export interface DeviceBlockCopy {
  readonly src: number;
  readonly dst: number;
}

/**
 * Device memory of a backend (see the module documentation). Every method validates its arguments and throws
 * {@link KernelError}: `WRONG_ARRAY_TYPE` for an array of another kind or backend, `OUT_OF_RANGE` for a range
 * outside the array, `INVALID_ARGUMENT` for a freed array.
 */
export interface DeviceMemory {
  /**
   * True when the arrays are host memory ({@link HostMemory}: the CPU backend): the contract holds, but nothing is
   * gained by routing activations through it. Absent or false: device memory.
   */
  readonly onHost?: boolean | undefined;
  /** A new device array of `length >= 1` elements; contents undefined until written. */
  alloc(kind: DeviceArrayKind, length: number): DeviceArray;
  /** Host -> device: `src` into elements `[offset, offset + src.length)` of `dst` (`src` may be reused on return). */
  write(dst: DeviceArray, src: Float32Array | Int32Array, offset?: number): void;
  /**
   * Device -> host: elements `[offset, offset + dst.length)` of `src` into `dst`, after every op queued before
   * (the sync point; device errors of earlier asynchronous ops surface here).
   */
  read(src: DeviceArray, dst: Float32Array | Int32Array, offset?: number): void;
  /** Release the device memory now (it is also released when the array is garbage-collected). Idempotent. */
  free(array: DeviceArray): void;
  /**
   * Give the KV pools of `cache` to the device: they are uploaded once and from then on the device copy is the only
   * up-to-date one (cache writes no longer come back to the host arrays). Host code that reads or writes the pools
   * (block copies, KV tiers) goes through {@link cacheToHost} / {@link cacheFromHost} / {@link copyCacheBlocks}.
   * Idempotent. The cache's scales stay host arrays (read by every op).
   */
  attachCache(cache: KvLayerCache): void;
  /** Whether {@link attachCache} gave this cache's pools to the device. */
  isAttached(cache: KvLayerCache): boolean;
  /** Device -> host: the K and V rows of `blocks` of an attached cache into its host pools (no-op when not attached). */
  cacheToHost(cache: KvLayerCache, blocks: readonly number[]): void;
  /** Host -> device: the K and V rows of `blocks` from the host pools of an attached cache (no-op when not attached). */
  cacheFromHost(cache: KvLayerCache, blocks: readonly number[]): void;
  /** Copy blocks on the device (attached caches) or in the host pools (others). */
  copyCacheBlocks(cache: KvLayerCache, copies: readonly DeviceBlockCopy[]): void;
  /** Download every block of an attached cache and give the pools back to the host. */
  detachCache(cache: KvLayerCache): void;
}

/** `args` with every {@link Activation} field narrowed to host memory. */
export type HostArgs<A> = { readonly [K in keyof A]: Exclude<A[K], DeviceArray> };

/**
 * Check that no field of an op's arguments is a device array (backends computing on host memory call it first).
 * @throws KernelError `WRONG_ARRAY_TYPE` naming the field
 */
export function hostArgs<A extends object>(op: string, args: A): HostArgs<A> {
  if (typeof args === 'object' && args !== null) {
    for (const [k, v] of Object.entries(args)) {
      if (isDeviceArray(v)) {
        throw new KernelError(
          'WRONG_ARRAY_TYPE',
          `${op}: ${k} is a device array of backend '${v.backend}'; this backend computes on host arrays (Float32Array)`,
          { argument: k },
        );
      }
    }
  }
  return args as HostArgs<A>;
}

/** A {@link DeviceArray} of {@link HostMemory}: its elements are `data`, host memory. */
class HostArray implements DeviceArray {
  readonly [DEVICE_ARRAY] = true as const;
  constructor(
    readonly kind: DeviceArrayKind,
    readonly length: number,
    readonly backend: string,
    readonly owner: HostMemory,
    public data: Float32Array | Int32Array | null,
  ) {}
}

function checkLength(length: unknown): number {
  if (typeof length !== 'number' || !Number.isInteger(length) || length < 1) {
    throw new KernelError('INVALID_ARGUMENT', `length must be an integer >= 1, got ${String(length)}`, { argument: 'length' });
  }
  return length;
}

/**
 * {@link DeviceMemory} of a backend that computes in host memory (the native CPU backend): its device arrays are
 * host typed arrays (`hostView`), ops read and write them in place, and `write` / `read` are plain copies with
 * nothing to wait for. KV pools are host memory already: `attachCache` leaves them where they are (`isAttached` stays
 * false), block moves are no-ops and `copyCacheBlocks` copies in the host pools. Code written against `memory` thus
 * runs unchanged on the CPU, with no copies between ops.
 */
export class HostMemory implements DeviceMemory {
  /** True: arrays are host memory (engines need not route activations through them). */
  readonly onHost = true;
  readonly #backend: string;

  /** @param backend - the owning backend's name (recorded in its arrays) */
  constructor(backend: string) {
    this.#backend = backend;
  }

  alloc(kind: DeviceArrayKind, length: number): DeviceArray {
    if (kind !== 'f32' && kind !== 'i32') {
      throw new KernelError('INVALID_ARGUMENT', `kind must be 'f32' or 'i32', got ${JSON.stringify(kind)}`, { argument: 'kind' });
    }
    const n = checkLength(length);
    return new HostArray(kind, n, this.#backend, this, kind === 'f32' ? new Float32Array(n) : new Int32Array(n));
  }

  /**
   * The host array behind a device array of this memory (no copy), for `op`'s error messages.
   * @throws KernelError `WRONG_ARRAY_TYPE` for another backend's array, `INVALID_ARGUMENT` for a freed one
   */
  hostView(a: DeviceArray, op = 'hostView'): Float32Array | Int32Array {
    if (!(a instanceof HostArray) || a.owner !== this) {
      throw new KernelError('WRONG_ARRAY_TYPE', `${op}: a device array of backend '${a.backend}' was passed to backend '${this.#backend}'`);
    }
    if (!a.data) throw new KernelError('INVALID_ARGUMENT', `${op}: a device array passed to it has been freed`);
    return a.data;
  }

  #range(op: string, a: DeviceArray, host: Float32Array | Int32Array, offset: number): Float32Array | Int32Array {
    const data = this.hostView(a, op);
    const want = a.kind === 'f32' ? 'Float32Array' : 'Int32Array';
    if ((host as { [Symbol.toStringTag]?: string })?.[Symbol.toStringTag] !== want) {
      throw new KernelError('WRONG_ARRAY_TYPE', `${op}: a device array of kind '${a.kind}' needs a ${want}`, { argument: 'array' });
    }
    if (!Number.isInteger(offset) || offset < 0 || offset + host.length > a.length) {
      throw new KernelError('OUT_OF_RANGE', `${op}: elements [${offset}, ${offset + host.length}) are outside the device array of ${a.length}`, {
        argument: 'offset',
      });
    }
    return data;
  }

  write(dst: DeviceArray, src: Float32Array | Int32Array, offset = 0): void {
    this.#range('write', dst, src, offset).set(src, offset);
  }

  read(src: DeviceArray, dst: Float32Array | Int32Array, offset = 0): void {
    dst.set(this.#range('read', src, dst, offset).subarray(offset, offset + dst.length));
  }

  free(array: DeviceArray): void {
    if (array instanceof HostArray && array.owner === this) array.data = null;
  }

  attachCache(_cache: KvLayerCache): void {}

  isAttached(_cache: KvLayerCache): boolean {
    return false;
  }

  cacheToHost(_cache: KvLayerCache, _blocks: readonly number[]): void {}

  cacheFromHost(_cache: KvLayerCache, _blocks: readonly number[]): void {}

  copyCacheBlocks(cache: KvLayerCache, copies: readonly DeviceBlockCopy[]): void {
    // Each pool's own block length: a cache may store V in another dtype (and layout) than K.
    const kPer = cache.key.length / cache.numBlocks;
    const vPer = cache.value.length / cache.numBlocks;
    for (const { src, dst } of copies) {
      for (const b of [src, dst]) {
        if (!Number.isInteger(b) || b < 0 || b >= cache.numBlocks) {
          throw new KernelError('OUT_OF_RANGE', `block ${String(b)} is outside the cache's ${cache.numBlocks} blocks`, { argument: 'copies' });
        }
      }
      cache.key.copyWithin(dst * kPer, src * kPer, (src + 1) * kPer);
      cache.value.copyWithin(dst * vPer, src * vPer, (src + 1) * vPer);
    }
  }

  detachCache(_cache: KvLayerCache): void {}
}
