import { EngineError } from '../errors.js';
import { checkStructuredOutputs, type StructuredOutputsParams } from '../structured/structured.js';

/**
 * Sampling parameters, vLLM's `SamplingParams` in camelCase. Defaults follow vLLM.
 */
export interface SamplingParams {
  /** Completions per prompt (copy-on-write blocks share the prompt). Default 1. */
  n?: number;
  /** Softmax temperature; 0 = greedy. Default 1. */
  temperature?: number;
  /** Nucleus sampling mass in (0, 1]. Default 1 (off). */
  topP?: number;
  /** Keep the k most likely tokens; 0 or -1 = off. Default 0. */
  topK?: number;
  /** Drop tokens with probability < minP * max probability, in [0, 1]. Default 0. */
  minP?: number;
  /** > 1 discourages tokens already in prompt or output (logit / p if > 0, * p otherwise). Default 1. */
  repetitionPenalty?: number;
  /** Subtracted once from the logit of every token present in the output. Default 0. */
  presencePenalty?: number;
  /** Subtracted per occurrence in the output. Default 0. */
  frequencyPenalty?: number;
  /** Seed of this request's generator (reproducible per request). Default: random. */
  seed?: number;
  /** Stop strings (not included in the output text). */
  stop?: string | readonly string[];
  /** Extra token ids that end the sequence (included in token ids, like EOS). */
  stopTokenIds?: readonly number[];
  /** Keep generating past EOS. Default false. */
  ignoreEos?: boolean;
  /** Max generated tokens. Default 16 (vLLM). */
  maxTokens?: number;
  /** Min generated tokens before EOS/stop ids may end the sequence. Default 0. */
  minTokens?: number;
  /** Number of top logprobs to return per generated token (the sampled one is always included). */
  logprobs?: number;
  /**
   * vLLM `prompt_logprobs`: the logprob (and rank) of every prompt token after the first, plus this many top
   * alternatives per position (0..20). Such a request skips the prefix cache (every prompt row must be computed).
   */
  promptLogprobs?: number;
  /** vLLM `include_stop_str_in_output`: keep the matched stop string at the end of the text. Default false. */
  includeStopStrInOutput?: boolean;
  /** Drop special tokens from the text. Default true. */
  skipSpecialTokens?: boolean;
  /**
   * Added to the logit of each listed token id before penalties and sampling (OpenAI / vLLM `logit_bias`); values in
   * [-100, 100]. A record keyed by token id (as JSON sends it) or a map. Default none.
   */
  logitBias?: Readonly<Record<string, number>> | ReadonlyMap<number, number>;
  /** Only these token ids may be generated (vLLM `allowed_token_ids`); every other logit is set to -inf. Default all. */
  allowedTokenIds?: readonly number[];
  /** vLLM `bad_words`: words that must not be generated (with or without a leading space). Default none. */
  badWords?: readonly string[];
  /**
   * vLLM `structured_outputs`: the output must match a JSON schema, any JSON object, a regex, one of some strings or
   * an EBNF grammar (see `StructuredOutputsParams`). `LLM` compiles it; a bare `LLMEngine` needs the compiled
   * constraints in `AddRequestOptions.constraints`. Default none.
   */
  structuredOutputs?: StructuredOutputsParams;
}

/** {@link SamplingParams} with defaults applied and values checked. */
export interface ResolvedSamplingParams {
  readonly n: number;
  readonly temperature: number;
  readonly topP: number;
  readonly topK: number;
  readonly minP: number;
  readonly repetitionPenalty: number;
  readonly presencePenalty: number;
  readonly frequencyPenalty: number;
  readonly seed: number | undefined;
  readonly stop: readonly string[];
  readonly stopTokenIds: readonly number[];
  readonly ignoreEos: boolean;
  readonly maxTokens: number;
  readonly minTokens: number;
  readonly logprobs: number | undefined;
  readonly promptLogprobs: number | undefined;
  readonly includeStopStrInOutput: boolean;
  readonly skipSpecialTokens: boolean;
  /** Token id → bias (empty when none). */
  readonly logitBias: ReadonlyMap<number, number>;
  /** Allowed token ids, or undefined for the whole vocabulary. */
  readonly allowedTokenIds: readonly number[] | undefined;
  readonly badWords: readonly string[];
  readonly structuredOutputs: StructuredOutputsParams | undefined;
}

function bad(field: string, value: unknown, rule: string): never {
  throw new EngineError('INVALID_ARGUMENT', `sampling parameter ${field} = ${JSON.stringify(value)} is invalid: ${rule}`, { field });
}

function num(field: string, value: unknown, fallback: number, ok: (v: number) => boolean, rule: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || !ok(value)) bad(field, value, rule);
  return value;
}

/**
 * Applies vLLM's defaults and validates every field.
 * @throws EngineError `INVALID_SAMPLING_PARAMS` naming the field and value
 */
export function resolveSamplingParams(params: SamplingParams = {}): ResolvedSamplingParams {
  const int = (v: number) => Number.isInteger(v);
  const stop = params.stop === undefined ? [] : typeof params.stop === 'string' ? [params.stop] : [...params.stop];
  for (const s of stop) if (typeof s !== 'string' || s.length === 0) bad('stop', s, 'stop strings must be non-empty strings');
  const stopTokenIds = [...(params.stopTokenIds ?? [])];
  for (const t of stopTokenIds) if (!Number.isInteger(t) || t < 0) bad('stopTokenIds', t, 'token ids are integers >= 0');
  const topK = num('topK', params.topK, 0, (v) => int(v) && v >= -1, 'an integer >= -1 (0 or -1 = off)');
  return {
    n: num('n', params.n, 1, (v) => int(v) && v >= 1 && v <= 128, 'an integer in 1..128'),
    temperature: num('temperature', params.temperature, 1, (v) => v >= 0, '>= 0'),
    topP: num('topP', params.topP, 1, (v) => v > 0 && v <= 1, 'in (0, 1]'),
    topK: topK === -1 ? 0 : topK,
    minP: num('minP', params.minP, 0, (v) => v >= 0 && v <= 1, 'in [0, 1]'),
    repetitionPenalty: num('repetitionPenalty', params.repetitionPenalty, 1, (v) => v > 0, '> 0'),
    presencePenalty: num('presencePenalty', params.presencePenalty, 0, (v) => v >= -2 && v <= 2, 'in [-2, 2]'),
    frequencyPenalty: num('frequencyPenalty', params.frequencyPenalty, 0, (v) => v >= -2 && v <= 2, 'in [-2, 2]'),
    seed: params.seed === undefined ? undefined : num('seed', params.seed, 0, int, 'an integer'),
    stop,
    stopTokenIds,
    ignoreEos: params.ignoreEos ?? false,
    maxTokens: num('maxTokens', params.maxTokens, 16, (v) => int(v) && v >= 1, 'an integer >= 1'),
    minTokens: num('minTokens', params.minTokens, 0, (v) => int(v) && v >= 0, 'an integer >= 0'),
    logprobs: params.logprobs === undefined ? undefined : num('logprobs', params.logprobs, 0, (v) => int(v) && v >= 0 && v <= 20, 'an integer in 0..20'),
    promptLogprobs: params.promptLogprobs === undefined ? undefined : num('promptLogprobs', params.promptLogprobs, 0, (v) => int(v) && v >= 0 && v <= 20, 'an integer in 0..20'),
    includeStopStrInOutput: params.includeStopStrInOutput ?? false,
    skipSpecialTokens: params.skipSpecialTokens ?? true,
    logitBias: resolveLogitBias(params.logitBias),
    allowedTokenIds: resolveAllowedTokenIds(params.allowedTokenIds),
    badWords: resolveBadWords(params.badWords),
    structuredOutputs: params.structuredOutputs === undefined ? undefined : checkStructuredOutputs(params.structuredOutputs),
  };
}

function tokenId(field: string, v: unknown): number {
  const t = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  if (typeof t !== 'number' || !Number.isInteger(t) || t < 0) bad(field, v, 'token ids are integers >= 0');
  return t;
}

function resolveLogitBias(bias: SamplingParams['logitBias']): ReadonlyMap<number, number> {
  const out = new Map<number, number>();
  if (bias === undefined) return out;
  if (bias === null || typeof bias !== 'object') bad('logitBias', bias, 'an object mapping token ids to biases');
  const entries: Iterable<readonly [unknown, unknown]> = bias instanceof Map ? bias.entries() : Object.entries(bias);
  for (const [k, v] of entries) {
    const t = tokenId('logitBias', k);
    if (typeof v !== 'number' || !Number.isFinite(v) || v < -100 || v > 100) bad(`logitBias[${t}]`, v, 'a number in [-100, 100]');
    out.set(t, v);
  }
  return out;
}

function resolveBadWords(words: readonly string[] | undefined): readonly string[] {
  if (words === undefined) return [];
  if (!Array.isArray(words)) bad('badWords', words, 'an array of non-empty strings');
  for (const w of words) if (typeof w !== 'string' || w.trim().length === 0) bad('badWords', w, 'non-empty strings');
  return [...words];
}

function resolveAllowedTokenIds(ids: readonly number[] | undefined): readonly number[] | undefined {
  if (ids === undefined) return undefined;
  if (!Array.isArray(ids) || ids.length === 0) bad('allowedTokenIds', ids, 'a non-empty array of token ids');
  return ids.map((t) => tokenId('allowedTokenIds', t));
}
