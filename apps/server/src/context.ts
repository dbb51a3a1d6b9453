import type { ServerResponse } from 'node:http';
import { EngineError, type AddRequestOptions, type GenerationConfig, type LLM, type RequestOutput, type SamplingParams, type StructuredOutputsParams, type Tokenizer } from '@kvq/engine';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { EngineLoop } from './engine-loop.js';
import { ServerError } from './errors.js';
import type { Generation } from './generation.js';
import type { CommonRequest, OpenAIFinishReason } from './openai/protocol.js';

/**
 * vLLM's default sampling parameters from a model's `generation_config.json` (`--generation-config auto`):
 * temperature (0 when `do_sample` is false), top_p, top_k, min_p, repetition_penalty.
 */
export function samplingDefaults(g: GenerationConfig): SamplingParams {
  const d: SamplingParams = {};
  if (g.temperature !== undefined) d.temperature = g.doSample === false ? 0 : g.temperature;
  else if (g.doSample === false) d.temperature = 0;
  if (g.topP !== undefined) d.topP = g.topP;
  if (g.topK !== undefined) d.topK = g.topK;
  if (g.minP !== undefined) d.minP = g.minP;
  if (g.repetitionPenalty !== undefined) d.repetitionPenalty = g.repetitionPenalty;
  return d;
}

/** Settings of a {@link ServerContext} taken from the server's options. */
export interface ServerContextOptions {
  /** Requests in flight (running + waiting) beyond which new ones get 429. */
  readonly maxQueuedRequests: number;
}

/**
 * What every route shares: the engine, its loop, the served names and tokenizer, the request checks (model
 * name, queue room, context length), the mapping of OpenAI fields to {@link SamplingParams}, and the tracking
 * of in-flight generations (client disconnects abort them; shutdown aborts what is left).
 */
export class ServerContext {
  readonly tokenizer: Tokenizer;
  /** Longest prompt + completion, in tokens. */
  readonly maxModelLen: number;
  /** Sampling defaults from the model's generation config (see {@link samplingDefaults}). */
  readonly defaults: SamplingParams;
  /** Generations in flight (the server aborts them on shutdown). */
  readonly active = new Set<Generation>();
  /** Requests aborted because their client disconnected. */
  clientAborts = 0;
  /** HTTP responses with an error status, by status. */
  readonly httpErrors = new Map<number, number>();
  /** Set by `close()`: new `/v1` requests get 503 and `/health` answers 503. */
  shuttingDown = false;
  private readonly usableBlocks: number;

  constructor(
    readonly llm: LLM,
    readonly loop: EngineLoop,
    /** Names clients may use in `model`; the first is reported. */
    readonly names: readonly string[],
    private readonly options: ServerContextOptions,
  ) {
    this.tokenizer = llm.model.tokenizer;
    this.maxModelLen = llm.engine.maxModelLen;
    this.defaults = samplingDefaults(llm.model.generationConfig);
    this.usableBlocks = llm.numBlocks - 1;
  }

  /** The name reported in responses for a request's `model` (the first served name when absent). */
  modelName(requested: string | undefined): string {
    return requested ?? this.names[0]!;
  }

  /** Unix time in seconds, for `created`. */
  created(): number {
    return Math.floor(Date.now() / 1000);
  }

  /**
   * Checks the model name and queue room shared by the generating endpoints.
   * @throws ServerError `MODEL_NOT_FOUND` (unknown `model`), `TOO_MANY_REQUESTS` (queue full)
   */
  admit(body: { model?: string | undefined }): void {
    this.checkModel(body.model);
    if (this.llm.engine.numUnfinishedRequests >= this.options.maxQueuedRequests) {
      throw new ServerError('TOO_MANY_REQUESTS', `too many requests in flight (${this.options.maxQueuedRequests}); retry later`);
    }
  }

  /** @throws ServerError `MODEL_NOT_FOUND` when `model` is given and is not one of the served names */
  checkModel(model: string | undefined): void {
    if (model !== undefined && !this.names.includes(model)) {
      throw new ServerError('MODEL_NOT_FOUND', `The model \`${model}\` does not exist.`, { param: 'model' });
    }
  }

  /**
   * The engine's {@link SamplingParams} for an OpenAI request: the model's defaults, then every field the request
   * sets (OpenAI names and vLLM's extras); `logprobs` = top alternatives per token, undefined for none.
   * @throws ServerError `INVALID_REQUEST` (param `prompt_logprobs`) for `prompt_logprobs` > 0 with `stream`, as vLLM
   */
  samplingParams(body: CommonRequest, maxTokens: number, logprobs: number | undefined): SamplingParams {
    // vLLM (protocol.py check_logprobs): prompt logprobs are only returned whole, never streamed.
    if (body.stream && body.prompt_logprobs !== undefined && body.prompt_logprobs !== null && body.prompt_logprobs > 0) {
      throw new ServerError('INVALID_REQUEST', '`prompt_logprobs` are not available when `stream=True`.', { param: 'prompt_logprobs' });
    }
    const p: SamplingParams = { ...this.defaults, maxTokens };
    const set = <K extends keyof SamplingParams>(k: K, v: SamplingParams[K] | null | undefined) => {
      if (v !== undefined && v !== null) p[k] = v;
    };
    set('n', body.n);
    set('temperature', body.temperature);
    set('topP', body.top_p);
    set('topK', body.top_k);
    set('minP', body.min_p);
    set('seed', body.seed);
    set('presencePenalty', body.presence_penalty);
    set('frequencyPenalty', body.frequency_penalty);
    set('repetitionPenalty', body.repetition_penalty);
    set('ignoreEos', body.ignore_eos);
    set('minTokens', body.min_tokens);
    set('stopTokenIds', body.stop_token_ids);
    set('skipSpecialTokens', body.skip_special_tokens);
    set('logitBias', body.logit_bias);
    set('allowedTokenIds', body.allowed_token_ids);
    set('badWords', body.bad_words);
    set('includeStopStrInOutput', body.include_stop_str_in_output);
    set('promptLogprobs', body.prompt_logprobs);
    const structured = structuredOutputsOf(body);
    if (structured) p.structuredOutputs = structured;
    if (body.stop !== undefined && body.stop !== null) p.stop = typeof body.stop === 'string' ? [body.stop] : body.stop;
    if (logprobs !== undefined) p.logprobs = logprobs;
    return p;
  }

  /**
   * The max_tokens to use for a prompt of `promptLength` tokens, with vLLM's context-length checks and a check
   * that the request fits in the KV cache at all.
   * @param requested the request's value; `fallback` (else the rest of the context) when absent
   * @param param the field named in errors (`max_tokens` / `max_completion_tokens`)
   * @throws ServerError `INVALID_REQUEST` when the prompt leaves no room, prompt + max_tokens exceeds
   *   `maxModelLen`, or the request needs more blocks than the cache has
   */
  maxTokensFor(promptLength: number, requested: number | null | undefined, fallback: number | undefined, param: string): number {
    const { maxModelLen } = this;
    if (promptLength >= maxModelLen) {
      throw new ServerError(
        'INVALID_REQUEST',
        `This model's maximum context length is ${maxModelLen} tokens. However, your prompt has ${promptLength} tokens, which leaves no room for a completion.`,
        { param: 'prompt' },
      );
    }
    const room = maxModelLen - promptLength;
    const maxTokens = requested ?? Math.min(fallback ?? room, room);
    if (promptLength + maxTokens > maxModelLen) {
      throw new ServerError(
        'INVALID_REQUEST',
        `This model's maximum context length is ${maxModelLen} tokens. However, you requested ${promptLength + maxTokens} tokens (${promptLength} in the prompt, ${maxTokens} for the completion). Please reduce the prompt or ${param}.`,
        { param },
      );
    }
    const blocks = Math.ceil((promptLength + maxTokens) / this.llm.blockSize);
    if (blocks > this.usableBlocks) {
      throw new ServerError(
        'INVALID_REQUEST',
        `the request needs ${blocks} KV-cache blocks of ${this.llm.blockSize} tokens but the cache has ${this.usableBlocks}; reduce the prompt or ${param}`,
        { param },
      );
    }
    return maxTokens;
  }

  /**
   * Ties a generation to its HTTP exchange: a client that goes away (mid-stream or not) aborts it at once, so its
   * KV blocks return to the pool; the generation is listed in {@link active} until it settles.
   */
  track(request: FastifyRequest, reply: FastifyReply, gen: Generation): void {
    this.active.add(gen);
    const res = reply.raw as ServerResponse;
    const onClose = () => {
      if (!gen.isSettled) {
        this.clientAborts++;
        gen.abort(new ServerError('ABORTED', 'client disconnected'));
      }
    };
    res.on('close', onClose);
    request.raw.on('aborted', onClose);
    void gen.done.finally(() => this.active.delete(gen)).catch(() => undefined);
  }

  /**
   * Engine options for one prompt of a request: the compiled structured-output constraints (one per completion)
   * when `params.structuredOutputs` is set. Each prompt needs its own (a matcher follows one sequence).
   * @throws ServerError `INVALID_REQUEST` for a schema / regex / grammar the grammar engine rejects
   */
  async requestOptions(params: SamplingParams): Promise<AddRequestOptions> {
    if (params.structuredOutputs === undefined) return {};
    try {
      const compiler = await this.llm.structuredOutputs();
      return { constraints: await compiler.constraints(params.structuredOutputs, params.n ?? 1) };
    } catch (error) {
      if (error instanceof EngineError) throw new ServerError('INVALID_REQUEST', error.message, { param: 'structured_outputs', cause: error });
      throw error;
    }
  }

  /** The longest stop string minus one: characters a stream holds back while a sequence is unfinished. */
  static holdBack(params: SamplingParams): number {
    return Math.max(0, ...((params.stop as readonly string[] | undefined) ?? []).map((s) => s.length - 1));
  }
}

/** The engine's finish reason as OpenAI's `finish_reason` (null while unfinished). */
export function finishReason(r: RequestOutput['outputs'][number]['finishReason']): OpenAIFinishReason {
  return r ?? null;
}

/**
 * The structured-output spec of a request: vLLM's `structured_outputs` (`json`, `regex`, `choice`, `grammar`,
 * `json_object`) or OpenAI's `response_format` (`json_object`, `json_schema` with `json_schema.schema`; `text` means
 * none). Both at once is an error.
 * @throws ServerError `INVALID_REQUEST` naming the field
 */
function structuredOutputsOf(body: CommonRequest): StructuredOutputsParams | undefined {
  const rf = body.response_format;
  const so = body.structured_outputs;
  let fromFormat: StructuredOutputsParams | undefined;
  if (rf && rf.type !== 'text') {
    if (rf.type === 'json_object') fromFormat = { jsonObject: true };
    else if (rf.type === 'json_schema') {
      const schema = rf.json_schema?.schema;
      if (schema === undefined || schema === null || typeof schema !== 'object') {
        throw new ServerError('INVALID_REQUEST', 'response_format json_schema needs json_schema.schema (a JSON schema object)', { param: 'response_format' });
      }
      fromFormat = { json: schema };
    } else {
      throw new ServerError('INVALID_REQUEST', `response_format.type must be text, json_object or json_schema, got ${JSON.stringify(rf.type)}`, { param: 'response_format' });
    }
  }
  if (!so) return fromFormat;
  if (fromFormat) throw new ServerError('INVALID_REQUEST', 'give either response_format or structured_outputs, not both', { param: 'structured_outputs' });
  const { json_object: jsonObject, ...rest } = so;
  return { ...rest, ...(jsonObject ? { jsonObject: true } : {}) } as StructuredOutputsParams;
}
