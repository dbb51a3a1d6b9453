import type { FastifyInstance } from 'fastify';
import type { ServerContext } from '../context.js';
import type { ServerMetrics } from '../metrics.js';

/**
 * `GET /health` (200, or 503 while shutting down) and `GET /metrics` (Prometheus text format 0.0.4 from the
 * server's own prom-client registry). Neither needs the API key.
 */
export function registerHealthMetrics(app: FastifyInstance, ctx: ServerContext, metrics: ServerMetrics): void {
  app.get('/health', async (_request, reply) => reply.code(ctx.shuttingDown ? 503 : 200).send());
  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', metrics.contentType);
    return metrics.render();
  });
}
