/**
 * The shape of the native GPU module (`build/Release/kvq_cuda.node`, and `kvq_rocm.node` of `@kvq/kernels-rocm`,
 * both from csrc/addon.cc), declared once. Only the facade (`./backend.ts`) calls it. Arguments are positional,
 * typed arrays are read in place (the addon copies them to the device), and every length, index and kind is
 * re-checked natively, so a direct call with bad input throws an `Error` with `code` / `argument`.
 *
 * NOTE: keep in sync with csrc/addon.cc; bump {@link ADDON_ABI} and `kAbi` there together.
 * @module
 */

/** ABI version this facade speaks; a binary reporting another one is stale and is not loaded. */
export const ADDON_ABI = 1;

/** Numeric codes of storage dtypes (csrc/gpu.h `DtypeCode`, the same as `@kvq/kernels-cpu`). */
export const DTYPE_CODE = {
  f32: 0,
  bf16: 1,
  f16: 2,
  e4m3fn: 3,
  e5m2: 4,
  e4m3fnuz: 5,
  e5m2fnuz: 6,
} as const;

/** Numeric codes of FP8 formats (csrc/fp8.h `Fp8Format`). */
export const FORMAT_CODE = { e4m3fn: 0, e5m2: 1, e4m3fnuz: 2, e5m2fnuz: 3 } as const;

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
/** Pool array of any KV dtype. */
type Pool = Float32Array | Uint16Array | Uint8Array;
type Dev = NativeDeviceBuffer | null;

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
export interface NativeAttentionBenchOptions {
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

/**
 * One native context: a device, a stream and scratch buffers. Cache arguments are spread as
 * `(dtypeCode, key, value, numBlocks, blockSize, numKvHeads, headSize, kScale, vScale)`.
 */
export interface NativeContext {
  readonly device: GpuDeviceInfo;
  /** `'cublas'` / `'hipblas'` when the vendor BLAS's SGEMM serves prefill GEMMs, else `'builtin'`. */
  readonly gemm: 'cublas' | 'hipblas' | 'builtin';
  /** Why (cuBLAS path, or why not). */
  readonly gemmNote: string;
  readonly disposed: boolean;
  dispose(): void;
  memInfo(): { free: number; total: number };
  upload(array: F32 | U16 | U8 | I32): NativeDeviceBuffer;
  download(buffer: NativeDeviceBuffer, into: F32 | U16 | U8 | I32): void;
  linear(x: F32, w: F32 | U16, wDtype: number, rows: number, inF: number, outF: number, bias: F32 | null, out: F32, wDev?: Dev): void;
  rmsNorm(x: F32, weight: F32, out: F32, rows: number, hidden: number, eps: number): void;
  add(a: F32, b: F32, out: F32, length: number): void;
  siluAndMul(gate: F32, up: F32, out: F32, length: number): void;
  embedding(table: F32 | U16, dtype: number, vocab: number, hidden: number, ids: I32, out: F32, numTokens: number, tableDev?: Dev): void;
  rope(
    query: F32,
    key: F32,
    positions: I32,
    numTokens: number,
    numHeads: number,
    numKvHeads: number,
    headSize: number,
    rotaryDim: number,
    maxPositions: number,
    cos: F32,
    sin: F32,
    interleaved: boolean,
  ): void;
  softmax(x: F32, out: F32, rows: number, cols: number): void;
  reshapeAndCache(
    key: F32,
    value: F32,
    slotMapping: I32,
    numTokens: number,
    dtype: number,
    kPool: Pool,
    vPool: Pool,
    numBlocks: number,
    blockSize: number,
    numKvHeads: number,
    headSize: number,
    kScale: F32,
    vScale: F32,
    kDev?: Dev,
    vDev?: Dev,
  ): void;
  pagedAttention(...args: PagedAttentionNativeArgs): void;
  amaxTensor(x: F32, length: number): number;
  amaxPerHead(x: F32, out: F32, numTokens: number, numHeads: number, headSize: number, accumulate: boolean): void;
  /** Run r (elements `[r * runLength, (r + 1) * runLength)`) uses `scales[period ? r % period : r]`. */
  quantizeFp8(src: F32, out: U8, length: number, scales: F32, runLength: number, period: number, format: number, satfinite: boolean): void;
  dequantizeFp8(src: U8, out: F32, length: number, scales: F32, runLength: number, period: number, format: number): void;
  /** Encode the float32 bit patterns `firstBits .. firstBits + count - 1` (unscaled) on the device. */
  encodeFp8Bits(firstBits: number, count: number, out: U8, format: number, satfinite: boolean): void;
  fp8VendorCheck(format: number, satfinite: boolean): Fp8VendorCheckResult;
  benchAttention(options: NativeAttentionBenchOptions): NativeAttentionBenchResult;
  /** Device-to-device copy, GB/s counting bytes read and written. */
  benchCopy(bytes: number, iters: number): number;
  /** `linear` on resident random data, median milliseconds. */
  benchLinear(wDtype: number, rows: number, inF: number, outF: number, iters: number, useCublas: boolean): number;
}

/** Positional arguments of `pagedAttention`. `fp8Query`: 0 off, 1 satfinite, 2 nosat. */
export type PagedAttentionNativeArgs = [
  query: F32,
  out: F32,
  dtype: number,
  kPool: Pool,
  vPool: Pool,
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
  kDev: Dev,
  vDev: Dev,
];

/** The module object `require('kvq_cuda.node')` returns. */
export interface NativeAddon {
  readonly abi: number;
  readonly vendor: GpuVendor;
  readonly targets: string;
  /** `new Context(device)`; throws `BACKEND_UNAVAILABLE` when there is no such usable device. */
  readonly Context: new (device: number) => NativeContext;
  probe(): NativeProbe;
}
