/**
 * The native kernel ops, declared once for every native backend (`@kvq/kernels-cpu`'s addon and the GPU addon of
 * `@kvq/kernels-cuda` / `-rocm`, both built on `csrc/napi_args.h` of this package), and the adapter that turns such
 * an addon context into a {@link KernelBackend}: every op validated with the shared `validate*` helpers (so bad
 * input raises the same {@link KernelError} as every other backend, before any native code runs), dtype and
 * format codes, scale runs, then one positional call with zero-copy typed arrays.
 *
 * The standard ops (csrc/ops.h `KVQ_STANDARD_OPS`) are not listed here: their validation and positional arguments
 * are the entries of `STANDARD_NATIVE_OPS` (src/validate.ts), from which {@link NativeKernelBackend} installs its
 * methods and {@link StandardNativeOps} types the addons'.
 *
 * NOTE: keep the other ops in sync with csrc/napi_args.h (argument order) and csrc/ops.h (structs); bump
 * {@link NATIVE_ABI} and `kAbi` there together.
 * @module
 */
import { isKvQuantDtype, type KvQuantDtype } from '@kvq/cache';
import type { Fp8Format, Saturation, ScaleLayout } from '@kvq/fp8';
import { HostMemory, isDeviceArray } from '../device.js';
import type {
  Activation,
  AmaxPerHeadArgs,
  AmaxTensorArgs,
  BackendInfo,
  DequantizeFp8Args,
  EmbeddingArgs,
  KernelBackend,
  KvLayerCache,
  LinearArgs,
  PagedAttentionArgs,
  QuantizeFp8Args,
  ReshapeAndCacheArgs,
  WeightDtype,
  WeightMatrix,
} from '../contract.js';
import { KernelError, toKernelError } from '../errors.js';
import {
  STANDARD_NATIVE_OPS,
  validateAmaxPerHead,
  validateAmaxTensor,
  validateDequantizeFp8,
  validateEmbedding,
  validateLinear,
  validatePagedAttention,
  validateQuantizeFp8,
  validateReshapeAndCache,
  type StandardNativeOpName,
} from '../validate.js';

/** ABI of the shared op signatures (csrc/napi_args.h `kAbi`); a binary reporting another one is stale and is not loaded. */
export const NATIVE_ABI = 5;

/**
 * Numeric codes of storage dtypes (csrc/ops.h `DtypeCode`): the weight dtypes (`f32`..`f16`, the GGML block types
 * 16..23 and the compressed-tensors types 24..26) and the KV-cache dtypes (`f32`..`f16` and the FP8 formats 3..6).
 */
export const DTYPE_CODE = {
  f32: 0,
  bf16: 1,
  f16: 2,
  e4m3fn: 3,
  e5m2: 4,
  e4m3fnuz: 5,
  e5m2fnuz: 6,
  q8_0: 16,
  q4_0: 17,
  q4_1: 18,
  q5_0: 19,
  q5_1: 20,
  q4_k: 21,
  q5_k: 22,
  q6_k: 23,
  fp8_e4m3: 24,
  int8: 25,
  int4: 26,
} as const satisfies Record<WeightDtype | NativeKvDtype, number>;

/**
 * KV dtypes every native backend implements: every KV dtype except the write-time-scaled ones (`int8_per_token_head`,
 * `nvfp4`, ..., docs/spec/kv-dtypes.md), which only backends that declare them (the CPU backend) run.
 */
export type NativeKvDtype = Exclude<KvLayerCache['dtype'], KvQuantDtype>;

/** Native codes of the write-time-scaled KV dtypes (csrc/ops.h `kKvFp8PerTokenHead`..`kKvInt4G32F16`). */
const KV_QUANT_DTYPE_CODE = {
  fp8_per_token_head: 32,
  int8_per_token_head: 33,
  int4_per_token_head: 34,
  int4_g16: 35,
  int4_g32: 36,
  int4_g64: 37,
  nvfp4: 38,
  q4_0: 39,
  int4_g32_f16: 40,
} as const satisfies Record<KvQuantDtype, number>;

/**
 * The native code of a cache's dtype. A write-time-scaled dtype has a code only when `kvQuant` is true (the backend
 * has kernels for it, {@link NativeKernelBackend.kvQuantKernels}); otherwise it is `UNSUPPORTED`.
 * @param op - the op named in the error message.
 * @param kvQuant - whether the calling backend implements the write-time-scaled dtypes. Default false.
 * @param argument - the argument the error names. Default `'cache.dtype'` (`'cache.valueDtype'` for a V pool's dtype).
 * @throws KernelError `UNSUPPORTED` for a write-time-scaled dtype when `kvQuant` is false.
 */
export function nativeKvDtypeCode(dtype: KvLayerCache['dtype'], op: string, kvQuant = false, argument = 'cache.dtype'): number {
  if (isKvQuantDtype(dtype)) {
    if (kvQuant) return KV_QUANT_DTYPE_CODE[dtype];
    throw new KernelError('UNSUPPORTED', `${op}: KV-cache dtype '${dtype}' has no native kernels in this backend yet (use the reference backend)`, {
      argument,
    });
  }
  return DTYPE_CODE[dtype];
}

/**
 * The cache dtype argument of the native ops (csrc/napi_args.h `readCache`): the K pool's code alone for a uniform
 * cache (`valueDtype` equal to `dtype`, or absent), else the packed code `kCode | ((vCode + 1) << 8)` of a cache whose
 * V pool has another dtype (each pool written and read as a uniform cache of its dtype would be).
 * @param op - the op named in error messages.
 * @param kvQuant - whether the calling backend implements the write-time-scaled dtypes (see {@link nativeKvDtypeCode}).
 * @param mixed - whether it implements caches whose K and V dtypes differ ({@link NativeKernelBackend.mixedKvKernels}).
 * @throws KernelError `UNSUPPORTED` naming `cache.valueDtype` (and both dtypes) for a mixed cache when `mixed` is
 *   false; `UNSUPPORTED` naming `cache.dtype` / `cache.valueDtype` for a write-time-scaled dtype when `kvQuant` is false.
 */
export function nativeKvCacheCode(cache: Pick<KvLayerCache, 'dtype' | 'valueDtype'>, op: string, kvQuant = false, mixed = false): number {
  const k = nativeKvDtypeCode(cache.dtype, op, kvQuant);
  const valueDtype = cache.valueDtype ?? cache.dtype;
  if (valueDtype === cache.dtype) return k;
  if (!mixed) {
    throw new KernelError(
      'UNSUPPORTED',
      `${op}: a KV cache with K dtype '${cache.dtype}' and V dtype '${valueDtype}' (mixed precision) has no native kernels in this backend (use the CPU or reference backend)`,
      { argument: 'cache.valueDtype' },
    );
  }
  return k | ((nativeKvDtypeCode(valueDtype, op, kvQuant, 'cache.valueDtype') + 1) << 8);
}

/** Numeric codes of FP8 formats (csrc/fp8.h `Fp8Format`). */
export const FORMAT_CODE = { e4m3fn: 0, e5m2: 1, e4m3fnuz: 2, e5m2fnuz: 3 } as const;

type F32 = Float32Array;
type I32 = Int32Array;
type U8 = Uint8Array;
type U16 = Uint16Array;
type I8 = Int8Array;
/** Pool array of any KV dtype. */
export type NativePool = Float32Array | Uint16Array | Uint8Array;

/** The data array of a weight of any dtype (Float32Array, Uint16Array, Uint8Array or Int8Array; see `WeightMatrix`). */
export type NativeWeightData = WeightMatrix['data'];

/**
 * Positional arguments of a weight matrix (csrc/napi_args.h `readWeight`): `scale` only for the compressed-tensors
 * dtypes, `zeroPoint` only for asymmetric int4 (else null), `groupSize` int4's columns per group (else 0).
 */
export type WeightNativeArgs = [
  data: NativeWeightData,
  dtype: number,
  rows: number,
  cols: number,
  scale: F32 | null,
  zeroPoint: I8 | null,
  groupSize: number,
];

/**
 * Positional arguments of `linear` (csrc/napi_args.h `readLinear`); `bias` null when absent; `activations` 0 for
 * float32, 1 for `'q8'` (csrc/act_q8.h).
 */
export type LinearNativeArgs = [x: Activation, rows: number, ...weight: WeightNativeArgs, bias: F32 | null, out: Activation, activations: number, activationScale: number];

/** Positional arguments of `embedding` (csrc/napi_args.h `readEmbedding`). */
export type EmbeddingNativeArgs = [...table: WeightNativeArgs, ids: I32, out: Activation, numTokens: number];

/**
 * The positional arguments of a (validated) weight matrix: its data, dtype code, shape, and for the compressed-tensors
 * dtypes its scale, zero point and group size.
 */
export function weightArgs(w: WeightMatrix): WeightNativeArgs {
  const ct = w.dtype === 'fp8_e4m3' || w.dtype === 'int8' || w.dtype === 'int4';
  const int4 = w.dtype === 'int4';
  return [w.data, DTYPE_CODE[w.dtype], w.rows, w.cols, ct ? (w.scale ?? null) : null, int4 ? (w.zeroPoint ?? null) : null, int4 ? (w.groupSize ?? 0) : 0];
}

/**
 * Positional arguments of `pagedAttention` (csrc/napi_args.h `readAttention`). `dtype`: the cache's code from
 * {@link nativeKvCacheCode} (packed when K and V dtypes differ). `fp8Query`: 0 off, 1 satfinite, 2 nosat; `qScale` is
 * read only in FP8-query mode.
 */
export type PagedAttentionNativeArgs = [
  query: Activation,
  out: Activation,
  dtype: number,
  kPool: NativePool,
  vPool: NativePool,
  numBlocks: number,
  blockSize: number,
  numKvHeads: number,
  headSize: number,
  kScale: F32,
  vScale: F32,
  queryStartLoc: I32,
  seqLens: I32,
  blockTables: I32,
  maxBlocksPerSeq: number,
  numSeqs: number,
  numHeads: number,
  softmaxScale: number,
  slidingWindow: number,
  fp8Query: number,
  qScale: F32,
  lse: F32 | null,
];

/**
 * The positional signatures of the standard ops (csrc/ops.h `KVQ_STANDARD_OPS`): what their
 * {@link STANDARD_NATIVE_OPS} entry returns, as the addon method's parameters.
 */
export type StandardNativeOps = {
  [K in StandardNativeOpName]: (...args: ReturnType<(typeof STANDARD_NATIVE_OPS)[K]>) => void;
};

/**
 * The ops every native addon context exports, with the positional signatures of their N-API readers (csrc/ops.h for
 * the standard ops, {@link StandardNativeOps}; csrc/napi_args.h for the others, declared here). Arguments past
 * these (here typed `D`, resident device buffers of the GPU addon) are read by the addon that has them and ignored
 * by the others; `D = never` for addons without resident memory. Cache arguments are spread as
 * `(dtypeCode, key, value, numBlocks, blockSize, numKvHeads, headSize, kScale, vScale)`, `dtypeCode` from
 * {@link nativeKvCacheCode}: the K pool's code, packed with the V pool's (`kCode | ((vCode + 1) << 8)`) when they
 * differ; each pool has the kind and length of its own dtype, and `kScale` / `vScale` are read as each pool's dtype
 * needs them.
 * Every length, index and code is re-checked natively: a direct call with bad input throws an `Error` with `code`
 * and `argument`.
 */
export interface NativeKernelOps<D = never> extends StandardNativeOps {
  linear(...args: [...LinearNativeArgs, wDev?: D | null]): void;
  embedding(...args: [...EmbeddingNativeArgs, tableDev?: D | null]): void;
  reshapeAndCache(
    key: Activation,
    value: Activation,
    slotMapping: I32,
    numTokens: number,
    dtype: number,
    kPool: NativePool,
    vPool: NativePool,
    numBlocks: number,
    blockSize: number,
    numKvHeads: number,
    headSize: number,
    kScale: F32,
    vScale: F32,
    kDev?: D | null,
    vDev?: D | null,
    deviceOnly?: boolean,
  ): void;
  pagedAttention(...args: [...PagedAttentionNativeArgs, kDev?: D | null, vDev?: D | null]): void;
  amaxTensor(x: F32, length: number): number;
  amaxPerHead(x: F32, out: F32, numTokens: number, numHeads: number, headSize: number, accumulate: boolean): void;
  /** Run r (elements `[r * runLength, (r + 1) * runLength)`) uses `scales[period ? r % period : r]`. */
  quantizeFp8(src: F32, out: U8, length: number, scales: F32, runLength: number, period: number, format: number, satfinite: boolean): void;
  dequantizeFp8(src: U8, out: F32, length: number, scales: F32, runLength: number, period: number, format: number): void;
  /** Encode the float32 bit patterns `firstBits .. firstBits + count - 1` (unscaled) into `out`. */
  encodeFp8Bits(firstBits: number, count: number, out: U8, format: number, satfinite: boolean): void;
  /** Release the context (thread pool, device). Later calls throw `BACKEND_UNAVAILABLE`. */
  dispose(): void;
}

/** `(runLength, period)` of a validated {@link ScaleLayout} over `length` elements (the native quantizer's runs). */
export function scaleRuns(layout: ScaleLayout, length: number): [runLength: number, period: number] {
  switch (layout.granularity) {
    case 'tensor':
      return [Math.max(length, 1), 1];
    case 'head':
      return [layout.headSize, layout.numHeads];
    case 'token':
      return [layout.tokenSize, 0];
    case 'token_head':
      return [layout.headSize, 0];
  }
}

/**
 * An integer environment variable `>= min`, or `undefined` when unset or empty.
 * @throws KernelError `INVALID_ARGUMENT` naming the variable when it is set to anything else.
 */
export function envInt(name: string, min: number, env: NodeJS.ProcessEnv = process.env): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min) {
    throw new KernelError('INVALID_ARGUMENT', `${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`, { argument: name });
  }
  return v;
}

const NO_SCALES = new Float32Array(0);

/** Options of {@link NativeKernelBackend.encodeFp8Bits}. */
export interface EncodeFp8BitsOptions {
  /** Default `'satfinite'`. */
  readonly saturation?: Saturation;
  /** Output of at least `count` codes. Default: a new array. */
  readonly out?: Uint8Array;
}

/** The standard ops' methods, installed on {@link NativeKernelBackend}'s prototype from `STANDARD_NATIVE_OPS`. */
export type StandardBackendOps = Pick<KernelBackend, StandardNativeOpName>;

// Declaration merging: the class has the standard ops' methods its static block installs.
export interface NativeKernelBackend<C extends NativeKernelOps<D>, D = never> extends StandardBackendOps {}

/**
 * A {@link KernelBackend} over a native addon context: every contract op validated, then called positionally.
 * Backends extend it with their specifics (the CPU backend its async ops and pool, the GPU backend residency and
 * device checks). Resident device buffers come from {@link NativeKernelBackend.weightDevice} and
 * {@link NativeKernelBackend.cacheDevice} (none by default).
 * @typeParam C - the addon's context type.
 * @typeParam D - its resident device-buffer type (`never` when it has none).
 */
export abstract class NativeKernelBackend<C extends NativeKernelOps<D>, D = never> implements KernelBackend {
  static {
    // One method per standard op: validate, then one positional call into the addon (see STANDARD_NATIVE_OPS).
    for (const op of Object.keys(STANDARD_NATIVE_OPS) as StandardNativeOpName[]) {
      const toNative = STANDARD_NATIVE_OPS[op] as (args: unknown) => unknown[];
      Object.defineProperty(NativeKernelBackend.prototype, op, {
        configurable: true,
        writable: true,
        value(this: NativeKernelBackend<NativeKernelOps>, args: unknown): void {
          const native = this.standardNativeArgs(op, args, toNative(args));
          const method = this.ctx[op] as (...a: unknown[]) => void;
          this.call(op, () => method.apply(this.ctx, native));
        },
      });
    }
  }

  /** Short unique name (what `KVQ_BACKEND` selects). */
  readonly name: string;
  readonly info: BackendInfo;
  /** The addon context. */
  protected readonly ctx: C;

  /**
   * @param name - backend name, e.g. `'cpu'`.
   * @param info - what the backend reports (`BackendInfo`).
   * @param ctx - the native context the ops call.
   * @throws KernelError `BACKEND_UNAVAILABLE` when `ctx` lacks a standard op (a binary built before the op existed).
   */
  constructor(name: string, info: BackendInfo, ctx: C) {
    const missing = (Object.keys(STANDARD_NATIVE_OPS) as StandardNativeOpName[]).filter((op) => typeof ctx[op] !== 'function');
    if (missing.length > 0) {
      throw new KernelError(
        'BACKEND_UNAVAILABLE',
        `the ${name} native binary has no ${missing.join(', ')} op${missing.length > 1 ? 's' : ''}: it is a stale build (older than this package); rebuild it`,
      );
    }
    this.name = name;
    this.info = info;
    this.ctx = ctx;
  }

  /**
   * Whether this backend has kernels for the write-time-scaled KV dtypes (docs/spec/kv-dtypes.md); false by default,
   * so `reshapeAndCache` / `pagedAttention` on such a cache throw `UNSUPPORTED` before any native call.
   */
  protected kvQuantKernels(): boolean {
    return false;
  }

  /**
   * Whether this backend has kernels for caches whose V pool has another dtype than the K pool (`cache.valueDtype`
   * differs from `cache.dtype`); false by default, so `reshapeAndCache` / `pagedAttention` on such a cache throw
   * `UNSUPPORTED` (argument `cache.valueDtype`, naming both dtypes) before any native call.
   */
  protected mixedKvKernels(): boolean {
    return false;
  }

  /**
   * Whether the addon's `pagedAttention` writes `PagedAttentionArgs.lse`; false by default, so asking for it throws
   * `UNSUPPORTED` before any native call.
   */
  protected attentionLse(): boolean {
    return false;
  }

  /** The resident device copy of a weight matrix's / embedding table's data, or null to upload it per call. */
  protected weightDevice(_data: NativeWeightData): D | null {
    return null;
  }

  /** The resident device pools of a cache (`[key, value]`, both or neither), or nulls. */
  protected cacheDevice(_cache: KvLayerCache): [D | null, D | null] {
    return [null, null];
  }

  /**
   * What the addon receives for an argument: the value itself, except device arrays, which a backend with device
   * memory maps to its native handle; this default takes the arrays of the backend's {@link HostMemory} (their host
 * data, no copy) and refuses any other.
   * @throws KernelError `WRONG_ARRAY_TYPE` for a device array
   */
  protected nativeValue(op: string, v: unknown): unknown {
    if (!isDeviceArray(v)) return v;
    const memory = (this as KernelBackend).memory;
    if (memory instanceof HostMemory) return memory.hostView(v, op);
    throw new KernelError('WRONG_ARRAY_TYPE', `${op}: got a device array of backend '${v.backend}'; the ${this.name} backend computes on host arrays (Float32Array)`);
  }

  /**
   * The positional arguments a standard op passes to the addon: its validated list with every value through
   * {@link nativeValue}. A backend may substitute resident copies of constant inputs (the GPU's RoPE table).
   */
  protected standardNativeArgs(op: StandardNativeOpName, _args: unknown, native: unknown[]): unknown[] {
    return native.map((v) => this.nativeValue(op, v));
  }

  /** {@link nativeValue} of an activation, typed for the positional argument lists. */
  protected nativeActivation(op: string, v: Activation): Activation {
    return this.nativeValue(op, v) as Activation;
  }

  /** Whether cache writes may leave the host pools of `cache` behind (its device pools are the only copy). */
  protected cacheDeviceOnly(_cache: KvLayerCache): boolean {
    return false;
  }

  /** Run one native call; addon errors become {@link KernelError}s prefixed with `op`. */
  protected call<T>(op: string, f: () => T): T {
    try {
      return f();
    } catch (e) {
      throw toKernelError(e, op);
    }
  }

  /** `linear`'s validated positional arguments (without resident buffers). */
  protected linearArgs(args: LinearArgs<Activation>): LinearNativeArgs {
    const { rows } = validateLinear(args);
    return [
      this.nativeActivation('linear', args.x),
      rows,
      ...weightArgs(args.weight),
      args.bias ?? null,
      this.nativeActivation('linear', args.out),
      args.activations === 'q8' ? 1 : args.activations === 'q16' ? 2 : 0,
      args.activationScale ?? 0,
    ];
  }

  /** `pagedAttention`'s validated positional arguments (without resident buffers). */
  protected attentionArgs(args: PagedAttentionArgs<Activation>): PagedAttentionNativeArgs {
    const plan = validatePagedAttention(args);
    if (plan.lse && !this.attentionLse()) {
      throw new KernelError('UNSUPPORTED', `pagedAttention: backend '${this.name}' does not produce the attention lse`, { argument: 'lse' });
    }
    const c = args.cache;
    const fp8Query = plan.fp8Query ? (args.fp8Query?.saturation === 'nosat' ? 2 : 1) : 0;
    return [
      this.nativeActivation('pagedAttention', args.query),
      this.nativeActivation('pagedAttention', args.out),
      nativeKvCacheCode(c, 'pagedAttention', this.kvQuantKernels(), this.mixedKvKernels()),
      c.key,
      c.value,
      plan.numBlocks,
      plan.blockSize,
      plan.numKvHeads,
      plan.headSize,
      c.kScale,
      c.vScale,
      args.queryStartLoc,
      args.seqLens,
      args.blockTables,
      args.maxBlocksPerSeq,
      plan.numSeqs,
      plan.numHeads,
      plan.softmaxScale,
      plan.slidingWindow,
      fp8Query,
      fp8Query ? c.qScale : NO_SCALES,
      plan.lse ?? null,
    ];
  }

  linear(args: LinearArgs<Activation>): void {
    const native = this.linearArgs(args);
    this.call('linear', () => this.ctx.linear(...native, this.weightDevice(args.weight.data)));
  }

  embedding(args: EmbeddingArgs<Activation>): void {
    const { numTokens } = validateEmbedding(args);
    const t = args.table;
    const out = this.nativeActivation('embedding', args.out);
    this.call('embedding', () => this.ctx.embedding(...weightArgs(t), args.ids, out, numTokens, this.weightDevice(t.data)));
  }

  reshapeAndCache(args: ReshapeAndCacheArgs<Activation>): void {
    const d = validateReshapeAndCache(args);
    const c = args.cache;
    const dtypeCode = nativeKvCacheCode(c, 'reshapeAndCache', this.kvQuantKernels(), this.mixedKvKernels());
    const key = this.nativeActivation('reshapeAndCache', args.key);
    const value = this.nativeActivation('reshapeAndCache', args.value);
    this.call('reshapeAndCache', () => {
      const [kDev, vDev] = this.cacheDevice(c);
      this.ctx.reshapeAndCache(
        key,
        value,
        args.slotMapping,
        d.numTokens,
        dtypeCode,
        c.key,
        c.value,
        d.numBlocks,
        d.blockSize,
        d.numKvHeads,
        d.headSize,
        c.kScale,
        c.vScale,
        kDev,
        vDev,
        kDev !== null && this.cacheDeviceOnly(c),
      );
    });
  }

  pagedAttention(args: PagedAttentionArgs<Activation>): void {
    const native = this.attentionArgs(args);
    this.call('pagedAttention', () => this.ctx.pagedAttention(...native, ...this.cacheDevice(args.cache)));
  }

  amaxTensor(args: AmaxTensorArgs): number {
    const { length } = validateAmaxTensor(args);
    return this.call('amaxTensor', () => this.ctx.amaxTensor(args.x, length));
  }

  amaxPerHead(args: AmaxPerHeadArgs): void {
    const { numTokens, numHeads, headSize } = validateAmaxPerHead(args);
    this.call('amaxPerHead', () => this.ctx.amaxPerHead(args.x, args.out, numTokens, numHeads, headSize, args.accumulate === true));
  }

  quantizeFp8(args: QuantizeFp8Args): void {
    const { length } = validateQuantizeFp8(args);
    const [runLength, period] = scaleRuns(args.layout, length);
    this.call('quantizeFp8', () =>
      this.ctx.quantizeFp8(args.src, args.out, length, args.scales, runLength, period, FORMAT_CODE[args.format], args.saturation !== 'nosat'),
    );
  }

  dequantizeFp8(args: DequantizeFp8Args): void {
    const { length } = validateDequantizeFp8(args);
    const [runLength, period] = scaleRuns(args.layout, length);
    this.call('dequantizeFp8', () => this.ctx.dequantizeFp8(args.src, args.out, length, args.scales, runLength, period, FORMAT_CODE[args.format]));
  }

  /**
   * Encode the float32 bit patterns `firstBits .. firstBits + count - 1` to FP8 (no scale) with the native encoder
   * (csrc/fp8.h): what the CUDA-oracle tests hash. Returns `options.out` (or a new array).
   * @throws KernelError `INVALID_ARGUMENT` for an unknown format or a count outside `[0, 2^32]`.
   */
  encodeFp8Bits(firstBits: number, count: number, format: Fp8Format, options: EncodeFp8BitsOptions = {}): Uint8Array {
    const code = (FORMAT_CODE as Record<string, number | undefined>)[format];
    if (code === undefined) {
      throw new KernelError('INVALID_ARGUMENT', `format must be one of ${Object.keys(FORMAT_CODE).join(', ')}, got ${JSON.stringify(format)}`, {
        argument: 'format',
      });
    }
    if (!Number.isInteger(count) || count < 0 || count > 2 ** 32) {
      throw new KernelError('INVALID_ARGUMENT', `count must be an integer in [0, 2^32], got ${count}`, { argument: 'count' });
    }
    const out = options.out ?? new Uint8Array(count);
    this.call('encodeFp8Bits', () => this.ctx.encodeFp8Bits(firstBits, count, out, code, options.saturation !== 'nosat'));
    return out;
  }

  /** Release the native context. Later calls throw `BACKEND_UNAVAILABLE`. Idempotent. */
  dispose(): void {
    this.ctx.dispose();
  }
}
