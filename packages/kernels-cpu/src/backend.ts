/**
 * The CPU backend: `@kvq/kernels/native`'s shared adapter (every contract op validated with the shared `validate*`
 * helpers, so bad input raises the same {@link KernelError} as every other backend before any native code runs,
 * then one zero-copy positional call) over the CPU addon, plus what only the CPU has: ISA choice, the thread pool
 * and its spin, async `linear` / `pagedAttention` on libuv workers, the platform packages (`./load.ts`).
 * @module
 */
import { createRequire } from 'node:module';
import type { Fp8Format, Saturation } from '@kvq/fp8';
import {
  HostMemory,
  KernelError,
  validateSampleBucketIds,
  validateSampleBuckets,
  validateSampleDraw,
  type BackendCreateOptions,
  type KernelBackend,
  type LinearArgs,
  type PagedAttentionArgs,
  type SampleBucketIdsArgs,
  type SampleBucketsArgs,
  type SampleBucketsResult,
  type SampleDrawArgs,
} from '@kvq/kernels';
import { envInt, NativeKernelBackend } from '@kvq/kernels/native';
import type { CpuIsa, NativeContext, NativeCpuInfo } from './addon-types.js';
import { toKernelError, unavailable } from './errors.js';
import { loadAddon } from './load.js';

/** The name the loader and `KVQ_BACKEND` use for this backend. */
export const backendName = 'cpu';

/**
 * Default idle spin of pool workers before they sleep, in microseconds: longer than the JavaScript a decode step runs
 * between its native ops (sampling, stop checks, detokenizing: 0.1-0.3 ms on a 32k vocabulary), so workers do not
 * fall asleep and pay a wake-up (50-100 us measured on a 2-core Zen 5) on every token.
 */
export const DEFAULT_SPIN_MICROS = 500;

/** Options of {@link createBackend}. */
export interface CpuBackendOptions extends BackendCreateOptions {
  /**
   * Threads per op, the calling thread included (`>= 1`). Default: `KVQ_CPU_THREADS`, else the CPUs this process
   * may run on (affinity mask). Small ops always run on the calling thread alone.
   */
  readonly threads?: number | undefined;
  /**
   * Kernel instruction set: `'auto'` (default: `KVQ_CPU_ISA`, else the best this CPU supports), `'amx'`, `'avx512'`,
   * `'avx2'` (x86-64), `'neon-dotprod'`, `'neon'` (arm64) or `'scalar'` (portable, every CPU). Forcing an ISA the CPU lacks throws
   * `BACKEND_UNAVAILABLE`.
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
  /**
   * The contract's device memory in host memory (`@kvq/kernels` `HostMemory`, `onHost: true`): device arrays are host
   * typed arrays the ops use in place, so code written for a GPU's `memory` runs here unchanged and copy-free.
   */
  readonly memory: HostMemory;
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

function packageVersion(): string | undefined {
  try {
    return (createRequire(import.meta.url)('../package.json') as { version?: string }).version;
  } catch {
    return undefined;
  }
}

/** The CPU specifics over the shared native adapter: ISA, pool, async ops. */
class NativeCpuBackend extends NativeKernelBackend<NativeContext> implements CpuBackend {
  readonly isa: CpuIsa;
  readonly #kvQuant: boolean;
  readonly #mixedKv: boolean;

  constructor(ctx: NativeContext, binary: string, kvQuant: boolean, mixedKv: boolean) {
    super(
      backendName,
      Object.freeze({
        description: `native CPU (${ctx.isa === 'scalar' ? 'portable scalar' : ctx.isa} kernels, ${ctx.threads} thread${ctx.threads === 1 ? '' : 's'}, fused FP8 and write-time-scaled KV dequantization)`,
        simd: ctx.isa === 'scalar' ? 'none' : ctx.isa,
        threads: ctx.threads,
        version: packageVersion(),
        binary,
      }),
      ctx,
    );
    this.isa = ctx.isa;
    this.#kvQuant = kvQuant;
    this.#mixedKv = mixedKv;
  }

  /** The contract's device memory, in host memory: device arrays are host typed arrays the ops use in place. */
  readonly memory: HostMemory = new HostMemory(backendName);

  /** The write-time-scaled KV dtypes run natively when the binary says it has their kernels (csrc/kvquant_impl.h). */
  protected override kvQuantKernels(): boolean {
    return this.#kvQuant;
  }

  /**
   * Caches whose V pool has another dtype than the K pool run natively when the binary says it has their kernels
   * (csrc/kvmixed_impl.h: each tile's K and V rows dequantized by their own dtype's decoder; writes with each pool's
   * own writer).
   */
  protected override mixedKvKernels(): boolean {
    return this.#mixedKv;
  }

  /** The CPU kernels write `lse` (every ISA, every KV dtype). */
  protected override attentionLse(): boolean {
    return true;
  }

  readonly #sampleResult = new Float64Array(4);

  /**
   * The vocabulary pass of sampling in native code (csrc/sample_buckets.h; chunks of 8192 ids on the pool): the same
   * bits as `sampleBucketsReference`.
   */
  sampleBuckets(args: SampleBucketsArgs): SampleBucketsResult {
    validateSampleBuckets(args);
    const r = this.#sampleResult;
    this.call('sampleBuckets', () => this.ctx.sampleBuckets(args.logits, args.temperature, args.lower, args.pruneNats, args.topK ?? 0, args.minWeight ?? 0, args.mass, r));
    return { count: r[0]!, total: r[1]!, max: r[2]!, floor: r[3]! };
  }

  /** The candidates of one weight bucket in native code (one vector pass): the same as `sampleBucketIdsReference`. */
  sampleBucketIds(args: SampleBucketIdsArgs): number {
    validateSampleBucketIds(args);
    return this.call('sampleBucketIds', () =>
      this.ctx.sampleBucketIds(args.logits, args.temperature, args.max, args.floor, args.minWeight ?? 0, args.bucket, args.ids, args.weight),
    );
  }

  /**
   * One token drawn from a logits row in native code (csrc/sample_draw.h: the vocabulary pass on the pool, top-p's cut
   * and the draw on the calling thread, one call): the same token as `sampleDrawReference` for the same `u`.
   */
  sampleDraw(args: SampleDrawArgs): number {
    validateSampleDraw(args);
    return this.call('sampleDraw', () => this.ctx.sampleDraw(args.logits, args.temperature, args.topK ?? 0, args.topP ?? 1, args.minWeight ?? 0, args.pruneNats, args.u));
  }

  get threads(): number {
    return this.ctx.threads;
  }

  async linearAsync(args: LinearArgs): Promise<void> {
    const native = this.linearArgs(args);
    try {
      await this.ctx.linearAsync(...native);
    } catch (e) {
      throw toKernelError(e, 'linearAsync');
    }
  }

  async pagedAttentionAsync(args: PagedAttentionArgs): Promise<void> {
    const native = this.attentionArgs(args);
    try {
      await this.ctx.pagedAttentionAsync(...native);
    } catch (e) {
      throw toKernelError(e, 'pagedAttentionAsync');
    }
  }

  setSpinMicros(us: number): void {
    this.call('setSpinMicros', () => this.ctx.setSpinMicros(us));
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
  if (!['auto', 'scalar', 'avx2', 'avx512', 'amx', 'neon', 'neon-dotprod'].includes(isa)) {
    const allowed = "'auto', 'scalar', 'avx2', 'avx512', 'amx', 'neon' or 'neon-dotprod'";
    throw new KernelError('INVALID_ARGUMENT', `isa must be ${allowed}, got ${JSON.stringify(isa)}`, {
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
  return new NativeCpuBackend(ctx, load.path, load.addon.kvQuantKernels === true, load.addon.mixedKvKernels === true);
}
