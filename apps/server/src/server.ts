import { randomUUID, timingSafeEqual, createHash } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { isHubId, LLM, parseHubId, type GenerationConfig, type LLMOptions, type LoadedModel, type RequestOutput, type SamplingParams } from '@kvq/engine';
import { modelTinyName, modelTinyPath } from '@kvq/model-tiny';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { EngineLoop } from './engine-loop.js';
import { ServerError, toHttpError } from './errors.js';
import { Generation } from './generation.js';
import { renderMetrics } from './metrics.js';
import {
  chatRequestSchema,
  completionRequestSchema,
  type ChatRequest,
  type CommonRequest,
  type CompletionRequest,
  type OpenAIFinishReason,
  type Usage,
} from './openai/protocol.js';
import { DeltaText, chatLogprobs, completionLogprobs } from './openai/text.js';

/** Options of {@link createServer}: vLLM `serve` flags in camelCase, plus the engine's {@link LLMOptions}. */
export interface ServerOptions extends Omit<LLMOptions, 'model'> {
  /**
   * A model folder/file, a Hugging Face Hub id `org/name[@revision]` (fetched into the Hub cache by `LLM.create`;
   * settings from `hub` or the `HF_*` variables; an existing local path wins), or a loaded model. Default: the
   * embedded kvq-tiny (`@kvq/model-tiny`). Ignored with `llm`.
   */
  readonly model?: string | LoadedModel;
  /** An already created engine to serve (the caller keeps ownership: `close()` does not dispose it). */
  readonly llm?: LLM;
  /** `--host`. Default `127.0.0.1`. */
  readonly host?: string;
  /** `--port`. Default 8000 (vLLM's); 0 picks a free port. */
  readonly port?: number;
  /** `--api-key`: when set, every `/v1` route needs `Authorization: Bearer <key>`. */
  readonly apiKey?: string;
  /** `--served-model-name`: the names clients use (the first is reported). Default: the model folder's name, or a Hub id's `org/name`. */
  readonly servedModelName?: string | readonly string[];
  /** Largest request body in bytes (413 beyond). Default 1 MiB. */
  readonly maxBodyBytes?: number;
  /** Requests in flight (running + waiting) beyond which new ones get 429. Default 1024. */
  readonly maxQueuedRequests?: number;
  /** How long `close()` lets in-flight requests finish before aborting them, ms. Default 30000. */
  readonly shutdownGraceMs?: number;
  /** fastify logger option (`false` by default; `true` logs JSON lines to stdout). */
  readonly logger?: boolean;
}

/** A created server (not yet listening until {@link KvqServer.listen}). */
export interface KvqServer {
  /** The fastify instance (routes registered); `app.inject()` works without listening. */
  readonly app: FastifyInstance;
  readonly llm: LLM;
  /** The loop that drives `llm.engine` for every client. */
  readonly loop: EngineLoop;
  /** Names clients may use in `model`; the first is reported by /v1/models. */
  readonly modelNames: readonly string[];
  /** Starts listening on `host:port`; resolves to the base URL (`http://127.0.0.1:PORT`). */
  listen(): Promise<string>;
  /**
   * Graceful shutdown: refuses new requests (503), lets in-flight ones finish for up to `graceMs` (default the
   * `shutdownGraceMs` option), aborts the rest (streams end with finish reason `abort`), closes the socket, and
   * disposes the engine if this server created it.
   */
  close(options?: { graceMs?: number }): Promise<void>;
}

function defaultName(model: string | LoadedModel | undefined, llm: LLM): string {
  // A Hub id is served under its repo name, as vLLM does (`org/name`, without the revision).
  if (typeof model === 'string' && isHubId(model)) return parseHubId(model).repo;
  if (model === undefined && llm.model.path.replace(/\/$/, '') === modelTinyPath.replace(/\/$/, '')) return modelTinyName;
  const path = llm.model.path.replace(/[\\/]+$/, '');
  const base = path.split(/[\\/]/).pop() ?? path;
  return base === 'model' || base === '' ? modelTinyName : base;
}

/**
 * Sampling defaults from a model's generation_config.json, as vLLM applies them (`--generation-config auto`):
 * temperature (0 when `do_sample` is false), top_p, top_k, min_p, repetition_penalty. Request values override them.
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

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

/**
 * Creates the OpenAI-compatible server: `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions`
 * (streaming as server-sent events), `GET /health`, `GET /metrics`. Loads the model unless `llm` is given.
 * @example
 * const server = await createServer({ kvCacheDtype: 'fp8', port: 0 });
 * const url = await server.listen(); // http://127.0.0.1:PORT, use with the openai client's baseURL `${url}/v1`
 */
export async function createServer(options: ServerOptions = {}): Promise<KvqServer> {
  const owned = options.llm === undefined;
  const { llm: _l, host: _h, port: _p, apiKey: _a, servedModelName: _s, maxBodyBytes: _b, maxQueuedRequests: _q, shutdownGraceMs: _g, logger: _lg, ...llmOptions } = options;
  const llm = options.llm ?? (await LLM.create({ ...llmOptions, model: options.model ?? modelTinyPath }));
  const loop = new EngineLoop(llm.engine);
  const names = options.servedModelName === undefined ? [defaultName(options.model, llm)] : typeof options.servedModelName === 'string' ? [options.servedModelName] : [...options.servedModelName];
  if (names.length === 0 || names.some((n) => typeof n !== 'string' || n.length === 0)) {
    throw new ServerError('INVALID_REQUEST', `servedModelName must be non-empty strings, got ${JSON.stringify(options.servedModelName)}`, { param: 'servedModelName' });
  }
  const tokenizer = llm.model.tokenizer;
  const defaults = samplingDefaults(llm.model.generationConfig);
  const maxModelLen = llm.engine.maxModelLen;
  const usableBlocks = llm.numBlocks - 1;
  const maxQueued = options.maxQueuedRequests ?? 1024;
  const apiKeyHash = options.apiKey === undefined ? undefined : createHash('sha256').update(options.apiKey).digest();
  let shuttingDown = false;
  let clientAborts = 0;
  const httpErrors = new Map<number, number>();
  const active = new Set<Generation>();
  const created = () => Math.floor(Date.now() / 1000);

  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: options.maxBodyBytes ?? 1024 * 1024,
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } },
    forceCloseConnections: true,
    return503OnClosing: true,
  });

  app.setErrorHandler((error, request, reply) => {
    const { status, body } = toHttpError(error);
    if (status >= 500) request.log.error({ err: error }, 'request failed');
    reply.code(status).send(body);
  });
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send(toHttpError(new ServerError('NOT_FOUND', `no route for ${request.method} ${request.url.split('?')[0]}`)).body);
  });
  app.addHook('onResponse', async (_request, reply) => {
    if (reply.statusCode >= 400) httpErrors.set(reply.statusCode, (httpErrors.get(reply.statusCode) ?? 0) + 1);
  });
  app.addHook('onRequest', async (request) => {
    if (!request.url.startsWith('/v1')) return;
    if (shuttingDown) throw new ServerError('SHUTTING_DOWN', 'the server is shutting down');
    if (!apiKeyHash) return;
    const header = request.headers.authorization ?? '';
    const m = /^Bearer\s+(.+)$/i.exec(header);
    const given = m ? createHash('sha256').update(m[1]!.trim()).digest() : undefined;
    if (!given || !timingSafeEqual(given, apiKeyHash)) {
      throw new ServerError('UNAUTHORIZED', m ? 'Incorrect API key provided.' : 'Missing API key: send "Authorization: Bearer <key>".');
    }
  });

  app.get('/health', async (_request, reply) => {
    if (shuttingDown) return reply.code(503).send();
    return reply.code(200).send();
  });
  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', 'text/plain; version=0.0.4; charset=utf-8');
    return renderMetrics({
      llm,
      loop,
      modelName: names[0]!,
      kvCacheDtype: options.kvCacheDtype ?? 'auto',
      calculateKvScales: options.calculateKvScales ?? false,
      enablePrefixCaching: options.enablePrefixCaching ?? true,
      clientAborts: () => clientAborts,
      httpErrors: () => httpErrors,
    });
  });
  app.get('/v1/models', async () => ({
    object: 'list',
    data: names.map((id) => ({ id, object: 'model', created: created(), owned_by: 'kvq', root: llm.model.path, parent: null, max_model_len: maxModelLen })),
  }));

  /** Checks the model name, queue room and unsupported options shared by both endpoints. */
  function admit(body: CommonRequest): void {
    if (body.model !== undefined && !names.includes(body.model)) {
      throw new ServerError('MODEL_NOT_FOUND', `The model \`${body.model}\` does not exist.`, { param: 'model' });
    }
    if (llm.engine.numUnfinishedRequests >= maxQueued) {
      throw new ServerError('TOO_MANY_REQUESTS', `too many requests in flight (${maxQueued}); retry later`);
    }
  }

  function samplingParams(body: CommonRequest, maxTokens: number, logprobs: number | undefined): SamplingParams {
    const p: SamplingParams = { ...defaults, maxTokens };
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
    if (body.stop !== undefined && body.stop !== null) p.stop = typeof body.stop === 'string' ? [body.stop] : body.stop;
    if (logprobs !== undefined) p.logprobs = logprobs;
    return p;
  }

  /** The max_tokens to use for a prompt, with vLLM's context-length checks. */
  function maxTokensFor(promptLength: number, requested: number | null | undefined, fallback: number | undefined, param: string): number {
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
    const blocks = Math.ceil((promptLength + maxTokens) / llm.blockSize);
    if (blocks > usableBlocks) {
      throw new ServerError('INVALID_REQUEST', `the request needs ${blocks} KV-cache blocks of ${llm.blockSize} tokens but the cache has ${usableBlocks}; reduce the prompt or ${param}`, { param });
    }
    return maxTokens;
  }

  /**
   * Runs a generation for a request: non-streaming returns the final outputs; streaming writes SSE through
   * `onChunk`. A client that goes away aborts the generation and frees its blocks.
   */
  function track(request: FastifyRequest, reply: FastifyReply, gen: Generation): void {
    active.add(gen);
    const res = reply.raw as ServerResponse;
    const onClose = () => {
      if (!gen.isSettled) {
        clientAborts++;
        gen.abort(new ServerError('ABORTED', 'client disconnected'));
      }
    };
    res.on('close', onClose);
    request.raw.on('aborted', onClose);
    void gen.done.finally(() => active.delete(gen)).catch(() => undefined);
  }

  function sseStart(reply: FastifyReply): ServerResponse {
    reply.hijack();
    const res = reply.raw as ServerResponse;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.flushHeaders();
    return res;
  }

  const sse = (res: ServerResponse, data: unknown) => {
    if (!res.writableEnded && !res.destroyed) res.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
  };

  /** After a streamed generation failed: an OpenAI error event, then [DONE] (as vLLM does). */
  const sseError = (res: ServerResponse, error: unknown) => {
    const { body } = toHttpError(error);
    sse(res, body);
    sse(res, '[DONE]');
    res.end();
  };

  const finishReason = (r: RequestOutput['outputs'][number]['finishReason']): OpenAIFinishReason => r ?? null;

  // ---- POST /v1/completions ----
  app.post<{ Body: CompletionRequest }>('/v1/completions', { schema: { body: completionRequestSchema } }, async (request, reply) => {
    const body = request.body;
    admit(body);
    if (body.suffix) throw new ServerError('INVALID_REQUEST', 'suffix is not supported', { param: 'suffix' });
    const n = body.n ?? 1;
    if (body.best_of !== undefined && body.best_of !== null && body.best_of !== n) {
      throw new ServerError('INVALID_REQUEST', `best_of (${body.best_of}) different from n (${n}) is not supported`, { param: 'best_of' });
    }
    const raw = body.prompt;
    const promptTexts: (string | undefined)[] = [];
    const prompts: number[][] = [];
    if (typeof raw === 'string') {
      promptTexts.push(raw);
      prompts.push(tokenizer.encode(raw));
    } else if (raw.every((x) => typeof x === 'string')) {
      for (const t of raw as string[]) {
        promptTexts.push(t);
        prompts.push(tokenizer.encode(t));
      }
    } else if (raw.every((x) => typeof x === 'number')) {
      promptTexts.push(undefined);
      prompts.push(raw as number[]);
    } else {
      for (const ids of raw as number[][]) {
        promptTexts.push(undefined);
        prompts.push(ids);
      }
    }
    if (prompts.length * n > 256) throw new ServerError('INVALID_REQUEST', `too many completions in one request (${prompts.length} prompts x n=${n}; at most 256)`, { param: 'n' });
    // One max_tokens for all prompts (OpenAI default 16), checked against the longest prompt.
    const longest = Math.max(...prompts.map((p) => p.length));
    const maxTokens = maxTokensFor(longest, body.max_tokens, 16, 'max_tokens');
    const logprobs = body.logprobs ?? undefined;
    const params = samplingParams(body, maxTokens, logprobs);
    const echoText = (i: number) => (body.echo ? (promptTexts[i] ?? tokenizer.decode(prompts[i]!, { skipSpecialTokens: false })) : '');
    const id = `cmpl-${randomUUID().replace(/-/g, '')}`;
    const model = body.model ?? names[0]!;
    const createdAt = created();
    const holdBack = Math.max(0, ...(params.stop as string[] | undefined ?? []).map((s) => s.length - 1));

    if (!body.stream) {
      const gen = new Generation(loop, id, prompts, params, () => undefined);
      track(request, reply, gen);
      const outs = await gen.done;
      let completionTokens = 0;
      const choices = outs.flatMap((out, i) =>
        out.outputs.map((o) => {
          completionTokens += o.tokenIds.length;
          const echo = echoText(i);
          return {
            index: i * n + o.index,
            text: echo + o.text,
            logprobs: logprobs === undefined ? null : completionLogprobs(tokenizer, o.logprobs ?? [], echo.length),
            finish_reason: finishReason(o.finishReason),
            stop_reason: o.stopReason ?? null,
          };
        }),
      );
      const promptTokens = prompts.reduce((a, p) => a + p.length, 0);
      return {
        id,
        object: 'text_completion',
        created: createdAt,
        model,
        choices,
        usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens } satisfies Usage,
      };
    }

    const deltas = new Map<number, { text: DeltaText; tokens: number; finished: boolean; offset: number }>();
    let res: ServerResponse | undefined;
    const chunk = (choices: unknown[], usage: Usage | null = null) => ({ id, object: 'text_completion', created: createdAt, model, choices, usage });
    const gen = new Generation(loop, id, prompts, params, (i, out) => {
      for (const o of out.outputs) {
        const index = i * n + o.index;
        let st = deltas.get(index);
        let prefix = '';
        if (!st) {
          st = { text: new DeltaText(holdBack), tokens: 0, finished: false, offset: 0 };
          deltas.set(index, st);
          prefix = echoText(i);
        }
        if (st.finished) continue;
        const done = o.finishReason !== undefined;
        const text = prefix + st.text.next(o.text, done);
        const newLps = logprobs === undefined ? null : completionLogprobs(tokenizer, (o.logprobs ?? []).slice(st.tokens), st.offset);
        st.tokens = o.tokenIds.length;
        if (newLps) st.offset += newLps.tokens.reduce((a, t) => a + t.length, 0);
        if (!text && !done && !(newLps && newLps.tokens.length)) continue;
        st.finished = done;
        sse(res!, chunk([{ index, text, logprobs: newLps, finish_reason: done ? finishReason(o.finishReason) : null, stop_reason: done ? (o.stopReason ?? null) : null }]));
      }
    });
    res = sseStart(reply);
    track(request, reply, gen);
    try {
      const outs = await gen.done;
      if (body.stream_options?.include_usage) {
        const promptTokens = prompts.reduce((a, p) => a + p.length, 0);
        const completionTokens = outs.reduce((a, out) => a + out.outputs.reduce((b, o) => b + o.tokenIds.length, 0), 0);
        sse(res, chunk([], { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens }));
      }
      sse(res, '[DONE]');
      res.end();
    } catch (error) {
      sseError(res, error);
    }
    return reply;
  });

  // ---- POST /v1/chat/completions ----
  app.post<{ Body: ChatRequest }>('/v1/chat/completions', { schema: { body: chatRequestSchema } }, async (request, reply) => {
    const body = request.body;
    admit(body);
    const template = llm.model.chatTemplate;
    if (!template) throw new ServerError('INVALID_REQUEST', `the model ${names[0]} has no chat template; use /v1/completions`, { param: 'messages' });
    if (body.tools && body.tools.length > 0) throw new ServerError('INVALID_REQUEST', 'tools are not supported', { param: 'tools' });
    if (body.response_format && body.response_format.type !== 'text') {
      throw new ServerError('INVALID_REQUEST', `response_format ${JSON.stringify(body.response_format.type)} is not supported`, { param: 'response_format' });
    }
    const messages = body.messages.map((m, i) => {
      let content: string;
      if (typeof m.content === 'string') content = m.content;
      else if (m.content === null || m.content === undefined) content = '';
      else {
        content = m.content
          .map((part, j) => {
            if (part.type !== 'text' || typeof part.text !== 'string') {
              throw new ServerError('INVALID_REQUEST', `messages[${i}].content[${j}]: only text parts are supported, got type ${JSON.stringify(part.type)}`, { param: `messages[${i}].content` });
            }
            return part.text;
          })
          .join('');
      }
      return { role: m.role, content, ...(m.name ? { name: m.name } : {}) };
    });
    const text = template.render(messages, { addGenerationPrompt: body.add_generation_prompt ?? true });
    const prompt = tokenizer.encode(text, { addSpecialTokens: false });
    const n = body.n ?? 1;
    const maxTokens = maxTokensFor(prompt.length, body.max_completion_tokens ?? body.max_tokens, undefined, body.max_completion_tokens ? 'max_completion_tokens' : 'max_tokens');
    const topLogprobs = body.logprobs ? (body.top_logprobs ?? 0) : undefined;
    if (!body.logprobs && body.top_logprobs) throw new ServerError('INVALID_REQUEST', 'top_logprobs needs logprobs: true', { param: 'top_logprobs' });
    const params = samplingParams(body, maxTokens, topLogprobs);
    const id = `chatcmpl-${randomUUID().replace(/-/g, '')}`;
    const model = body.model ?? names[0]!;
    const createdAt = created();
    const holdBack = Math.max(0, ...(params.stop as string[] | undefined ?? []).map((s) => s.length - 1));

    if (!body.stream) {
      const gen = new Generation(loop, id, [prompt], params, () => undefined);
      track(request, reply, gen);
      const [out] = await gen.done;
      const choices = out!.outputs.map((o) => ({
        index: o.index,
        message: { role: 'assistant', content: o.text },
        logprobs: topLogprobs === undefined ? null : { content: chatLogprobs(tokenizer, o.logprobs ?? [], topLogprobs) },
        finish_reason: finishReason(o.finishReason),
        stop_reason: o.stopReason ?? null,
      }));
      const completionTokens = out!.outputs.reduce((a, o) => a + o.tokenIds.length, 0);
      return {
        id,
        object: 'chat.completion',
        created: createdAt,
        model,
        choices,
        usage: { prompt_tokens: prompt.length, completion_tokens: completionTokens, total_tokens: prompt.length + completionTokens } satisfies Usage,
      };
    }

    const states = new Map<number, { text: DeltaText; tokens: number; finished: boolean }>();
    let res: ServerResponse | undefined;
    const chunk = (choices: unknown[], usage: Usage | null = null) => ({ id, object: 'chat.completion.chunk', created: createdAt, model, choices, usage });
    const gen = new Generation(loop, id, [prompt], params, (_i, out) => {
      for (const o of out.outputs) {
        let st = states.get(o.index);
        if (!st) {
          st = { text: new DeltaText(holdBack), tokens: 0, finished: false };
          states.set(o.index, st);
          sse(res!, chunk([{ index: o.index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]));
        }
        if (st.finished) continue;
        const done = o.finishReason !== undefined;
        const delta = st.text.next(o.text, done);
        const lps = topLogprobs === undefined ? null : { content: chatLogprobs(tokenizer, (o.logprobs ?? []).slice(st.tokens), topLogprobs) };
        st.tokens = o.tokenIds.length;
        if (delta || (lps && lps.content.length)) {
          sse(res!, chunk([{ index: o.index, delta: { content: delta }, logprobs: lps, finish_reason: null }]));
        }
        if (done) {
          st.finished = true;
          sse(res!, chunk([{ index: o.index, delta: {}, logprobs: null, finish_reason: finishReason(o.finishReason), stop_reason: o.stopReason ?? null }]));
        }
      }
    });
    res = sseStart(reply);
    track(request, reply, gen);
    try {
      const [out] = await gen.done;
      if (body.stream_options?.include_usage) {
        const completionTokens = out!.outputs.reduce((a, o) => a + o.tokenIds.length, 0);
        sse(res, chunk([], { prompt_tokens: prompt.length, completion_tokens: completionTokens, total_tokens: prompt.length + completionTokens }));
      }
      sse(res, '[DONE]');
      res.end();
    } catch (error) {
      sseError(res, error);
    }
    return reply;
  });

  let closing: Promise<void> | undefined;
  return {
    app,
    llm,
    loop,
    modelNames: names,
    async listen() {
      return app.listen({ host: options.host ?? '127.0.0.1', port: options.port ?? 8000 });
    },
    close(closeOptions = {}) {
      closing ??= (async () => {
        shuttingDown = true;
        const grace = closeOptions.graceMs ?? options.shutdownGraceMs ?? 30_000;
        if (grace > 0) await Promise.race([loop.idle(), sleep(grace)]);
        loop.abortAll();
        for (const gen of active) gen.abort(new ServerError('ABORTED', 'the server shut down before the request finished'));
        await app.close();
        if (owned) llm.dispose();
      })();
      return closing;
    },
  };
}
