import { createHash, timingSafeEqual } from 'node:crypto';
import { isHubId, LLM, parseHubId, type LLMOptions, type LoadedModel } from '@kvq/engine';
import { modelTinyName, modelTinyPath } from '@kvq/model-tiny';
import Fastify, { type FastifyInstance } from 'fastify';
import { SERVER_BACKEND_CANDIDATES } from './backends.js';
import { ServerContext } from './context.js';
import { EngineLoop } from './engine-loop.js';
import { ServerError, toHttpError } from './errors.js';
import { buildKvTiers } from './kv-tiers.js';
import { ServerMetrics } from './metrics.js';
import { registerChat } from './routes/chat.js';
import { registerCompletions } from './routes/completions.js';
import { registerHealthMetrics } from './routes/health-metrics.js';
import { registerModels } from './routes/models.js';
import { registerTokenize } from './routes/tokenize.js';

export { samplingDefaults } from './context.js';

/**
 * Options of {@link createServer}: vLLM `serve` flags in camelCase, plus the engine's {@link LLMOptions}
 * (`backend`: `'auto'` (default), `'cpu'`, `'cuda'`, `'rocm'` or `'reference'`; `backendCandidates` defaults to
 * {@link SERVER_BACKEND_CANDIDATES}: cuda, rocm, cpu).
 */
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
  /**
   * `--kv-offload-memory`: bytes of a host-memory LRU tier of KV blocks beyond the pool (see `LLMOptions.kvTiers`).
   * Ignored with `llm` (give that LLM its tiers).
   */
  readonly kvOffloadMemory?: number;
  /** `--kv-store`: a shared Redis / Valkey tier, `redis://host:port/db`. Ignored with `llm`. @see ../../../docs/scale-out.md */
  readonly kvStore?: string;
  /** Time limit of one shared-store command, ms. Default 500. */
  readonly kvStoreTimeoutMs?: number;
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
  /** What /metrics serves (this server's own prom-client registry). */
  readonly metrics: ServerMetrics;
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

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

/**
 * Creates the OpenAI-compatible server: `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions`
 * (streaming as server-sent events), vLLM's `POST /tokenize` and `POST /detokenize`, `GET /health`, `GET /metrics`. Loads the model unless `llm` is given.
 * The routes live in `routes/*.ts` and share a {@link ServerContext}; this function sets up fastify (body limit,
 * validation, error mapping, API key, shutdown refusal) and the lifecycle.
 * @example
 * const server = await createServer({ kvCacheDtype: 'fp8', port: 0 });
 * const url = await server.listen(); // http://127.0.0.1:PORT, use with the openai client's baseURL `${url}/v1`
 */
export async function createServer(options: ServerOptions = {}): Promise<KvqServer> {
  const owned = options.llm === undefined;
  const { llm: _l, host: _h, port: _p, apiKey: _a, servedModelName: _s, maxBodyBytes: _b, maxQueuedRequests: _q, shutdownGraceMs: _g, logger: _lg, kvOffloadMemory, kvStore, kvStoreTimeoutMs, ...llmOptions } = options;
  let llm = options.llm;
  if (llm === undefined) {
    const tiers = buildKvTiers({ kvOffloadMemory, kvStore, kvStoreTimeoutMs });
    try {
      llm = await LLM.create({ backendCandidates: SERVER_BACKEND_CANDIDATES, ...llmOptions, ...(tiers.length > 0 ? { kvTiers: [...(llmOptions.kvTiers ?? []), ...tiers] } : {}), model: options.model ?? modelTinyPath });
    } catch (error) {
      await Promise.all(tiers.map((t) => t.close()));
      throw error;
    }
  }
  const loop = new EngineLoop(llm.engine);
  const names = options.servedModelName === undefined ? [defaultName(options.model, llm)] : typeof options.servedModelName === 'string' ? [options.servedModelName] : [...options.servedModelName];
  if (names.length === 0 || names.some((n) => typeof n !== 'string' || n.length === 0)) {
    throw new ServerError('INVALID_REQUEST', `servedModelName must be non-empty strings, got ${JSON.stringify(options.servedModelName)}`, { param: 'servedModelName' });
  }
  const ctx = new ServerContext(llm, loop, names, { maxQueuedRequests: options.maxQueuedRequests ?? 1024 });
  const apiKeyHash = options.apiKey === undefined ? undefined : createHash('sha256').update(options.apiKey).digest();

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
    if (reply.statusCode >= 400) ctx.httpErrors.set(reply.statusCode, (ctx.httpErrors.get(reply.statusCode) ?? 0) + 1);
  });
  app.addHook('onRequest', async (request) => {
    if (!request.url.startsWith('/v1')) return;
    if (ctx.shuttingDown) throw new ServerError('SHUTTING_DOWN', 'the server is shutting down');
    if (!apiKeyHash) return;
    const header = request.headers.authorization ?? '';
    const m = /^Bearer\s+(.+)$/i.exec(header);
    const given = m ? createHash('sha256').update(m[1]!.trim()).digest() : undefined;
    if (!given || !timingSafeEqual(given, apiKeyHash)) {
      throw new ServerError('UNAUTHORIZED', m ? 'Incorrect API key provided.' : 'Missing API key: send "Authorization: Bearer <key>".');
    }
  });

  const metrics = new ServerMetrics({
    llm,
    loop,
    modelName: names[0]!,
    kvCacheDtype: options.kvCacheDtype ?? 'auto',
    calculateKvScales: options.calculateKvScales ?? false,
    enablePrefixCaching: options.enablePrefixCaching ?? true,
    clientAborts: () => ctx.clientAborts,
    httpErrors: () => ctx.httpErrors,
  });
  loop.observer = metrics;
  registerHealthMetrics(app, ctx, metrics);
  registerModels(app, ctx);
  registerCompletions(app, ctx);
  registerChat(app, ctx);
  registerTokenize(app, ctx);

  let closing: Promise<void> | undefined;
  return {
    app,
    llm,
    loop,
    modelNames: names,
    metrics,
    async listen() {
      return app.listen({ host: options.host ?? '127.0.0.1', port: options.port ?? 8000 });
    },
    close(closeOptions = {}) {
      closing ??= (async () => {
        ctx.shuttingDown = true;
        const grace = closeOptions.graceMs ?? options.shutdownGraceMs ?? 30_000;
        if (grace > 0) await Promise.race([loop.idle(), sleep(grace)]);
        loop.abortAll();
        for (const gen of ctx.active) gen.abort(new ServerError('ABORTED', 'the server shut down before the request finished'));
        await app.close();
        if (owned) llm.dispose();
      })();
      return closing;
    },
  };
}
