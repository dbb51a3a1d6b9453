/**
 * The sampler: from the model runner's logits rows to tokens (penalties, temperature / top-k / top-p / min-p
 * sampling, greedy at temperature 0) and log-probabilities (vLLM V1 `Sampler`). The math is in `../sampling/`;
 * this module applies it to a step's rows, one independent generator per sequence.
 * @module
 */
import type { ResolvedSamplingParams } from '../sampling/params.js';
import type { SeededRng } from '../sampling/rng.js';
import type { TokenConstraint } from './constraint.js';
import { applyLogitsProcessors, applyPenalties, logSoftmax, referenceSamplePass, sampleToken, tokenLogprobs, type SamplePass, type TokenLogprobs } from '../sampling/sampler.js';

/** One sequence to sample a token for. */
export interface SampleRequest {
  /** Raw logits of the next position, `vocabSize` floats (not modified). */
  readonly logits: Float32Array;
  readonly params: ResolvedSamplingParams;
  /** Prompt tokens (repetition penalty). */
  readonly promptTokenIds: readonly number[];
  /** Tokens generated so far (all penalties). */
  readonly outputTokenIds: readonly number[];
  /** The sequence's own generator (advanced by sampling). */
  readonly rng: SeededRng;
  /** The model's end-of-sequence ids (masked while fewer than `minTokens` were generated). Default none. */
  readonly eosTokenIds?: readonly number[];
  /** Token-id sequences of the request's bad words. Default none. */
  readonly badWordsTokenIds?: readonly (readonly number[])[];
  /** Structured outputs: masks the tokens the grammar does not allow next (first, before every other processor). */
  readonly constraint?: TokenConstraint | undefined;
  /**
   * {@link noLogitsProcessors} of `params`, `badWordsTokenIds` and `constraint`, when the caller keeps it per request
   * (it is fixed for a request's lifetime); computed here when absent.
   */
  readonly noLogitsProcessors?: boolean;
}

/** The sampled token and, when `params.logprobs` is set, its logprob and the top alternatives (from the raw logits). */
export interface SampleResult {
  readonly token: number;
  readonly logprobs: TokenLogprobs | undefined;
}

/**
 * Whether no logits processor or penalty of a request can change a logit of any of its rows, except min_tokens' stop
 * masking (while fewer than `minTokens` tokens were generated): no allowed ids, bad words, logit bias, repetition /
 * presence / frequency penalty, or structured-output constraint. Fixed for the request's lifetime, so callers may
 * compute it once per request. When it holds and min_tokens masks nothing, the raw row is the processed row (and at
 * temperature 0 without logprobs the token is its plain argmax, which the backend can take on the device).
 */
export function noLogitsProcessors(params: ResolvedSamplingParams, badWordsTokenIds: readonly (readonly number[])[] | undefined, constrained: boolean): boolean {
  return (
    params.allowedTokenIds === undefined &&
    (badWordsTokenIds === undefined || badWordsTokenIds.length === 0) &&
    params.logitBias.size === 0 &&
    params.repetitionPenalty === 1 &&
    params.presencePenalty === 0 &&
    params.frequencyPenalty === 0 &&
    !constrained
  );
}

/** Sampling and scoring over logits rows. Stateless: every input is in the request. */
export class Sampler {
  private readonly pass: SamplePass;
  /** The processed copy of the logits row being sampled (reused across calls). */
  private work = new Float32Array(0);

  /**
   * @param pass how each token is drawn: the backend's `sampleDraw` when it has one (native on the CPU backend), else
   *   `@kvq/kernels`' reference; both draw the same token for the same uniform draw.
   */
  constructor(pass: SamplePass = referenceSamplePass) {
    this.pass = pass;
  }

  /**
   * One token per request, in order, as vLLM V1's sampler: on a copy of the logits, the logits processors
   * (allowed token ids, logit bias, min_tokens) then the penalties, then the token is drawn with the request's
   * generator (argmax at temperature 0; temperature, min-p, top-k, top-p otherwise). Logprobs, when asked for, come from the raw logits (vLLM's default
   * `logprobs_mode`).
   */
  sample(requests: readonly SampleRequest[]): SampleResult[] {
    const out: SampleResult[] = new Array<SampleResult>(requests.length);
    for (let i = 0; i < requests.length; i++) out[i] = this.sampleOne(requests[i]!);
    return out;
  }

  /** {@link sample} for one request (no arrays: the engine's per-token path). */
  sampleOne(r: SampleRequest): SampleResult {
    const p = r.params;
    // The draw reads its row without changing it: the raw row when nothing processes it (sampling with plain
    // temperature / top-k / top-p / min-p), else a copy into a reused buffer (a fresh vocabulary-sized array each
    // token cost ~0.1 ms of garbage collection in a process holding a model).
    let work = r.logits;
    const unchanged = r.outputTokenIds.length >= p.minTokens && (r.noLogitsProcessors ?? noLogitsProcessors(p, r.badWordsTokenIds, r.constraint !== undefined));
    if (!unchanged) {
      if (this.work.length < r.logits.length) this.work = new Float32Array(r.logits.length);
      work = this.work.length === r.logits.length ? this.work : this.work.subarray(0, r.logits.length);
      work.set(r.logits);
      r.constraint?.applyTo(work);
      applyLogitsProcessors(work, p, r.outputTokenIds, r.eosTokenIds, r.badWordsTokenIds);
      applyPenalties(work, p, r.promptTokenIds, r.outputTokenIds);
    }
    const token = sampleToken(work, p, r.rng, this.pass);
    return { token, logprobs: p.logprobs === undefined ? undefined : tokenLogprobs(r.logits, token, p.logprobs) };
  }

  /**
   * Prompt scoring: the natural-log probability of each next token under the rows' logits. Row `i` holds the logits
   * at position `firstPosition + i`; it scores `tokenIds[firstPosition + i + 1]` (no entry when that token does not
   * exist, i.e. for the last known token).
   * @param logits float32 `[numRows, vocabSize]`
   */
  scoreNextTokens(logits: Float32Array, numRows: number, vocabSize: number, tokenIds: readonly number[], firstPosition: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < numRows; i++) {
      const next = tokenIds[firstPosition + i + 1];
      if (next === undefined) continue;
      out.push(logSoftmax(logits.subarray(i * vocabSize, (i + 1) * vocabSize))[next]!);
    }
    return out;
  }
}
