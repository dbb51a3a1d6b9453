import type { ServerResponse } from 'node:http';
import type { FastifyReply } from 'fastify';
import { toHttpError } from './errors.js';

/**
 * Server-sent events as OpenAI (and vLLM) stream them: `data: <json>\n\n` per chunk, `data: [DONE]` last.
 */

/** Takes the response over from fastify and writes the event-stream headers (status 200). */
export function sseStart(reply: FastifyReply): ServerResponse {
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

/** Writes one event (`data` as JSON, or a string such as `[DONE]` as is); nothing once the socket is gone. */
export function sse(res: ServerResponse, data: unknown): void {
  if (!res.writableEnded && !res.destroyed) res.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
}

/** Ends a stream normally: `data: [DONE]`, then closes the response. */
export function sseDone(res: ServerResponse): void {
  sse(res, '[DONE]');
  res.end();
}

/** After a streamed generation failed: one OpenAI error event, then `[DONE]` (as vLLM does). */
export function sseError(res: ServerResponse, error: unknown): void {
  const { body } = toHttpError(error);
  sse(res, body);
  sseDone(res);
}
