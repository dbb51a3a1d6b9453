import type { FastifyInstance } from 'fastify';
import type { ServerContext } from '../context.js';

/** `GET /v1/models`: every served name, with vLLM's `max_model_len` and `root` (the model path). */
export function registerModels(app: FastifyInstance, ctx: ServerContext): void {
  app.get('/v1/models', async () => ({
    object: 'list',
    data: ctx.names.map((id) => ({ id, object: 'model', created: ctx.created(), owned_by: 'kvq', root: ctx.llm.model.path, parent: null, max_model_len: ctx.maxModelLen })),
  }));
}
