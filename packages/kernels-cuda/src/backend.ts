/**
 * The typed facade over the native GPU addon: validates every op with `@kvq/kernels`' shared `validate*` helpers
 * (so bad input raises the same {@link KernelError} as every other backend, before any native code runs), then
 * calls the addon, which copies the inputs to the device, runs the kernels and copies the outputs back.
 *
 * Optional residency: with `residentWeights`, a weight matrix / embedding table is uploaded once (keyed by its
 * `data` array) and reused; with `residentCaches`, a KV cache's pools live on the device (uploaded on first use),
 * `reshapeAndCache` writes both the device pools and the host arrays, and `pagedAttention` reads the device pools
 * without uploading. Residency assumes nothing else writes those arrays afterwards (see {@link GpuBackend.forget}).
 * @module
 */
import { createRequire } from 'node:module';
import type { Fp8Format, Saturation } from '@kvq/fp8';
import {
  KernelError,
  isDeviceArray,
  toKernelError,
  validateEmbedding,
  type Activation,
  type BackendCreateOptions,
  type DeviceMemory,
  type EmbeddingArgs,
  type KernelBackend,
  type KvLayerCache,
  type LinearArgs,
  type RopeArgs,
  type StandardNativeOpName,
  type WeightMatrix,
} from '@kvq/kernels';
import { DTYPE_CODE, envInt, FORMAT_CODE, NativeKernelBackend, weightArgs, type NativeWeightData } from '@kvq/kernels/native';
import type {
  Fp8VendorCheckResult,
  GpuDeviceInfo,
  GpuVendor,
  NativeAttentionBenchResult,
  NativeContext,
  NativeDeviceBuffer,
  NativeProbe,
  TransferStats,
} from './addon-types.js';
import { GpuMemory } from './device-memory.js';
import { unavailable } from './errors.js';
import { CUDA_SPEC, loadAddon, probeAddon, type GpuVendorSpec } from './load.js';

/** The name the loader and `KVQ_BACKEND` use for this backend. */
export const backendName = 'cuda';

/** Options of {@link GpuBackend.benchLinear}. */
export interface BenchLinearOptions {
  /** Weight dtype: dense f32 / bf16, or a quantized one (`q8_0` .. `q6_k`, `fp8_e4m3`, `int8`, `int4`). */
  readonly weightDtype: 'f32' | 'bf16' | Exclude<WeightMatrix['dtype'], 'f32' | 'bf16' | 'f16'>;
  /** Activation rows (tokens): 1..8 runs the GEMV kernel, more the GEMM. */
  readonly rows: number;
  /** Input features (columns of the weight). */
  readonly inFeatures: number;
  /** Output features (rows of the weight). */
  readonly outFeatures: number;
  /** Timed runs after 3 warm-up runs (default 20). */
  readonly iters?: number;
  /** f32 / bf16 only: `'builtin'` forces the own kernels, `'auto'` (default) may use cuBLAS / hipBLAS. */
  readonly gemm?: 'auto' | 'builtin';
}

/** Options of {@link createBackend}. */
export interface GpuBackendOptions extends BackendCreateOptions {
  /** Device ordinal. Default: `KVQ_CUDA_DEVICE` (`KVQ_ROCM_DEVICE` for ROCm), else 0. */
  readonly device?: number | undefined;
  /**
   * Keep weight matrices and embedding tables on the device after their first use, keyed by their `data` array.
   * Default `true` (`KVQ_GPU_RESIDENT=none` turns it off: every op then uploads its weight). Only for weights nobody
   * modifies in place (call {@link GpuBackend.forget} after changing one).
   */
  readonly residentWeights?: boolean | undefined;
  /**
   * Keep KV caches on the device after their first use (keyed by their pool arrays): `reshapeAndCache` updates the
   * device pools AND the host arrays, `pagedAttention` uploads nothing. Default `false` (`KVQ_GPU_RESIDENT=all`).
   * Only when this backend is the sole writer of those caches.
   */
  readonly residentCaches?: boolean | undefined;
  /**
   * Probe the addon in a child process before loading it in this one (a crashing driver or binary then cannot take
   * this process down). Default `true`.
   */
  readonly probe?: boolean | undefined;
  /** Child-probe time limit in milliseconds. Default 60000. */
  readonly probeTimeoutMs?: number | undefined;
}

/** Options of {@link GpuBackend.benchAttention}. */
export interface AttentionBenchOptions {
  /** KV cache dtype. */
  readonly kvDtype: KvLayerCache['dtype'];
  readonly numSeqs: number;
  /** Context length of every sequence (decode: one query token each). */
  readonly contextLen: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headSize: number;
  /** Default 16. */
  readonly blockSize?: number;
  /** FP8-query mode (FP8 caches only). Default false. */
  readonly fp8Query?: boolean;
  /** Default 3. */
  readonly warmup?: number;
  /** Default 20. */
  readonly iters?: number;
}

/**
 * A GPU backend: the {@link KernelBackend} contract plus device information, residency control, the device-side
 * FP8 checks and benchmarks that `pnpm test:gpu` / `tooling/gpu-check.sh` run.
 */
export interface GpuBackend extends KernelBackend {
  /** `'cuda'` or `'hip'`. */
  readonly vendor: GpuVendor;
  /** The device in use. */
  readonly device: GpuDeviceInfo;
  /** `'cublas'` / `'hipblas'` when the vendor BLAS's SGEMM serves prefill GEMMs (rows > 8), else `'builtin'`; `gemmNote` says why. */
  readonly gemm: 'cublas' | 'hipblas' | 'builtin';
  readonly gemmNote: string;
  /** Device code targets in the binary. */
  readonly targets: string;
  /** Free / total device memory, bytes. */
  memInfo(): { free: number; total: number };
  /**
   * Host<->device bytes and copies of this backend since it was created, counted by the native runtime (inputs and
   * outputs of every op, resident uploads). Take differences around a step to see what it moves.
   * @throws KernelError `UNSUPPORTED` with an addon built before this counter existed (rebuild it).
   */
  transferStats(): TransferStats;
  /**
   * Device memory of the contract (`@kvq/kernels` `DeviceMemory`): activation arrays that stay on the device between
   * ops, and KV pools given to the device (`attachCache`).
   */
  readonly memory: DeviceMemory;
  /** Device bytes held by resident weights and caches (attached KV pools included). */
  readonly residentBytes: number;
  /** Drop the device copy of a resident array (a weight's `data`, a cache's `key` / `value`); true if there was one. */
  forget(array: ArrayBufferView): boolean;
  /** Encode float32 bit patterns `firstBits .. firstBits + count - 1` to FP8 on the device (csrc/fp8.h). */
  encodeFp8Bits(firstBits: number, count: number, format: Fp8Format, options?: { saturation?: Saturation; out?: Uint8Array }): Uint8Array;
  /**
   * Compare csrc/fp8.h with the vendor's own FP8 conversion on the device: all 2^32 float32 inputs (encode) and
   * all 256 codes (decode). CUDA only, OCP formats only (`UNSUPPORTED` otherwise).
   */
  fp8VendorCheck(format: 'e4m3fn' | 'e5m2', saturation?: Saturation): Fp8VendorCheckResult;
  /** Time decode attention on device-resident random data (kernel time only). */
  benchAttention(options: AttentionBenchOptions): NativeAttentionBenchResult;
  /** Device-to-device copy bandwidth in GB/s (bytes read + written), median of `iters`. */
  benchCopy(bytes: number, iters?: number): number;
  /**
   * `linear` on device-resident random data, median milliseconds of the kernel (`gemm: 'builtin'` forces the own
   * kernels for f32 / bf16). Quantized dtypes (GGML blocks, fp8_e4m3 / int8 per-channel, int4 groups of 128) run the
   * kernel `linear` uses for them; their `inFeatures` must be a multiple of 256.
   */
  benchLinear(options: BenchLinearOptions): number;
  /** Free the device context (after in-flight resident buffers are collected). Later calls throw `BACKEND_UNAVAILABLE`. */
  dispose(): void;
}

/** Whether the GPU backend can run here; when not, why. */
export type GpuAvailability =
  | { readonly available: true; readonly path: string; readonly probe: NativeProbe }
  | { readonly available: false; readonly reason: string; readonly probe?: NativeProbe | undefined };

/** Probe (in a child process, cached) without creating a backend. Never throws. */
export function gpuAvailability(spec: GpuVendorSpec = CUDA_SPEC, timeoutMs?: number): GpuAvailability {
  const r = probeAddon(spec, timeoutMs);
  return r.ok ? { available: true, path: r.path, probe: r.probe } : { available: false, reason: r.reason, probe: r.probe };
}

/** {@link gpuAvailability} of the CUDA backend. */
export function cudaAvailability(timeoutMs?: number): GpuAvailability {
  return gpuAvailability(CUDA_SPEC, timeoutMs);
}

function packageVersion(): string | undefined {
  try {
    return (createRequire(import.meta.url)('../package.json') as { version?: string }).version;
  } catch {
    return undefined;
  }
}

/** The GPU specifics over the shared native adapter: device, residency, device checks and benchmarks. */
class NativeGpuBackend extends NativeKernelBackend<NativeContext, NativeDeviceBuffer> implements GpuBackend {
  readonly vendor: GpuVendor;
  readonly device: GpuDeviceInfo;
  readonly gemm: 'cublas' | 'hipblas' | 'builtin';
  readonly gemmNote: string;
  readonly targets: string;
  readonly #residentWeights: boolean;
  readonly #residentCaches: boolean;
  readonly #mixedKv: boolean;
  #resident = new WeakMap<object, NativeDeviceBuffer>();
  #residentBytes = 0;
  /** Device arrays, device-resident KV pools (the contract's `memory`). */
  readonly memory: GpuMemory;

  constructor(spec: GpuVendorSpec, ctx: NativeContext, targets: string, options: GpuBackendOptions, mixedKv: boolean) {
    const resident = (process.env.KVQ_GPU_RESIDENT ?? '').toLowerCase();
    const residentWeights = options.residentWeights ?? resident !== 'none';
    const residentCaches = options.residentCaches ?? resident === 'all';
    const d = ctx.device;
    const gemm = ctx.gemm;
    super(
      spec.name,
      Object.freeze({
        description:
          `${spec.label} on ${d.name} (${d.arch}, ${d.multiProcessors} ${spec.vendor === 'hip' ? 'CUs' : 'SMs'}; ` +
          `${gemm === 'cublas' ? 'cuBLAS SGEMM' : gemm === 'hipblas' ? 'hipBLAS SGEMM' : 'built-in GEMM'}, FP8 dequantized in the attention kernel` +
          `${residentWeights || residentCaches ? `, resident ${[residentWeights ? 'weights' : '', residentCaches ? 'caches' : ''].filter(Boolean).join(' + ')}` : ''})`,
        simd: spec.vendor,
        threads: 1,
        device: d.name,
        version: packageVersion(),
        ...(spec.fp8Fnuz?.(d.arch) === true ? { fp8Fnuz: true } : {}),
      }),
      ctx,
    );
    this.vendor = spec.vendor;
    this.device = d;
    this.gemm = gemm;
    this.gemmNote = ctx.gemmNote;
    this.targets = targets;
    this.#residentWeights = residentWeights;
    this.#residentCaches = residentCaches;
    this.#mixedKv = mixedKv;
    this.memory = new GpuMemory(spec.name, ctx, (cache) => {
      // A cache given to the device leaves the mirrored residency (its pools get one device copy).
      this.forget(cache.key);
      this.forget(cache.value);
    });
  }

  protected override nativeValue(op: string, v: unknown): unknown {
    return isDeviceArray(v) ? this.memory.handle(op, v) : v;
  }

  /** The write-time-scaled KV dtypes (fp8/int8/int4_per_token_head, int4_g*, nvfp4) have kernels (csrc/kvquant.cu). */
  protected override kvQuantKernels(): boolean {
    return true;
  }

  /**
   * Caches whose V pool has another dtype than the K pool run on the device when the binary says it has their kernels
   * (csrc/kvquant.cu: each pool written by its own dtype's rule and decoded by its own dtype in a correctness-first
   * attention kernel); an older binary keeps refusing them before any native call.
   */
  protected override mixedKvKernels(): boolean {
    return this.#mixedKv;
  }

  /** The attention kernels write `lse` (tiled, decode and split-k paths, and the write-time-scaled KV kernel). */
  protected override attentionLse(): boolean {
    return true;
  }

  protected override cacheDeviceOnly(cache: KvLayerCache): boolean {
    return this.memory.isAttached(cache);
  }

  get residentBytes(): number {
    return this.#residentBytes + this.memory.attachedBytes;
  }

  transferStats(): TransferStats {
    const native = this.ctx;
    if (typeof native.transferStats !== 'function') {
      throw new KernelError('UNSUPPORTED', 'transferStats: this addon was built before transfer counting; rebuild it (build:gpu)', { argument: 'transferStats' });
    }
    return this.call('transferStats', () => native.transferStats!());
  }

  memInfo(): { free: number; total: number } {
    return this.call('memInfo', () => this.ctx.memInfo());
  }

  /** The resident copy of `array`, uploading it on first use. */
  #residentOf(array: Float32Array | Uint16Array | Uint8Array | Int8Array): NativeDeviceBuffer {
    let b = this.#resident.get(array);
    if (!b) {
      b = this.ctx.upload(array);
      this.#resident.set(array, b);
      this.#residentBytes += b.byteLength;
    }
    return b;
  }

  forget(array: ArrayBufferView): boolean {
    const b = this.#resident.get(array);
    if (!b) return false;
    this.#residentBytes -= b.byteLength;
    b.free();
    this.#resident.delete(array);
    return true;
  }

  protected override weightDevice(data: NativeWeightData): NativeDeviceBuffer | null {
    return this.#residentWeights ? this.#residentOf(data) : null;
  }

  /**
   * The resident buffers of a weight: its data (block bytes, fp8 codes, int8 values or packed int4) and, for the
   * compressed-tensors dtypes, its `scale` and int4 `zeroPoint` arrays (each keyed by its own array, so shared
   * scale arrays are uploaded once); nulls when weights are not resident.
   */
  #weightBuffers(w: WeightMatrix): [NativeDeviceBuffer | null, NativeDeviceBuffer | null, NativeDeviceBuffer | null] {
    if (!this.#residentWeights) return [null, null, null];
    const ct = w.dtype === 'fp8_e4m3' || w.dtype === 'int8' || w.dtype === 'int4';
    const scale = ct && w.scale ? this.#residentOf(w.scale) : null;
    const zeroPoint = w.dtype === 'int4' && w.zeroPoint ? this.#residentOf(w.zeroPoint) : null;
    return [this.#residentOf(w.data), scale, zeroPoint];
  }

  override linear(args: LinearArgs<Activation>): void {
    const native = this.linearArgs(args);
    this.call('linear', () => this.ctx.linear(...native, ...this.#weightBuffers(args.weight)));
  }

  /** `rope` with the cos / sin table resident (a model constant, like the weights) when weights are. */
  protected override standardNativeArgs(op: StandardNativeOpName, args: unknown, native: unknown[]): unknown[] {
    const out = super.standardNativeArgs(op, args, native);
    if (op === 'rope' && this.#residentWeights) {
      const table = (args as RopeArgs<Activation>).table;
      out[9] = this.#residentOf(table.cos);
      out[10] = this.#residentOf(table.sin);
    }
    return out;
  }

  override embedding(args: EmbeddingArgs<Activation>): void {
    const { numTokens } = validateEmbedding(args);
    const t = args.table;
    const out = this.nativeActivation('embedding', args.out);
    this.call('embedding', () => this.ctx.embedding(...weightArgs(t), args.ids, out, numTokens, ...this.#weightBuffers(t)));
  }

  protected override cacheDevice(cache: KvLayerCache): [NativeDeviceBuffer | null, NativeDeviceBuffer | null] {
    const attached = this.memory.pools(cache);
    if (attached) return attached;
    if (!this.#residentCaches) return [null, null];
    return [this.#residentOf(cache.key), this.#residentOf(cache.value)];
  }

  fp8VendorCheck(format: 'e4m3fn' | 'e5m2', saturation: Saturation = 'satfinite'): Fp8VendorCheckResult {
    if (format !== 'e4m3fn' && format !== 'e5m2') {
      throw new KernelError('INVALID_ARGUMENT', `format must be 'e4m3fn' or 'e5m2', got ${JSON.stringify(format)}`, { argument: 'format' });
    }
    return this.call('fp8VendorCheck', () => this.ctx.fp8VendorCheck(FORMAT_CODE[format], saturation !== 'nosat'));
  }

  benchAttention(o: AttentionBenchOptions): NativeAttentionBenchResult {
    const dtype = (DTYPE_CODE as Record<string, number | undefined>)[o.kvDtype];
    if (dtype === undefined) {
      throw new KernelError('INVALID_ARGUMENT', `kvDtype must be one of ${Object.keys(DTYPE_CODE).join(', ')}, got ${JSON.stringify(o.kvDtype)}`, {
        argument: 'kvDtype',
      });
    }
    return this.call('benchAttention', () =>
      this.ctx.benchAttention({
        dtype,
        numSeqs: o.numSeqs,
        contextLen: o.contextLen,
        numHeads: o.numHeads,
        numKvHeads: o.numKvHeads,
        headSize: o.headSize,
        blockSize: o.blockSize ?? 16,
        fp8Query: o.fp8Query ? 1 : 0,
        warmup: o.warmup ?? 3,
        iters: o.iters ?? 20,
      }),
    );
  }

  benchCopy(bytes: number, iters = 20): number {
    return this.call('benchCopy', () => this.ctx.benchCopy(bytes, iters));
  }

  benchLinear(o: BenchLinearOptions): number {
    return this.call('benchLinear', () =>
      this.ctx.benchLinear(DTYPE_CODE[o.weightDtype], o.rows, o.inFeatures, o.outFeatures, o.iters ?? 20, o.gemm !== 'builtin'),
    );
  }

  override dispose(): void {
    this.memory.dispose();
    this.#resident = new WeakMap();
    this.#residentBytes = 0;
    this.ctx.dispose();
  }
}

/**
 * Create a GPU backend for `spec` (the CUDA package's {@link createBackend}; `@kvq/kernels-rocm` passes its own
 * spec). Probes the addon in a child process first (unless `probe: false`), then loads it and opens the device.
 * @throws KernelError `BACKEND_UNAVAILABLE` (not built, does not load, no driver, no device; the message says which
 *   and how to fix it), `INVALID_ARGUMENT` for bad options.
 */
export function createGpuBackend(spec: GpuVendorSpec, options: GpuBackendOptions = {}): GpuBackend {
  let device = options.device ?? envInt(spec.deviceEnv, 0) ?? 0;
  if (!Number.isInteger(device) || device < 0 || device > 1024) {
    throw new KernelError('INVALID_ARGUMENT', `device must be an integer in [0, 1024], got ${String(device)}`, { argument: 'device' });
  }
  device = Math.trunc(device);
  if (options.probe !== false) {
    const p = probeAddon(spec, options.probeTimeoutMs);
    if (!p.ok) throw unavailable(spec.packageName, p.reason);
    if (device >= p.probe.deviceCount) {
      throw unavailable(spec.packageName, `device ${device} does not exist (${p.probe.deviceCount} ${spec.label} device${p.probe.deviceCount === 1 ? '' : 's'})`);
    }
  }
  const load = loadAddon(spec);
  if (!load.ok) throw unavailable(spec.packageName, load.reason, load.cause);
  let ctx: NativeContext;
  try {
    ctx = new load.addon.Context(device);
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (code === 'BACKEND_UNAVAILABLE' || code === 'UNSUPPORTED') throw unavailable(spec.packageName, (e as Error).message, e);
    throw toKernelError(e, 'createBackend');
  }
  return new NativeGpuBackend(spec, ctx, load.addon.targets, options, load.addon.mixedKvKernels === true);
}

/**
 * Create the CUDA backend (the factory the `@kvq/kernels` loader imports).
 * @throws KernelError `BACKEND_UNAVAILABLE` when the addon is not built, does not load, or no CUDA driver / device
 *   is usable here (the message says which and how to fix it); `INVALID_ARGUMENT` for bad options.
 * @example
 * const gpu = createBackend();            // device 0, after a child-process probe
 * gpu.pagedAttention({ query, out, cache, queryStartLoc, seqLens, blockTables, maxBlocksPerSeq, numSeqs, numHeads });
 * gpu.dispose();
 */
export function createBackend(options: GpuBackendOptions = {}): GpuBackend {
  return createGpuBackend(CUDA_SPEC, options);
}
