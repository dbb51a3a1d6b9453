// Test support only (not exported from the package, not the engine's forward pass): a plain, slow, independent
// float forward pass of a Llama-family decoder over the loader's weights. It uses HF rotate-half RoPE on the
// loaded (un-permuted) Q/K rows, so matching the references (computed by independent implementations on the
// original interleaved llama2.c weights) proves the loaders' Q/K layout handling.
import { ropeInverseFrequencies, type ModelConfig } from '../config/model-config.js';
import { tensorToFloat32, type Tensor } from '../tensor.js';
import type { ModelWeights } from '../weights/model-weights.js';

interface F32Layer {
  inputNorm: Float32Array;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  o: Float32Array;
  qBias?: Float32Array | undefined;
  kBias?: Float32Array | undefined;
  vBias?: Float32Array | undefined;
  oBias?: Float32Array | undefined;
  postNorm: Float32Array;
  gate: Float32Array;
  up: Float32Array;
  down: Float32Array;
}

const f32 = (t: Tensor): Float32Array => tensorToFloat32(t);
const opt = (t: Tensor | undefined): Float32Array | undefined => (t ? f32(t) : undefined);

function matvec(w: Float32Array, x: Float64Array, rows: number, cols: number, bias?: Float32Array): Float64Array {
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    const base = r * cols;
    for (let c = 0; c < cols; c++) s += w[base + c]! * x[c]!;
    out[r] = bias ? s + bias[r]! : s;
  }
  return out;
}

function rmsNorm(x: Float64Array, w: Float32Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const scale = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * scale * w[i]!);
}

/** Incremental decoder with a KV cache: feed tokens one by one, get next-token logits. */
export class ReferenceLlama {
  private readonly layers: F32Layer[];
  private readonly embed: Float32Array;
  private readonly finalNorm: Float32Array;
  private readonly lmHead: Float32Array;
  private readonly invFreq: Float64Array;
  private keys: Float64Array[][] = [];
  private values: Float64Array[][] = [];
  private pos = 0;

  constructor(
    readonly config: ModelConfig,
    weights: ModelWeights,
  ) {
    this.embed = f32(weights.embedTokens);
    this.finalNorm = f32(weights.finalNorm);
    this.lmHead = weights.lmHead === weights.embedTokens ? this.embed : f32(weights.lmHead);
    this.layers = weights.layers.map((l) => ({
      inputNorm: f32(l.inputNorm),
      q: f32(l.q),
      k: f32(l.k),
      v: f32(l.v),
      o: f32(l.o),
      qBias: opt(l.qBias),
      kBias: opt(l.kBias),
      vBias: opt(l.vBias),
      oBias: opt(l.oBias),
      postNorm: f32(l.postAttentionNorm),
      gate: f32(l.gate),
      up: f32(l.up),
      down: f32(l.down),
    }));
    this.invFreq = ropeInverseFrequencies(config);
    this.reset();
  }

  reset(): void {
    this.keys = this.layers.map(() => []);
    this.values = this.layers.map(() => []);
    this.pos = 0;
  }

  private rope(x: Float64Array, heads: number): void {
    const hd = this.config.headDim;
    const half = hd / 2;
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < half; i++) {
        const angle = this.pos * this.invFreq[i]!;
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        const a = x[h * hd + i]!;
        const b = x[h * hd + i + half]!;
        x[h * hd + i] = a * c - b * s;
        x[h * hd + i + half] = b * c + a * s;
      }
    }
  }

  /** Process one token at the next position; returns the logits for the following token. */
  step(token: number): Float64Array {
    const cfg = this.config;
    const { hiddenSize: d, numHeads: H, numKvHeads: KV, headDim: hd, intermediateSize: ff } = cfg;
    let x = Float64Array.from(this.embed.subarray(token * d, (token + 1) * d));
    const group = H / KV;
    this.layers.forEach((L, li) => {
      const xn = rmsNorm(x, L.inputNorm, cfg.rmsNormEps);
      const q = matvec(L.q, xn, H * hd, d, L.qBias);
      const k = matvec(L.k, xn, KV * hd, d, L.kBias);
      const v = matvec(L.v, xn, KV * hd, d, L.vBias);
      this.rope(q, H);
      this.rope(k, KV);
      this.keys[li]!.push(k);
      this.values[li]!.push(v);
      const att = new Float64Array(H * hd);
      const T = this.pos + 1;
      for (let h = 0; h < H; h++) {
        const kvh = Math.floor(h / group);
        const scores = new Float64Array(T);
        let max = -Infinity;
        for (let t = 0; t < T; t++) {
          const kt = this.keys[li]![t]!;
          let s = 0;
          for (let i = 0; i < hd; i++) s += q[h * hd + i]! * kt[kvh * hd + i]!;
          scores[t] = s / Math.sqrt(hd);
          max = Math.max(max, scores[t]!);
        }
        let sum = 0;
        for (let t = 0; t < T; t++) {
          scores[t] = Math.exp(scores[t]! - max);
          sum += scores[t]!;
        }
        for (let t = 0; t < T; t++) {
          const p = scores[t]! / sum;
          const vt = this.values[li]![t]!;
          for (let i = 0; i < hd; i++) att[h * hd + i]! += p * vt[kvh * hd + i]!;
        }
      }
      const o = matvec(L.o, att, d, H * hd, L.oBias);
      x = x.map((xv, i) => xv + o[i]!);
      const xn2 = rmsNorm(x, L.postNorm, cfg.rmsNormEps);
      const g = matvec(L.gate, xn2, ff, d);
      const u = matvec(L.up, xn2, ff, d);
      const hmid = g.map((gv, i) => (gv / (1 + Math.exp(-gv))) * u[i]!);
      const down = matvec(L.down, hmid, d, ff);
      x = x.map((xv, i) => xv + down[i]!);
    });
    this.pos++;
    return matvec(this.lmHead, rmsNorm(x, this.finalNorm, cfg.rmsNormEps), cfg.vocabSize, d);
  }

  /** Greedy continuation of `prompt` by `count` tokens (argmax, first index on ties). */
  greedy(prompt: readonly number[], count: number): number[] {
    this.reset();
    let logits: Float64Array = new Float64Array(0);
    for (const t of prompt) logits = this.step(t);
    const out: number[] = [];
    for (let n = 0; n < count; n++) {
      let best = 0;
      for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
      out.push(best);
      if (n + 1 < count) logits = this.step(best);
    }
    return out;
  }

  /** Sum of -log p(token[t+1] | tokens[..t]) over the sequence. */
  nllSum(tokens: readonly number[]): number {
    this.reset();
    let total = 0;
    for (let t = 0; t + 1 < tokens.length; t++) {
      const logits = this.step(tokens[t]!);
      let max = -Infinity;
      for (const v of logits) max = Math.max(max, v);
      let sum = 0;
      for (const v of logits) sum += Math.exp(v - max);
      total += -(logits[tokens[t + 1]!]! - max - Math.log(sum));
    }
    return total;
  }
}
