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
 * Scratch of {@link filteredCandidates}, grown to the largest vocabulary seen and reused (a 128k vocabulary's fresh
 * Float64Array + Int32Array each token cost allocation, zeroing and GC time comparable to the pass itself). Safe to
 * share: JavaScript runs one sampling call at a time, and callers use the arrays only within their own call.
 */
let scratchWeight = new Float64Array(0);
let scratchCand = new Int32Array(0);

/** 2^(j/64), j = 0..63, for {@link expNonPositive}. */
const EXP2_FRAC = Float64Array.from({ length: 64 }, (_, j) => 2 ** (j / 64));
/** 2^m for m = -1099..0 (0 below -1074), for {@link expNonPositive}. */
const EXP2_INT = Float64Array.from({ length: 1100 }, (_, i) => 2 ** (i - 1099));
/** ln 2 / 64 split for an exact product with |n| < 2^21 (fdlibm's ln2_hi has 32 significant bits) plus the rest. */
const LN2_64_HI = 6.93147180369123816490e-1 / 64;
const LN2_64_LO = 1.90821492927058770002e-10 / 64;

/**
 * e^x for x <= 0 (NaN stays NaN; below -745.2 gives 0), within ~2 ulp of `Math.exp` for normal results (subnormal
 * results, below e^-708, round as their reduced precision allows). V8 calls out of JIT code for `Math.exp`; this
 * inlines: x = n ln2/64 + r with |r| <= ln2/128 (plus rounding), e^x = 2^(n >> 6) * 2^((n & 63)/64) * e^r, e^r by a degree-5 Taylor
 * polynomial (truncation r^6/720 < 4e-17). Used for the sampler's weights: 6-7 ns a call where `Math.exp` took 16-24.
 */
export function expNonPositive(x: number): number {
  if (!(x > -745.2)) return x === x ? 0 : x;
  // n = x * 64/ln2 rounded (to within 1/2; `| 0` truncates towards 0, so -0.5 first: V8's Math.round is a call).
  const n = (x * (64 / Math.LN2) - 0.5) | 0;
  const r = x - n * LN2_64_HI - n * LN2_64_LO;
  const p = 1 + r * (1 + r * (0.5 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120)))));
  return EXP2_INT[(n >> 6) + 1099]! * (EXP2_FRAC[n & 63]! * p);
}

/**
 * How far below the largest logit (in nats, after temperature) {@link sampleToken} stops looking: the tokens below
 * e^-(ln n + 28) of the most likely one hold less than e^-28 (7e-13) of the mass together, under the rounding of the
 * float64 sums over a vocabulary; skipping them spares one exp per token id of a trained model's long tail.
 */
const NEGLIGIBLE_NATS = 28;

/**
 * The candidates after temperature, min-p and top-k (unsorted, ascending ids, weight > 0), their weights (indexed by
 * token id; meaningful only at the candidates' ids) and total mass. The arrays are shared scratch: valid until the
 * next call. `pruneNats`: tokens more than that many nats below the most likely one (after temperature) are left out
 * without being exponentiated (Infinity: none).
 */
function filteredCandidates(logits: Float32Array, params: ResolvedSamplingParams, pruneNats: number): { weight: Float64Array; cand: Int32Array; total: number; max: number } {
  const n = logits.length;
  if (scratchWeight.length < n) {
    scratchWeight = new Float64Array(n);
    scratchCand = new Int32Array(n);
  }
  const weight = scratchWeight;
  const temperature = params.temperature;
  const invT = 1 / temperature;
  const max = maxOf(logits);
  // The filters need no order, only thresholds, so the candidates are cut down first and only the survivors are sorted
  // (a full sort of a 262k vocabulary took ~600 ms a token). The result is the same as sorting everything first.
  // Top-k is taken on the logits (exp is monotonic: distinct float32 logits give distinct weights unless both
  // underflow to 0, and those are dropped anyway), so only its survivors are exponentiated. Min-p's floor (a weight
  // below minP of the largest, 1) is also a logit floor; with a margin of 1e-6 nats the exact weight test below decides.
  let lower = params.topK > 0 && n > params.topK ? kthLargest(logits, params.topK) : -Infinity;
  let nats = pruneNats;
  if (params.minP > 0) nats = Math.min(nats, -Math.log(params.minP) + 1e-6);
  if (nats < Infinity && max > -Infinity) lower = Math.max(lower, max - nats * temperature);
  const { live, total: sum } = weighCandidates(logits, lower, max, invT, weight, scratchCand);
  let total = sum;
  let cand = scratchCand.subarray(0, live);
  // min-p (p_i < minP * p_max, the common 1/sum cancelled; the largest weight is e^0 = 1) runs before top-k in vLLM;
  // both are thresholds on the same order, so applying top-k first keeps the same set.
  if (params.minP > 0 && live > 0) {
    const floor = params.minP;
    let kept = 0;
    total = 0;
    for (let j = 0; j < live; j++) {
      const i = cand[j]!;
      if (weight[i]! >= floor) {
        cand[kept++] = i;
        total += weight[i]!;
      }
    }
    cand = cand.subarray(0, kept);
  }
  return { weight, cand, total, max };
}

/** The largest of `values` (NaN ignored; -Infinity when empty). Its own function: V8 optimizes a hot loop best there. */
function maxOf(values: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < values.length; i++) if (values[i]! > max) max = values[i]!;
  return max;
}

/**
 * Weighs every logit at or above `lower` (NaN never): `weight[i] = e^((logits[i] - max) * invT)`, and lists those with
 * a weight > 0 in `cand` (ascending ids). Returns their count and total weight. (A separate function: inlined in its
 * caller, V8 deoptimized the caller on every call at the loop's on-stack replacement, ~50 ns a token id.)
 */
function weighCandidates(logits: Float32Array, lower: number, max: number, invT: number, weight: Float64Array, cand: Int32Array): { live: number; total: number } {
  let live = 0;
  let total = 0;
  for (let i = 0; i < logits.length; i++) {
    const l = logits[i]!;
    if (!(l >= lower)) continue; // below the k-th largest or a floor, or NaN
    const w = expNonPositive((l - max) * invT);
    weight[i] = w;
    if (w > 0) {
      cand[live++] = i;
      total += w;
    }
  }
  return { live, total };
}

/**
 * The distribution a token is drawn from at temperature > 0, after vLLM V1's filters in vLLM's order:
 * temperature, then min-p (drop tokens whose probability is below `minP` times the largest), then top-k (keep the
 * tokens whose logit is at least the k-th largest, so ties with the k-th are kept), then top-p over the
 * probabilities RENORMALIZED over what top-k and min-p kept (sorted ascending, a token is dropped when the
 * cumulative mass up to and including it is `<= 1 - topP`; the most likely token always stays).
 * @returns token ids (most likely first) and their probabilities, normalized to sum 1 (float64).
 */
export function samplingDistribution(logits: Float32Array, params: ResolvedSamplingParams): { ids: number[]; probs: Float64Array } {
  const f = filteredCandidates(logits, params, Infinity);
  const { weight, total } = f;
  let cand = f.cand;
  let tailMass = 0; // mass of the least likely candidates top-p certainly drops, left out of the sort
  if (params.topP < 1 && cand.length > 1) ({ cand, tailMass } = dropCertainTail(weight, cand, total, params.topP));
  const ids = Array.from(cand).sort((a, b) => weight[b]! - weight[a]! || a - b);
  let kept = ids;
  if (params.topP < 1 && ids.length > 1) {
    let cumulative = tailMass / total;
    let drop = 0; // tokens dropped from the least likely end of the sorted survivors
    for (let j = ids.length - 1; j > 0; j--) {
      cumulative += weight[ids[j]!]! / total;
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

/** The `k`-th largest of `values` (1 <= k <= values.length; NaN never counts), by a min-heap of the k largest: O(n log k). */
function kthLargest(values: Float32Array, k: number): number {
  const heap = new Float64Array(k).fill(-Infinity);
  for (let i = 0; i < values.length; i++) {
    const w = values[i]!;
    if (!(w > heap[0]!)) continue;
    heap[0] = w;
    let c = 0;
    for (;;) {
      const l = 2 * c + 1;
      const r = l + 1;
      let s = c;
      if (l < k && heap[l]! < heap[s]!) s = l;
      if (r < k && heap[r]! < heap[s]!) s = r;
      if (s === c) break;
      [heap[s], heap[c]] = [heap[c]!, heap[s]!];
      c = s;
    }
  }
  return heap[0]!;
}

/**
 * Top-p drops the least likely tokens while their cumulative mass stays <= (1 - topP) of `total`. Whole weight
 * buckets (1/16 of a nat wide, by -ln w) whose cumulative mass from the bottom stays below that bound with a margin
 * (1e-9 relative, far above the rounding of the sums) are certainly dropped: they leave the candidates and their mass
 * seeds the exact token-by-token loop over the sorted survivors.
 */
function dropCertainTail(weight: Float64Array, cand: Int32Array, total: number, topP: number): { cand: Int32Array; tailMass: number } {
  const BUCKETS = 4096;
  const bucketOf = (w: number) => Math.min(BUCKETS - 1, Math.floor(-Math.log(w) * 16));
  const mass = new Float64Array(BUCKETS);
  for (const i of cand) mass[bucketOf(weight[i]!)]! += weight[i]!;
  const bound = (1 - topP) * total * (1 - 1e-9);
  let tailMass = 0;
  let cut = BUCKETS; // buckets >= cut are dropped
  for (let b = BUCKETS - 1; b > 0; b--) {
    if (tailMass + mass[b]! > bound) break;
    tailMass += mass[b]!;
    cut = b;
  }
  if (cut === BUCKETS) return { cand, tailMass: 0 };
  return { cand: cand.filter((i) => bucketOf(weight[i]!) < cut), tailMass };
}

/**
 * Picks the next token from processed (biased, penalized) logits: greedy (the first index of the maximum) at
 * temperature 0, otherwise one draw from {@link samplingDistribution} with the request's generator: the first token,
 * most likely first, at which the cumulative probability exceeds a uniform draw.
 * NOTE: the same token as walking `samplingDistribution`'s sorted list (up to float rounding of the cumulative sums),
 * without sorting it: candidates are grouped in weight buckets 1/16 nat wide (a counting sort), top-p's cut and the
 * draw walk whole buckets, and only the bucket where the cut or the draw lands is sorted. With the OpenAI defaults
 * (temperature 1, top-p 1) a full sort of a 128k vocabulary used to cost more than the decode step itself.
 */
export function sampleToken(logits: Float32Array, params: ResolvedSamplingParams, rng: SeededRng): number {
  if (params.temperature === 0) return argmax(logits);
  const { weight, cand, total, max } = filteredCandidates(logits, params, Math.log(logits.length) + NEGLIGIBLE_NATS);
  if (cand.length === 0) return argmax(logits); // every logit -inf or NaN: nothing to draw from
  const b = bucketize(logits, max, params.temperature, weight, cand);
  const sorted = (k: number) => bucketMembers(b.ofCand, cand, k).sort((x, y) => weight[y]! - weight[x]! || x - y);
  // Top-p: whole buckets from the least likely end while their mass stays <= (1 - p); the bucket where it crosses is
  // sorted and cut token by token, exactly as samplingDistribution does (the most likely token always stays).
  let lastBucket = b.count - 1; // the least likely bucket kept (possibly cut)
  let lastKept = -1; // in that bucket, how many of its sorted tokens are kept (-1: all)
  let lastSorted: number[] | undefined;
  if (params.topP < 1 && cand.length > 1) {
    const limit = 1 - params.topP;
    let cumulative = 0;
    for (let k = b.count - 1; k >= 0; k--) {
      if (b.start[k] === b.start[k + 1]) continue;
      if (k > 0 && cumulative + b.mass[k]! / total <= limit * (1 - 1e-9)) {
        cumulative += b.mass[k]! / total;
        lastBucket = k - 1;
        continue;
      }
      lastSorted = sorted(k);
      let keep = lastSorted.length;
      for (let j = lastSorted.length - 1; j > (k === 0 ? 0 : -1); j--) {
        cumulative += weight[lastSorted[j]!]! / total;
        if (cumulative > limit) break;
        keep--;
      }
      if (keep === 0) {
        lastBucket = k - 1; // the whole bucket went; the cut continues above it
        lastSorted = undefined;
        continue;
      }
      lastBucket = k;
      lastKept = keep;
      break;
    }
  }
  while (lastBucket > 0 && b.start[lastBucket] === b.start[lastBucket + 1]) lastBucket--;
  let keptTotal = 0;
  for (let k = 0; k < lastBucket; k++) keptTotal += b.mass[k]!;
  const tail = lastSorted ?? sorted(lastBucket);
  const tailKept = lastKept < 0 ? tail : tail.slice(0, lastKept);
  for (const i of tailKept) keptTotal += weight[i]!;
  // The draw: whole buckets, most likely first; the bucket it lands in is sorted and walked token by token.
  let r = rng.next();
  for (let k = 0; k < lastBucket; k++) {
    const p = b.mass[k]! / keptTotal;
    if (b.start[k] === b.start[k + 1] || r - p >= 0) {
      r -= p;
      continue;
    }
    for (const i of sorted(k)) {
      r -= weight[i]! / keptTotal;
      if (r < 0) return i;
    }
  }
  for (const i of tailKept) {
    r -= weight[i]! / keptTotal;
    if (r < 0) return i;
  }
  return tailKept[tailKept.length - 1]!;
}

/**
 * Candidates grouped by weight bucket (bucket 0 the most likely, 1/16 nat each by -ln w = (max - logit) / T, which
 * needs no logarithm and orders exactly as the weights do): each candidate's bucket (`ofCand`, parallel to `cand`),
 * bucket starts as prefix counts (`start[k] === start[k + 1]`: bucket k is empty) and each bucket's mass. The ids of a
 * bucket are gathered only when it is needed ({@link bucketMembers}: the draw and top-p's cut visit one or two).
 */
function bucketize(logits: Float32Array, max: number, temperature: number, weight: Float64Array, cand: Int32Array): { ofCand: Int32Array; start: Int32Array; mass: Float64Array; count: number } {
  const scale = 16 / temperature;
  if (bucketScratch.ofCand.length < cand.length) bucketScratch.ofCand = new Int32Array(logits.length);
  const { ofCand, start, mass } = bucketScratch;
  start.fill(0);
  mass.fill(0);
  for (let j = 0; j < cand.length; j++) {
    const i = cand[j]!;
    const d = (max - logits[i]!) * scale; // >= 0; `| 0` floors it (Math.floor and Math.min cost calls here)
    const k = d < SAMPLE_BUCKETS - 1 ? d | 0 : SAMPLE_BUCKETS - 1;
    ofCand[j] = k;
    start[k + 1]!++;
    mass[k]! += weight[i]!;
  }
  for (let k = 0; k < SAMPLE_BUCKETS; k++) start[k + 1]! += start[k]!;
  return { ofCand: ofCand.subarray(0, cand.length), start, mass, count: SAMPLE_BUCKETS };
}

/** The candidates in bucket `k` (ascending ids). */
function bucketMembers(ofCand: Int32Array, cand: Int32Array, k: number): number[] {
  const ids: number[] = [];
  for (let j = 0; j < cand.length; j++) if (ofCand[j] === k) ids.push(cand[j]!);
  return ids;
}

/** Weight buckets of {@link sampleToken}: -ln w up to 256 nats at 1/16 (weights below e^-256 share the last). */
const SAMPLE_BUCKETS = 4096;

/** {@link bucketize}'s arrays, reused across calls (same single-threaded sharing as the candidates' scratch). */
const bucketScratch = {
  ofCand: new Int32Array(0),
  start: new Int32Array(SAMPLE_BUCKETS + 1),
  mass: new Float64Array(SAMPLE_BUCKETS),
};

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
