/**
 * The typed facade over the native addon: validates every op with `@kvq/kernels`' shared `validate*` helpers (so
 * bad input raises the same {@link KernelError} as every other backend, before any native code runs), then calls
 * the addon with zero-copy typed arrays and positional sizes.
 * @module
 */
import { createRequire } from 'node:module';
import type { Fp8Format, Saturation, ScaleLayout } from '@kvq/fp8';
import {
  KernelError,
  validateAdd,
  validateAmaxPerHead,
  validateAmaxTensor,
  validateDequantizeFp8,
  validateEmbedding,
  validateLinear,
  validatePagedAttention,
  validateQuantizeFp8,
  validateReshapeAndCache,
  validateRmsNorm,
  validateRope,
  validateSiluAndMul,
  validateSoftmax,
  type AddArgs,
  type AmaxPerHeadArgs,
  type AmaxTensorArgs,
  type BackendCreateOptions,
  type BackendInfo,
  type DequantizeFp8Args,
  type EmbeddingArgs,
  type KernelBackend,
  type LinearArgs,
  type PagedAttentionArgs,
  type QuantizeFp8Args,
  type ReshapeAndCacheArgs,
  type RmsNormArgs,
  type RopeArgs,
  type SiluAndMulArgs,
  type SoftmaxArgs,
} from '@kvq/kernels';
import {
  DTYPE_CODE,
  FORMAT_CODE,
  type CpuIsa,
  type NativeContext,
  type NativeCpuInfo,
  type PagedAttentionNativeArgs,
} from './addon-types.js';
import { toKernelError, unavailable } from './errors.js';
import { loadAddon } from './load.js';

/** The name the loader and `KVQ_BACKEND` use for this backend. */
export const backendName = 'cpu';

/** Default idle spin of pool workers before they sleep, in microseconds. */
export const DEFAULT_SPIN_MICROS = 50;

/** Options of {@link createBackend}. */
export interface CpuBackendOptions extends BackendCreateOptions {
  /**
   * Threads per op, the calling thread included (`>= 1`). Default: `KVQ_CPU_THREADS`, else the CPUs this process
   * may run on (affinity mask). Small ops always run on the calling thread alone.
   */
  readonly threads?: number | undefined;
  /**
   * Kernel instruction set: `'auto'` (default: `KVQ_CPU_ISA`, else the best this CPU supports), `'avx512'`,
   * `'avx2'` or `'scalar'`. Forcing an ISA the CPU lacks throws `BACKEND_UNAVAILABLE`.
   */
  readonly isa?: CpuIsa | 'auto' | undefined;
  /** Microseconds an idle worker spins before sleeping. Default: `KVQ_CPU_SPIN_US`, else {@link DEFAULT_SPIN_MICROS}. */
  readonly spinMicros?: number | undefined;
}

/**
 * The native CPU backend: the {@link KernelBackend} contract plus a few CPU-specific extras.
 * NOTE: ops hold the backend's pool for their duration; an async op and a sync op on the same backend run one
 * after the other, never interleaved.
 */
export interface CpuBackend extends KernelBackend {
  /** Kernel instruction set in use. */
  readonly isa: CpuIsa;
  /** Threads per op (0 after {@link CpuBackend.dispose}). */
  readonly threads: number;
  /** `linear` on a libuv worker thread (the JS thread stays free); same validation, same result. Keep the arrays untouched until it resolves. */
  linearAsync(args: LinearArgs): Promise<void>;
  /** `pagedAttention` on a libuv worker thread; same validation, same result. Keep the arrays untouched until it resolves. */
  pagedAttentionAsync(args: PagedAttentionArgs): Promise<void>;
  /** Change the idle spin of the pool's workers (microseconds, `>= 0`). */
  setSpinMicros(us: number): void;
  /**
   * Encode the float32 bit patterns `firstBits .. firstBits + count - 1` to FP8 (no scale) with the native
   * encoder (`csrc/fp8.h`) — what the CUDA-oracle test hashes. Returns `out` (or a new array).
   */
  encodeFp8Bits(firstBits: number, count: number, format: Fp8Format, options?: { saturation?: Saturation; out?: Uint8Array }): Uint8Array;
  /** Stop the pool's threads and free scratch memory. Later calls throw `BACKEND_UNAVAILABLE`. Idempotent. */
  dispose(): void;
}

/** Whether the native addon loads here; when not, why. */
export type CpuAvailability =
  | { readonly available: true; readonly path: string; readonly cpu: NativeCpuInfo }
  | { readonly available: false; readonly reason: string };

/** Probe the native addon without creating a backend (never throws). */
export function cpuAvailability(): CpuAvailability {
  const load = loadAddon();
  if (!load.ok) return { available: false, reason: load.reason };
  try {
    return { available: true, path: load.path, cpu: load.addon.cpuInfo() };
  } catch (e) {
    return { available: false, reason: `cpuInfo() failed: ${e instanceof Error ? e.message : String(e)}` };
  }
}

function envInt(name: string, min: number): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return undefined;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min) {
    throw new KernelError('INVALID_ARGUMENT', `${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`, { argument: name });
  }
  return v;
}

function packageVersion(): string | undefined {
  try {
    return (createRequire(import.meta.url)('../package.json') as { version?: string }).version;
  } catch {
    return undefined;
  }
}

/** `(runLength, period)` of a validated {@link ScaleLayout} over `length` elements (see the native quantizer). */
function runsOf(layout: ScaleLayout, length: number): [number, number] {
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

const NO_SCALES = new Float32Array(0);

class NativeCpuBackend implements CpuBackend {
  readonly name = backendName;
  readonly info: BackendInfo;
  readonly isa: CpuIsa;
  readonly #ctx: NativeContext;

  constructor(ctx: NativeContext, binary: string) {
    this.#ctx = ctx;
    this.isa = ctx.isa;
    this.info = Object.freeze({
      description: `native CPU (${ctx.isa === 'scalar' ? 'portable scalar' : ctx.isa} kernels, ${ctx.threads} thread${ctx.threads === 1 ? '' : 's'}, fused FP8 dequantization)`,
      simd: ctx.isa === 'scalar' ? 'none' : ctx.isa,
      threads: ctx.threads,
      version: packageVersion(),
      binary,
    });
  }

  get threads(): number {
    return this.#ctx.threads;
  }

  linear(args: LinearArgs): void {
    const { rows, inFeatures, outFeatures } = validateLinear(args);
    try {
      this.#ctx.linear(args.x, args.weight.data, DTYPE_CODE[args.weight.dtype], rows, inFeatures, outFeatures, args.bias ?? null, args.out);
    } catch (e) {
      throw toKernelError(e, 'linear');
    }
  }

  async linearAsync(args: LinearArgs): Promise<void> {
    const { rows, inFeatures, outFeatures } = validateLinear(args);
    try {
      await this.#ctx.linearAsync(args.x, args.weight.data, DTYPE_CODE[args.weight.dtype], rows, inFeatures, outFeatures, args.bias ?? null, args.out);
    } catch (e) {
      throw toKernelError(e, 'linearAsync');
    }
  }

  rmsNorm(args: RmsNormArgs): void {
    const { rows, hidden } = validateRmsNorm(args);
    try {
      this.#ctx.rmsNorm(args.x, args.weight, args.out, rows, hidden, args.eps);
    } catch (e) {
      throw toKernelError(e, 'rmsNorm');
    }
  }

  add(args: AddArgs): void {
    const { length } = validateAdd(args);
    try {
      this.#ctx.add(args.a, args.b, args.out, length);
    } catch (e) {
      throw toKernelError(e, 'add');
    }
  }

  siluAndMul(args: SiluAndMulArgs): void {
    const { length } = validateSiluAndMul(args);
    try {
      this.#ctx.siluAndMul(args.gate, args.up, args.out, length);
    } catch (e) {
      throw toKernelError(e, 'siluAndMul');
    }
  }

  embedding(args: EmbeddingArgs): void {
    const { numTokens, hidden, vocab } = validateEmbedding(args);
    try {
      this.#ctx.embedding(args.table.data, DTYPE_CODE[args.table.dtype], vocab, hidden, args.ids, args.out, numTokens);
    } catch (e) {
      throw toKernelError(e, 'embedding');
    }
  }

  rope(args: RopeArgs): void {
    const { numTokens, numHeads, numKvHeads, headSize, rotaryDim } = validateRope(args);
    const t = args.table;
    try {
      this.#ctx.rope(
        args.query,
        args.key,
        args.positions,
        numTokens,
        numHeads,
        numKvHeads,
        headSize,
        rotaryDim,
        t.maxPositions,
        t.cos,
        t.sin,
        args.style === 'interleaved',
      );
    } catch (e) {
      throw toKernelError(e, 'rope');
    }
  }

  softmax(args: SoftmaxArgs): void {
    const { rows, cols } = validateSoftmax(args);
    try {
      this.#ctx.softmax(args.x, args.out, rows, cols);
    } catch (e) {
      throw toKernelError(e, 'softmax');
    }
  }

  reshapeAndCache(args: ReshapeAndCacheArgs): void {
    const d = validateReshapeAndCache(args);
    const c = args.cache;
    try {
      this.#ctx.reshapeAndCache(
        args.key,
        args.value,
        args.slotMapping,
        d.numTokens,
        DTYPE_CODE[c.dtype],
        c.key,
        c.value,
        d.numBlocks,
        d.blockSize,
        d.numKvHeads,
        d.headSize,
        c.kScale,
        c.vScale,
      );
    } catch (e) {
      throw toKernelError(e, 'reshapeAndCache');
    }
  }

  #attentionArgs(args: PagedAttentionArgs): PagedAttentionNativeArgs {
    const plan = validatePagedAttention(args);
    const c = args.cache;
    const fp8Query = plan.fp8Query ? (args.fp8Query?.saturation === 'nosat' ? 2 : 1) : 0;
    return [
      args.query,
      args.out,
      DTYPE_CODE[c.dtype],
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
    ];
  }

  pagedAttention(args: PagedAttentionArgs): void {
    const native = this.#attentionArgs(args);
    try {
      this.#ctx.pagedAttention(...native);
    } catch (e) {
      throw toKernelError(e, 'pagedAttention');
    }
  }

  async pagedAttentionAsync(args: PagedAttentionArgs): Promise<void> {
    const native = this.#attentionArgs(args);
    try {
      await this.#ctx.pagedAttentionAsync(...native);
    } catch (e) {
      throw toKernelError(e, 'pagedAttentionAsync');
    }
  }

  amaxTensor(args: AmaxTensorArgs): number {
    const { length } = validateAmaxTensor(args);
    try {
      return this.#ctx.amaxTensor(args.x, length);
    } catch (e) {
      throw toKernelError(e, 'amaxTensor');
    }
  }

  amaxPerHead(args: AmaxPerHeadArgs): void {
    const { numTokens, numHeads, headSize } = validateAmaxPerHead(args);
    try {
      this.#ctx.amaxPerHead(args.x, args.out, numTokens, numHeads, headSize, args.accumulate === true);
    } catch (e) {
      throw toKernelError(e, 'amaxPerHead');
    }
  }

  quantizeFp8(args: QuantizeFp8Args): void {
    const { length } = validateQuantizeFp8(args);
    const [runLength, period] = runsOf(args.layout, length);
    try {
      this.#ctx.quantizeFp8(
        args.src,
        args.out,
        length,
        args.scales,
        runLength,
        period,
        FORMAT_CODE[args.format],
        args.saturation !== 'nosat',
      );
    } catch (e) {
      throw toKernelError(e, 'quantizeFp8');
    }
  }

  dequantizeFp8(args: DequantizeFp8Args): void {
    const { length } = validateDequantizeFp8(args);
    const [runLength, period] = runsOf(args.layout, length);
    try {
      this.#ctx.dequantizeFp8(args.src, args.out, length, args.scales, runLength, period, FORMAT_CODE[args.format]);
    } catch (e) {
      throw toKernelError(e, 'dequantizeFp8');
    }
  }

  encodeFp8Bits(
    firstBits: number,
    count: number,
    format: Fp8Format,
    options: { saturation?: Saturation; out?: Uint8Array } = {},
  ): Uint8Array {
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
    try {
      this.#ctx.encodeFp8Bits(firstBits, count, out, code, options.saturation !== 'nosat');
    } catch (e) {
      throw toKernelError(e, 'encodeFp8Bits');
    }
    return out;
  }

  setSpinMicros(us: number): void {
    try {
      this.#ctx.setSpinMicros(us);
    } catch (e) {
      throw toKernelError(e, 'setSpinMicros');
    }
  }

  dispose(): void {
    this.#ctx.dispose();
  }
}

/**
 * Create the native CPU backend (the factory the `@kvq/kernels` loader imports).
 * @throws KernelError `BACKEND_UNAVAILABLE` when the addon is not built / does not load / the forced ISA is not
 *   supported by this CPU (the message says which and how to fix it), `INVALID_ARGUMENT` for bad options.
 * @example
 * const cpu = createBackend({ threads: 4 });
 * cpu.linear({ x, weight, out, rows: 1 });
 */
export function createBackend(options: CpuBackendOptions = {}): CpuBackend {
  const load = loadAddon();
  if (!load.ok) throw unavailable(load.reason, load.cause);
  const isa = options.isa ?? ((process.env.KVQ_CPU_ISA || 'auto') as CpuIsa | 'auto');
  if (!['auto', 'scalar', 'avx2', 'avx512'].includes(isa)) {
    throw new KernelError('INVALID_ARGUMENT', `isa must be 'auto', 'scalar', 'avx2' or 'avx512', got ${JSON.stringify(isa)}`, {
      argument: options.isa === undefined ? 'KVQ_CPU_ISA' : 'isa',
    });
  }
  let threads = options.threads ?? envInt('KVQ_CPU_THREADS', 1);
  if (threads === undefined) threads = load.addon.cpuInfo().cpus;
  if (!Number.isInteger(threads) || threads < 1 || threads > 1024) {
    throw new KernelError('INVALID_ARGUMENT', `threads must be an integer in [1, 1024], got ${String(threads)}`, { argument: 'threads' });
  }
  const spin = options.spinMicros ?? envInt('KVQ_CPU_SPIN_US', 0) ?? DEFAULT_SPIN_MICROS;
  if (!Number.isInteger(spin) || spin < 0 || spin > 1_000_000) {
    throw new KernelError('INVALID_ARGUMENT', `spinMicros must be an integer in [0, 1000000], got ${String(spin)}`, { argument: 'spinMicros' });
  }
  let ctx: NativeContext;
  try {
    ctx = new load.addon.Context(threads, isa, spin);
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (code === 'UNSUPPORTED') throw unavailable((e as Error).message, e);
    throw toKernelError(e, 'createBackend');
  }
  return new NativeCpuBackend(ctx, load.path);
}
