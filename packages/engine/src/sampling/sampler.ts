import type { ResolvedSamplingParams } from './params.js';
import type { SeededRng } from './rng.js';

/** One generated token with its log-probability and the top alternatives (natural log, raw model distribution). */
export interface TokenLogprobs {
  readonly tokenId: number;
  readonly logprob: number;
  /** The `logprobs` most likely tokens, most likely first. */
  readonly top: readonly { readonly tokenId: number; readonly logprob: number }[];
}

/** log-softmax of a logits row, in float64. */
export function logSoftmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i]! - lse;
  return out;
}

/** Index of the largest value (the first on ties, as torch.argmax). */
export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/**
 * Applies repetition, presence and frequency penalties in place (vLLM order: repetition on prompt + output,
 * then frequency and presence on output only).
 */
export function applyPenalties(
  logits: Float32Array,
  params: ResolvedSamplingParams,
  promptTokens: ArrayLike<number>,
  outputTokens: ArrayLike<number>,
): void {
  if (params.repetitionPenalty !== 1) {
    const seen = new Set<number>();
    for (let i = 0; i < promptTokens.length; i++) seen.add(promptTokens[i]!);
    for (let i = 0; i < outputTokens.length; i++) seen.add(outputTokens[i]!);
    for (const t of seen) {
      if (t < 0 || t >= logits.length) continue;
      const l = logits[t]!;
      logits[t] = l > 0 ? l / params.repetitionPenalty : l * params.repetitionPenalty;
    }
  }
  if (params.frequencyPenalty !== 0 || params.presencePenalty !== 0) {
    const counts = new Map<number, number>();
    for (let i = 0; i < outputTokens.length; i++) counts.set(outputTokens[i]!, (counts.get(outputTokens[i]!) ?? 0) + 1);
    for (const [t, c] of counts) {
      if (t < 0 || t >= logits.length) continue;
      logits[t] = logits[t]! - params.frequencyPenalty * c - params.presencePenalty;
    }
  }
}

/**
 * Picks the next token from (penalized) logits: greedy at temperature 0, otherwise temperature, top-k, top-p and
 * min-p filtering, then one draw from the request's generator.
 */
export function sampleToken(logits: Float32Array, params: ResolvedSamplingParams, rng: SeededRng): number {
  if (params.temperature === 0) return argmax(logits);
  const n = logits.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i]! > max) max = logits[i]!;
  // Candidates sorted by probability (descending); probabilities from the tempered softmax.
  const probs = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const p = Math.exp((logits[i]! - max) / params.temperature);
    probs[i] = p;
    sum += p;
  }
  let order = Array.from({ length: n }, (_, i) => i).filter((i) => probs[i]! > 0);
  order.sort((a, b) => probs[b]! - probs[a]! || a - b);
  if (params.topK > 0 && order.length > params.topK) order = order.slice(0, params.topK);
  if (params.topP < 1) {
    let mass = 0;
    let keep = 0;
    while (keep < order.length) {
      mass += probs[order[keep]!]! / sum;
      keep++;
      if (mass >= params.topP) break;
    }
    order = order.slice(0, Math.max(keep, 1));
  }
  if (params.minP > 0 && order.length > 0) {
    const threshold = params.minP * probs[order[0]!]!;
    order = order.filter((i) => probs[i]! >= threshold);
  }
  let total = 0;
  for (const i of order) total += probs[i]!;
  let r = rng.next() * total;
  for (const i of order) {
    r -= probs[i]!;
    if (r < 0) return i;
  }
  return order[order.length - 1]!;
}

/** The sampled token's logprob and the top `k` alternatives, from the raw logits. */
export function tokenLogprobs(rawLogits: ArrayLike<number>, tokenId: number, k: number): TokenLogprobs {
  const lp = logSoftmax(rawLogits);
  const top: { tokenId: number; logprob: number }[] = [];
  if (k > 0) {
    const order = Array.from({ length: lp.length }, (_, i) => i);
    order.sort((a, b) => lp[b]! - lp[a]! || a - b);
    for (let i = 0; i < Math.min(k, order.length); i++) top.push({ tokenId: order[i]!, logprob: lp[order[i]!]! });
  }
  return { tokenId, logprob: lp[tokenId]!, top };
}
