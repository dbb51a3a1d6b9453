/**
 * The shape of the native module `build/Release/kvq_cpu.node` (csrc/addon.cc), declared once. Only
 * `./backend.ts` calls it. Arguments are positional (cheaper than reading object properties in C++), typed
 * arrays are passed zero-copy, and every length, index and kind is re-checked natively, so a direct call with
 * bad input throws an `Error` with `code` / `argument` instead of crashing.
 *
 * NOTE: keep in sync with csrc/addon.cc; bump {@link ADDON_ABI} and `kAbi` there together.
 * @module
 */

/** ABI version this facade speaks; a binary reporting another one is stale and is not loaded. */
export const ADDON_ABI = 1;

/** Numeric codes of storage dtypes (csrc/kernels.h `DtypeCode`). */
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

/** Kernel instruction sets the addon is built with. */
export type CpuIsa = 'scalar' | 'avx2' | 'avx512';

/** CPU features the addon detected (`__builtin_cpu_supports`, which also checks OS support of the registers). */
export interface CpuFeatures {
  readonly sse42: boolean;
  readonly avx2: boolean;
  readonly fma: boolean;
  readonly f16c: boolean;
  readonly avx512f: boolean;
  readonly avx512bw: boolean;
  readonly avx512vl: boolean;
  readonly avx512dq: boolean;
  readonly avx512vbmi: boolean;
  readonly avx512bf16: boolean;
  readonly avx512fp16: boolean;
  readonly avx512vnni: boolean;
}

/** `cpuInfo()` result. */
export interface NativeCpuInfo {
  readonly features: CpuFeatures;
  /** ISAs usable on this CPU, best first (always ends with `'scalar'`). */
  readonly isas: readonly CpuIsa[];
  /** CPUs this process may run on (affinity mask). */
  readonly cpus: number;
}

type F32 = Float32Array;
type I32 = Int32Array;
type U8 = Uint8Array;
type U16 = Uint16Array;
/** Pool array of any KV dtype. */
type Pool = Float32Array | Uint16Array | Uint8Array;

/**
 * One native context: a thread pool and the kernels of one ISA.
 * Cache arguments are spread as `(dtypeCode, key, value, numBlocks, blockSize, numKvHeads, headSize, kScale, vScale)`.
 */
export interface NativeContext {
  readonly isa: CpuIsa;
  /** Threads used per op (0 once disposed). */
  readonly threads: number;
  /** float32 lanes per vector (16, 8 or 1). */
  readonly vectorWidth: number;
  setSpinMicros(us: number): void;
  dispose(): void;
  linear(x: F32, w: F32 | U16, wDtype: number, rows: number, inF: number, outF: number, bias: F32 | null, out: F32): void;
  linearAsync(x: F32, w: F32 | U16, wDtype: number, rows: number, inF: number, outF: number, bias: F32 | null, out: F32): Promise<void>;
  rmsNorm(x: F32, weight: F32, out: F32, rows: number, hidden: number, eps: number): void;
  add(a: F32, b: F32, out: F32, length: number): void;
  siluAndMul(gate: F32, up: F32, out: F32, length: number): void;
  embedding(table: F32 | U16, dtype: number, vocab: number, hidden: number, ids: I32, out: F32, numTokens: number): void;
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
  ): void;
  pagedAttention(...args: PagedAttentionNativeArgs): void;
  pagedAttentionAsync(...args: PagedAttentionNativeArgs): Promise<void>;
  amaxTensor(x: F32, length: number): number;
  amaxPerHead(x: F32, out: F32, numTokens: number, numHeads: number, headSize: number, accumulate: boolean): void;
  /** Run r (elements `[r * runLength, (r + 1) * runLength)`) uses `scales[period ? r % period : r]`. */
  quantizeFp8(src: F32, out: U8, length: number, scales: F32, runLength: number, period: number, format: number, satfinite: boolean): void;
  dequantizeFp8(src: U8, out: F32, length: number, scales: F32, runLength: number, period: number, format: number): void;
  /** Encode the float32 bit patterns `firstBits .. firstBits + count - 1` (unscaled) into `out`. */
  encodeFp8Bits(firstBits: number, count: number, out: U8, format: number, satfinite: boolean): void;
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
];

/** The module object `require('kvq_cpu.node')` returns. */
export interface NativeAddon {
  readonly abi: number;
  /** `new Context(threads, isa, spinMicros)`; isa `'auto'` picks the best usable one. Throws `UNSUPPORTED` for an unusable ISA. */
  readonly Context: new (threads: number, isa: CpuIsa | 'auto', spinMicros: number) => NativeContext;
  cpuInfo(): NativeCpuInfo;
  /** fp8.h `fp8_decode_rt` (the shared host/device header's scalar decoder). */
  fp8Decode(code: number, format: number): number;
  /** fp8.h `fp8_encode_rt` of `Math.fround(x)`. */
  fp8Encode(x: number, format: number, satfinite: boolean): number;
}
