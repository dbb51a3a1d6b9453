import { EngineError, describeValue } from '../errors.js';

/**
 * Sampling defaults of a model (`generation_config.json`), camel-cased. Absent fields stay undefined; the
 * generation API applies its own defaults for them.
 */
export interface GenerationConfig {
  readonly bosTokenId?: number;
  /** Generation stops on any of these. */
  readonly eosTokenIds?: readonly number[];
  readonly padTokenId?: number;
  readonly doSample?: boolean;
  /** Softmax temperature (> 0). */
  readonly temperature?: number;
  /** Nucleus probability mass in (0, 1]. */
  readonly topP?: number;
  /** Keep the k most likely tokens (0 = off). */
  readonly topK?: number;
  /** Minimum probability relative to the most likely token, in [0, 1]. */
  readonly minP?: number;
  /** > 0; 1 = off. */
  readonly repetitionPenalty?: number;
  /** Most tokens to generate. */
  readonly maxNewTokens?: number;
  /** Most tokens in prompt + generation. */
  readonly maxLength?: number;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/**
 * Parse `generation_config.json`.
 * @throws EngineError `INVALID_CONFIG` naming the field and value when a present field has the wrong type/range.
 */
export function parseGenerationConfig(json: unknown, file = 'generation_config.json'): GenerationConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new EngineError('INVALID_CONFIG', `${file}: must be a JSON object`, { file });
  }
  const j = json as Record<string, unknown>;
  const out: Mutable<GenerationConfig> = {};
  const fail = (key: string, want: string): EngineError =>
    new EngineError('INVALID_CONFIG', `${file}: ${key} should be ${want}, got ${describeValue(j[key])}`, { file, field: key });
  const present = (key: string): boolean => j[key] !== undefined && j[key] !== null;
  const id = (key: string): number | undefined => {
    if (!present(key)) return undefined;
    const v = j[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw fail(key, 'a token id');
    return v;
  };
  const num = (key: string, ok: (v: number) => boolean, want: string): number | undefined => {
    if (!present(key)) return undefined;
    const v = j[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) throw fail(key, want);
    return v;
  };
  const bos = id('bos_token_id');
  if (bos !== undefined) out.bosTokenId = bos;
  if (present('eos_token_id')) {
    const v = j.eos_token_id;
    const list = Array.isArray(v) ? v : [v];
    if (!list.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)) throw fail('eos_token_id', 'a token id or list of ids');
    out.eosTokenIds = list as number[];
  }
  const pad = id('pad_token_id');
  if (pad !== undefined) out.padTokenId = pad;
  if (present('do_sample')) {
    if (typeof j.do_sample !== 'boolean') throw fail('do_sample', 'a boolean');
    out.doSample = j.do_sample;
  }
  const set = <K extends keyof GenerationConfig>(key: K, value: GenerationConfig[K] | undefined): void => {
    if (value !== undefined) out[key] = value;
  };
  set('temperature', num('temperature', (v) => v >= 0, 'a number >= 0'));
  set('topP', num('top_p', (v) => v > 0 && v <= 1, 'a number in (0, 1]'));
  set('topK', num('top_k', (v) => Number.isInteger(v) && v >= 0, 'an integer >= 0'));
  set('minP', num('min_p', (v) => v >= 0 && v <= 1, 'a number in [0, 1]'));
  set('repetitionPenalty', num('repetition_penalty', (v) => v > 0, 'a number > 0'));
  set('maxNewTokens', num('max_new_tokens', (v) => Number.isInteger(v) && v > 0, 'a positive integer'));
  set('maxLength', num('max_length', (v) => Number.isInteger(v) && v > 0, 'a positive integer'));
  return out;
}

/** The `generation_config.json` object of a {@link GenerationConfig} (inverse of {@link parseGenerationConfig}). */
export function toGenerationConfigJson(config: GenerationConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (config.bosTokenId !== undefined) out.bos_token_id = config.bosTokenId;
  if (config.eosTokenIds !== undefined) out.eos_token_id = config.eosTokenIds.length === 1 ? config.eosTokenIds[0] : [...config.eosTokenIds];
  if (config.padTokenId !== undefined) out.pad_token_id = config.padTokenId;
  if (config.doSample !== undefined) out.do_sample = config.doSample;
  if (config.temperature !== undefined) out.temperature = config.temperature;
  if (config.topP !== undefined) out.top_p = config.topP;
  if (config.topK !== undefined) out.top_k = config.topK;
  if (config.minP !== undefined) out.min_p = config.minP;
  if (config.repetitionPenalty !== undefined) out.repetition_penalty = config.repetitionPenalty;
  if (config.maxNewTokens !== undefined) out.max_new_tokens = config.maxNewTokens;
  if (config.maxLength !== undefined) out.max_length = config.maxLength;
  return out;
}
