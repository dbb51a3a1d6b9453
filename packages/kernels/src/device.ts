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
