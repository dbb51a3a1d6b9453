import { CacheError, type CacheErrorCode } from '@kvq/cache';
import { EngineError, type EngineErrorCode } from '@kvq/engine';
import { KernelError, type KernelErrorCode } from '@kvq/kernels';

/**
 * Reasons the server refuses or fails a request on its own account (engine and cache failures keep their codes
 * and are mapped by {@link toHttpError}).
 */
export type ServerErrorCode =
  /** The body or a parameter is invalid (schema violation, bad JSON, unsupported option). HTTP 400. */
  | 'INVALID_REQUEST'
  /** `--api-key` is set and the request lacks `Authorization: Bearer <key>` or has a different key. HTTP 401. */
  | 'UNAUTHORIZED'
  /** No such route. HTTP 404. */
  | 'NOT_FOUND'
  /** The request names a model this server does not serve. HTTP 404. */
  | 'MODEL_NOT_FOUND'
  /** The request body exceeds `maxBodyBytes`. HTTP 413. */
  | 'PAYLOAD_TOO_LARGE'
  /** More requests are queued than `maxQueuedRequests` allows. HTTP 429. */
  | 'TOO_MANY_REQUESTS'
  /** The server is shutting down and takes no new requests. HTTP 503. */
  | 'SHUTTING_DOWN'
  /** The request was aborted by the server (shutdown grace period over). HTTP 503. */
  | 'ABORTED'
  /** Anything unexpected. HTTP 500; the message sent to the client never includes a stack trace. */
  | 'INTERNAL';

/** An error of @kvq/server with its HTTP meaning. */
export class ServerError extends Error {
  override readonly name = 'ServerError';
  readonly code: ServerErrorCode;
  /** The request parameter at fault, when known (OpenAI's `param`). */
  readonly param: string | undefined;

  constructor(code: ServerErrorCode, message: string, options: { param?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.param = options.param;
  }
}

/** OpenAI's error types (the `error.type` field). */
export type OpenAIErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'server_error'
  | 'service_unavailable_error';

/** The body of every error response: OpenAI's shape. */
export interface OpenAIErrorBody {
  readonly error: {
    readonly message: string;
    readonly type: OpenAIErrorType;
    readonly param: string | null;
    readonly code: string | null;
  };
}

interface Mapping {
  readonly status: number;
  readonly type: OpenAIErrorType;
}

const BAD: Mapping = { status: 400, type: 'invalid_request_error' };
const INTERNAL: Mapping = { status: 500, type: 'server_error' };

/** Every server code: compiler-checked to be exhaustive. */
export const SERVER_ERROR_HTTP: Readonly<Record<ServerErrorCode, Mapping>> = {
  INVALID_REQUEST: BAD,
  UNAUTHORIZED: { status: 401, type: 'authentication_error' },
  NOT_FOUND: { status: 404, type: 'not_found_error' },
  MODEL_NOT_FOUND: { status: 404, type: 'not_found_error' },
  PAYLOAD_TOO_LARGE: { status: 413, type: 'invalid_request_error' },
  TOO_MANY_REQUESTS: { status: 429, type: 'rate_limit_error' },
  SHUTTING_DOWN: { status: 503, type: 'service_unavailable_error' },
  ABORTED: { status: 503, type: 'service_unavailable_error' },
  INTERNAL,
};

/**
 * Every engine code. Request-time engine errors are the caller's (bad token ids, prompt too long, bad sampling
 * values: 400); load-time codes cannot reach a request once the model is loaded, so if they do it is our fault (500).
 */
export const ENGINE_ERROR_HTTP: Readonly<Record<EngineErrorCode, Mapping>> = {
  INVALID_ARGUMENT: BAD,
  // An invalid JSON schema / regex / grammar in the request (the engine's code also covers a grammar engine that
  // cannot load; that case is the lead's to split if it needs a 500).
  STRUCTURED_OUTPUT: BAD,
  CHAT_TEMPLATE: BAD,
  FILE_NOT_FOUND: INTERNAL,
  IO_ERROR: INTERNAL,
  TRUNCATED: INTERNAL,
  MALFORMED: INTERNAL,
  UNSUPPORTED_FORMAT: INTERNAL,
  UNSUPPORTED_ARCHITECTURE: INTERNAL,
  UNSUPPORTED_DTYPE: INTERNAL,
  UNSUPPORTED_TOKENIZER: INTERNAL,
  INVALID_CONFIG: INTERNAL,
  SHAPE_MISMATCH: INTERNAL,
  MISSING_TENSOR: INTERNAL,
  INVALID_KV_SCALE: INTERNAL,
  UNSUPPORTED_KV_SCHEME: INTERNAL,
  HUB_NOT_FOUND: INTERNAL,
  HUB_ACCESS_DENIED: INTERNAL,
  HUB_NOT_CACHED: INTERNAL,
  HUB_UNREACHABLE: INTERNAL,
  HUB_DOWNLOAD_FAILED: INTERNAL,
  INTERNAL: INTERNAL,
};

/**
 * Every cache code. The server validates requests before they reach the cache manager, so a cache error during a
 * request is an internal fault (500), except running out of blocks for one request, which is capacity (429 would
 * invite a retry that cannot succeed, so 400 like vLLM's "prompt too long for the KV cache").
 */
export const CACHE_ERROR_HTTP: Readonly<Record<CacheErrorCode, Mapping>> = {
  INVALID_ARGUMENT: INTERNAL,
  NOT_POWER_OF_TWO: INTERNAL,
  UNKNOWN_SEQUENCE: INTERNAL,
  DUPLICATE_SEQUENCE: INTERNAL,
  DOUBLE_FREE: INTERNAL,
  INVALID_STATE: INTERNAL,
  OUT_OF_BLOCKS: BAD,
  INVALID_SCALE: INTERNAL,
  SCALE_SHAPE: INTERNAL,
  SHAPE_MISMATCH: INTERNAL,
  SLOT_OUT_OF_RANGE: INTERNAL,
  UNSUPPORTED_DTYPE: INTERNAL,
  INVARIANT_VIOLATION: INTERNAL,
  // KV tier failures are misses inside the engine and never reach a request; were one to escape, it is a bug (500).
  TIER_UNAVAILABLE: INTERNAL,
  TIER_TIMEOUT: INTERNAL,
  TIER_FULL: INTERNAL,
  CORRUPT_BLOCK: INTERNAL,
  FOREIGN_BLOCK: INTERNAL,
};

/** Every kernel code: kernels only fail on our own bugs or a broken backend once the server runs (500). */
export const KERNEL_ERROR_HTTP: Readonly<Record<KernelErrorCode, Mapping>> = {
  SHAPE_MISMATCH: INTERNAL,
  WRONG_ARRAY_TYPE: INTERNAL,
  INVALID_ARGUMENT: INTERNAL,
  OUT_OF_RANGE: INTERNAL,
  INVALID_SCALE: INTERNAL,
  UNSUPPORTED: INTERNAL,
  BACKEND_UNAVAILABLE: INTERNAL,
};

/** Fastify's own error codes the server sees, mapped to ours. */
const FASTIFY_CODES: Readonly<Record<string, ServerErrorCode>> = {
  FST_ERR_VALIDATION: 'INVALID_REQUEST',
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'INVALID_REQUEST',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'INVALID_REQUEST',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'INVALID_REQUEST',
  FST_ERR_CTP_INVALID_JSON_BODY: 'INVALID_REQUEST',
};

/** The HTTP status and OpenAI-shaped body for any error; 500s carry a generic message (details go to the log). */
export function toHttpError(error: unknown): { status: number; body: OpenAIErrorBody } {
  const body = (m: Mapping, message: string, param: string | null, code: string | null) => ({
    status: m.status,
    body: { error: { message, type: m.type, param, code } },
  });
  if (error instanceof ServerError) {
    const m = SERVER_ERROR_HTTP[error.code];
    return body(m, m.status === 500 ? 'internal server error' : error.message, error.param ?? null, error.code.toLowerCase());
  }
  if (error instanceof EngineError) {
    const m = ENGINE_ERROR_HTTP[error.code];
    return body(m, m.status === 500 ? 'internal server error' : error.message, m.status === 500 ? null : (error.field ?? null), error.code.toLowerCase());
  }
  if (error instanceof CacheError) {
    const m = CACHE_ERROR_HTTP[error.code];
    return body(m, m.status === 500 ? 'internal server error' : error.message, null, error.code.toLowerCase());
  }
  if (error instanceof KernelError) {
    return body(KERNEL_ERROR_HTTP[error.code], 'internal server error', null, null);
  }
  const e = error as { code?: unknown; statusCode?: unknown; message?: unknown; validation?: unknown };
  if (typeof e?.code === 'string' && e.code in FASTIFY_CODES) {
    const code = FASTIFY_CODES[e.code]!;
    const message = typeof e.message === 'string' ? e.message : code;
    return body(SERVER_ERROR_HTTP[code], message, null, code.toLowerCase());
  }
  // Other 4xx errors fastify raises (e.g. unsupported content type 415) keep their status and message.
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500 && typeof e.message === 'string') {
    return { status: e.statusCode, body: { error: { message: e.message, type: 'invalid_request_error', param: null, code: null } } };
  }
  return body(INTERNAL, 'internal server error', null, null);
}
