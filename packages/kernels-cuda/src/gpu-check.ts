/**
 * The GPU check: everything `pnpm test:gpu` and `tooling/gpu-check.sh` run on a machine with a GPU, as one function
 * returning a JSON-able report (no test-runner dependency):
 *
 * 1. the parity suite of `@kvq/kernels/testing` against the reference backend (every KV dtype, caches whose K and V
 *    dtypes differ included), and its bad-input suite;
 * 2. long-context attention (split-k path, 4k and 16k keys, FP8 and bf16 caches, FP8-query mode) vs the reference;
 * 3. resident caches (device pools + host mirror) and resident weights (quantized block bytes with their scale and
 *    zero-point arrays) give bit-identical results to the copy-per-call path;
 * 4. csrc/fp8.h on the device against the vendor's own FP8 conversion, all 2^32 float32 inputs (CUDA: hardware cvt
 *    on sm_89+), and the device encoder against `@kvq/fp8` for the FNUZ formats CUDA lacks;
 * 5. benchmarks: decode attention with FP8 vs bf16 KV at 4k / 16k / 64k context (achieved HBM bandwidth vs the
 *    device's peak and vs a measured device-to-device copy), and linear (GEMV / GEMM).
 * @module
 */
import { encodeFp8BitRange, type Fp8Format, type Saturation } from '@kvq/fp8';
import { createReferenceBackend, QUANTIZED_WEIGHT_DTYPES, weightDataLength, type KernelBackend, type KvLayerCache, type PagedAttentionArgs, type WeightMatrix } from '@kvq/kernels';
import {
  attentionArgs,
  buildAttentionBatch,
  compareOutput,
  formatParityReport,
  KV_QUANT_DTYPE_LIST,
  randomF32,
  randomInts,
  randomWeight,
  rng,
  runBadInputSuite,
  runParitySuite,
  type ParityFailure,
} from '@kvq/kernels/testing';
import { createBackend, type GpuBackend, type GpuBackendOptions } from './backend.js';
import { onDeviceArrays } from './device-parity.js';

/** Options of {@link runGpuCheck}. */
export interface GpuCheckOptions {
  /** How to create the backend under test. Default: `createBackend(backendOptions)` of this package. */
  readonly create?: ((options: GpuBackendOptions) => GpuBackend) | undefined;
  /** Options for `create`. */
  readonly backendOptions?: GpuBackendOptions | undefined;
  /** Parity suite size. Default `'quick'`. */
  readonly parity?: 'quick' | 'full' | 'off' | undefined;
  /** Also run the parity suite (quick) with every activation on device arrays and caches attached (default true). */
  readonly deviceArrays?: boolean | undefined;
  /** Run the long-context attention checks (4k-16k keys). Default true. */
  readonly longContext?: boolean | undefined;
  /** Elements per chunk of the device-encoder check (10 chunks per format and saturation). Default 2^22. */
  readonly encoderChunk?: number | undefined;
  /** Run the benchmarks. Default true. */
  readonly benchmarks?: boolean | undefined;
  /** Decode contexts to benchmark. Default [4096, 16384, 65536]. */
  readonly contexts?: readonly number[] | undefined;
  /** Tokens of KV cache per benchmark (batch = tokens / context). Default 262144. */
  readonly benchTokens?: number | undefined;
  /** Progress lines. Default: none. */
  readonly log?: ((line: string) => void) | undefined;
}

/** One decode-attention benchmark row. */
interface AttentionBenchRow {
  /**
   * `'decode'`: the register decode kernel (default for decode batches); `'tiled'`: KVQ_ATTN_KERNEL=tiled;
   * `'decode-mma'`: FP8-query rows with KVQ_FP8_MMA=1 (FP8 tensor cores on sm_89+).
   */
  readonly kernel: 'decode' | 'tiled' | 'decode-mma';
  readonly kvDtype: string;
  readonly fp8Query: boolean;
  readonly contextLen: number;
  readonly numSeqs: number;
  readonly ms: number;
  readonly msMin: number;
  readonly gbps: number;
  /** gbps / the device's theoretical peak. */
  readonly fractionOfPeak: number | null;
  /** gbps / the measured device-to-device copy bandwidth. */
  readonly fractionOfCopy: number | null;
  readonly splits: number;
  readonly finite: boolean;
  /** bf16 time / this time, same kernel (FP8 rows). */
  readonly speedupVsBf16?: number | undefined;
  /** The tiled kernel's time / this time, same configuration (decode-kernel rows). */
  readonly speedupVsTiled?: number | undefined;
}

/** What {@link runGpuCheck} found. `ok` is true when every correctness check passed (benchmarks never fail it). */
export interface GpuCheckReport {
  ok: boolean;
  startedAt: string;
  durationMs: number;
  host: { node: string; platform: string; arch: string };
  unavailable?: string;
  backend?: {
    name: string;
    description: string;
    vendor: string;
    device: GpuBackend['device'];
    targets: string;
    gemm: string;
    gemmNote: string;
  };
  parity?: { size: string; cases: number; passed: number; failures: ParityFailure[]; byOp: unknown; summary: string; ms: number };
  badInput?: { failures: unknown[]; ms: number };
  longContext?: { label: string; ok: boolean; maxAbsError: number; message?: string | undefined; ms: number }[];
  residency?: { ok: boolean; detail: string };
  /** The quick parity suite on device arrays ({@link onDeviceArrays}). */
  deviceParity?: { cases: number; passed: number; failures: ParityFailure[]; summary: string; ms: number };
  fp8Vendor?: { format: string; saturation: string; encodeMismatches: number; firstEncodeMismatch: number | null; decodeMismatches: number; ms: number }[];
  fp8DeviceVsHost?: { format: string; saturation: string; chunks: number; mismatched: string[] }[];
  /**
   * FP8-query decode with KVQ_FP8_MMA=1 vs the reference. `tensorCores`: whether the device runs it on FP8 MMA
   * (NVIDIA sm_89+, or the simulator's emulation at warp 32); otherwise the scalar decode kernel served the cases.
   */
  fp8Mma?: { tensorCores: boolean; cases: { label: string; ok: boolean; maxAbsError: number; message?: string | undefined }[] };
  benchmarks?: {
    peakGBs: number;
    copyGBs: number | null;
    attention: AttentionBenchRow[];
    linear: LinearBenchRow[];
  };
  errors: string[];
}

const errText = (e: unknown): string => (e instanceof Error ? `${(e as { code?: string }).code ?? e.name}: ${e.message}` : String(e));

function timed<T>(f: () => T): [T, number] {
  const t0 = performance.now();
  const r = f();
  return [r, performance.now() - t0];
}

/**
 * Run `f` with environment variables set (`undefined`: unset) and restore their previous values afterwards (after the
 * promise settles when `f` returns one). The native attention planner reads KVQ_ATTN_KERNEL / KVQ_FP8_MMA per call.
 */
export function withEnv<T>(vars: Readonly<Record<string, string | undefined>>, f: () => T): T {
  const saved = Object.keys(vars).map((k) => [k, process.env[k]] as const);
  const set = (entries: readonly (readonly [string, string | undefined])[]) => {
    for (const [k, v] of entries) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  set(Object.entries(vars));
  let result: T;
  try {
    result = f();
  } catch (e) {
    set(saved);
    throw e;
  }
  if (result instanceof Promise) return result.finally(() => set(saved)) as T;
  set(saved);
  return result;
}

/** One attention batch on the backend under test and on the reference (rtol 1e-3, atol 1e-4), and the max error. */
function attentionVsReference(
  gpu: KernelBackend,
  ref: KernelBackend,
  args: Omit<PagedAttentionArgs, 'out'>,
  outLength: number,
): { ok: boolean; maxAbsError: number; message?: string | undefined } {
  const want = new Float32Array(outLength);
  const got = new Float32Array(outLength).fill(Number.NaN);
  // The log-sum-exp of each query row too (what kvCacheKeepSink / kvCacheKeepRecent merge with).
  const rows = outLength / args.cache.headSize;
  const wantLse = new Float32Array(rows);
  const gotLse = new Float32Array(rows).fill(Number.NaN);
  ref.pagedAttention({ ...args, out: want, lse: wantLse });
  gpu.pagedAttention({ ...args, out: got, lse: gotLse });
  const f = compareOutput('out', got, want, { rtol: 1e-3, atol: 1e-4 }) ?? compareOutput('lse', gotLse, wantLse, { rtol: 1e-4, atol: 1e-4 });
  let maxAbs = 0;
  for (let i = 0; i < outLength; i++) maxAbs = Math.max(maxAbs, Math.abs(got[i]! - want[i]!));
  return { ok: f === undefined, maxAbsError: maxAbs, message: f?.message };
}

/** Long-context attention vs the reference: split-k, FP8 / bf16, GQA, FP8-query mode. */
function longContextChecks(gpu: KernelBackend, ref: KernelBackend): NonNullable<GpuCheckReport['longContext']> {
  const cases: { label: string; dtype: KvLayerCache['dtype']; seqs: { queryLen: number; seqLen: number }[]; fp8Query?: boolean; scales?: 'tensor' | 'head' }[] = [
    { label: 'decode 4x4096, e4m3fn per-head scales', dtype: 'e4m3fn', seqs: [4096, 4000, 3333, 4096].map((n) => ({ queryLen: 1, seqLen: n })), scales: 'head' },
    { label: 'decode 1x16384, bf16', dtype: 'bf16', seqs: [{ queryLen: 1, seqLen: 16384 }] },
    { label: 'decode 2x8192, e4m3fn, fp8 query', dtype: 'e4m3fn', seqs: [{ queryLen: 1, seqLen: 8192 }, { queryLen: 1, seqLen: 5000 }], fp8Query: true },
    { label: 'chunked prefill 64 new of 3000, e5m2', dtype: 'e5m2', seqs: [{ queryLen: 64, seqLen: 3000 }, { queryLen: 1, seqLen: 2500 }] },
  ];
  const out: NonNullable<GpuCheckReport['longContext']> = [];
  for (const c of cases) {
    const t0 = performance.now();
    try {
      const r = rng(c.label.length * 7919);
      const batch = buildAttentionBatch(
        { dtype: c.dtype, blockSize: 16, numKvHeads: 4, headSize: 128, numHeads: 16, seqs: c.seqs, scales: c.scales ?? 'tensor' },
        r,
        ref,
      );
      const args = { ...attentionArgs(batch), fp8Query: c.fp8Query ? {} : undefined };
      out.push({ label: c.label, ...attentionVsReference(gpu, ref, args, batch.numTokens * batch.numHeads * 128), ms: performance.now() - t0 });
    } catch (e) {
      out.push({ label: c.label, ok: false, maxAbsError: Infinity, message: errText(e), ms: performance.now() - t0 });
    }
  }
  return out;
}

/** Whether FP8-query decode runs on FP8 tensor cores with KVQ_FP8_MMA=1 on this backend (see attention.cu). */
export function fp8MmaCapable(gpu: GpuBackend): boolean {
  if (gpu.device.warpSize !== 32) return false;
  if (gpu.vendor === 'sim') return true;
  if (gpu.vendor !== 'cuda') return false;
  const [major = 0, minor = 0] = gpu.device.computeCapability.split('.').map(Number);
  return major * 10 + minor >= 89;
}

/**
 * FP8-query decode batches vs the reference with `KVQ_FP8_MMA=1` (the FP8 tensor-core kernel where the device has
 * one): head sizes 64 / 128 / 256, e4m3fn and e5m2, GQA groups 1-16, keys from 1 to 1100 (partial 8-key tiles,
 * split-k), a sliding window, per-tensor and per-head scales, both saturation modes.
 */
export function fp8MmaChecks(gpu: KernelBackend, ref: KernelBackend): { label: string; ok: boolean; maxAbsError: number; message?: string | undefined }[] {
  const cases = [
    { dtype: 'e4m3fn', headSize: 128, numHeads: 16, numKvHeads: 4, seqs: [1, 7, 8, 9, 300], scales: 'head', window: undefined },
    { dtype: 'e5m2', headSize: 64, numHeads: 8, numKvHeads: 1, seqs: [33, 700], scales: 'tensor', window: undefined },
    { dtype: 'e4m3fn', headSize: 256, numHeads: 6, numKvHeads: 2, seqs: [40, 129], scales: 'tensor', window: 50 },
    { dtype: 'e4m3fn', headSize: 64, numHeads: 4, numKvHeads: 4, seqs: [1100], scales: 'head', window: undefined },
    { dtype: 'e5m2', headSize: 128, numHeads: 32, numKvHeads: 2, seqs: [17, 64], scales: 'head', window: undefined },
  ] as const;
  const out: { label: string; ok: boolean; maxAbsError: number; message?: string | undefined }[] = [];
  withEnv({ KVQ_FP8_MMA: '1' }, () => {
    for (const [i, c] of cases.entries()) {
      for (const saturation of ['satfinite', 'nosat'] as const) {
        const label = `${c.dtype} d${c.headSize} ${c.numHeads}/${c.numKvHeads} heads, keys ${c.seqs.join(' ')}${c.window ? `, window ${c.window}` : ''}, ${c.scales} scales, ${saturation}`;
        try {
          const batch = buildAttentionBatch(
            { dtype: c.dtype, blockSize: 16, numKvHeads: c.numKvHeads, headSize: c.headSize, numHeads: c.numHeads, seqs: c.seqs.map((n) => ({ queryLen: 1, seqLen: n })), scales: c.scales },
            rng(100 + i),
            ref,
          );
          const args = { ...attentionArgs(batch), slidingWindow: c.window, fp8Query: { saturation } };
          out.push({ label, ...attentionVsReference(gpu, ref, args, batch.numTokens * c.numHeads * c.headSize) });
        } catch (e) {
          out.push({ label, ok: false, maxAbsError: Infinity, message: errText(e) });
        }
      }
    }
  });
  return out;
}

/** Resident caches must give bit-identical attention and identical host pools. */
function residencyCheck(make: (o: GpuBackendOptions) => GpuBackend, base: GpuBackendOptions, ref: KernelBackend): { ok: boolean; detail: string } {
  const plain = make({ ...base, residentCaches: false, residentWeights: false });
  const resident = make({ ...base, residentCaches: true, residentWeights: true });
  try {
    const r = rng(4242);
    const seqs = [{ queryLen: 1, seqLen: 700 }, { queryLen: 9, seqLen: 300 }];
    const batch = buildAttentionBatch({ dtype: 'e4m3fn', blockSize: 16, numKvHeads: 2, headSize: 64, numHeads: 8, seqs, scales: 'head' }, r, ref);
    const cacheA = batch.cache;
    const cacheB: KvLayerCache = { ...cacheA, key: cacheA.key.slice(), value: cacheA.value.slice() } as KvLayerCache;
    // New tokens written by each backend into its own copy, then attention over both.
    const n = 5;
    const key = new Float32Array(n * 2 * 64).map((_, i) => Math.sin(i * 0.37) * 3);
    const value = new Float32Array(n * 2 * 64).map((_, i) => Math.cos(i * 0.11) * 2);
    // Slots 3..7 of the first block no sequence uses.
    const used = new Set(Array.from(batch.blockTables).filter((b) => b >= 0));
    let spare = 0;
    while (used.has(spare)) spare++;
    const free = Array.from({ length: n }, (_, i) => spare * 16 + 3 + i);
    const slotMapping = Int32Array.from(free);
    // First attention call uploads the resident pools; then a write must reach both the device pools and the host.
    const args = (cache: KvLayerCache, out: Float32Array) => ({ ...attentionArgs(batch), out, cache });
    const o1 = new Float32Array(batch.numTokens * 8 * 64);
    const o2 = new Float32Array(o1.length);
    resident.pagedAttention(args(cacheB, o2));
    plain.reshapeAndCache({ key, value, slotMapping, numTokens: n, cache: cacheA });
    resident.reshapeAndCache({ key, value, slotMapping, numTokens: n, cache: cacheB });
    if (Buffer.compare(Buffer.from(cacheA.key.buffer), Buffer.from(cacheB.key.buffer)) !== 0) return { ok: false, detail: 'host key pools differ after resident write' };
    // Point one sequence's last block at a freshly written block so attention reads the new tokens.
    const tables = batch.blockTables.slice();
    tables[0] = free[0]! >> 4;
    const a1 = { ...args(cacheA, o1), blockTables: tables };
    const a2 = { ...args(cacheB, o2), blockTables: tables };
    plain.pagedAttention(a1);
    resident.pagedAttention(a2);
    const same = Buffer.compare(Buffer.from(o1.buffer), Buffer.from(o2.buffer)) === 0;
    return {
      ok: same && resident.residentBytes > 0,
      detail: same ? `identical outputs; ${resident.residentBytes} resident bytes` : 'resident and copied caches gave different attention outputs',
    };
  } finally {
    plain.dispose();
    resident.dispose();
  }
}

/**
 * Resident weights must give bit-identical `linear` (GEMV and GEMM) and `embedding` results to the copy-per-call
 * path for every quantized dtype, with the scale and zero-point arrays resident too (the resident byte count must
 * cover them).
 */
export function weightResidencyCheck(make: (o: GpuBackendOptions) => GpuBackend, base: GpuBackendOptions): { ok: boolean; detail: string } {
  const plain = make({ ...base, residentCaches: false, residentWeights: false });
  const resident = make({ ...base, residentCaches: false, residentWeights: true });
  try {
    const r = rng(777);
    const variants: [WeightMatrix['dtype'], Parameters<typeof randomWeight>[4]][] = [
      ['q8_0', undefined], ['q4_1', undefined], ['q5_0', undefined], ['q4_k', undefined], ['q6_k', undefined],
      ['fp8_e4m3', { granularity: 'channel' }], ['int8', { granularity: 'tensor' }],
      ['int4', { groupSize: 32, symmetric: false }], ['int4', { groupSize: 64, symmetric: true }],
    ];
    for (const [dtype, options] of variants) {
      const cols = 512, outF = 9;
      const weight = randomWeight(dtype, outF, cols, r, options);
      const expectBytes = weight.data.byteLength + (weight.scale?.byteLength ?? 0) + (weight.zeroPoint?.byteLength ?? 0);
      const before = resident.residentBytes;
      for (const rows of [1, 11]) {
        const x = randomF32(rows * cols, r);
        const a = new Float32Array(rows * outF);
        const b = new Float32Array(rows * outF);
        plain.linear({ x, weight, out: a, rows });
        resident.linear({ x, weight, out: b, rows });
        if (Buffer.compare(Buffer.from(a.buffer), Buffer.from(b.buffer)) !== 0) {
          return { ok: false, detail: `linear ${dtype} rows=${rows}: resident and copied weights gave different outputs` };
        }
      }
      const ids = randomInts(5, outF, r);
      const e1 = new Float32Array(5 * cols);
      const e2 = new Float32Array(5 * cols);
      plain.embedding({ table: weight, ids, out: e1, numTokens: 5 });
      resident.embedding({ table: weight, ids, out: e2, numTokens: 5 });
      if (Buffer.compare(Buffer.from(e1.buffer), Buffer.from(e2.buffer)) !== 0) {
        return { ok: false, detail: `embedding ${dtype}: resident and copied tables gave different outputs` };
      }
      if (resident.residentBytes - before !== expectBytes) {
        return { ok: false, detail: `${dtype}: ${resident.residentBytes - before} resident bytes, expected ${expectBytes} (data + scale + zero point)` };
      }
    }
    return { ok: true, detail: `identical linear / embedding outputs on ${variants.length} quantized weights; ${resident.residentBytes} resident bytes` };
  } finally {
    plain.dispose();
    resident.dispose();
  }
}

/**
 * Run the GPU check. Never throws for a backend failure: every stage records its error in `errors` and the report
 * says `ok: false`. When the backend cannot be created, `unavailable` says why.
 */
export async function runGpuCheck(options: GpuCheckOptions = {}): Promise<GpuCheckReport> {
  const log = options.log ?? (() => {});
  const started = performance.now();
  const report: GpuCheckReport = {
    ok: false,
    startedAt: new Date().toISOString(),
    durationMs: 0,
    host: { node: process.version, platform: process.platform, arch: process.arch },
    errors: [],
  };
  const make = options.create ?? ((o: GpuBackendOptions) => createBackend(o));
  const base = options.backendOptions ?? {};
  let gpu: GpuBackend;
  try {
    gpu = make(base);
  } catch (e) {
    report.unavailable = errText(e);
    report.durationMs = performance.now() - started;
    return report;
  }
  const ref = createReferenceBackend();
  const stage = <T>(name: string, f: () => T): T | undefined => {
    log(`${name} ...`);
    try {
      return f();
    } catch (e) {
      report.errors.push(`${name}: ${errText(e)}`);
      log(`${name} FAILED: ${errText(e)}`);
      return undefined;
    }
  };
  try {
    report.backend = {
      name: gpu.name,
      description: gpu.info.description,
      vendor: gpu.vendor,
      device: gpu.device,
      targets: gpu.targets,
      gemm: gpu.gemm,
      gemmNote: gpu.gemmNote,
    };
    log(`backend: ${gpu.info.description}`);

    const size = options.parity ?? 'quick';
    if (size !== 'off') {
      stage(`parity (${size})`, () => {
        const [r, ms] = timed(() => runParitySuite(gpu, ref, { size, supportedKvQuantDtypes: KV_QUANT_DTYPE_LIST, attentionLse: true, mixedKv: true }));
        report.parity = { size, cases: r.cases, passed: r.passed, failures: r.failures.slice(0, 50), byOp: r.byOp, summary: formatParityReport(r, 30), ms };
        log(report.parity.summary.split('\n')[0]!);
      });
      if (options.deviceArrays !== false) {
        stage('parity on device arrays (quick)', () => {
          const [r, ms] = timed(() => runParitySuite(onDeviceArrays(gpu), ref, { size: 'quick', supportedKvQuantDtypes: KV_QUANT_DTYPE_LIST, attentionLse: true, mixedKv: true }));
          report.deviceParity = { cases: r.cases, passed: r.passed, failures: r.failures.slice(0, 50), summary: formatParityReport(r, 30), ms };
          log(report.deviceParity.summary.split('\n')[0]!);
        });
      }
      stage('bad input', () => {
        const [f, ms] = timed(() => runBadInputSuite(gpu));
        report.badInput = { failures: f.slice(0, 50), ms };
      });
    }
    if (options.longContext !== false) {
      stage('long-context attention', () => {
        report.longContext = longContextChecks(gpu, ref);
      });
    }
    stage('FP8-query decode on FP8 tensor cores (KVQ_FP8_MMA=1)', () => {
      report.fp8Mma = { tensorCores: fp8MmaCapable(gpu), cases: fp8MmaChecks(gpu, ref) };
    });
    stage('residency', () => {
      const caches = residencyCheck(make, base, ref);
      const weights = weightResidencyCheck(make, base);
      report.residency = { ok: caches.ok && weights.ok, detail: `caches: ${caches.detail}; weights: ${weights.detail}` };
    });
    if (gpu.vendor === 'cuda') {
      stage('fp8.h vs CUDA conversions (all 2^32 inputs)', () => {
        report.fp8Vendor = [];
        for (const format of ['e4m3fn', 'e5m2'] as const) {
          for (const saturation of ['satfinite', 'nosat'] as const) {
            report.fp8Vendor.push({ format, saturation, ...gpu.fp8VendorCheck(format, saturation) });
          }
        }
      });
    }
    stage('device encoder vs @kvq/fp8', () => {
      report.fp8DeviceVsHost = [];
      const CHUNK = options.encoderChunk ?? 2 ** 22;
      const chunks = [0, 240, 252, 255, 508, 512, 752, 764, 767, 1023];
      const dev = new Uint8Array(CHUNK);
      const host = new Uint8Array(CHUNK);
      for (const format of ['e4m3fnuz', 'e5m2fnuz', 'e4m3fn', 'e5m2'] as Fp8Format[]) {
        for (const saturation of ['satfinite', 'nosat'] as Saturation[]) {
          const mismatched: string[] = [];
          for (const c of chunks) {
            // Chunk c starts at float32 bit pattern c * 2^22 (sign, exponent and top mantissa bits), whatever CHUNK is.
            gpu.encodeFp8Bits(c * 2 ** 22, CHUNK, format, { saturation, out: dev });
            encodeFp8BitRange(c * 2 ** 22, CHUNK, format, { saturation, out: host });
            if (Buffer.compare(dev, host) !== 0) mismatched.push(`#${c}`);
          }
          report.fp8DeviceVsHost.push({ format, saturation, chunks: chunks.length, mismatched });
        }
      }
    });

    if (options.benchmarks !== false) {
      stage('benchmarks', () => {
        const peak = gpu.device.peakBandwidthGBs;
        let copy: number | null = null;
        try {
          copy = gpu.benchCopy(1 << 30, 20);
        } catch (e) {
          report.errors.push(`benchCopy: ${errText(e)}`);
        }
        const attention: AttentionBenchRow[] = [];
        const tokens = options.benchTokens ?? 262_144;
        const tiledMs = new Map<string, number>();
        const mmaRows = fp8MmaCapable(gpu);
        for (const kernel of ['tiled', 'decode', 'decode-mma'] as const) {
          if (kernel === 'decode-mma' && !mmaRows) continue;
          withEnv({ KVQ_ATTN_KERNEL: kernel === 'tiled' ? 'tiled' : 'decode', KVQ_FP8_MMA: kernel === 'decode-mma' ? '1' : undefined }, () => {
            for (const contextLen of options.contexts ?? [4096, 16384, 65536]) {
              const numSeqs = Math.max(1, Math.floor(tokens / contextLen));
              let bf16Ms: number | undefined;
              const configs = kernel === 'decode-mma' ? ([['e4m3fn', true]] as const) : ([['bf16', false], ['e4m3fn', false], ['e4m3fn', true]] as const);
              for (const [kvDtype, fp8Query] of configs) {
                const r = gpu.benchAttention({ kvDtype, fp8Query, contextLen, numSeqs, numHeads: 32, numKvHeads: 8, headSize: 128, blockSize: 16, warmup: 3, iters: 20 });
                if (kvDtype === 'bf16') bf16Ms = r.msMedian;
                const key = `${kvDtype}/${String(fp8Query)}/${contextLen}`;
                if (kernel === 'tiled') tiledMs.set(key, r.msMedian);
                const tiled = tiledMs.get(key);
                attention.push({
                  kernel,
                  kvDtype,
                  fp8Query,
                  contextLen,
                  numSeqs,
                  ms: r.msMedian,
                  msMin: r.msMin,
                  gbps: r.gbps,
                  fractionOfPeak: peak > 0 ? r.gbps / peak : null,
                  fractionOfCopy: copy ? r.gbps / copy : null,
                  splits: r.splits,
                  finite: r.finite,
                  speedupVsBf16: kvDtype === 'bf16' || bf16Ms === undefined ? undefined : bf16Ms / r.msMedian,
                  speedupVsTiled: kernel !== 'tiled' && tiled !== undefined ? tiled / r.msMedian : undefined,
                });
                log(`attention ${kernel} ${kvDtype}${fp8Query ? '+fp8q' : ''} ctx ${contextLen} x${numSeqs}: ${r.msMedian.toFixed(3)} ms, ${r.gbps.toFixed(0)} GB/s`);
              }
            }
          });
        }
        const linear: LinearBenchRow[] = [];
        const gemv = gpu.benchLinear({ weightDtype: 'bf16', rows: 1, inFeatures: 4096, outFeatures: 14336, iters: 50 });
        linear.push({ label: 'GEMV bf16 1x4096 -> 14336', ms: gemv, gbps: (4096 * 14336 * 2) / (gemv * 1e-3) / 1e9 });
        for (const gemm of ['builtin', 'auto'] as const) {
          if (gemm === 'auto' && gpu.gemm === 'builtin') continue;
          const ms = gpu.benchLinear({ weightDtype: 'bf16', rows: 512, inFeatures: 4096, outFeatures: 4096, iters: 20, gemm });
          linear.push({ label: `GEMM bf16 512x4096 -> 4096 (${gemm === 'auto' ? (gpu.gemm === 'hipblas' ? 'hipBLAS SGEMM' : 'cuBLAS SGEMM') : 'built-in'})`, ms, tflops: (2 * 512 * 4096 * 4096) / (ms * 1e-3) / 1e12 });
        }
        linear.push(...quantizedGemvBench(gpu, peak));
        report.benchmarks = { peakGBs: peak, copyGBs: copy, attention, linear };
      });
    }
  } finally {
    gpu.dispose();
  }
  const parityOk = (report.parity === undefined || report.parity.failures.length === 0) && (report.deviceParity?.failures.length ?? 0) === 0;
  const badOk = report.badInput === undefined || report.badInput.failures.length === 0;
  const longOk = (report.longContext ?? []).every((c) => c.ok);
  const resOk = report.residency?.ok !== false;
  const vendorOk = (report.fp8Vendor ?? []).every((v) => v.encodeMismatches === 0 && v.decodeMismatches === 0);
  const hostOk = (report.fp8DeviceVsHost ?? []).every((v) => v.mismatched.length === 0);
  const benchOk = (report.benchmarks?.attention ?? []).every((a) => a.finite);
  const mmaOk = (report.fp8Mma?.cases ?? []).every((c) => c.ok);
  report.ok = report.errors.length === 0 && parityOk && badOk && longOk && resOk && vendorOk && hostOk && benchOk && mmaOk;
  report.durationMs = performance.now() - started;
  return report;
}

/** One `linear` benchmark row. */
export interface LinearBenchRow {
  readonly label: string;
  /** Median kernel time, ms. */
  readonly ms: number;
  /** Weight bytes read per call (GEMV rows) / ms, GB/s. */
  readonly gbps?: number;
  /** `gbps` / the device's peak bandwidth. */
  readonly fractionOfPeak?: number;
  readonly tflops?: number;
  /** bf16 GEMV time at the same shape / this time (quantized GEMV rows). */
  readonly speedupVsBf16?: number;
}

/**
 * Decode GEMV (one token) straight from every quantized weight dtype at a 70B-class FFN shape (8192 -> 28672),
 * against bf16 at the same shape: the weight bytes each call streams (blocks + scale arrays) per kernel time.
 */
export function quantizedGemvBench(gpu: GpuBackend, peakGBs: number, inF = 8192, outF = 28672): LinearBenchRow[] {
  const row = (label: string, ms: number, bytes: number, bf16Ms?: number): LinearBenchRow => {
    const gbps = bytes / (ms * 1e-3) / 1e9;
    return { label, ms, gbps, ...(peakGBs > 0 ? { fractionOfPeak: gbps / peakGBs } : {}), ...(bf16Ms ? { speedupVsBf16: bf16Ms / ms } : {}) };
  };
  const bf16Ms = gpu.benchLinear({ weightDtype: 'bf16', rows: 1, inFeatures: inF, outFeatures: outF, iters: 20, gemm: 'builtin' });
  const rows = [row(`GEMV bf16 1x${inF} -> ${outF} (built-in)`, bf16Ms, inF * outF * 2)];
  for (const dtype of QUANTIZED_WEIGHT_DTYPES) {
    const ms = gpu.benchLinear({ weightDtype: dtype, rows: 1, inFeatures: inF, outFeatures: outF, iters: 20 });
    const scaleBytes = dtype === 'int4' ? (outF * inF * 4) / 128 : dtype === 'fp8_e4m3' || dtype === 'int8' ? outF * 4 : 0;
    rows.push(row(`GEMV ${dtype} 1x${inF} -> ${outF}`, ms, weightDataLength(dtype, outF, inF) + scaleBytes, bf16Ms));
  }
  return rows;
}

/** A short human-readable summary of a report (the last lines a device run prints). */
export function formatGpuCheck(r: GpuCheckReport): string {
  const lines: string[] = [];
  if (r.unavailable) return `GPU check: backend unavailable: ${r.unavailable}`;
  lines.push(`GPU check ${r.ok ? 'PASSED' : 'FAILED'} in ${(r.durationMs / 1000).toFixed(1)} s on ${r.backend?.device.name ?? '?'} (${r.backend?.device.arch ?? '?'})`);
  if (r.parity) lines.push(`  parity ${r.parity.size}: ${r.parity.passed}/${r.parity.cases} cases`);
  for (const f of r.parity?.failures.slice(0, 10) ?? []) lines.push(`    FAIL ${f.label}: ${f.message}`);
  if (r.deviceParity) lines.push(`  ${r.deviceParity.summary.split('\n')[0]} (every activation on device arrays, caches attached)`);
  for (const f of r.deviceParity?.failures.slice(0, 10) ?? []) lines.push(`    FAIL (device arrays) ${f.label}: ${f.message}`);
  if (r.badInput) lines.push(`  bad input: ${r.badInput.failures.length === 0 ? 'all rejected like the reference' : `${r.badInput.failures.length} mismatches`}`);
  for (const c of r.longContext ?? []) lines.push(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.label} (max |err| ${c.maxAbsError.toExponential(2)})${c.message ? `: ${c.message}` : ''}`);
  if (r.fp8Mma) {
    const bad = r.fp8Mma.cases.filter((c) => !c.ok);
    const maxErr = Math.max(0, ...r.fp8Mma.cases.map((c) => c.maxAbsError));
    lines.push(`  FP8-query decode, KVQ_FP8_MMA=1 (${r.fp8Mma.tensorCores ? 'FP8 tensor cores' : 'no FP8 MMA here: scalar kernel'}): ${r.fp8Mma.cases.length - bad.length}/${r.fp8Mma.cases.length} cases (max |err| ${maxErr.toExponential(2)})`);
    for (const c of bad) lines.push(`    FAIL ${c.label}: ${c.message ?? ''}`);
  }
  if (r.residency) lines.push(`  residency: ${r.residency.ok ? 'ok' : 'FAIL'} (${r.residency.detail})`);
  for (const v of r.fp8Vendor ?? []) {
    lines.push(`  fp8.h vs CUDA ${v.format}/${v.saturation}: ${v.encodeMismatches} encode / ${v.decodeMismatches} decode mismatches (${v.ms.toFixed(1)} ms)`);
  }
  for (const v of r.fp8DeviceVsHost ?? []) {
    if (v.mismatched.length > 0) lines.push(`  device encoder vs @kvq/fp8 ${v.format}/${v.saturation}: mismatched chunks ${v.mismatched.join(' ')}`);
  }
  if (r.fp8DeviceVsHost) lines.push(`  device encoder vs @kvq/fp8: ${r.fp8DeviceVsHost.every((v) => v.mismatched.length === 0) ? 'identical' : 'DIFFERENT'} (${r.fp8DeviceVsHost.length} format/saturation pairs)`);
  const b = r.benchmarks;
  if (b) {
    lines.push(`  bandwidth: peak ${b.peakGBs.toFixed(0)} GB/s, measured copy ${b.copyGBs?.toFixed(0) ?? '?'} GB/s`);
    lines.push('  decode attention (32 q heads, 8 kv heads, d 128, block 16):');
    lines.push('    kernel     kv        ctx     seqs   ms      GB/s   %peak  %copy  vs bf16  splits  vs tiled');
    for (const a of b.attention) {
      lines.push(
        `    ${a.kernel.padEnd(10)} ${(a.kvDtype + (a.fp8Query ? '+q8' : '')).padEnd(9)} ${String(a.contextLen).padEnd(7)} ${String(a.numSeqs).padEnd(6)} ${a.ms.toFixed(3).padEnd(7)} ${a.gbps.toFixed(0).padEnd(6)} ${a.fractionOfPeak === null ? '-' : (a.fractionOfPeak * 100).toFixed(0).padEnd(6)} ${a.fractionOfCopy === null ? '-' : (a.fractionOfCopy * 100).toFixed(0).padEnd(6)} ${a.speedupVsBf16 === undefined ? '-      ' : `${a.speedupVsBf16.toFixed(2)}x`.padEnd(7)}  ${String(a.splits).padEnd(6)}  ${a.speedupVsTiled === undefined ? '-' : `${a.speedupVsTiled.toFixed(2)}x`}`,
      );
    }
    for (const l of b.linear) {
      lines.push(
        `  ${l.label}: ${l.ms.toFixed(3)} ms${l.gbps ? `, ${l.gbps.toFixed(0)} GB/s` : ''}${l.fractionOfPeak ? ` (${(l.fractionOfPeak * 100).toFixed(0)}% of peak)` : ''}` +
          `${l.tflops ? `, ${l.tflops.toFixed(1)} TFLOP/s` : ''}${l.speedupVsBf16 ? `, ${l.speedupVsBf16.toFixed(2)}x bf16` : ''}`,
      );
    }
  }
  for (const e of r.errors) lines.push(`  ERROR ${e}`);
  return lines.join('\n');
}
