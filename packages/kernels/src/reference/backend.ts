/**
 * The pure-TypeScript reference backend: simple loops, float64 accumulation, no tricks. It is the oracle of every
 * parity test and the fallback where no native backend loads (browsers, unsupported platforms).
 * @module
 */
import type { Fp8Format, ScaleLayout } from '@kvq/fp8';
import {
  dequantizeScaled,
  f16ToF32Table,
  f32ToBf16Bits,
  f32ToF16Bits,
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
  KvLayerCache,
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
  isFp8,
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
import { roundTripActivationsInt8, roundTripActivationsQ8 } from '../quant/activations.js';
import { elementReader, scaleOf } from './elements.js';
import { pagedAttentionPerHead, poolHeadReader, poolTokenWriter, reshapeAndCachePerHead, storeToken } from './kv-pools.js';
import { sampleBucketIdsReference, sampleBucketsReference } from '../sample-buckets.js';


/**
 * `linear` for every weight dtype: each weight row is dequantized to float32 once (`dequantizeRow`, the executable
 * definition of every stored format), then dotted with every input row in float64 and rounded once on store.
 */
function linear(raw: LinearArgs<Activation>): void {
  const args = hostArgs('linear', raw);
  const { rows, inFeatures, outFeatures } = validateLinear(args);
  const { out, bias, weight } = args;
  const x =
    args.activations !== 'q8'
      ? args.x
      : weight.dtype === 'int8'
        ? roundTripActivationsInt8(args.x, rows, inFeatures, args.activationScale)
        : roundTripActivationsQ8(args.x, rows, inFeatures, weight.dtype as GgmlWeightDtype);
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
  const { numTokens, numKvHeads, headSize, quant, mixed } = validateReshapeAndCache(args);
  if (quant || mixed) {
    reshapeAndCachePerHead(args, numTokens, poolTokenWriter(args.cache, 'key'), poolTokenWriter(args.cache, 'value'));
    return;
  }
  const { key, value, slotMapping, cache } = args;
  const tokenSize = numKvHeads * headSize;
  for (let t = 0; t < numTokens; t++) {
    const slot = slotMapping[t]!;
    if (slot < 0) continue;
    const src = t * tokenSize;
    const dst = slot * tokenSize;
    storeToken(cache, cache.dtype, key.subarray(src, src + tokenSize), cache.key.subarray(dst, dst + tokenSize), cache.kScale);
    storeToken(cache, cache.dtype, value.subarray(src, src + tokenSize), cache.value.subarray(dst, dst + tokenSize), cache.vScale);
  }
}

function pagedAttention(raw: PagedAttentionArgs<Activation>): void {
  const args = hostArgs('pagedAttention', raw);
  const plan = validatePagedAttention(args);
  if (plan.quant || plan.mixed) {
    pagedAttentionPerHead(args, plan, poolHeadReader(args.cache, 'key'), poolHeadReader(args.cache, 'value'));
    return;
  }
  const { numSeqs, numHeads, numKvHeads, headSize, blockSize, groupSize, softmaxScale, slidingWindow, fp8Query } = plan;
  const { query, out, cache, queryStartLoc, seqLens, blockTables, maxBlocksPerSeq } = args;
  const readK = elementReader(cache.dtype, cache.key);
  const readV = elementReader(cache.dtype, cache.value);
  const scaled = isFp8(cache.dtype);
  const format = scaled ? (cache.dtype as Fp8Format) : undefined;
  const qScaleG = fp8Query ? qScalePerKvHead(cache.qScale, numHeads, numKvHeads) : undefined;
  const saturation = args.fp8Query?.saturation ?? 'satfinite';
  const decodeTable = format ? fp8DecodeTable(format) : undefined;
  const tokenSize = numKvHeads * headSize;
  const q = new Float64Array(headSize);
  const qCodes = new Uint8Array(headSize);

  for (let s = 0; s < numSeqs; s++) {
    const qStart = queryStartLoc[s]!;
    const qLen = queryStartLoc[s + 1]! - qStart;
    const seqLen = seqLens[s]!;
    const slotOf = (pos: number): number =>
      blockTables[s * maxBlocksPerSeq + Math.floor(pos / blockSize)]! * blockSize + (pos % blockSize);
    for (let i = 0; i < qLen; i++) {
      const pos = seqLen - qLen + i;
      const first = slidingWindow > 0 ? Math.max(0, pos - slidingWindow + 1) : 0;
      const n = pos - first + 1;
      const scores = new Float64Array(n);
      for (let h = 0; h < numHeads; h++) {
        const kvh = Math.floor(h / groupSize);
        const qBase = ((qStart + i) * numHeads + h) * headSize;
        const ks = scaled ? scaleOf(cache.kScale, kvh) : 1;
        const vs = scaled ? scaleOf(cache.vScale, kvh) : 1;
        // Query operand: float32 as given, or (FP8-query mode) the decoded FP8 code of q / qScale.
        if (qScaleG) {
          const qHead = query.subarray(qBase, qBase + headSize);
          quantizeScaled(qHead, qScaleG.subarray(kvh, kvh + 1), PER_TENSOR, format!, { out: qCodes, saturation });
          for (let d = 0; d < headSize; d++) q[d] = decodeTable![qCodes[d]!]!;
        } else {
          for (let d = 0; d < headSize; d++) q[d] = query[qBase + d]!;
        }
        let m = -Infinity;
        for (let j = 0; j < n; j++) {
          const kBase = slotOf(first + j) * tokenSize + kvh * headSize;
          let dot = 0;
          if (qScaleG) {
            // FA3 semantics: raw FP8 values multiply, the descales apply to the score.
            for (let d = 0; d < headSize; d++) dot += q[d]! * readK(kBase + d);
            dot *= qScaleG[kvh]! * ks;
          } else {
            for (let d = 0; d < headSize; d++) {
              const k = scaled ? Math.fround(readK(kBase + d) * ks) : readK(kBase + d);
              dot += q[d]! * k;
            }
          }
          const score = dot * softmaxScale;
          scores[j] = score;
          if (score > m) m = score;
        }
        let sum = 0;
        for (let j = 0; j < n; j++) {
          const e = Math.exp(scores[j]! - m);
          scores[j] = e;
          sum += e;
        }
        const oBase = ((qStart + i) * numHeads + h) * headSize;
        for (let d = 0; d < headSize; d++) {
          let acc = 0;
          for (let j = 0; j < n; j++) {
            const idx = slotOf(first + j) * tokenSize + kvh * headSize + d;
            const v = scaled ? Math.fround(readV(idx) * vs) : readV(idx);
            acc += scores[j]! * v;
          }
          out[oBase + d] = acc / sum;
        }
        if (plan.lse) plan.lse[(qStart + i) * numHeads + h] = m + Math.log(sum);
      }
    }
  }
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
  };
}
