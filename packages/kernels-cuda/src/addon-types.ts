/**
 * The shape of the native GPU module (`build/Release/kvq_cuda.node`, and `kvq_rocm.node` of `@kvq/kernels-rocm`,
 * both from csrc/addon.cc): the kernel ops every native addon exports (`NativeKernelOps` of `@kvq/kernels/native`,
 * read by the shared csrc/napi_args.h, here with resident {@link NativeDeviceBuffer}s after the shared arguments)
 * plus what only the GPU addon has (probe, device, residency, device checks and benchmarks).
 *
 * NOTE: keep in sync with csrc/addon.cc; the ABI is the shared one (`NATIVE_ABI` / napi_args.h `kAbi`).
 * @module
 */
import type { EmbeddingNativeArgs, LinearNativeArgs, NativeKernelOps } from '@kvq/kernels/native';

/** The vendor runtime a binary was built for (`'sim'`: the CPU simulator of csrc/sim, for tests). */
export type GpuVendor = 'cuda' | 'hip' | 'sim';

/** Properties of one device, as the runtime reports them. */
export interface GpuDeviceInfo {
  readonly ordinal: number;
  /** e.g. `'NVIDIA H100 80GB HBM3'`. */
  readonly name: string;
  /** `'sm_90'` (NVIDIA) or the gcnArchName, e.g. `'gfx942:sramecc+:xnack-'` (AMD). */
  readonly arch: string;
  /** `'9.0'` (NVIDIA major.minor; on AMD what HIP reports). */
  readonly computeCapability: string;
  readonly multiProcessors: number;
  /** 32 (NVIDIA, RDNA) or 64 (CDNA wavefronts). */
  readonly warpSize: number;
  /** Bytes. */
  readonly totalMemory: number;
  /** Bytes. */
  readonly l2Bytes: number;
  /** Largest shared memory a block may opt into, bytes. */
  readonly sharedPerBlock: number;
  readonly memoryClockKHz: number;
  readonly busWidthBits: number;
  /** Theoretical peak DRAM bandwidth `2 * clock * busWidth / 8`, GB/s (10^9 B/s); 0 when unknown. */
  readonly peakBandwidthGBs: number;
}

/** `probe()` result: what the vendor runtime sees, without creating a context. Never throws. */
export interface NativeProbe {
  readonly ok: boolean;
  /** Why no device is usable (only when `ok` is false). */
  readonly reason?: string;
  readonly vendor: GpuVendor;
  /** Device code targets in the binary, e.g. `'sm_80+sm_89+sm_90+compute_90'`. */
  readonly targets: string;
  /** e.g. 13000 for CUDA 13.0. */
  readonly runtimeVersion: number;
  /** 0 when no driver is installed. */
  readonly driverVersion: number;
  readonly deviceCount: number;
  readonly devices: readonly GpuDeviceInfo[];
}

/** Device memory holding a copy of a typed array (`Context.upload`). Freed when collected or by `free()`. */
export interface NativeDeviceBuffer {
  readonly byteLength: number;
  free(): void;
}

type F32 = Float32Array;
type I32 = Int32Array;
type U8 = Uint8Array;
type U16 = Uint16Array;
type I8 = Int8Array;

/** `fp8VendorCheck` result: csrc/fp8.h against the vendor's own conversion, on the device. */
export interface Fp8VendorCheckResult {
  /** Float32 bit patterns (of all 2^32) whose encoding differs. */
  readonly encodeMismatches: number;
  /** The smallest such bit pattern, or null. */
  readonly firstEncodeMismatch: number | null;
  /** FP8 codes (of 256) whose decoded float32 bits differ. */
  readonly decodeMismatches: number;
  /** Device time of the sweep, milliseconds. */
  readonly ms: number;
}

/** Options of `benchAttention` (decode: one query token per sequence). */
interface NativeAttentionBenchOptions {
  readonly dtype: number;
  readonly numSeqs: number;
  readonly contextLen: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headSize: number;
  readonly blockSize: number;
  /** 0 off, 1 FP8-query mode (satfinite). */
  readonly fp8Query: number;
  readonly warmup: number;
  readonly iters: number;
}

/** `benchAttention` result (kernel time only, data resident on the device). */
export interface NativeAttentionBenchResult {
  readonly msMedian: number;
  readonly msMin: number;
  /** K + V + query + output + block-table bytes, each moved once. */
  readonly bytesMoved: number;
  /** bytesMoved / msMedian, GB/s. */
  readonly gbps: number;
  /** Key splits per (sequence, kv head). */
  readonly splits: number;
  /** Sum of the output's bit patterns (low 53 bits). */
  readonly checksum: number;
  /** Whether every output element is finite. */
  readonly finite: boolean;
}

/** One native context: a device, a stream and scratch buffers; the shared ops take resident buffers last. */
export interface NativeContext extends NativeKernelOps<NativeDeviceBuffer> {
  /**
   * `linear` with the weight's resident device buffers after the shared arguments: its data (block bytes), and for
   * the compressed-tensors dtypes its `scale` and int4 `zeroPoint` (each null = uploaded per call).
   */
  linear(...args: [...LinearNativeArgs, wDev?: NativeDeviceBuffer | null, scaleDev?: NativeDeviceBuffer | null, zeroPointDev?: NativeDeviceBuffer | null]): void;
  /** `embedding` with the table's resident buffers after the shared arguments (as {@link NativeContext.linear}). */
  embedding(
    ...args: [...EmbeddingNativeArgs, tableDev?: NativeDeviceBuffer | null, scaleDev?: NativeDeviceBuffer | null, zeroPointDev?: NativeDeviceBuffer | null]
  ): void;
  readonly device: GpuDeviceInfo;
  /** `'cublas'` / `'hipblas'` when the vendor BLAS's SGEMM serves prefill GEMMs, else `'builtin'`. */
  readonly gemm: 'cublas' | 'hipblas' | 'builtin';
  /** Why (cuBLAS path, or why not). */
  readonly gemmNote: string;
  readonly disposed: boolean;
  memInfo(): { free: number; total: number };
  /** Cumulative host<->device traffic of this context (optional: addons built before it lack it). */
  transferStats?(): TransferStats;
  upload(array: F32 | U16 | U8 | I8 | I32): NativeDeviceBuffer;
  download(buffer: NativeDeviceBuffer, into: F32 | U16 | U8 | I32): void;
  /** A device buffer of `length` elements of `kind` (0 f32, 1 i32, 2 u16, 3 u8, 4 i8); contents undefined. */
  alloc?(kind: number, length: number): NativeDeviceBuffer;
  /** Host -> device into elements `[offset, offset + array.length)`; the array must have the buffer's element type. */
  write?(buffer: NativeDeviceBuffer, array: F32 | I32 | U16 | U8 | I8, offset: number): void;
  /** Device -> host from elements `[offset, offset + array.length)`, after the queued work (a sync point). */
  read?(buffer: NativeDeviceBuffer, array: F32 | I32 | U16 | U8 | I8, offset: number): void;
  /** Device -> device byte copy, queued on the stream. */
  copy?(dst: NativeDeviceBuffer, dstByteOffset: number, src: NativeDeviceBuffer, srcByteOffset: number, bytes: number): void;
  fp8VendorCheck(format: number, satfinite: boolean): Fp8VendorCheckResult;
  benchAttention(options: NativeAttentionBenchOptions): NativeAttentionBenchResult;
  /** Device-to-device copy, GB/s counting bytes read and written. */
  benchCopy(bytes: number, iters: number): number;
  /** `linear` on resident random data, median milliseconds. */
  benchLinear(wDtype: number, rows: number, inF: number, outF: number, iters: number, useCublas: boolean): number;
}

/** Host<->device traffic of a GPU context since it was created (every copy of inputs, outputs and uploads). */
export interface TransferStats {
  /** Bytes copied host -> device. */
  readonly hostToDeviceBytes: number;
  /** Bytes copied device -> host. */
  readonly deviceToHostBytes: number;
  /** Number of host -> device copies. */
  readonly hostToDeviceCopies: number;
  /** Number of device -> host copies. */
  readonly deviceToHostCopies: number;
  /**
   * Number of times the host waited for the device: an op whose outputs are all device arrays returns without waiting
   * (asynchronous submission); reads and ops with host outputs wait.
   */
  readonly waits: number;
}

/** The module object `require('kvq_cuda.node')` returns. */
export interface NativeAddon {
  readonly abi: number;
  readonly vendor: GpuVendor;
  readonly targets: string;
  /**
   * True when the kernels implement caches whose V pool has another KV dtype than the K pool (`valueDtype`; csrc/kvquant.cu's
   * mixed path). Absent in binaries built before them, which the facade then keeps refusing such caches
   * (`UNSUPPORTED` on `cache.valueDtype`) before any native call.
   */
  readonly mixedKvKernels?: boolean;
  /** `new Context(device)`; throws `BACKEND_UNAVAILABLE` when there is no such usable device. */
  readonly Context: new (device: number) => NativeContext;
  probe(): NativeProbe;
}
