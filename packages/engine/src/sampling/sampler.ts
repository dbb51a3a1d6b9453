import { SAMPLE_BUCKETS, sampleBucketIdsReference, sampleBucketsReference, type SampleBucketIdsArgs, type SampleBucketsArgs, type SampleBucketsResult } from '@kvq/kernels';
import { firstCrossing } from './crossing.js';
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
 * The vocabulary passes a sampler runs per token (`KernelBackend.sampleBuckets` and `sampleBucketIds`): the native CPU
 * backend's, or the references (the same bits). See `@kvq/kernels` `SampleBucketsArgs`.
 */
export interface SamplePass {
  /** Bucket masses and the candidate count of one logits row. */
  readonly buckets: (args: SampleBucketsArgs) => SampleBucketsResult;
  /** The candidates of one bucket (or all, bucket -1) and their weights. */
  readonly bucketIds: (args: SampleBucketIdsArgs) => number;
}

/** The reference passes of `@kvq/kernels` (TypeScript). */
export const referenceSamplePass: SamplePass = { buckets: sampleBucketsReference, bucketIds: sampleBucketIdsReference };

/**
 * Scratch of the sampler, grown to the largest vocabulary seen and reused (a 128k vocabulary's fresh arrays each token
 * cost allocation, zeroing and GC time comparable to the pass itself). Safe to share: JavaScript runs one sampling
 * call at a time, and callers use the arrays only within their own call.
 */
const scratch = {
  weight: new Float64Array(0),
  members: new Int32Array(0),
  tail: new Int32Array(0),
  mass: new Float64Array(SAMPLE_BUCKETS),
};

/**
 * How far below the largest logit (in nats, after temperature) {@link sampleToken} stops looking: the tokens below
 * e^-(ln n + 28) of the most likely one hold less than e^-28 (7e-13) of the mass together, under the rounding of the
 * float64 sums over a vocabulary; skipping them spares one exp per token id of a trained model's long tail.
 */
const NEGLIGIBLE_NATS = 28;

/** The candidates after temperature, min-p and top-k: their bucket masses (scratch: valid until the next call). */
interface Candidates extends SampleBucketsResult {
  /** Each bucket's total weight. */
  readonly mass: Float64Array;
  /** The min-p weight floor the pass applied (0: none). */
  readonly minWeight: number;
}

/**
 * The candidates (weight > 0) after temperature, min-p and top-k, by the vocabulary pass `pass`. The filters need no
 * order, only thresholds, so the pass only sums weights by bucket and the sampler lists the one or two buckets that
 * matter later (a full sort of a 262k vocabulary took ~600 ms a token). Top-k is taken on the logits (exp is
 * monotonic), so only its survivors are exponentiated. Min-p (a weight below minP of the largest, 1) is the pass's
 * `minWeight`, and also a logit floor 1e-3 nats below it (the float32 weights' rounding is far inside that margin), so
 * tokens past it are not even exponentiated. `pruneNats`: tokens more than that many nats below the most likely one
 * (after temperature) are left out without being exponentiated (Infinity: none).
 */
function candidates(logits: Float32Array, params: ResolvedSamplingParams, pruneNats: number, pass: SamplePass): Candidates {
  const n = logits.length;
  if (scratch.weight.length < n) {
    scratch.weight = new Float64Array(n);
    scratch.members = new Int32Array(n);
    scratch.tail = new Int32Array(n);
  }
  const mass = scratch.mass;
  // Top-k's floor (the k-th largest logit) is found inside the pass (natively on the CPU backend).
  const topK = params.topK > 0 ? Math.min(params.topK, n) : 0;
  let nats = pruneNats;
  let minWeight = 0;
  // min-p (p_i < minP * p_max, the common 1/sum cancelled; the largest weight is e^0 = 1) runs before top-k in vLLM;
  // both are thresholds on the same order, so applying top-k first keeps the same set.
  if (params.minP > 0) {
    nats = Math.min(nats, -Math.log(params.minP) + 1e-3);
    minWeight = params.minP;
  }
  const r = pass.buckets({ logits, temperature: params.temperature, lower: -Infinity, topK, pruneNats: nats, minWeight, mass });
  return { count: r.count, total: r.total, max: r.max, floor: r.floor, mass, minWeight };
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
  const c = candidates(logits, params, Infinity, referenceSamplePass);
  const { weight, members } = scratch;
  const count = sampleBucketIdsReference({ logits, temperature: params.temperature, max: c.max, floor: c.floor, minWeight: c.minWeight, bucket: -1, ids: members, weight });
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

/**
 * Picks the next token from processed (biased, penalized) logits: greedy (the first index of the maximum) at
 * temperature 0, otherwise one draw from {@link samplingDistribution} with the request's generator: the first token,
 * most likely first, at which the cumulative probability exceeds a uniform draw.
 * NOTE: the same token as walking `samplingDistribution`'s sorted list (up to float rounding of the cumulative sums),
 * without sorting it: the pass sums the candidates' weights in buckets 1/16 nat wide, top-p's cut and the draw walk
 * whole buckets by their masses, and only the bucket where the cut or the draw lands is listed (`bucketIds`), its
 * crossing token found by a quickselect descent ({@link firstCrossing}) instead of a sort. With the OpenAI defaults
 * (temperature 1, top-p 1) a full sort of a 128k vocabulary used to cost more than the decode step itself.
 */
export function sampleToken(logits: Float32Array, params: ResolvedSamplingParams, rng: SeededRng, pass: SamplePass = referenceSamplePass): number {
  if (params.temperature === 0) return argmax(logits);
  const c = candidates(logits, params, Math.log(logits.length) + NEGLIGIBLE_NATS, pass);
  if (c.count === 0) return argmax(logits); // every logit -inf or NaN: nothing to draw from
  const { mass } = c;
  const { weight, members, tail } = scratch;
  // One arguments object, updated per listing (a spread per call cost more than the native listing itself).
  const list: { -readonly [K in keyof SampleBucketIdsArgs]: SampleBucketIdsArgs[K] } = { logits, temperature: params.temperature, max: c.max, floor: c.floor, minWeight: c.minWeight, bucket: 0, ids: members, weight };
  /** Lists bucket k's candidates into `into` (from 0; default `members`) and their weights into `weight`; returns how many. */
  const load = (k: number, into = members): number => {
    list.bucket = k;
    list.ids = into;
    return pass.bucketIds(list);
  };
  if (c.count <= SMALL_SET) return drawFromAll(c, params, rng, load(-1));
  // Top-p: whole buckets from the least likely end while their mass stays <= (1 - p) of the total; in the bucket where
  // it crosses, the tokens walked (least likely first) before the crossing go (the most likely token always stays).
  let lastBucket = SAMPLE_BUCKETS - 1; // the least likely bucket kept (possibly cut)
  while (lastBucket > 0 && mass[lastBucket] === 0) lastBucket--;
  let tailCount = -1; // tokens of the cut bucket kept, in `tail` (-1: the bucket is whole and not listed yet)
  if (params.topP < 1 && c.count > 1) {
    const limit = (1 - params.topP) * c.total;
    let cumulative = 0;
    for (let k = lastBucket; k >= 0; k--) {
      if (mass[k] === 0) continue;
      if (k > 0 && cumulative + mass[k]! <= limit * (1 - 1e-9)) {
        cumulative += mass[k]!;
        continue;
      }
      const m = load(k);
      const x = firstCrossing(members, 0, m, weight, limit - cumulative, 'asc');
      if (x.at < 0 && k > 0) {
        cumulative += x.before; // the whole bucket went; the cut continues above it
        continue;
      }
      // The crossing token and every token after it in the walk stay (none crossed in bucket 0: its most likely token).
      const from = x.at < 0 ? m - 1 : x.at;
      tail.set(members.subarray(from, m));
      tailCount = m - from;
      lastBucket = k;
      break;
    }
  }
  let keptTotal = 0;
  for (let k = 0; k < lastBucket; k++) keptTotal += mass[k]!;
  if (tailCount < 0) keptTotal += mass[lastBucket]!;
  else for (let j = 0; j < tailCount; j++) keptTotal += weight[tail[j]!]!;
  // The draw: whole buckets, most likely first; in the bucket it lands in, the first token whose cumulative weight
  // exceeds what is left of the draw.
  let t = rng.next() * keptTotal;
  for (let k = 0; k < lastBucket; k++) {
    if (mass[k] === 0 || t - mass[k]! >= 0) {
      t -= mass[k]!;
      continue;
    }
    const m = load(k);
    const x = firstCrossing(members, 0, m, weight, t, 'desc');
    if (x.at >= 0) return members[x.at]!;
    t -= x.before; // rounding: the bucket's mass and its walk differ in the last bits
  }
  if (tailCount < 0) tailCount = load(lastBucket, tail);
  const x = firstCrossing(tail, 0, tailCount, weight, t, 'desc');
  return tail[x.at < 0 ? tailCount - 1 : x.at]!;
}

/** At most this many candidates (top-k's usual case) are listed at once instead of bucket by bucket. */
const SMALL_SET = 1024;

/**
 * {@link sampleToken}'s cut and draw over all `m` candidates at once (listed in `scratch.members`, weights in
 * `scratch.weight`): one listing instead of one per bucket the cut and the draw land in.
 */
function drawFromAll(c: Candidates, params: ResolvedSamplingParams, rng: SeededRng, m: number): number {
  const { weight, members } = scratch;
  let from = 0; // members[from .. m) are kept
  if (params.topP < 1 && m > 1) {
    // The least likely first: the tokens walked before the crossing go (the most likely token always stays).
    const x = firstCrossing(members, 0, m, weight, (1 - params.topP) * c.total, 'asc');
    from = x.at < 0 ? m - 1 : x.at;
  }
  let keptTotal = 0;
  for (let j = from; j < m; j++) keptTotal += weight[members[j]!]!;
  const x = firstCrossing(members, from, m, weight, rng.next() * keptTotal, 'desc');
  return members[x.at < 0 ? m - 1 : x.at]!;
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
