import type { FastifyInstance } from 'fastify';
import type { ServerContext } from '../context.js';
import { renderMetrics } from '../metrics.js';

/** Facts of the server's configuration that /metrics reports. */
export interface MetricsConfig {
  /** The `--kv-cache-dtype` as given (`auto`, `fp8`, ...). */
  readonly kvCacheDtype: string;
  readonly calculateKvScales: boolean;
  readonly enablePrefixCaching: boolean;
}

/**
 * `GET /health` (200, or 503 while shutting down) and `GET /metrics` (Prometheus text format 0.0.4). Neither
 * needs the API key.
 */
export function registerHealthMetrics(app: FastifyInstance, ctx: ServerContext, config: MetricsConfig): void {
  app.get('/health', async (_request, reply) => reply.code(ctx.shuttingDown ? 503 : 200).send());
  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', 'text/plain; version=0.0.4; charset=utf-8');
    return renderMetrics({
      llm: ctx.llm,
      loop: ctx.loop,
      modelName: ctx.names[0]!,
      ...config,
      clientAborts: () => ctx.clientAborts,
      httpErrors: () => ctx.httpErrors,
    });
  });
}
