/**
 * The shape of the native module `build/Release/kvq_cpu.node` (csrc/addon.cc): the kernel ops every native addon
 * exports (`NativeKernelOps` of `@kvq/kernels/native`, read by the shared csrc/napi_args.h) plus what only the CPU
 * addon has (ISA, thread pool, async ops, CPU features). Only `./backend.ts` calls it.
 *
 * NOTE: keep in sync with csrc/addon.cc; the ABI is the shared one (`NATIVE_ABI` / napi_args.h `kAbi`).
 * @module
 */
import type { LinearNativeArgs, NativeKernelOps, PagedAttentionNativeArgs } from '@kvq/kernels/native';

/**
 * Kernel instruction sets the addon is built with: `'amx'` (the avx512 kernels plus Intel AMX tiles for the prefill
 * GEMM of the GGML types with 8-bit activations; Linux, Sapphire Rapids and later), `'avx512'` and `'avx2'` on x86-64, `'neon'` (Advanced SIMD, the
 * AArch64 baseline) and `'neon-dotprod'` (the neon kernels with SDOT int8 dots for the GGML weights; Linux, CPUs with
 * the dot-product extension: Cortex-A55/A76 and later, Neoverse N1 / Graviton 2 and later) on arm64, `'scalar'`
 * (portable C++) everywhere. On macOS the `'neon'` tier itself has SDOT (Apple Silicon's baseline).
 */
export type CpuIsa = 'scalar' | 'avx2' | 'avx512' | 'amx' | 'neon' | 'neon-dotprod';

/**
 * CPU features the addon detected. The x86-64 ones come from `__builtin_cpu_supports` (which also checks OS support
 * of the registers) and are all false on arm64, where the NEON tier needs no detection (Advanced SIMD is part of the
 * AArch64 baseline); `dotprod` is the arm64 Linux kernel's HWCAP_ASIMDDP (false elsewhere).
 */
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
  /** AMX-TILE + AMX-INT8 with the tile state enabled by the OS (the `amx` tier also needs Linux's per-process grant). */
  readonly amxInt8: boolean;
  /** AArch64 dot-product extension (SDOT/UDOT) as Linux reports it (HWCAP_ASIMDDP); what the `neon-dotprod` tier needs. */
  readonly dotprod: boolean;
}

/** `cpuInfo()` result. */
export interface NativeCpuInfo {
  readonly features: CpuFeatures;
  /** ISAs usable on this CPU, best first (always ends with `'scalar'`). */
  readonly isas: readonly CpuIsa[];
  /** CPUs this process may run on (affinity mask). */
  readonly cpus: number;
}

/** One native context: a thread pool and the kernels of one ISA. */
export interface NativeContext extends NativeKernelOps {
  readonly isa: CpuIsa;
  /** Threads used per op (0 once disposed). */
  readonly threads: number;
  /** float32 lanes per vector (avx512 16, avx2 8, neon and neon-dotprod 4, scalar 1). */
  readonly vectorWidth: number;
  setSpinMicros(us: number): void;
  /** `linear` on a libuv worker thread. */
  linearAsync(...args: LinearNativeArgs): Promise<void>;
  /** `pagedAttention` on a libuv worker thread. */
  pagedAttentionAsync(...args: PagedAttentionNativeArgs): Promise<void>;
  /**
   * Stream the first `length` bytes of `data` once on the pool's threads and return a checksum (the memory-read
   * baseline of scripts/bench-ratios.mjs's weight-GEMV table).
   */
  readBytes(data: Uint8Array, length: number): number;
  /**
   * GGML's 8-bit activation quantization of `rows` rows of `cols` floats (`cols` a multiple of `block`: 32 = Q8_0,
   * 256 = Q8_K) into `q` (rows * cols int8) and `scales` (rows * cols / block): the first step of `linear` with
   * `activations: 'q8'` on this context's ISA, exposed for bit-exactness tests.
   */
  quantizeActivationsQ8(x: Float32Array, rows: number, cols: number, block: 32 | 256, q: Int8Array, scales: Float32Array): void;
  /** The vocabulary pass of sampling (csrc/sample_buckets.h); `result` gets `[count, total, max, floor]`. */
  sampleBuckets(logits: Float32Array, temperature: number, lower: number, pruneNats: number, topK: number, minWeight: number, mass: Float64Array, result: Float64Array): void;
  /** The candidates of one weight bucket (csrc/sample_buckets.h); returns how many. */
  sampleBucketIds(logits: Float32Array, temperature: number, max: number, floor: number, minWeight: number, bucket: number, ids: Int32Array, weight: Float64Array): number;
  /** One token drawn from a logits row (csrc/sample_draw.h); -1 when the row has no candidate. */
  sampleDraw(logits: Float32Array, temperature: number, topK: number, topP: number, minWeight: number, pruneNats: number, u: number): number;
}

/** The module object `require('kvq_cpu.node')` returns. */
export interface NativeAddon {
  readonly abi: number;
  /**
   * True when the kernels implement the write-time-scaled KV dtypes (docs/spec/kv-dtypes.md; absent in binaries built
   * before them, which then answer `UNSUPPORTED` for those dtypes).
   */
  readonly kvQuantKernels?: boolean;
  /**
   * True when the kernels implement caches whose V pool has another KV dtype than the K pool (`valueDtype`; absent in
   * binaries built before them, which then answer `UNSUPPORTED` for such caches before any native call).
   */
  readonly mixedKvKernels?: boolean;
  /** `new Context(threads, isa, spinMicros)`; isa `'auto'` picks the best usable one. Throws `UNSUPPORTED` for an unusable ISA. */
  readonly Context: new (threads: number, isa: CpuIsa | 'auto', spinMicros: number) => NativeContext;
  cpuInfo(): NativeCpuInfo;
  /** fp8.h `fp8_decode_rt` (the shared host/device header's scalar decoder). */
  fp8Decode(code: number, format: number): number;
  /** fp8.h `fp8_encode_rt` of `Math.fround(x)`. */
  fp8Encode(x: number, format: number, satfinite: boolean): number;
}
