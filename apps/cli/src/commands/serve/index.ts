import { buildKvTiers, createServer, ServerError } from '@kvq/server';
import { MODEL_HELP, MODEL_OPTIONS, parseCommand, parseNumber, parseSize } from '../../args.js';
import { CliError } from '../../errors.js';
import { asCliError, openModel } from '../../model.js';
import type { CliIo } from '../../registry.js';

const HELP = `Usage: kvq serve [MODEL] [options]

An OpenAI-compatible HTTP server (GET /v1/models, POST /v1/completions, POST /v1/chat/completions with
streaming, GET /health, GET /metrics) with continuous batching over every client. Flags follow vllm serve.
MODEL may be given as the first argument or with --model (default: the embedded kvq-tiny).

${MODEL_HELP}

Server options:
  --host HOST                   listen address (default 127.0.0.1)
  --port N                      listen port (default 8000; 0 = any free port)
  --api-key KEY                 require "Authorization: Bearer KEY" on /v1 routes (or env KVQ_API_KEY)
  --served-model-name NAME      model name(s) clients use (repeatable; default: the model's name)
  --enable-prefix-caching       reuse KV blocks of shared prompt prefixes (default on)
  --no-enable-prefix-caching    turn prefix caching off
  --max-num-seqs N              most sequences running at once (default 64)
  --max-num-batched-tokens N    token budget of one engine step (default 512)
  --max-body-size SIZE          largest request body (default 1MiB)
  --max-queued-requests N       requests in flight beyond which new ones get HTTP 429 (default 1024)
  --shutdown-grace S            seconds in-flight requests get to finish on SIGINT/SIGTERM (default 30)
  --kv-offload-memory SIZE      host-memory tier of KV blocks beyond the pool, LRU (e.g. 4GiB; default none)
  --kv-store URL                shared KV block tier on Redis / Valkey, redis://host:port/db (replicas of one
                                model share prefixes; failures only cost the hit; see docs/scale-out.md)
  --kv-store-timeout MS         time limit of one --kv-store command (default 500)
  --log                         log every request (JSON lines on stdout)
  -h, --help                    show this help
`;

/** `kvq serve`: the OpenAI-compatible server until SIGINT/SIGTERM. */
export async function run(argv: string[], io: CliIo): Promise<void> {
  const { values, positionals } = parseCommand(argv, {
    ...MODEL_OPTIONS,
    host: { type: 'string' },
    port: { type: 'string' },
    'api-key': { type: 'string' },
    'served-model-name': { type: 'string', multiple: true },
    'enable-prefix-caching': { type: 'boolean' },
    'no-enable-prefix-caching': { type: 'boolean' },
    'max-num-seqs': { type: 'string' },
    'max-num-batched-tokens': { type: 'string' },
    'max-body-size': { type: 'string' },
    'max-queued-requests': { type: 'string' },
    'shutdown-grace': { type: 'string' },
    log: { type: 'boolean' },
    'kv-offload-memory': { type: 'string' },
    'kv-store': { type: 'string' },
    'kv-store-timeout': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    io.stdout.write(HELP);
    return;
  }
  if (positionals.length > 1) throw new CliError('USAGE', `kvq serve takes one MODEL, got ${positionals.length} arguments`);
  if (positionals.length === 1 && values.model !== undefined) throw new CliError('USAGE', 'give the model either as an argument or with --model, not both');
  if (positionals.length === 1) values.model = positionals[0];
  if (values['enable-prefix-caching'] && values['no-enable-prefix-caching']) throw new CliError('USAGE', '--enable-prefix-caching and --no-enable-prefix-caching contradict each other');
  const port = parseNumber(values.port, '--port', { integer: true, min: 0, max: 65535 }) ?? 8000;
  const maxNumSeqs = parseNumber(values['max-num-seqs'], '--max-num-seqs', { integer: true, min: 1 });
  const maxNumBatchedTokens = parseNumber(values['max-num-batched-tokens'], '--max-num-batched-tokens', { integer: true, min: 1 });
  const maxQueued = parseNumber(values['max-queued-requests'], '--max-queued-requests', { integer: true, min: 1 });
  const grace = parseNumber(values['shutdown-grace'], '--shutdown-grace', { min: 0 }) ?? 30;
  const maxBody = values['max-body-size'] === undefined ? undefined : parseSize(values['max-body-size'], '--max-body-size');
  const apiKey = values['api-key'] ?? process.env.KVQ_API_KEY;
  if (apiKey !== undefined && apiKey.length === 0) throw new CliError('USAGE', '--api-key must not be empty');
  // Kept-precision sink/tail tokens need every token computed by its own sequence: prefix caching goes off with them.
  const keeping = [values['kv-cache-keep-sink'], values['kv-cache-keep-recent']].some((v) => v !== undefined && Number(v) > 0);
  // An explicit --enable-prefix-caching with them is passed on (and refused by the engine as a usage error).
  const enablePrefixCaching = values['enable-prefix-caching'] === true || (!values['no-enable-prefix-caching'] && !keeping);
  const kvOffloadMemory = values['kv-offload-memory'] === undefined ? undefined : parseSize(values['kv-offload-memory'], '--kv-offload-memory');
  const kvStoreTimeoutMs = parseNumber(values['kv-store-timeout'], '--kv-store-timeout', { integer: true, min: 1 });
  if (!enablePrefixCaching && (kvOffloadMemory !== undefined || values['kv-store'] !== undefined)) {
    throw new CliError('USAGE', `--kv-offload-memory and --kv-store need prefix caching: drop ${keeping ? '--kv-cache-keep-sink / --kv-cache-keep-recent' : '--no-enable-prefix-caching'}`);
  }
  let kvTiers;
  try {
    kvTiers = buildKvTiers({ kvOffloadMemory, kvStore: values['kv-store'], kvStoreTimeoutMs }, { kvOffloadMemory: '--kv-offload-memory', kvStore: '--kv-store' });
  } catch (error) {
    if (error instanceof ServerError) throw new CliError('USAGE', error.message, { cause: error });
    throw error;
  }

  let ctx;
  try {
    ctx = await openModel(values, io, { enablePrefixCaching, ...(kvTiers.length > 0 ? { kvTiers } : {}), ...(maxNumSeqs !== undefined ? { maxNumSeqs } : {}), ...(maxNumBatchedTokens !== undefined ? { maxNumBatchedTokens } : {}) });
  } catch (error) {
    await Promise.all(kvTiers.map((t) => t.close()));
    throw asCliError(error);
  }
  const { llm } = ctx;
  let server;
  try {
    server = await createServer({
      llm,
      host: values.host ?? '127.0.0.1',
      port,
      kvCacheDtype: ctx.kvCacheDtype,
      calculateKvScales: ctx.options.calculateKvScales,
      enablePrefixCaching,
      servedModelName: values['served-model-name'] ?? [ctx.choice.name],
      ...(apiKey !== undefined ? { apiKey } : {}),
      ...(maxBody !== undefined ? { maxBodyBytes: maxBody } : {}),
      ...(maxQueued !== undefined ? { maxQueuedRequests: maxQueued } : {}),
      shutdownGraceMs: grace * 1000,
      logger: values.log === true,
    });
  } catch (error) {
    llm.dispose();
    if (error instanceof ServerError) throw new CliError('USAGE', error.message, { cause: error });
    throw error;
  }
  let url: string;
  try {
    url = await server.listen();
  } catch (error) {
    await server.close({ graceMs: 0 });
    llm.dispose();
    throw new CliError('RUNTIME', `cannot listen on ${values.host ?? '127.0.0.1'}:${port}: ${(error as Error).message}`, { cause: error });
  }
  io.stdout.write(
    `kvq serve: ${server.modelNames[0]} on ${url} (OpenAI base URL ${url}/v1); KV cache ${ctx.kvCacheDtype} -> ${llm.kvDtype}${ctx.options.kvCacheValueDtype !== undefined ? ` (V ${ctx.options.kvCacheValueDtype})` : ''}, ${llm.kvBytesPerToken} B/token, ${llm.numBlocks - 1} blocks x ${llm.blockSize} = ${(llm.numBlocks - 1) * llm.blockSize} tokens; backend ${llm.backend.name}${kvTiers.length > 0 ? `; KV tiers ${kvTiers.map((t) => t.name).join(' -> ')}` : ''}${apiKey ? '; API key required' : ''}\n`,
  );
  await new Promise<void>((resolve) => {
    let signals = 0;
    const stop = (signal: NodeJS.Signals) => {
      signals++;
      if (signals === 1) {
        io.stderr.write(`kvq serve: ${signal}: finishing in-flight requests (up to ${grace} s; again to abort them)\n`);
        void server.close().then(resolve);
      } else {
        server.loop.abortAll();
      }
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  llm.dispose();
  io.stderr.write('kvq serve: stopped\n');
}
