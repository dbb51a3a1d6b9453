/**
 * The pure-TypeScript reference backend: simple loops, float64 accumulation, no tricks. It is the oracle of every
 * parity test and the fallback where no native backend loads (browsers, unsupported platforms).
 * @module
 */
import type { Fp8Format } from '@kvq/fp8';
import {
  dequantizeScaled,
  fp8DecodeTable,
  PER_TENSOR,
  quantizeScaled,
} from '@kvq/fp8';
import type {
  AddArgs,
  AmaxPerHeadArgs,
  AmaxTensorArgs,
  ArgmaxArgs,
  BackendInfo,
  DequantizeFp8Args,
  EmbeddingArgs,
  GgmlWeightDtype,
  GeluTanhAndMulArgs,
  KernelBackend,
  LinearArgs,
  PagedAttentionArgs,
  QuantizeFp8Args,
  ReshapeAndCacheArgs,
  RmsNormArgs,
  RopeArgs,
  SiluAndMulArgs,
  SoftmaxArgs,
} from '../contract.js';
import { hostArgs, type Activation } from '../device.js';
import {
  qScalePerKvHead,
  validateAdd,
  validateAmaxPerHead,
  validateAmaxTensor,
  validateArgmax,
  validateDequantizeFp8,
  validateEmbedding,
  validateGeluTanhAndMul,
  validateLinear,
  validatePagedAttention,
  validateQuantizeFp8,
  validateReshapeAndCache,
  validateRmsNorm,
  validateRope,
  validateSiluAndMul,
  validateSoftmax,
} from '../validate.js';
import { dequantizeRowUnchecked as dequantizeRow } from '../quant/dequantize.js';
import { roundTripActivationsInt8, roundTripActivationsQ16, roundTripActivationsQ8 } from '../quant/activations.js';
import { elementReader, scaleOf } from './elements.js';
import { pagedAttentionPerHead, poolHeadReader, poolTokenWriter, reshapeAndCachePerHead } from './kv-pools.js';
import { sampleBucketIdsReference, sampleBucketsReference } from '../sample-buckets.js';
import { sampleDrawReference } from '../sample-draw.js';


/** The activations `linear` multiplies: x as given (`'f32'`), else its 8- or 16-bit round trip x'. */
function roundTrip(args: LinearArgs<Float32Array>, rows: number, cols: number): Float32Array {
  const { x, weight } = args;
  if (args.activations === 'q16') return roundTripActivationsQ16(x, rows, cols);
  if (args.activations !== 'q8') return x;
  if (weight.dtype === 'int8') return roundTripActivationsInt8(x, rows, cols, args.activationScale);
  return roundTripActivationsQ8(x, rows, cols, weight.dtype as GgmlWeightDtype);
}

/**
 * `linear` for every weight dtype: each weight row is dequantized to float32 once (`dequantizeRow`, the executable
 * definition of every stored format), then dotted with every input row in float64 and rounded once on store.
 */
function linear(raw: LinearArgs<Activation>): void {
  const args = hostArgs('linear', raw);
  const { rows, inFeatures, outFeatures } = validateLinear(args);
  const { out, bias, weight } = args;
  const x = roundTrip(args, rows, inFeatures);
  const row = new Float32Array(inFeatures);
  for (let o = 0; o < outFeatures; o++) {
    dequantizeRow(weight, o, row);
    for (let r = 0; r < rows; r++) {
      let acc = 0;
      for (let i = 0; i < inFeatures; i++) acc += x[r * inFeatures + i]! * row[i]!;
      if (bias) acc += bias[o]!;
      out[r * outFeatures + o] = acc;
    }
  }
}

function rmsNorm(raw: RmsNormArgs<Activation>): void {
  const args = hostArgs('rmsNorm', raw);
  const { rows, hidden } = validateRmsNorm(args);
  const { x, weight, out, eps } = args;
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < hidden; i++) ss += x[r * hidden + i]! ** 2;
    const inv = 1 / Math.sqrt(ss / hidden + eps);
    for (let i = 0; i < hidden; i++) out[r * hidden + i] = x[r * hidden + i]! * inv * weight[i]!;
  }
}

function add(raw: AddArgs<Activation>): void {
  const args = hostArgs('add', raw);
  const { length } = validateAdd(args);
  const { a, b, out } = args;
  for (let i = 0; i < length; i++) out[i] = a[i]! + b[i]!;
}

function siluAndMul(raw: SiluAndMulArgs<Activation>): void {
  const args = hostArgs('siluAndMul', raw);
  const { length } = validateSiluAndMul(args);
  const { gate, up, out } = args;
  for (let i = 0; i < length; i++) {
    const g = gate[i]!;
    out[i] = (g / (1 + Math.exp(-g))) * up[i]!;
  }
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/** `gelu_tanh(g) * u`, using `0.5 (1 + tanh(t)) = 1 / (1 + exp(-2t))` (the same value; no cancellation near 0). */
function geluTanhAndMul(raw: GeluTanhAndMulArgs<Activation>): void {
  const args = hostArgs('geluTanhAndMul', raw);
  const { length } = validateGeluTanhAndMul(args);
  const { gate, up, out } = args;
  for (let i = 0; i < length; i++) {
    const g = gate[i]!;
    const t = SQRT_2_OVER_PI * (g + 0.044715 * g * g * g);
    out[i] = (g * up[i]!) / (1 + Math.exp(-2 * t));
  }
}

/** `embedding` for every table dtype: the looked-up rows are dequantized (`dequantizeRow`) straight into `out`. */
function embedding(raw: EmbeddingArgs<Activation>): void {
  const args = hostArgs('embedding', raw);
  const { numTokens, hidden } = validateEmbedding(args);
  const { table, ids, out } = args;
  for (let t = 0; t < numTokens; t++) dequantizeRow(table, ids[t]!, out, t * hidden);
}

function rope(raw: RopeArgs<Activation>): void {
  const args = hostArgs('rope', raw);
  const { numTokens, numHeads, numKvHeads, headSize, rotaryDim } = validateRope(args);
  const { query, key, positions, table, style } = args;
  const half = rotaryDim / 2;
  const rotate = (buf: Float32Array, base: number, p: number): void => {
    for (let i = 0; i < half; i++) {
      const c = table.cos[p * half + i]!;
      const s = table.sin[p * half + i]!;
      const ia = style === 'rotate_half' ? base + i : base + 2 * i;
      const ib = style === 'rotate_half' ? base + i + half : base + 2 * i + 1;
      const a = buf[ia]!;
      const b = buf[ib]!;
      buf[ia] = a * c - b * s;
      buf[ib] = b * c + a * s;
    }
  };
  for (let t = 0; t < numTokens; t++) {
    const p = positions[t]!;
    for (let h = 0; h < numHeads; h++) rotate(query, (t * numHeads + h) * headSize, p);
    for (let h = 0; h < numKvHeads; h++) rotate(key, (t * numKvHeads + h) * headSize, p);
  }
}

function softmax(raw: SoftmaxArgs<Activation>): void {
  const args = hostArgs('softmax', raw);
  const { rows, cols } = validateSoftmax(args);
  const { x, out } = args;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    let m = -Infinity;
    let nan = false;
    for (let j = 0; j < cols; j++) {
      const v = x[base + j]!;
      if (Number.isNaN(v)) nan = true;
      else if (v > m) m = v;
    }
    if (nan || m === -Infinity) {
      for (let j = 0; j < cols; j++) out[base + j] = NaN;
      continue;
    }
    let sum = 0;
    for (let j = 0; j < cols; j++) sum += Math.exp(x[base + j]! - m);
    // Each element is read before it is written, so `out` may alias `x`.
    for (let j = 0; j < cols; j++) out[base + j] = Math.exp(x[base + j]! - m) / sum;
  }
}

function argmax(raw: ArgmaxArgs<Activation>): void {
  const args = hostArgs('argmax', raw);
  const { rows, cols } = validateArgmax(args);
  const { x, out } = args;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    let best = 0;
    let m = x[base]!;
    if (!Number.isNaN(m)) {
      for (let j = 1; j < cols; j++) {
        const v = x[base + j]!;
        if (Number.isNaN(v)) {
          best = j;
          break;
        }
        if (v > m) {
          m = v;
          best = j;
        }
      }
    }
    out[r] = best;
  }
}

function reshapeAndCache(raw: ReshapeAndCacheArgs<Activation>): void {
  const args = hostArgs('reshapeAndCache', raw);
  const { numTokens } = validateReshapeAndCache(args);
  reshapeAndCachePerHead(args, numTokens, poolTokenWriter(args.cache, 'key'), poolTokenWriter(args.cache, 'value'));
}

function pagedAttention(raw: PagedAttentionArgs<Activation>): void {
  const args = hostArgs('pagedAttention', raw);
  const plan = validatePagedAttention(args);
  const { cache } = args;
  if (!plan.fp8Query) {
    pagedAttentionPerHead(args, plan, poolHeadReader(cache, 'key'), poolHeadReader(cache, 'value'));
    return;
  }
  // FP8-query mode (FA3 semantics; validation guarantees one FP8 dtype for K and V): raw FP8 values of q / qScale and
  // of K multiply, the descales apply to the score; V is dequantized as usual.
  const { numHeads, numKvHeads, headSize } = plan;
  const format = cache.dtype as Fp8Format;
  const readRaw = elementReader(format, cache.key);
  const rawK = (slot: number, kvh: number, out: Float32Array): void => {
    const base = (slot * numKvHeads + kvh) * headSize;
    for (let d = 0; d < headSize; d++) out[d] = readRaw(base + d);
  };
  const qScaleG = qScalePerKvHead(cache.qScale, numHeads, numKvHeads);
  const saturation = args.fp8Query?.saturation ?? 'satfinite';
  const decodeTable = fp8DecodeTable(format);
  const qCodes = new Uint8Array(headSize);
  const queryOperand = {
    load(qBase: number, kvh: number, q: Float64Array): void {
      quantizeScaled(args.query.subarray(qBase, qBase + headSize), qScaleG.subarray(kvh, kvh + 1), PER_TENSOR, format, { out: qCodes, saturation });
      for (let d = 0; d < headSize; d++) q[d] = decodeTable[qCodes[d]!]!;
    },
    descale: (kvh: number): number => qScaleG[kvh]! * scaleOf(cache.kScale, kvh),
  };
  pagedAttentionPerHead(args, plan, rawK, poolHeadReader(cache, 'value'), queryOperand);
}

function amaxTensor(raw: AmaxTensorArgs): number {
  const args = hostArgs('amaxTensor', raw);
  const { length } = validateAmaxTensor(args);
  let m = 0;
  for (let i = 0; i < length; i++) {
    const a = Math.abs(args.x[i]!);
    if (Number.isNaN(a)) return NaN;
    if (a > m) m = a;
  }
  return m;
}

function amaxPerHead(raw: AmaxPerHeadArgs): void {
  const args = hostArgs('amaxPerHead', raw);
  const { numTokens, numHeads, headSize } = validateAmaxPerHead(args);
  const { x, out } = args;
  for (let h = 0; h < numHeads; h++) {
    let m = 0;
    for (let t = 0; t < numTokens; t++) {
      for (let d = 0; d < headSize; d++) {
        const a = Math.abs(x[(t * numHeads + h) * headSize + d]!);
        if (Number.isNaN(a) || Number.isNaN(m)) m = NaN;
        else if (a > m) m = a;
      }
    }
    // Math.max propagates NaN, so a NaN already in `out` also stays NaN.
    out[h] = args.accumulate ? Math.max(out[h]!, m) : m;
  }
}

function quantizeFp8(raw: QuantizeFp8Args): void {
  const args = hostArgs('quantizeFp8', raw);
  const { length } = validateQuantizeFp8(args);
  const opts = args.saturation === undefined ? { out: args.out } : { out: args.out, saturation: args.saturation };
  quantizeScaled(args.src.subarray(0, length), args.scales, args.layout, args.format, opts);
}

function dequantizeFp8(raw: DequantizeFp8Args): void {
  const args = hostArgs('dequantizeFp8', raw);
  const { length } = validateDequantizeFp8(args);
  dequantizeScaled(args.src.subarray(0, length), args.scales, args.layout, args.format, { out: args.out });
}

/** What {@link createReferenceBackend} reports as `info`. */
export const REFERENCE_INFO: BackendInfo = Object.freeze({
  description: 'pure TypeScript reference (float64 accumulation, single threaded)',
  simd: 'none',
  threads: 1,
});

/**
 * Create the reference backend. It holds no resources; every call validates with the shared `validate*`
 * helpers and computes with plain loops (float64 accumulation, results rounded once to float32 on store).
 */
export function createReferenceBackend(): KernelBackend {
  return {
    name: 'reference',
    info: REFERENCE_INFO,
    linear,
    rmsNorm,
    argmax,
    add,
    siluAndMul,
    geluTanhAndMul,
    embedding,
    rope,
    softmax,
    reshapeAndCache,
    pagedAttention,
    amaxTensor,
    amaxPerHead,
    quantizeFp8,
    dequantizeFp8,
    sampleBuckets: sampleBucketsReference,
    sampleBucketIds: sampleBucketIdsReference,
    sampleDraw: sampleDrawReference,
  };
}
