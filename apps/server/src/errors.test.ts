import { CacheError } from '@kvq/cache';
import { EngineError } from '@kvq/engine';
import { KernelError } from '@kvq/kernels';
import { describe, expect, it } from 'vitest';
import { CACHE_ERROR_HTTP, ENGINE_ERROR_HTTP, KERNEL_ERROR_HTTP, SERVER_ERROR_HTTP, ServerError, toHttpError } from './errors.js';
import { DeltaText } from './openai/text.js';

describe('toHttpError', () => {
  it('maps every server code to its status and an OpenAI error body', () => {
    const expected = { INVALID_REQUEST: 400, UNAUTHORIZED: 401, NOT_FOUND: 404, MODEL_NOT_FOUND: 404, PAYLOAD_TOO_LARGE: 413, TOO_MANY_REQUESTS: 429, SHUTTING_DOWN: 503, ABORTED: 503, INTERNAL: 500 };
    expect(Object.keys(SERVER_ERROR_HTTP).sort()).toEqual(Object.keys(expected).sort());
    for (const [code, status] of Object.entries(expected)) {
      const r = toHttpError(new ServerError(code as keyof typeof expected, `m-${code}`, { param: 'p' }));
      expect(r.status).toBe(status);
      expect(r.body.error.message).toBe(status === 500 ? 'internal server error' : `m-${code}`);
      expect(r.body.error.code).toBe(code.toLowerCase());
    }
  });
  it('engine request errors are 400 with the field as param; load-time codes are 500 without details', () => {
    const bad = toHttpError(new EngineError('INVALID_ARGUMENT', 'sampling parameter topP = 2 is invalid', { field: 'topP' }));
    expect(bad).toEqual({ status: 400, body: { error: { message: 'sampling parameter topP = 2 is invalid', type: 'invalid_request_error', param: 'topP', code: 'invalid_argument' } } });
    expect(toHttpError(new EngineError('CHAT_TEMPLATE', 'x')).status).toBe(400);
    for (const code of Object.keys(ENGINE_ERROR_HTTP) as (keyof typeof ENGINE_ERROR_HTTP)[]) {
      const r = toHttpError(new EngineError(code, '/secret/path.gguf broke', { file: '/secret/path.gguf' }));
      if (r.status === 500) expect(r.body.error.message).toBe('internal server error');
      else expect(r.status).toBe(400);
    }
  });
  it('cache and kernel errors: internal except a request too large for the cache', () => {
    for (const code of Object.keys(CACHE_ERROR_HTTP) as (keyof typeof CACHE_ERROR_HTTP)[]) {
      expect(toHttpError(new CacheError(code, 'x')).status).toBe(code === 'OUT_OF_BLOCKS' ? 400 : 500);
    }
    for (const code of Object.keys(KERNEL_ERROR_HTTP) as (keyof typeof KERNEL_ERROR_HTTP)[]) {
      const r = toHttpError(new KernelError(code, 'kernel detail'));
      expect(r.status).toBe(500);
      expect(r.body.error.message).not.toMatch(/kernel detail/);
    }
  });
  it('unknown errors are a generic 500; fastify validation and size errors keep their meaning', () => {
    const r = toHttpError(new TypeError('cannot read x of undefined at /app/server.ts:10'));
    expect(r).toEqual({ status: 500, body: { error: { message: 'internal server error', type: 'server_error', param: null, code: null } } });
    expect(toHttpError(Object.assign(new Error('body/n must be >= 1'), { code: 'FST_ERR_VALIDATION', statusCode: 400 })).status).toBe(400);
    expect(toHttpError(Object.assign(new Error('Request body is too large'), { code: 'FST_ERR_CTP_BODY_TOO_LARGE', statusCode: 413 })).status).toBe(413);
  });
});

describe('DeltaText', () => {
  it('holds back a possible stop-string prefix and incomplete characters until finished', () => {
    const d = new DeltaText(3);
    expect(d.next('Hello', false)).toBe('He');
    expect(d.next('Hello wor', false)).toBe('llo ');
    expect(d.next('Hello wor\uFFFD', false)).toBe('w');
    expect(d.next('Hello world', true)).toBe('orld');
    const e = new DeltaText(0);
    expect(e.next('ab\uFFFD', false)).toBe('ab');
    expect(e.next('ab\u00e9\uD83D', false)).toBe('\u00e9');
    expect(e.next('ab\u00e9\uD83D\uDE00', false)).toBe('\uD83D\uDE00');
  });
});
