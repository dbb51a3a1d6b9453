import { SAMPLE_BUCKETS, sampleBucketIdsReference, sampleBucketsReference, sampleDrawReference, type SampleBucketsResult, type SampleDrawArgs } from '@kvq/kernels';
import type { ResolvedSamplingParams } from './params.js';
import type { SeededRng } from './rng.js';

/** A token's log-probability under a distribution (vLLM `Logprob`). */
export interface TokenLogprob {
  readonly tokenId: number;
  /** Natural log of the probability under the raw model distribution. */
  readonly logprob: number;
  /** 1-based rank in that distribution (1 = most likely; ties share the better rank, as vLLM counts `>`). */
  readonly rank: number;
  /** The token's text on its own (vLLM `decoded_token`), filled by the engine when it has a detokenizer. */
  readonly decodedToken?: string;
}

/** One generated (or prompt) token with its log-probability and the top alternatives (natural log, raw model distribution). */
export interface TokenLogprobs extends TokenLogprob {
  /** The `logprobs` most likely tokens, most likely first. */
  readonly top: readonly TokenLogprob[];
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
  // torch.argmax's (and the kernel contract's) semantics: the first maximum; a NaN counts as larger than any number.
  if (x.length === 0 || Number.isNaN(x[0])) return 0;
  let best = 0;
  for (let i = 1; i < x.length; i++) {
    const v = x[i]!;
    if (Number.isNaN(v)) return i;
    if (v > x[best]!) best = i;
  }
  return best;
}

/**
 * The logits processors vLLM applies before penalties (V1 `Sampler.apply_logits_processors`), in place:
 * `allowedTokenIds` (every other token to -inf), bad words (the last token of a bad word's ids is set to -inf when
 * the output ends with the ids before it), `logitBias` (added to the logit), and `min_tokens` (while fewer than
 * `minTokens` tokens were generated, the stop token ids and, unless `ignoreEos`, the EOS ids are set to -inf so
 * they cannot be sampled).
 * @param outputTokenIds tokens generated so far.
 * @param eosTokenIds the model's end-of-sequence ids.
 * @param badWordsTokenIds token-id sequences of the bad words (see `badWordsTokenIds`).
 */
export function applyLogitsProcessors(
  logits: Float32Array,
  params: ResolvedSamplingParams,
  outputTokenIds: ArrayLike<number>,
  eosTokenIds: readonly number[] = [],
  badWordsTokenIds: readonly (readonly number[])[] = [],
): void {
  const outputLength = outputTokenIds.length;
  if (params.allowedTokenIds !== undefined) {
    const allowed = new Set(params.allowedTokenIds);
    for (let i = 0; i < logits.length; i++) if (!allowed.has(i)) logits[i] = -Infinity;
  }
  for (const ids of badWordsTokenIds) {
    const prefix = ids.length - 1;
    if (prefix > outputLength) continue;
    let match = true;
    for (let j = 0; j < prefix && match; j++) match = outputTokenIds[outputLength - prefix + j] === ids[j];
    const last = ids[prefix]!;
    if (match && last < logits.length) logits[last] = -Infinity;
  }
  for (const [t, bias] of params.logitBias) if (t < logits.length) logits[t] = logits[t]! + bias;
  if (outputLength < params.minTokens) {
    const stops = params.ignoreEos ? params.stopTokenIds : [...params.stopTokenIds, ...eosTokenIds];
    for (const t of stops) if (t >= 0 && t < logits.length) logits[t] = -Infinity;
  }
}

/**
 * Token-id sequences of vLLM's `bad_words` (SamplingParams.update_from_tokenizer): each word is encoded without
 * special tokens as written (leading whitespace stripped) and again with one leading space; the spaced variant is
 * kept only when it differs in its first token and has the same length.
 */
export function badWordsTokenIds(words: readonly string[], encode: (text: string) => number[]): number[][] {
  const out: number[][] = [];
  for (const word of words) {
    const plain = encode(word.trimStart());
    if (plain.length > 0) out.push(plain);
    const spaced = encode(` ${word.trimStart()}`);
    const prev = out[out.length - 1];
    if (spaced.length > 0 && (!prev || (spaced[0] !== prev[0] && spaced.length === prev.length))) out.push(spaced);
  }
  return out;
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
 * How a sampler draws a token from a logits row (`KernelBackend.sampleDraw`): the native CPU backend's, or the
 * reference (the same token for the same uniform draw). See `@kvq/kernels` `SampleDrawArgs`.
 */
export interface SamplePass {
  /** The token drawn by `args.u`, or -1 when the row has no candidate. */
  readonly draw: (args: SampleDrawArgs) => number;
}

/** The reference draw of `@kvq/kernels` (TypeScript). */
export const referenceSamplePass: SamplePass = { draw: sampleDrawReference };

/**
 * Scratch of the sampler, grown to the largest vocabulary seen and reused (a 128k vocabulary's fresh arrays each token
 * cost allocation, zeroing and GC time comparable to the pass itself). Safe to share: JavaScript runs one sampling
 * call at a time, and callers use the arrays only within their own call.
 */
const scratch = {
  weight: new Float64Array(0),
  members: new Int32Array(0),
  mass: new Float64Array(SAMPLE_BUCKETS),
};

/**
 * How far below the largest logit (in nats, after temperature) {@link sampleToken} stops looking: the tokens below
 * e^-(ln n + 28) of the most likely one hold less than e^-28 (7e-13) of the mass together, under the rounding of the
 * float64 sums over a vocabulary; skipping them spares one exp per token id of a trained model's long tail.
 */
const NEGLIGIBLE_NATS = 28;

/**
 * How far below the most likely token (in nats, after temperature) candidates can lie: `nats`, or less with min-p
 * (p_i < minP * p_max, the common 1/sum cancelled; the largest weight is e^0 = 1), whose weight floor is also a logit
 * floor 1e-3 nats below it (the float32 weights' rounding is far inside that margin), so tokens past it are not even
 * weighed. min-p runs before top-k in vLLM; both are thresholds on the same order, so applying top-k first keeps the
 * same set.
 */
function pruneNatsFor(params: ResolvedSamplingParams, nats: number): number {
  return params.minP > 0 ? Math.min(nats, -Math.log(params.minP) + 1e-3) : nats;
}

/** Top-k as the vocabulary pass takes it: 0 for none, else at most the vocabulary size. */
function topKFor(params: ResolvedSamplingParams, n: number): number {
  return params.topK > 0 ? Math.min(params.topK, n) : 0;
}

/**
 * The candidates (weight > 0) after temperature, min-p and top-k (`@kvq/kernels` `sampleBucketsReference`; the masses
 * in `scratch.mass`, valid until the next call).
 */
function candidates(logits: Float32Array, params: ResolvedSamplingParams): SampleBucketsResult {
  const n = logits.length;
  if (scratch.weight.length < n) {
    scratch.weight = new Float64Array(n);
    scratch.members = new Int32Array(n);
  }
  return sampleBucketsReference({
    logits,
    temperature: params.temperature,
    lower: -Infinity,
    topK: topKFor(params, n),
    pruneNats: pruneNatsFor(params, Infinity),
    minWeight: params.minP,
    mass: scratch.mass,
  });
}

/**
 * The distribution a token is drawn from at temperature > 0, after vLLM V1's filters in vLLM's order:
 * temperature, then min-p (drop tokens whose probability is below `minP` times the largest), then top-k (keep the
 * tokens whose logit is at least the k-th largest, so ties with the k-th are kept), then top-p over the
 * probabilities RENORMALIZED over what top-k and min-p kept (sorted ascending, a token is dropped when the
 * cumulative mass up to and including it is `<= 1 - topP`; the most likely token always stays). Weights are the
 * float32 values of `@kvq/kernels` `sampleWeight` (tokens 86 nats or more below the most likely one weigh nothing).
 * @returns token ids (most likely first) and their probabilities, normalized to sum 1 (float64).
 */
export function samplingDistribution(logits: Float32Array, params: ResolvedSamplingParams): { ids: number[]; probs: Float64Array } {
  const c = candidates(logits, params);
  const { weight, members } = scratch;
  const count = sampleBucketIdsReference({ logits, temperature: params.temperature, max: c.max, floor: c.floor, minWeight: params.minP, bucket: -1, ids: members, weight });
  const ids = Array.from(members.subarray(0, count)).sort((a, b) => weight[b]! - weight[a]! || a - b);
  let kept = ids;
  if (params.topP < 1 && ids.length > 1) {
    let cumulative = 0;
    let drop = 0; // tokens dropped from the least likely end of the sorted candidates
    for (let j = ids.length - 1; j > 0; j--) {
      cumulative += weight[ids[j]!]! / c.total;
      if (cumulative > 1 - params.topP) break;
      drop++;
    }
    kept = ids.slice(0, ids.length - drop);
  }
  let sum = 0;
  for (const i of kept) sum += weight[i]!;
  const probs = new Float64Array(kept.length);
  for (let j = 0; j < kept.length; j++) probs[j] = weight[kept[j]!]! / sum;
  return { ids: kept, probs };
}

/** What {@link drawArgs} holds between draws (the caller may reuse or free its row). */
const NO_ROW = new Float32Array(0);

/** The arguments of each draw (one object, updated per call: building one per token costs more than the native call). */
const drawArgs: { -readonly [K in keyof SampleDrawArgs]: SampleDrawArgs[K] } = { logits: NO_ROW, temperature: 1, topK: 0, topP: 1, minWeight: 0, pruneNats: 0, u: 0 };

/**
 * Picks the next token from processed (biased, penalized) logits: greedy (the first index of the maximum) at
 * temperature 0, otherwise one draw from {@link samplingDistribution} with the request's generator: the first token,
 * most likely first, at which the cumulative probability exceeds a uniform draw. The generator advances once per
 * draw, and not when there is nothing to draw from (every logit -inf or NaN: then the first index of the maximum).
 * NOTE: the same token as walking `samplingDistribution`'s sorted list (up to float rounding of the cumulative sums),
 * without sorting it: `pass.draw` (`@kvq/kernels` `sampleDrawReference`, or the backend's native `sampleDraw`) sums
 * the candidates' weights in buckets 1/16 nat wide, walks whole buckets by their masses for top-p's cut and the draw,
 * and lists only the bucket where each lands, its crossing token found by a quickselect descent instead of a sort.
 * Tokens more than ln n + 28 nats (after temperature) below the most likely one are left out without being weighed:
 * together they hold under e^-28 of the mass.
 */
export function sampleToken(logits: Float32Array, params: ResolvedSamplingParams, rng: SeededRng, pass: SamplePass = referenceSamplePass): number {
  if (params.temperature === 0) return argmax(logits);
  const a = drawArgs;
  a.logits = logits;
  a.temperature = params.temperature;
  // Top-k's floor (the k-th largest logit) is found inside the pass.
  a.topK = topKFor(params, logits.length);
  a.topP = params.topP;
  a.minWeight = params.minP;
  a.pruneNats = pruneNatsFor(params, Math.log(logits.length) + NEGLIGIBLE_NATS);
  a.u = rng.peek();
  const token = pass.draw(a);
  a.logits = NO_ROW;
  if (token < 0) return argmax(logits); // nothing to draw from
  rng.next();
  return token;
}

/** The chosen token's logprob and rank and the top `k` alternatives (with their ranks), from the raw logits. */
export function tokenLogprobs(rawLogits: ArrayLike<number>, tokenId: number, k: number): TokenLogprobs {
  const lp = logSoftmax(rawLogits);
  const rankOf = (t: number) => {
    let above = 0;
    for (let i = 0; i < lp.length; i++) if (lp[i]! > lp[t]!) above++;
    return above + 1;
  };
  const top: TokenLogprob[] = [];
  if (k > 0) {
    const order = Array.from({ length: lp.length }, (_, i) => i);
    order.sort((a, b) => lp[b]! - lp[a]! || a - b);
    for (let i = 0; i < Math.min(k, order.length); i++) top.push({ tokenId: order[i]!, logprob: lp[order[i]!]!, rank: rankOf(order[i]!) });
  }
  return { tokenId, logprob: lp[tokenId]!, rank: rankOf(tokenId), top };
}
