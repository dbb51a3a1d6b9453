// Statistics shared by both engines' results: one implementation, so kvq and llama.cpp are scored the same way.

/** Median of finite numbers (mean of the two middle ones for an even count); NaN for none. */
export function median(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

/** Smallest probability a float32 softmax can report; zeros are clamped to it before taking logs. */
export const MIN_PROBABILITY = 1e-45;

/** Natural-log softmax of a logits row into `out` (float64). */
export function logSoftmaxInto(logits: ArrayLike<number>, out: Float64Array): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < out.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < out.length; i++) sum += Math.exp(logits[i]! - max);
  const lse = max + Math.log(sum);
  for (let i = 0; i < out.length; i++) out[i] = logits[i]! - lse;
  return out;
}

/** Log-probabilities of a (token -> probability) map over a vocabulary of `vocab` (absent tokens: {@link MIN_PROBABILITY}). */
export function logProbsFromMap(probabilities: ReadonlyMap<number, number>, out: Float64Array): Float64Array {
  out.fill(Math.log(MIN_PROBABILITY));
  for (const [token, p] of probabilities) if (token >= 0 && token < out.length) out[token] = Math.log(Math.max(p, MIN_PROBABILITY));
  return out;
}

function argmax(row: ArrayLike<number>, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

/** Gap between the largest and the second largest value of a row (log-probabilities: nats). */
export function top2Gap(row: ArrayLike<number>, n: number): number {
  let a = -Infinity;
  let b = -Infinity;
  for (let i = 0; i < n; i++) {
    const x = row[i]!;
    if (x > a) (b = a), (a = x);
    else if (x > b) b = x;
  }
  return a - b;
}

/**
 * Accumulates per-position quality of a candidate distribution against a reference one: the candidate's negative
 * log-likelihood of the actual next token, KL(reference || candidate), and whether both argmaxes agree.
 * Same definitions as `@kvq/engine`'s `evaluateKvQuality`.
 */
export class QualityAccumulator {
  private nll = 0;
  private kl = 0;
  private agree = 0;
  private count = 0;
  private maxDisagreeGap = 0;

  /**
   * @param reference log-probabilities (natural log) over the vocabulary
   * @param candidate log-probabilities of the configuration under test
   * @param nextToken the token that actually follows
   */
  add(reference: ArrayLike<number>, candidate: ArrayLike<number>, nextToken: number, vocab: number): void {
    let kl = 0;
    for (let i = 0; i < vocab; i++) {
      const lp = reference[i]!;
      const p = Math.exp(lp);
      if (p > 0) kl += p * (lp - candidate[i]!);
    }
    this.kl += kl;
    this.nll -= candidate[nextToken]!;
    if (argmax(reference, vocab) === argmax(candidate, vocab)) this.agree++;
    else this.maxDisagreeGap = Math.max(this.maxDisagreeGap, top2Gap(reference, vocab));
    this.count++;
  }

  /** Mean NLL (nats), perplexity, mean KL (nats), top-1 agreement (0..1) and the number of positions. */
  result(): { tokens: number; nllMean: number; perplexity: number; klMean: number; top1Agreement: number } {
    const n = this.count;
    const nllMean = n ? this.nll / n : 0;
    return { tokens: n, nllMean, perplexity: Math.exp(nllMean), klMean: n ? this.kl / n : 0, top1Agreement: n ? this.agree / n : 1 };
  }

  /**
   * The largest reference top-1/top-2 log-probability gap (nats) among the positions whose argmaxes disagree (0 when
   * all agree): how close to a tie the disagreements were.
   */
  maxDisagreementGap(): number {
    return this.maxDisagreeGap;
  }
}
