/**
 * Parity cases for every op of the contract, on awkward shapes: token counts 1, 7, 17, 33, 1025; head sizes
 * 8, 16, 64, 128; GQA ratios 1, 2, 4, 8; block sizes 1, 16, 32; every KV dtype; per-tensor and per-head scales;
 * FP8-query mode; sliding windows; padding slots; in-place aliasing; NaN / ±Inf / overflow inputs; `linear` (GEMV and
 * GEMM) and `embedding` on every quantized weight dtype (GGML blocks, FP8 / INT8 / INT4 with their scale variants).
 *
 * A case builds its inputs from its own seed on every `run`, so two backends see identical inputs and write
 * into separate buffers. Output buffers carry a few sentinel elements past the stated shape: a backend that
 * writes out of bounds changes them and fails the comparison.
 * @module
 */
import { KV_QUANT_DTYPES, type KvQuantDtype } from '@kvq/cache';
import type { Fp8Format, ScaleLayout } from '@kvq/fp8';
import { FP8_FORMATS } from '@kvq/fp8';
import type { KernelBackend, KernelOpName, KvDtype, RopeStyle, RopeTable, WeightDtype, WeightMatrix } from '../contract.js';
import { GGML_BLOCK, GGML_WEIGHT_DTYPES, isGgmlDtype, QUANTIZED_WEIGHT_DTYPES, WEIGHT_DTYPES as ALL_WEIGHT_DTYPES } from '../quant/layout.js';
import type { QuantizeOptions } from '../quant/quantize.js';
import { createReferenceBackend } from '../reference/backend.js';
import { buildRopeTable, type RopeScaling } from '../rope.js';
import { isFp8 } from '../validate.js';
import { attentionArgs, buildAttentionBatch, makeKvCache, permutation, randomF32, randomInts, randomWeight, rng, type AttentionBatch, type SeqSpec } from './random.js';

/** Token counts every token-dimensioned op is tried with. */
export const AWKWARD_TOKENS: readonly number[] = [1, 7, 17, 33, 1025];
/** Head sizes attention, RoPE and the cache are tried with. */
export const HEAD_SIZES: readonly number[] = [8, 16, 64, 128];
/** Query heads per kv head (1 = MHA, 8 = strongly grouped; MQA is numKvHeads 1). */
export const GQA_RATIOS: readonly number[] = [1, 2, 4, 8];
/** Cache block sizes. */
export const BLOCK_SIZES: readonly number[] = [1, 16, 32];
/** Every KV cache dtype with per-tensor / per-head (or no) scales. */
export const KV_DTYPES: readonly KvDtype[] = ['f32', 'bf16', 'f16', 'e4m3fn', 'e5m2', 'e4m3fnuz', 'e5m2fnuz'];
/**
 * The write-time-scaled KV dtypes (docs/spec/kv-dtypes.md). Their cases carry `kvDtype`; a backend that does not
 * implement one must refuse it with `UNSUPPORTED` (see `ParitySuiteOptions.supportedKvQuantDtypes`).
 */
export const KV_QUANT_DTYPE_LIST: readonly KvQuantDtype[] = KV_QUANT_DTYPES;
/** Every FP8 format. */
export const FP8_FORMAT_LIST: readonly Fp8Format[] = ['e4m3fn', 'e5m2', 'e4m3fnuz', 'e5m2fnuz'];
/** Every weight dtype: dense, GGML block types, compressed-tensors types. */
export const WEIGHT_DTYPES: readonly WeightDtype[] = ALL_WEIGHT_DTYPES;
/** The dense weight dtypes (the awkward-shape linear and embedding cases; quantized ones need block multiples). */
const DENSE_WEIGHT_DTYPE_LIST: readonly WeightDtype[] = ['f32', 'bf16', 'f16'];

/** Elements of slack after every output; they hold {@link SENTINEL} and must come back unchanged. */
export const SLACK = 3;
/** Value of the slack elements of float outputs (integer outputs use 0xA5). */
export const SENTINEL = 12345.5;

/** Comparison tolerance: `|got - want| <= atol + rtol * |want|` (NaN equals NaN; infinities must match). */
export interface Tolerance {
  readonly rtol: number;
  readonly atol: number;
}

/** Bit-exact comparison. */
export const EXACT: Tolerance = Object.freeze({ rtol: 0, atol: 0 });

/** An output of a case: a float32 array (compared with tolerance), an integer array (exact), or a number. */
export type ParityValue = Float32Array | Int32Array | Uint8Array | Uint16Array | number;

/** One parity case. */
export interface ParityCase {
  readonly op: KernelOpName;
  /** Describes the shape, e.g. `'pagedAttention e4m3fn/head hs=64 gqa=4 bs=16 mixed'`. */
  readonly label: string;
  /** Tolerance for float outputs (integer outputs are always exact). */
  readonly tolerance: Tolerance;
  /** Build fresh inputs from the case's seed, run the op on `backend`, and return its outputs by name. */
  run(backend: KernelBackend): Record<string, ParityValue>;
  /**
   * Set when the case needs a write-time-scaled KV dtype (a backend may declare it unsupported): the cache's, or for a
   * mixed cache ({@link mixedKv}) its K pool's when that is one, else its V pool's.
   */
  readonly kvDtype?: KvQuantDtype | undefined;
  /** A mixed cache whose K and V pools both have write-time-scaled dtypes: the V pool's (`kvDtype` is the K pool's). */
  readonly kvValueDtype?: KvQuantDtype | undefined;
  /**
   * Set when the case's cache stores V in another dtype than K (`cache.valueDtype`; a backend may declare such caches
   * unsupported, see `ParitySuiteOptions.mixedKv`).
   */
  readonly mixedKv?: boolean | undefined;
  /** Set when the case asks `pagedAttention` for its `lse` output (a backend may declare it unsupported). */
  readonly lse?: boolean | undefined;
}

/** Options of {@link parityCases}. */
export interface ParityCaseOptions {
  /** `'quick'` (default; the whole set runs on the reference in seconds) or `'full'` (bigger shapes, more combos). */
  readonly size?: 'quick' | 'full' | undefined;
  /** Only these ops. Default: all. */
  readonly ops?: readonly KernelOpName[] | undefined;
  /** Base seed. Default 1. */
  readonly seed?: number | undefined;
}

function withSlack(n: number): Float32Array {
  const a = new Float32Array(n + SLACK);
  a.fill(SENTINEL, n);
  return a;
}

const cycle = <T>(list: readonly T[], i: number): T => list[i % list.length]!;

// Rope tables are deterministic and costly to build: share them between cases.
const ropeTables = new Map<string, RopeTable>();
function ropeTable(rotaryDim: number, theta: number, scaling: RopeScaling | undefined, maxPositions: number): RopeTable {
  const key = `${rotaryDim}/${theta}/${JSON.stringify(scaling ?? null)}/${maxPositions}`;
  let t = ropeTables.get(key);
  if (!t) {
    t = buildRopeTable({ rotaryDim, theta, scaling, maxPositions });
    ropeTables.set(key, t);
  }
  return t;
}

/** Tolerances per op (candidates accumulate in float32; the reference in float64). */
export const DEFAULT_TOLERANCES: Readonly<Record<KernelOpName, Tolerance>> = Object.freeze({
  linear: { rtol: 1e-4, atol: 1e-5 },
  rmsNorm: { rtol: 1e-5, atol: 1e-6 },
  add: EXACT,
  siluAndMul: { rtol: 1e-5, atol: 1e-7 },
  geluTanhAndMul: { rtol: 1e-5, atol: 1e-7 },
  embedding: EXACT,
  rope: { rtol: 1e-5, atol: 1e-6 },
  softmax: { rtol: 1e-5, atol: 1e-8 },
  argmax: EXACT,
  reshapeAndCache: EXACT,
  pagedAttention: { rtol: 1e-3, atol: 1e-4 },
  amaxTensor: EXACT,
  amaxPerHead: EXACT,
  quantizeFp8: EXACT,
  dequantizeFp8: EXACT,
});

function linearCases(full: boolean, seed: number): ParityCase[] {
  const shapes: readonly [number, number][] = full
    ? [[33, 64], [8, 17], [16, 128], [129, 8], [256, 512], [1000, 64]]
    : [[33, 64], [8, 17], [16, 128], [129, 8]];
  const cases: ParityCase[] = [];
  AWKWARD_TOKENS.forEach((rows, i) => {
    DENSE_WEIGHT_DTYPE_LIST.forEach((dtype, j) => {
      const [outF, inF] = rows > 64 && !full ? [33, 64] : cycle(shapes, i + j);
      const bias = (i + j) % 2 === 0;
      const s = seed + i * 10 + j;
      cases.push({
        op: 'linear',
        label: `linear ${dtype} rows=${rows} in=${inF} out=${outF}${bias ? ' +bias' : ''}`,
        tolerance: DEFAULT_TOLERANCES.linear,
        run(b) {
          const r = rng(s);
          const x = randomF32(rows * inF, r);
          const weight = randomWeight(dtype, outF, inF, r);
          const out = withSlack(rows * outF);
          b.linear({ x, weight, out, rows, bias: bias ? randomF32(outF, r) : undefined });
          return { out };
        },
      });
    });
  });
  return cases;
}

function rmsNormCases(seed: number): ParityCase[] {
  const hiddens = [8, 16, 64, 128, 17];
  return AWKWARD_TOKENS.flatMap((rows, i) =>
    [false, true].map((inPlace, j): ParityCase => {
      const hidden = rows > 64 ? 64 : cycle(hiddens, i + j);
      const s = seed + 100 + i * 2 + j;
      return {
        op: 'rmsNorm',
        label: `rmsNorm rows=${rows} hidden=${hidden}${inPlace ? ' in-place' : ''}`,
        tolerance: DEFAULT_TOLERANCES.rmsNorm,
        run(b) {
          const r = rng(s);
          const x = withSlack(rows * hidden);
          x.set(randomF32(rows * hidden, r, 3));
          const weight = randomF32(hidden, r);
          const out = inPlace ? x : withSlack(rows * hidden);
          b.rmsNorm({ x, weight, out, rows, hidden, eps: j ? 1e-6 : 1e-5 });
          return { out };
        },
      };
    }),
  );
}

const ELEMENTWISE_LENGTHS = [0, 1, 7, 17, 33, 1025, 4099];

function addCases(seed: number): ParityCase[] {
  return ELEMENTWISE_LENGTHS.flatMap((length, i) =>
    (['none', 'a', 'b'] as const).map((alias, j): ParityCase => ({
      op: 'add',
      label: `add length=${length} out=${alias === 'none' ? 'separate' : alias}`,
      tolerance: DEFAULT_TOLERANCES.add,
      run(b) {
        const r = rng(seed + 200 + i * 3 + j);
        const a = withSlack(length);
        a.set(randomF32(length, r, 10));
        const bb = withSlack(length);
        bb.set(randomF32(length, r, 1e-3));
        const out = alias === 'a' ? a : alias === 'b' ? bb : withSlack(length);
        b.add({ a, b: bb, out, length });
        return { out };
      },
    })),
  );
}

/** Cases of the gated activations (`siluAndMul`, `geluTanhAndMul`): lengths around the vector widths, every aliasing. */
function gatedCases(op: 'siluAndMul' | 'geluTanhAndMul', seed: number): ParityCase[] {
  return ELEMENTWISE_LENGTHS.flatMap((length, i) =>
    (['none', 'gate', 'up'] as const).map((alias, j): ParityCase => ({
      op,
      label: `${op} length=${length} out=${alias === 'none' ? 'separate' : alias}`,
      tolerance: DEFAULT_TOLERANCES[op],
      run(b) {
        const r = rng(seed + i * 3 + j);
        const gate = withSlack(length);
        gate.set(randomF32(length, r, 4));
        // Large magnitudes exercise exp overflow / underflow (and gelu's cube).
        if (length > 4) {
          gate[0] = 120;
          gate[1] = -120;
          gate[2] = -0;
          gate[3] = -3e13;
        }
        const up = withSlack(length);
        up.set(randomF32(length, r));
        const out = alias === 'gate' ? gate : alias === 'up' ? up : withSlack(length);
        b[op]({ gate, up, out, length });
        return { out };
      },
    })),
  );
}

function embeddingCases(seed: number): ParityCase[] {
  const vocab = 97;
  return AWKWARD_TOKENS.flatMap((numTokens, i) =>
    DENSE_WEIGHT_DTYPE_LIST.map((dtype, j): ParityCase => {
      const hidden = cycle(HEAD_SIZES, i + j);
      return {
        op: 'embedding',
        label: `embedding ${dtype} tokens=${numTokens} hidden=${hidden}`,
        tolerance: DEFAULT_TOLERANCES.embedding,
        run(b) {
          const r = rng(seed + 400 + i * 3 + j);
          const table = randomWeight(dtype, vocab, hidden, r);
          const ids = randomInts(numTokens, vocab, r);
          ids[0] = vocab - 1;
          if (numTokens > 1) ids[1] = 0;
          const out = withSlack(numTokens * hidden);
          b.embedding({ table, ids, out, numTokens });
          return { out };
        },
      };
    }),
  );
}

/** One quantized-weight variant of the parity cases: a dtype, its quantizer options and a label suffix. */
interface QuantVariant {
  readonly options: QuantizeOptions;
  readonly tag: string;
}

/** Quantizer variants per quantized dtype (scale granularity, int4 group size and symmetry); GGML types have one. */
function quantVariants(dtype: WeightDtype): QuantVariant[] {
  if (dtype === 'fp8_e4m3' || dtype === 'int8') {
    return [
      { options: { granularity: 'channel' }, tag: '/channel' },
      { options: { granularity: 'tensor' }, tag: '/tensor' },
    ];
  }
  if (dtype === 'int4') {
    return [
      { options: { groupSize: 32, symmetric: true }, tag: '/g32-sym' },
      { options: { groupSize: 16, symmetric: false }, tag: '/g16-asym' },
      // a group size that is not a multiple of 8 (GPU: the group-by-group GEMV path)
      { options: { groupSize: 4, symmetric: false }, tag: '/g4-asym' },
      { options: { groupSize: 0, symmetric: false }, tag: '/channel-asym' },
      { options: { groupSize: 0, symmetric: true }, tag: '/channel-sym' },
    ];
  }
  return [{ options: {}, tag: '' }];
}

/**
 * Input widths with several blocks (or groups) per row: GGML 32-blocks 3 and 5, K-quants 2 and 3; fp8 / int8 98
 * (not a multiple of 4: the GPU GEMV's byte path) and 160; int4 96 and 160.
 */
function quantWidths(dtype: WeightDtype, full: boolean): readonly number[] {
  if (isGgmlDtype(dtype)) {
    const b = GGML_BLOCK[dtype].blockElems;
    return full ? [3 * b, 5 * b, 16 * b] : [3 * b, 5 * b];
  }
  const first = dtype === 'int4' ? 96 : 98;
  return full ? [first, 160, 2048] : [first, 160];
}

/** Resolve a variant's options for a width (`groupSize: 0` = one group per row). */
function variantOptions(v: QuantVariant, cols: number): QuantizeOptions {
  return v.options.groupSize === 0 ? { ...v.options, groupSize: cols } : v.options;
}

/**
 * `linear` on every quantized weight dtype, straight from the stored form: GEMV (rows 1) and GEMM (rows 3..7, odd
 * counts included), with and without bias, several blocks per row, odd output counts; every quantizer variant.
 * Tolerance: the normal linear one (candidates dequantize to float32 and accumulate in float32).
 */
function quantizedLinearCases(full: boolean, seed: number): ParityCase[] {
  const cases: ParityCase[] = [];
  const gemmRows = full ? [3, 4, 5, 6, 7, 33] : [3, 5, 7];
  QUANTIZED_WEIGHT_DTYPES.forEach((dtype, j) => {
    const widths = quantWidths(dtype, full);
    const variants = quantVariants(dtype);
    const n = Math.max(4, 2 * variants.length, full ? 8 : 0);
    for (let k = 0; k < n; k++) {
      const rows = k % 2 === 0 ? 1 : cycle(gemmRows, k >> 1);
      const inF = cycle(widths, k >> 1);
      const outF = cycle([7, 13, 33], k + j);
      const v = cycle(variants, k >> 1);
      const bias = (k + (k >> 1)) % 2 === 0;
      const s = seed + 2000 + j * 50 + k;
      cases.push({
        op: 'linear',
        label: `linear ${dtype}${v.tag} ${rows === 1 ? 'gemv' : 'gemm'} rows=${rows} in=${inF} out=${outF}${bias ? ' +bias' : ''}`,
        tolerance: DEFAULT_TOLERANCES.linear,
        run(b) {
          const r = rng(s);
          const x = randomF32(rows * inF, r);
          const weight = randomWeight(dtype, outF, inF, r, variantOptions(v, inF));
          const out = withSlack(rows * outF);
          b.linear({ x, weight, out, rows, bias: bias ? randomF32(outF, r) : undefined });
          return { out };
        },
      });
    }
  });
  return cases;
}

/**
 * `linear` with `activations: 'q8'` on every GGML dtype (GEMV and GEMM rows): random rows plus blocks that pin the
 * rounding rules (exact halves: Q8_0 rounds them away from zero, Q8_K to even), an all-zero block, a huge block,
 * and (one case per dtype) a NaN that must make its row's outputs NaN.
 */
function q8ActivationLinearCases(seed: number): ParityCase[] {
  const cases: ParityCase[] = [];
  GGML_WEIGHT_DTYPES.forEach((dtype, j) => {
    const block = dtype === 'q4_k' || dtype === 'q5_k' || dtype === 'q6_k' ? 256 : 32;
    const inF = Math.max(3 * GGML_BLOCK[dtype].blockElems, 3 * block);
    // 70 rows: two of the int8 GEMM's 64-row activation tiles, and a last group of 2 rows.
    [1, 2, 4, 5, 70].forEach((rows, k) => {
      const outF = cycle([7, 13, 33], k + j);
      const nan = k === 1;
      cases.push({
        op: 'linear',
        label: `linear ${dtype} activations=q8 ${rows <= 4 ? 'gemv' : 'gemm'} rows=${rows} in=${inF} out=${outF}${nan ? ' +NaN' : ''}`,
        tolerance: DEFAULT_TOLERANCES.linear,
        run(b) {
          const r = rng(seed + 4000 + j * 20 + k);
          const x = randomF32(rows * inF, r);
          // Row 0: block 0 holds exact halves of its step (127 sets amax, or max = -127 for Q8_K), block 1 is zero,
          // block 2 is huge.
          const halves = [2.5, -2.5, 0.5, -0.5, 1.5, -1.5, 126.5, -3.5];
          x[0] = block === 32 ? 127 : -127;
          halves.forEach((h, i) => (x[1 + i] = h));
          x.fill(0, block, 2 * block);
          for (let i = 2 * block; i < 3 * block; i++) x[i] = x[i]! * 1e4;
          if (nan) x[inF + 3] = NaN;
          const weight = randomWeight(dtype, outF, inF, r, {});
          const out = withSlack(rows * outF);
          b.linear({ x, weight, out, rows, bias: k % 2 === 0 ? randomF32(outF, r) : undefined, activations: 'q8' });
          return { out };
        },
      });
    });
    // 32-element types on rows of whole 128-element groups: the AVX-512 VNNI decode GEMV's four-block dot.
    if (block === 32) {
      [1, 3].forEach((rows, k) => {
        const inF = 256 + 128 * k, outF = 9;
        cases.push({
          op: 'linear',
          label: `linear ${dtype} activations=q8 gemv rows=${rows} in=${inF} out=${outF}${k === 1 ? ' +NaN' : ''}`,
          tolerance: DEFAULT_TOLERANCES.linear,
          run(b) {
            const r = rng(seed + 4500 + j * 20 + k);
            const x = randomF32(rows * inF, r);
            if (k === 1) x[inF + 130] = NaN;
            const weight = randomWeight(dtype, outF, inF, r, {});
            const out = withSlack(rows * outF);
            b.linear({ x, weight, out, rows, bias: k === 0 ? randomF32(outF, r) : undefined, activations: 'q8' });
            return { out };
          },
        });
      });
    }
  });
  return cases;
}

/**
 * `linear` with `activations: 'q8'` on `int8` weights (compressed-tensors W8A8, vLLM's per-row int8 activations):
 * dynamic and static scales, per-channel and per-tensor weight scales, GEMV and GEMM rows, widths off the vector
 * sizes. Row 0 pins the rounding (amax 127 makes the codes the values: exact halves round to even), row 1 (when
 * present) is all zero; the static cases saturate at -128 / 127; one case has a NaN (its row's outputs NaN).
 */
function int8ActivationLinearCases(seed: number): ParityCase[] {
  const cases: ParityCase[] = [];
  const shapes: readonly [rows: number, inF: number][] = [
    [1, 256],
    [1, 98],
    [2, 160],
    [4, 384],
    [3, 1000],
    [5, 160],
    [70, 96],
  ];
  quantVariants('int8').forEach((v, j) => {
    shapes.forEach(([rows, inF], k) => {
      for (const staticScale of [undefined, 0.05]) {
        const nan = k === 2 && staticScale === undefined;
        const outF = cycle([7, 13, 33], k + j);
        cases.push({
          op: 'linear',
          label: `linear int8${v.tag} activations=q8${staticScale ? ' static' : ''} ${rows <= 4 ? 'gemv' : 'gemm'} rows=${rows} in=${inF} out=${outF}${nan ? ' +NaN' : ''}`,
          tolerance: DEFAULT_TOLERANCES.linear,
          run(b) {
            const r = rng(seed + 4700 + j * 40 + k * 2 + (staticScale ? 1 : 0));
            const x = randomF32(rows * inF, r);
            if (staticScale === undefined) {
              x[0] = -127;
              [2.5, -2.5, 0.5, -0.5, 1.5, -1.5, 126.5, -3.5].forEach((h, i) => (x[1 + i] = h));
            } else {
              [100, -100, 6.375, -6.4, 0.025, -0.075].forEach((h, i) => (x[i] = h)); // saturate; exact halves of 0.05 (in float32, near them)
            }
            if (rows > 1) x.fill(0, inF, 2 * inF);
            if (nan) x[inF + 3] = NaN;
            const weight = randomWeight('int8', outF, inF, r, variantOptions(v, inF));
            const out = withSlack(rows * outF);
            b.linear({ x, weight, out, rows, bias: k % 2 === 0 ? randomF32(outF, r) : undefined, activations: 'q8', ...(staticScale ? { activationScale: staticScale } : {}) });
            return { out };
          },
        });
      }
    });
  });
  return cases;
}

/**
 * `linear` with `activations: 'q16'` on `int4` weights (W4A16 with 16-bit activation blocks of 128): groups of 128
 * and 256 and per channel on whole blocks (the CPU's integer GEMV), 32 and per channel on other widths (the float32
 * path on x'), widths off the block (a short last block),
 * GEMV and GEMM rows. Row 0's first block pins the rounding: a spike of 32767 makes the codes the values (exact
 * halves round to even, 0.5 to 0), and element 0's weight is zero in every output row, so the outputs are made of
 * the rounded values; a float32 candidate misses them by ~0.1. Row 1 (when present) is zero; one case has a NaN
 * (its row's outputs NaN).
 */
function q16ActivationLinearCases(seed: number): ParityCase[] {
  const cases: ParityCase[] = [];
  const shapes: readonly [groupSize: number, symmetric: boolean, rows: number, inF: number][] = [
    [128, true, 1, 256],
    [128, false, 2, 384],
    [256, true, 3, 512],
    [128, true, 4, 1152],
    [128, false, 5, 256],
    [256, false, 70, 256],
    [32, true, 1, 96],
    [32, false, 3, 160],
    [0, false, 1, 200],
    [0, true, 4, 136],
    // per channel on whole 128-blocks: the integer GEMV with 3 (not a power of two) and 2 blocks per group
    [0, true, 2, 384],
    [0, false, 1, 256],
  ];
  shapes.forEach(([groupSize, symmetric, rows, inF], k) => {
    const outF = cycle([7, 13, 33], k);
    const nan = k === 1;
    const tag = `${groupSize === 0 ? 'channel' : `g${groupSize}`}-${symmetric ? 'sym' : 'asym'}`;
    cases.push({
      op: 'linear',
      label: `linear int4/${tag} activations=q16 ${rows <= 4 ? 'gemv' : 'gemm'} rows=${rows} in=${inF} out=${outF}${nan ? ' +NaN' : ''}`,
      tolerance: DEFAULT_TOLERANCES.linear,
      run(b) {
        const r = rng(seed + 4900 + k);
        const x = randomF32(rows * inF, r);
        x[0] = 32767;
        [0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 126.5, -3.5].forEach((h, i) => (x[1 + i] = h));
        if (rows > 1) x.fill(0, inF, 2 * inF);
        if (nan) x[inF + 3] = NaN;
        const weight = randomWeight('int4', outF, inF, r, { groupSize: groupSize === 0 ? inF : groupSize, symmetric });
        zeroFirstColumn(weight);
        const out = withSlack(rows * outF);
        b.linear({ x, weight, out, rows, bias: k % 2 === 0 ? randomF32(outF, r) : undefined, activations: 'q16' });
        return { out };
      },
    });
  });
  return cases;
}

/** Sets element 0 of every row of an int4 weight to the code that dequantizes to 0 (8 + the row's zero point). */
function zeroFirstColumn(w: WeightMatrix): void {
  const data = w.data as Uint8Array;
  const groups = w.cols / (w.groupSize ?? w.cols);
  for (let n = 0; n < w.rows; n++) {
    const code = 8 + (w.zeroPoint ? w.zeroPoint[n * groups]! : 0);
    data[(n * w.cols) / 2] = (data[(n * w.cols) / 2]! & 0xf0) | code;
  }
}

/** `embedding` on every quantized table dtype (bit-exact: the looked-up rows are dequantized, nothing summed). */
function quantizedEmbeddingCases(seed: number): ParityCase[] {
  const vocab = 37;
  const cases: ParityCase[] = [];
  QUANTIZED_WEIGHT_DTYPES.forEach((dtype, j) => {
    const variants = quantVariants(dtype);
    const widths = quantWidths(dtype, false);
    variants.forEach((v, k) => {
      for (const numTokens of k === 0 ? [1, 7, 17] : [7]) {
        const hidden = cycle(widths, numTokens + k);
        const s = seed + 3000 + j * 50 + k * 5 + numTokens;
        cases.push({
          op: 'embedding',
          label: `embedding ${dtype}${v.tag} tokens=${numTokens} hidden=${hidden}`,
          tolerance: DEFAULT_TOLERANCES.embedding,
          run(b) {
            const r = rng(s);
            const table = randomWeight(dtype, vocab, hidden, r, variantOptions(v, hidden));
            const ids = randomInts(numTokens, vocab, r);
            ids[0] = vocab - 1;
            if (numTokens > 1) ids[1] = 0;
            if (numTokens > 2) ids[2] = vocab - 1;
            const out = withSlack(numTokens * hidden);
            b.embedding({ table, ids, out, numTokens });
            return { out };
          },
        });
      }
    });
  });
  return cases;
}

interface RopeCfg {
  headSize: number;
  rotaryDim: number;
  gqa: number;
  theta: number;
  scaling?: RopeScaling;
}

const LLAMA3_SCALING: RopeScaling = {
  type: 'llama3',
  factor: 8,
  lowFreqFactor: 1,
  highFreqFactor: 4,
  originalMaxPositions: 8192,
};

function ropeCases(seed: number): ParityCase[] {
  const cfgs: RopeCfg[] = [
    { headSize: 8, rotaryDim: 8, gqa: 1, theta: 10000 },
    { headSize: 16, rotaryDim: 8, gqa: 2, theta: 10000 },
    { headSize: 64, rotaryDim: 64, gqa: 4, theta: 500000, scaling: LLAMA3_SCALING },
    { headSize: 128, rotaryDim: 128, gqa: 8, theta: 500000, scaling: LLAMA3_SCALING },
    { headSize: 128, rotaryDim: 128, gqa: 1, theta: 10000, scaling: { type: 'linear', factor: 4 } },
  ];
  const maxPositions = 2048;
  return AWKWARD_TOKENS.flatMap((numTokens, i) =>
    (['rotate_half', 'interleaved'] as RopeStyle[]).map((style, j): ParityCase => {
      const cfg = numTokens > 64 ? cfgs[i % 2]! : cycle(cfgs, i + j);
      const numKvHeads = 2;
      const numHeads = numKvHeads * cfg.gqa;
      return {
        op: 'rope',
        label: `rope ${style} tokens=${numTokens} hs=${cfg.headSize} rot=${cfg.rotaryDim} theta=${cfg.theta}${cfg.scaling ? ` ${cfg.scaling.type}` : ''} gqa=${cfg.gqa}`,
        tolerance: DEFAULT_TOLERANCES.rope,
        run(b) {
          const r = rng(seed + 500 + i * 2 + j);
          const table = ropeTable(cfg.rotaryDim, cfg.theta, cfg.scaling, maxPositions);
          const query = withSlack(numTokens * numHeads * cfg.headSize);
          query.set(randomF32(numTokens * numHeads * cfg.headSize, r));
          const key = withSlack(numTokens * numKvHeads * cfg.headSize);
          key.set(randomF32(numTokens * numKvHeads * cfg.headSize, r));
          const positions = randomInts(numTokens, maxPositions, r);
          positions[0] = maxPositions - 1;
          b.rope({ query, key, positions, numTokens, numHeads, numKvHeads, headSize: cfg.headSize, table, style });
          return { query, key };
        },
      };
    }),
  );
}

function softmaxCases(seed: number): ParityCase[] {
  const cases: ParityCase[] = [];
  [1, 7, 17].forEach((rows, i) => {
    [1, 7, 33, 1025, 4099].forEach((cols, j) => {
      const inPlace = (i + j) % 2 === 1;
      cases.push({
        op: 'softmax',
        label: `softmax rows=${rows} cols=${cols}${inPlace ? ' in-place' : ''}`,
        tolerance: DEFAULT_TOLERANCES.softmax,
        run(b) {
          const r = rng(seed + 600 + i * 5 + j);
          const x = withSlack(rows * cols);
          x.set(randomF32(rows * cols, r, 5));
          if (cols > 3) {
            x[1] = -Infinity; // masked logit
            x[2] = 80; // large logit: max subtraction must prevent overflow
          }
          if (rows > 2 && cols > 1) {
            for (let c = 0; c < cols; c++) x[cols + c] = -Infinity; // a fully masked row -> NaN
            x[2 * cols] = NaN; // a NaN row -> NaN
          }
          const out = inPlace ? x : withSlack(rows * cols);
          b.softmax({ x, out, rows, cols });
          return { out };
        },
      });
    });
  });
  return cases;
}

function argmaxCases(seed: number): ParityCase[] {
  const cases: ParityCase[] = [];
  [0, 1, 7, 17].forEach((rows, i) => {
    [1, 2, 33, 1025, 4099].forEach((cols, j) => {
      cases.push({
        op: 'argmax',
        label: `argmax rows=${rows} cols=${cols}`,
        tolerance: EXACT,
        run(b) {
          const r = rng(seed + 650 + i * 5 + j);
          const x = withSlack(rows * cols);
          x.set(randomF32(rows * cols, r, 5));
          if (rows > 1 && cols > 1) {
            for (let c = 0; c < cols; c++) x[cols + c] = c % 2 ? 7 : x[cols + c]!;
            x[cols + cols - 1] = 1e30; // the maximum in the last column
          }
          if (rows > 2 && cols > 2) {
            for (let c = 0; c < cols; c++) x[2 * cols + c] = -Infinity; // all masked -> 0
          }
          if (rows > 3 && cols > 3) {
            x[3 * cols + 1] = 9;
            x[3 * cols + 2] = NaN; // NaN beats the maximum: its first index
            x[3 * cols + 3] = NaN;
          }
          if (rows > 4 && cols > 3) {
            for (let c = 0; c < cols; c++) x[4 * cols + c] = c % 2 ? 0 : -0; // ties (and -0 == +0): the first index
          }
          if (rows > 5 && cols > 1) x.fill(3, 5 * cols, 6 * cols); // a constant row: 0
          const out = new Int32Array(rows + SLACK).fill(-7);
          b.argmax({ x, out, rows, cols });
          return { out };
        },
      });
    });
  });
  return cases;
}

function reshapeCases(full: boolean, seed: number): ParityCase[] {
  const cases: ParityCase[] = [];
  let k = 0;
  for (const dtype of KV_DTYPES) {
    for (const scales of isFp8(dtype) ? (['tensor', 'head'] as const) : (['tensor'] as const)) {
      for (let v = 0; v < (full ? AWKWARD_TOKENS.length : 3); v++) {
        const idx = k++;
        const numTokens = full ? AWKWARD_TOKENS[v]! : cycle(AWKWARD_TOKENS, idx + v);
        const big = numTokens > 64;
        const headSize = big ? 8 : cycle(HEAD_SIZES, idx);
        const numKvHeads = big ? 2 : cycle([1, 2, 4, 8], idx + 1);
        const blockSize = cycle(BLOCK_SIZES, idx + v);
        const special = v === 0;
        const s = seed + 700 + idx * 7 + v;
        cases.push({
          op: 'reshapeAndCache',
          label: `reshapeAndCache ${dtype}/${scales} tokens=${numTokens} kvh=${numKvHeads} hs=${headSize} bs=${blockSize}${special ? ' specials' : ''}`,
          tolerance: DEFAULT_TOLERANCES.reshapeAndCache,
          run(b) {
            const r = rng(s);
            const numBlocks = Math.ceil((numTokens * 1.3) / blockSize) + 1;
            const cache = makeKvCache({ dtype, numBlocks, blockSize, numKvHeads, headSize, scales, amax: 3 });
            // Pre-existing content must survive where no token is written.
            for (const pool of [cache.key, cache.value]) {
              for (let i = 0; i < pool.length; i++) pool[i] = dtype === 'f32' ? i % 13 : (i * 37) & (dtype === 'bf16' || dtype === 'f16' ? 0x3fff : 0x7f);
            }
            const n = numTokens * numKvHeads * headSize;
            const key = randomF32(n, r, 1.5);
            const value = randomF32(n, r, 1.5);
            if (special && n >= 6) {
              key.set([NaN, Infinity, -Infinity, -0, 1e-30, 1e30]);
              value.set([1e30, -1e30, NaN, 0, -1e-30, Infinity]);
            }
            const order = permutation(numBlocks * blockSize, r);
            const slotMapping = new Int32Array(numTokens);
            for (let t = 0; t < numTokens; t++) slotMapping[t] = r() < 0.1 ? -1 : order[t]!;
            b.reshapeAndCache({ key, value, slotMapping, numTokens, cache });
            return { key: cache.key, value: cache.value };
          },
        });
      }
    }
  }
  return cases;
}

type Scenario = 'decode' | 'prefill' | 'chunked' | 'mixed';

function scenarioSeqs(s: Scenario, i: number): SeqSpec[] {
  switch (s) {
    case 'decode':
      return [1, 7, 17, 33, 5, 16, 32].map((seqLen) => ({ queryLen: 1, seqLen: seqLen + (i % 2) }));
    case 'prefill':
      return [{ queryLen: cycle([7, 17, 33], i), seqLen: cycle([7, 17, 33], i) }];
    case 'chunked':
      return [
        { queryLen: 7, seqLen: 17 },
        { queryLen: 17, seqLen: 40 },
      ];
    case 'mixed':
      return [
        { queryLen: 1, seqLen: 33 },
        { queryLen: 7, seqLen: 7 },
        { queryLen: 5, seqLen: 21 },
        { queryLen: 1, seqLen: 1 },
      ];
  }
}

interface AttnCfg {
  dtype: KvDtype;
  /** The V pool's dtype (a mixed cache). Default `dtype`. */
  valueDtype?: KvDtype;
  scales: 'tensor' | 'head';
  headSize: number;
  gqa: number;
  numKvHeads: number;
  blockSize: number;
  seqs: SeqSpec[];
  scenario: string;
  fp8Query?: boolean;
  slidingWindow?: number;
  softmaxScale?: number;
  /**
   * Write-time-scaled dtypes: rewrite positions 0 and 1 of the first sequence (every kv head) with special heads
   * (see writeKvSpecials): an all-zero K head, a V head whose first group holds a NaN, ±Inf and huge values.
   */
  kvSpecials?: boolean;
  /** Ask for the `lse` output too (compared like `out`). */
  lse?: boolean;
}

/**
 * Overwrite positions 0 and 1 of sequence 0 of `batch` (written by `writer`) with special heads, every kv head:
 * position 0: K all zero (zero groups: scale 0), V with +Inf at element 17 mod headSize (saturated) and, in the last
 * kv head when there are several, a NaN at element 0 (its group decodes to NaN, so do those output dims of every row
 * of that head attending it); position 1: K with -Inf at element 3 and 30 at element 40 mod headSize (a large amax),
 * V all zero (and -0).
 */
function writeKvSpecials(batch: AttentionBatch, writer: KernelBackend, numKvHeads: number, headSize: number): void {
  const bs = batch.cache.blockSize;
  const n = Math.min(2, batch.seqLens[0]!);
  const slotMapping = new Int32Array(n);
  for (let p = 0; p < n; p++) slotMapping[p] = batch.blockTables[Math.floor(p / bs)]! * bs + (p % bs);
  const width = numKvHeads * headSize;
  const key = Float32Array.from(batch.keys[0]!.subarray(0, n * width));
  const value = Float32Array.from(batch.values[0]!.subarray(0, n * width));
  for (let h = 0; h < numKvHeads; h++) {
    const a = h * headSize;
    key.fill(0, a, a + headSize);
    // The NaN only in the last kv head (of two or more), so the other heads' outputs stay finite.
    if (h === numKvHeads - 1 && h > 0) value[a] = NaN;
    value[a + (17 % headSize)] = Infinity;
    if (n > 1) {
      const b = width + h * headSize;
      key[b + 3] = -Infinity;
      key[b + (40 % headSize)] = 30;
      for (let d = 0; d < headSize; d++) value[b + d] = d % 2 ? -0 : 0;
    }
  }
  writer.reshapeAndCache({ key, value, slotMapping, numTokens: n, cache: batch.cache });
}

function attentionCase(cfg: AttnCfg, seed: number): ParityCase {
  const numHeads = cfg.numKvHeads * cfg.gqa;
  const extras = [
    cfg.fp8Query ? 'fp8-query' : '',
    cfg.slidingWindow ? `window=${cfg.slidingWindow}` : '',
    cfg.softmaxScale ? `scale=${cfg.softmaxScale}` : '',
    cfg.kvSpecials ? 'specials' : '',
    cfg.lse ? 'lse' : '',
  ]
    .filter(Boolean)
    .join(' ');
  const reference = createReferenceBackend();
  return {
    op: 'pagedAttention',
    label: `pagedAttention ${cfg.dtype}/${cfg.valueDtype !== undefined && cfg.valueDtype !== cfg.dtype ? `V=${cfg.valueDtype}/` : ''}${cfg.scales} hs=${cfg.headSize} heads=${numHeads}/${cfg.numKvHeads} bs=${cfg.blockSize} ${cfg.scenario}${extras ? ` ${extras}` : ''}`,
    tolerance: DEFAULT_TOLERANCES.pagedAttention,
    run(b) {
      const r = rng(seed);
      const batch = buildAttentionBatch(
        {
          dtype: cfg.dtype,
          ...(cfg.valueDtype !== undefined ? { valueDtype: cfg.valueDtype } : {}),
          scales: cfg.scales,
          blockSize: cfg.blockSize,
          numKvHeads: cfg.numKvHeads,
          headSize: cfg.headSize,
          numHeads,
          seqs: cfg.seqs,
        },
        r,
        reference,
      );
      if (cfg.kvSpecials) writeKvSpecials(batch, reference, cfg.numKvHeads, cfg.headSize);
      if (cfg.fp8Query && isFp8(cfg.dtype)) {
        // Fit q scales to the query (per head when asked), so quantized queries use the format's range.
        const fmtMax = FP8_FORMATS[cfg.dtype as Fp8Format].maxFinite;
        const q = batch.cache.qScale;
        for (let h = 0; h < q.length; h++) q[h] = (4 * (q.length === 1 ? 1 : 0.6 + (h % 5) / 5)) / fmtMax;
      }
      const out = withSlack(batch.numTokens * numHeads * cfg.headSize);
      const lse = cfg.lse ? withSlack(batch.numTokens * numHeads) : undefined;
      b.pagedAttention({
        ...attentionArgs(batch),
        out,
        softmaxScale: cfg.softmaxScale,
        slidingWindow: cfg.slidingWindow,
        fp8Query: cfg.fp8Query ? {} : undefined,
        lse,
      });
      const outputs: Record<string, ParityValue> = { out };
      if (lse) outputs.lse = lse;
      return outputs;
    },
    ...(cfg.lse ? { lse: true } : {}),
  };
}

/**
 * `pagedAttention` with the `lse` output: every KV dtype, decode/prefill/chunked in one batch, a sliding window, the
 * FP8 query, and a long decode (one sequence of 300 keys: split into key ranges on multi-threaded backends).
 */
function lseAttentionCases(seed: number): ParityCase[] {
  const cases: ParityCase[] = [];
  const dtypes: KvDtype[] = [...KV_DTYPES, ...KV_QUANT_DTYPE_LIST];
  dtypes.forEach((dtype, i) => {
    const quant = (KV_QUANT_DTYPE_LIST as readonly KvDtype[]).includes(dtype);
    const longDecode = i % 3 === 2;
    const c = attentionCase(
      {
        dtype,
        scales: quant ? 'tensor' : 'head',
        headSize: quant ? cycle(QUANT_HEAD_SIZES, i) : cycle(HEAD_SIZES, i),
        gqa: cycle(GQA_RATIOS, i),
        numKvHeads: cycle([1, 2], i),
        blockSize: cycle(BLOCK_SIZES, i),
        seqs: longDecode ? [{ queryLen: 1, seqLen: 300 }] : scenarioSeqs('mixed', i),
        scenario: longDecode ? 'decode' : 'mixed',
        ...(i % 4 === 1 ? { slidingWindow: 5 } : {}),
        ...(isFp8(dtype) && i % 2 === 0 ? { fp8Query: true } : {}),
        lse: true,
      },
      seed + 1500 + i,
    );
    cases.push(quant ? { ...c, kvDtype: dtype as KvQuantDtype } : c);
  });
  return cases;
}

function attentionCases(full: boolean, seed: number): ParityCase[] {
  const cases: ParityCase[] = [];
  const scenarios: Scenario[] = ['decode', 'prefill', 'chunked', 'mixed'];
  let i = 0;
  for (const dtype of KV_DTYPES) {
    for (const scales of isFp8(dtype) ? (['tensor', 'head'] as const) : (['tensor'] as const)) {
      for (const scenario of scenarios) {
        const idx = i++;
        cases.push(
          attentionCase(
            {
              dtype,
              scales,
              headSize: cycle(HEAD_SIZES, idx),
              gqa: cycle(GQA_RATIOS, idx + Math.floor(idx / 4)),
              numKvHeads: cycle([1, 2], idx + 1),
              blockSize: cycle(BLOCK_SIZES, idx + Math.floor(idx / 3)),
              seqs: scenarioSeqs(scenario, idx),
              scenario,
            },
            seed + 800 + idx,
          ),
        );
      }
    }
  }
  // FP8-query mode: every format, per-tensor and per-head q scales.
  FP8_FORMAT_LIST.forEach((dtype, j) => {
    (['tensor', 'head'] as const).forEach((scales, k) => {
      cases.push(
        attentionCase(
          {
            dtype,
            scales,
            headSize: cycle(HEAD_SIZES, j + k),
            gqa: cycle(GQA_RATIOS, j + 2 * k),
            numKvHeads: 2,
            blockSize: cycle(BLOCK_SIZES, j),
            seqs: scenarioSeqs('mixed', j),
            scenario: 'mixed',
            fp8Query: true,
          },
          seed + 900 + j * 2 + k,
        ),
      );
    });
  });
  // Sliding windows (1 = attend to self only), a custom softmax scale.
  [1, 5, 16].forEach((slidingWindow, j) => {
    cases.push(
      attentionCase(
        {
          dtype: cycle(KV_DTYPES, j * 3),
          scales: 'head',
          headSize: cycle(HEAD_SIZES, j),
          gqa: cycle(GQA_RATIOS, j + 1),
          numKvHeads: 2,
          blockSize: cycle(BLOCK_SIZES, j),
          seqs: scenarioSeqs(j === 2 ? 'chunked' : 'mixed', j),
          scenario: j === 2 ? 'chunked' : 'mixed',
          slidingWindow,
        },
        seed + 950 + j,
      ),
    );
  });
  cases.push(
    attentionCase(
      {
        dtype: 'e4m3fn',
        scales: 'head',
        headSize: 16,
        gqa: 4,
        numKvHeads: 1,
        blockSize: 16,
        seqs: scenarioSeqs('chunked', 0),
        scenario: 'chunked',
        softmaxScale: 0.3,
      },
      seed + 960,
    ),
  );
  // Long contexts: a 1025-token prefill and a batch of 1025-token decodes.
  cases.push(
    attentionCase(
      {
        dtype: 'e4m3fn',
        scales: 'head',
        headSize: 8,
        gqa: 2,
        numKvHeads: 1,
        blockSize: 16,
        seqs: [{ queryLen: 1025, seqLen: 1025 }],
        scenario: 'prefill-1025',
      },
      seed + 970,
    ),
    attentionCase(
      {
        dtype: 'bf16',
        scales: 'tensor',
        headSize: 64,
        gqa: 4,
        numKvHeads: 2,
        blockSize: 32,
        seqs: [1025, 1024, 33, 1025].map((seqLen) => ({ queryLen: 1, seqLen })),
        scenario: 'decode-1025',
      },
      seed + 971,
    ),
  );
  // Decode batches at head size 128 for every GQA row count (1, 2, 8 rows per kv head; the GPU's 16-lanes-per-key
  // decode kernel with its reduce-scatter softmax), keys past a multiple of the lanes' step, a sliding window.
  [1, 2, 8].forEach((gqa, j) => {
    cases.push(
      attentionCase(
        {
          dtype: cycle(KV_DTYPES, 2 * j + 1),
          scales: 'head',
          headSize: 128,
          gqa,
          numKvHeads: 2,
          blockSize: 16,
          seqs: [301, 77, 1].map((seqLen) => ({ queryLen: 1, seqLen })),
          scenario: 'decode-d128',
          ...(j === 2 ? { slidingWindow: 50 } : {}),
        },
        seed + 990 + j,
      ),
    );
  });
  if (full) {
    for (const dtype of KV_DTYPES) {
      cases.push(
        attentionCase(
          {
            dtype,
            scales: 'head',
            headSize: 128,
            gqa: 8,
            numKvHeads: 2,
            blockSize: 32,
            seqs: [
              { queryLen: 257, seqLen: 1025 },
              { queryLen: 1, seqLen: 1025 },
            ],
            scenario: 'full-long',
          },
          seed + 980 + cases.length,
        ),
      );
    }
  }
  return cases;
}

function amaxCases(seed: number): ParityCase[] {
  const cases: ParityCase[] = ELEMENTWISE_LENGTHS.flatMap((length, i) =>
    ['plain', 'nan', 'inf'].map((kind, j): ParityCase => ({
      op: 'amaxTensor',
      label: `amaxTensor length=${length} ${kind}`,
      tolerance: DEFAULT_TOLERANCES.amaxTensor,
      run(b) {
        const r = rng(seed + 1000 + i * 3 + j);
        const x = withSlack(length);
        x.set(randomF32(length, r, 3));
        x.fill(1e9, length); // larger than any value: must not be read
        if (length > 0 && kind === 'nan') x[length - 1] = NaN;
        if (length > 0 && kind === 'inf') x[Math.floor(length / 2)] = -Infinity;
        return { amax: b.amaxTensor({ x, length }) };
      },
    })),
  );
  AWKWARD_TOKENS.forEach((numTokens, i) => {
    [false, true].forEach((accumulate, j) => {
      const numHeads = cycle([1, 2, 4, 8], i + j);
      const headSize = numTokens > 64 ? 8 : cycle(HEAD_SIZES, i);
      cases.push({
        op: 'amaxPerHead',
        label: `amaxPerHead tokens=${numTokens} heads=${numHeads} hs=${headSize}${accumulate ? ' accumulate' : ''}`,
        tolerance: DEFAULT_TOLERANCES.amaxPerHead,
        run(b) {
          const r = rng(seed + 1100 + i * 2 + j);
          const x = randomF32(numTokens * numHeads * headSize, r, 2);
          if (numHeads > 1) x[headSize] = NaN; // head 1 of token 0
          const out = withSlack(numHeads);
          for (let h = 0; h < numHeads; h++) out[h] = h % 2 === 0 ? 100 : 0.5;
          b.amaxPerHead({ x, out, numTokens, numHeads, headSize, accumulate });
          return { out };
        },
      });
    });
  });
  return cases;
}

function layoutsFor(numHeads: number, headSize: number): { name: string; layout: ScaleLayout; count: (n: number) => number }[] {
  return [
    { name: 'tensor', layout: { granularity: 'tensor' }, count: () => 1 },
    { name: 'head', layout: { granularity: 'head', numHeads, headSize }, count: () => numHeads },
    { name: 'token', layout: { granularity: 'token', tokenSize: numHeads * headSize }, count: (n) => n / (numHeads * headSize) },
    {
      name: 'token_head',
      layout: { granularity: 'token_head', numHeads, headSize },
      count: (n) => n / headSize,
    },
  ];
}

function quantCases(seed: number): ParityCase[] {
  const cases: ParityCase[] = [];
  FP8_FORMAT_LIST.forEach((format, i) => {
    const numHeads = 2;
    const headSize = cycle([8, 16], i);
    layoutsFor(numHeads, headSize).forEach((l, j) => {
      const numTokens = cycle([1, 7, 17, 33], i + j);
      const length = numTokens * numHeads * headSize;
      (['satfinite', 'nosat'] as const).forEach((saturation, k) => {
        cases.push({
          op: 'quantizeFp8',
          label: `quantizeFp8 ${format} ${l.name} ${saturation} tokens=${numTokens}`,
          tolerance: DEFAULT_TOLERANCES.quantizeFp8,
          run(b) {
            const r = rng(seed + 1200 + i * 16 + j * 2 + k);
            const scales = new Float32Array(l.count(length));
            for (let s = 0; s < scales.length; s++) scales[s] = 0.001 + r() * 0.05;
            const src = randomF32(length, r, FP8_FORMATS[format].maxFinite * 0.02);
            if (length >= 5) src.set([NaN, Infinity, -Infinity, 1e30, -0]);
            const out = new Uint8Array(length + SLACK).fill(0xa5);
            b.quantizeFp8({ src, out, length, scales, layout: l.layout, format, saturation });
            return { out };
          },
        });
      });
      cases.push({
        op: 'dequantizeFp8',
        label: `dequantizeFp8 ${format} ${l.name} tokens=${numTokens}`,
        tolerance: DEFAULT_TOLERANCES.dequantizeFp8,
        run(b) {
          const r = rng(seed + 1300 + i * 4 + j);
          const scales = new Float32Array(l.count(length));
          for (let s = 0; s < scales.length; s++) scales[s] = 0.001 + r() * 3;
          const src = new Uint8Array(length);
          for (let c = 0; c < length; c++) src[c] = (c * 29 + Math.floor(r() * 256)) & 0xff; // every code, NaNs too
          const out = withSlack(length);
          b.dequantizeFp8({ src, out, length, scales, layout: l.layout, format });
          return { out };
        },
      });
    });
  });
  return cases;
}

/** Head sizes every write-time-scaled dtype can hold (multiples of 64, so int4_g64 too). */
const QUANT_HEAD_SIZES: readonly number[] = [64, 128];

/**
 * `reshapeAndCache` on the write-time-scaled dtypes: byte-exact pools (codes and scales), pre-existing content kept,
 * padding slots, NaN / ±Inf / -0 / all-zero heads / huge and tiny values.
 */
function quantReshapeCases(full: boolean, seed: number): ParityCase[] {
  const cases: ParityCase[] = [];
  KV_QUANT_DTYPE_LIST.forEach((dtype, di) => {
    for (let v = 0; v < (full ? 4 : 2); v++) {
      const idx = di * 4 + v;
      const numTokens = cycle([7, 17, 33, 1], idx);
      const headSize = cycle(QUANT_HEAD_SIZES, idx);
      const numKvHeads = cycle([1, 2, 4], idx);
      const blockSize = cycle(BLOCK_SIZES, idx + v);
      const special = v === 0;
      const s = seed + 1100 + idx;
      cases.push({
        op: 'reshapeAndCache',
        kvDtype: dtype,
        label: `reshapeAndCache ${dtype} tokens=${numTokens} kvh=${numKvHeads} hs=${headSize} bs=${blockSize}${special ? ' specials' : ''}`,
        tolerance: EXACT,
        run(b) {
          const r = rng(s);
          const numBlocks = Math.ceil((numTokens * 1.3) / blockSize) + 1;
          const cache = makeKvCache({ dtype, numBlocks, blockSize, numKvHeads, headSize, scales: 'tensor', amax: 3 });
          for (const pool of [cache.key, cache.value]) for (let i = 0; i < pool.length; i++) pool[i] = (i * 37) & 0xff;
          const n = numTokens * numKvHeads * headSize;
          const key = randomF32(n, r, 1.5);
          const value = randomF32(n, r, 1.5);
          if (special) {
            key.set([NaN, Infinity, -Infinity, -0, 1e-30, 1e30]);
            value.set([1e30, -1e30, 3e-39, 0, -1e-30, Infinity]);
            // the last token's heads are all zero (and -0)
            for (let i = (numTokens - 1) * numKvHeads * headSize; i < n; i++) {
              key[i] = i % 2 ? -0 : 0;
              value[i] = 0;
            }
          }
          const order = permutation(numBlocks * blockSize, r);
          const slotMapping = new Int32Array(numTokens);
          for (let t = 0; t < numTokens; t++) slotMapping[t] = r() < 0.1 ? -1 : order[t]!;
          b.reshapeAndCache({ key, value, slotMapping, numTokens, cache });
          return { key: cache.key, value: cache.value };
        },
      });
    }
  });
  return cases;
}

/** `pagedAttention` over caches of the write-time-scaled dtypes (written by the reference), every scenario. */
function quantAttentionCases(full: boolean, seed: number): ParityCase[] {
  const cases: ParityCase[] = [];
  const scenarios: Scenario[] = full ? ['decode', 'prefill', 'chunked', 'mixed'] : ['decode', 'mixed'];
  let i = 0;
  for (const dtype of KV_QUANT_DTYPE_LIST) {
    for (const scenario of scenarios) {
      const idx = i++;
      const c = attentionCase(
        {
          dtype,
          scales: 'tensor',
          headSize: cycle(QUANT_HEAD_SIZES, idx),
          gqa: cycle(GQA_RATIOS, idx),
          numKvHeads: cycle([1, 2], idx + 1),
          blockSize: cycle(BLOCK_SIZES, idx + 1),
          seqs: scenarioSeqs(scenario, idx),
          scenario,
          ...(idx % 5 === 2 ? { slidingWindow: 5 } : {}),
        },
        seed + 1200 + idx,
      );
      cases.push({ ...c, kvDtype: dtype });
    }
  }
  // Head sizes other than 64 / 128 (no fused kernels; not a multiple of 32 for the per-token-head dtypes' 24 and
  // nvfp4's 80 or int4_g16's 48, so the scalar decode), prefill and decode in one batch.
  const AWKWARD_QUANT_HEAD: Record<KvQuantDtype, number> = {
    fp8_per_token_head: 24,
    int8_per_token_head: 40,
    int4_per_token_head: 24,
    int4_g16: 48,
    int4_g32: 96,
    int4_g64: 192,
    nvfp4: 80,
    q4_0: 96,
    int4_g32_f16: 160,
  };
  KV_QUANT_DTYPE_LIST.forEach((dtype, di) => {
    const c = attentionCase(
      {
        dtype,
        scales: 'tensor',
        headSize: AWKWARD_QUANT_HEAD[dtype],
        gqa: cycle([1, 2, 4], di),
        numKvHeads: 2,
        blockSize: cycle([1, 16], di),
        seqs: scenarioSeqs('mixed', di),
        scenario: 'mixed',
        kvSpecials: true,
      },
      seed + 1350 + di,
    );
    cases.push({ ...c, kvDtype: dtype });
  });
  // Zero, NaN and ±Inf heads in the cache (NaN groups decode to NaN): decode (the fused kernels) at head size 128
  // with GQA 4, and prefill (the L1-tile path) at 64 with GQA 2, blocks of 16 (sequences span several).
  KV_QUANT_DTYPE_LIST.forEach((dtype, di) => {
    (['decode', 'prefill'] as const).forEach((scenario, k) => {
      const c = attentionCase(
        {
          dtype,
          scales: 'tensor',
          headSize: k === 0 ? 128 : 64,
          gqa: k === 0 ? 4 : 2,
          numKvHeads: 2,
          blockSize: 16,
          seqs: scenario === 'decode' ? scenarioSeqs('decode', di).slice(2) : [{ queryLen: 33, seqLen: 40 }],
          scenario,
          kvSpecials: true,
        },
        seed + 1300 + di * 2 + k,
      );
      cases.push({ ...c, kvDtype: dtype });
    });
  });
  return cases;
}

/** The case fields of a mixed cache of K dtype `k` and V dtype `v` (see {@link ParityCase.mixedKv}). */
function mixedFields(k: KvDtype, v: KvDtype): Pick<ParityCase, 'kvDtype' | 'kvValueDtype' | 'mixedKv'> {
  const quant = (d: KvDtype): KvQuantDtype | undefined => ((KV_QUANT_DTYPE_LIST as readonly KvDtype[]).includes(d) ? (d as KvQuantDtype) : undefined);
  const kq = quant(k);
  const vq = quant(v);
  return { mixedKv: true, ...(kq ?? vq ? { kvDtype: kq ?? vq } : {}), ...(kq && vq ? { kvValueDtype: vq } : {}) };
}

/**
 * Caches whose V pool has another dtype than the K pool (`cache.valueDtype`: each pool written and read as a uniform
 * cache of its dtype would be): `reshapeAndCache` byte-exact on dense + write-time-scaled, two write-time-scaled
 * layouts, nvfp4 either side and two FP8 formats with per-head scales; `pagedAttention` on the same kinds of pairs,
 * decode / prefill / chunked, a sliding window, specials in the cache, the lse output.
 */
function mixedKvCases(seed: number): ParityCase[] {
  const cases: ParityCase[] = [];
  const writes: readonly (readonly [KvDtype, KvDtype, 'tensor' | 'head', number])[] = [
    ['int8_per_token_head', 'int4_g32_f16', 'tensor', 64],
    ['bf16', 'nvfp4', 'tensor', 64],
    ['nvfp4', 'f16', 'tensor', 128],
    ['e4m3fn', 'e5m2', 'head', 16],
    ['f32', 'e4m3fnuz', 'tensor', 8],
  ];
  writes.forEach(([k, v, scales, headSize], i) => {
    const numTokens = cycle([7, 17, 33], i);
    const numKvHeads = cycle([1, 2, 4], i);
    const blockSize = cycle(BLOCK_SIZES, i);
    const s = seed + 1400 + i;
    cases.push({
      op: 'reshapeAndCache',
      ...mixedFields(k, v),
      label: `reshapeAndCache ${k}/V=${v}/${scales} tokens=${numTokens} kvh=${numKvHeads} hs=${headSize} bs=${blockSize} specials`,
      tolerance: EXACT,
      run(b) {
        const r = rng(s);
        const numBlocks = Math.ceil((numTokens * 1.3) / blockSize) + 1;
        const cache = makeKvCache({ dtype: k, valueDtype: v, numBlocks, blockSize, numKvHeads, headSize, scales, amax: 3 });
        // Pre-existing content must survive where no token is written.
        for (const pool of [cache.key, cache.value]) {
          const mask = pool instanceof Float32Array ? 0 : pool instanceof Uint16Array ? 0x3fff : 0x7f;
          for (let e = 0; e < pool.length; e++) pool[e] = mask === 0 ? e % 13 : (e * 37) & mask;
        }
        const n = numTokens * numKvHeads * headSize;
        const key = randomF32(n, r, 1.5);
        const value = randomF32(n, r, 1.5);
        key.set([NaN, Infinity, -Infinity, -0, 1e-30, 1e30]);
        value.set([1e30, -1e30, 3e-39, 0, -1e-30, Infinity]);
        const order = permutation(numBlocks * blockSize, r);
        const slotMapping = new Int32Array(numTokens);
        for (let t = 0; t < numTokens; t++) slotMapping[t] = r() < 0.1 ? -1 : order[t]!;
        b.reshapeAndCache({ key, value, slotMapping, numTokens, cache });
        return { key: cache.key, value: cache.value };
      },
    });
  });
  const attns: readonly (Omit<AttnCfg, 'seqs' | 'scenario'> & { valueDtype: KvDtype; scenario: Scenario })[] = [
    { dtype: 'int8_per_token_head', valueDtype: 'int4_g32_f16', scales: 'tensor', headSize: 128, gqa: 4, numKvHeads: 2, blockSize: 16, scenario: 'decode' },
    { dtype: 'int8_per_token_head', valueDtype: 'int4_g32_f16', scales: 'tensor', headSize: 64, gqa: 2, numKvHeads: 1, blockSize: 1, scenario: 'mixed', kvSpecials: true },
    { dtype: 'bf16', valueDtype: 'nvfp4', scales: 'tensor', headSize: 64, gqa: 1, numKvHeads: 2, blockSize: 32, scenario: 'chunked', slidingWindow: 5 },
    { dtype: 'nvfp4', valueDtype: 'e4m3fn', scales: 'tensor', headSize: 80, gqa: 2, numKvHeads: 2, blockSize: 16, scenario: 'mixed', lse: true },
    { dtype: 'e4m3fn', valueDtype: 'e5m2', scales: 'head', headSize: 16, gqa: 8, numKvHeads: 2, blockSize: 16, scenario: 'prefill' },
    { dtype: 'f16', valueDtype: 'int4_g16', scales: 'tensor', headSize: 48, gqa: 4, numKvHeads: 1, blockSize: 16, scenario: 'mixed' },
  ];
  attns.forEach((cfg, i) => {
    const c = attentionCase({ ...cfg, seqs: scenarioSeqs(cfg.scenario, i) }, seed + 1450 + i);
    cases.push({ ...c, ...mixedFields(cfg.dtype, cfg.valueDtype) });
  });
  return cases;
}

/**
 * Every parity case (or those of `options.ops`). Quick size: a few hundred cases that run on the reference
 * backend in a few seconds; full size adds bigger shapes.
 */
export function parityCases(options: ParityCaseOptions = {}): ParityCase[] {
  const full = options.size === 'full';
  const seed = options.seed ?? 1;
  const all = [
    ...linearCases(full, seed),
    ...quantizedLinearCases(full, seed),
    ...q8ActivationLinearCases(seed),
    ...int8ActivationLinearCases(seed),
    ...q16ActivationLinearCases(seed),
    ...rmsNormCases(seed),
    ...addCases(seed),
    ...gatedCases('siluAndMul', seed + 300),
    ...gatedCases('geluTanhAndMul', seed + 350),
    ...embeddingCases(seed),
    ...quantizedEmbeddingCases(seed),
    ...ropeCases(seed),
    ...softmaxCases(seed),
    ...argmaxCases(seed),
    ...reshapeCases(full, seed),
    ...quantReshapeCases(full, seed),
    ...attentionCases(full, seed),
    ...quantAttentionCases(full, seed),
    ...lseAttentionCases(seed),
    ...mixedKvCases(seed),
    ...amaxCases(seed),
    ...quantCases(seed),
  ];
  return options.ops ? all.filter((c) => options.ops!.includes(c.op)) : all;
}
