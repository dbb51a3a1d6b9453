import type { FastifyInstance } from 'fastify';
import type { ServerContext } from '../context.js';
import { ServerError } from '../errors.js';
import { chatRequestSchema, type ChatMessageIn } from '../openai/protocol.js';
import { renderChatPrompt } from './chat-prompt.js';

/**
 * vLLM's `POST /tokenize` and `POST /detokenize` (vllm/entrypoints/openai/protocol.py `TokenizeCompletionRequest`,
 * `TokenizeChatRequest`, `TokenizeResponse`, `DetokenizeRequest`, `DetokenizeResponse`; read for facts). As in
 * vLLM they live outside `/v1`, so they need no API key.
 */

/** `POST /tokenize` body: a completion prompt, or chat messages rendered with the chat template. */
export interface TokenizeRequest {
  model?: string;
  /** Text to tokenize (completion form). */
  prompt?: string;
  /** Chat messages (chat form; exactly one of `prompt` / `messages`). */
  messages?: ChatMessageIn[];
  /** Chat form: append the assistant generation prompt. Default true. */
  add_generation_prompt?: boolean;
  /** Add the tokenizer's special tokens (BOS, ...). Default true for `prompt`, false for `messages` (the template writes them). */
  add_special_tokens?: boolean;
  /** Also return each token's vocabulary string (`token_strs`). Default false. */
  return_token_strs?: boolean | null;
}

/** `POST /tokenize` response. */
export interface TokenizeResponse {
  count: number;
  max_model_len: number;
  tokens: number[];
  /** Present when `return_token_strs` was set. */
  token_strs?: string[];
}

/** `POST /detokenize` body. */
export interface DetokenizeRequest {
  model?: string;
  tokens: number[];
}

/** `POST /detokenize` response. */
export interface DetokenizeResponse {
  prompt: string;
}

/** JSON schema of {@link TokenizeRequest}. */
export const tokenizeRequestSchema = {
  type: 'object',
  properties: {
    model: { type: 'string' },
    prompt: { type: 'string' },
    messages: chatRequestSchema.properties.messages,
    add_generation_prompt: { type: 'boolean' },
    add_special_tokens: { type: 'boolean' },
    return_token_strs: { anyOf: [{ type: 'boolean' }, { type: 'null' }] },
  },
} as const;

/** JSON schema of {@link DetokenizeRequest}. */
export const detokenizeRequestSchema = {
  type: 'object',
  required: ['tokens'],
  properties: {
    model: { type: 'string' },
    tokens: { type: 'array', items: { type: 'integer' } },
  },
} as const;

/** Registers `POST /tokenize` and `POST /detokenize`. */
export function registerTokenize(app: FastifyInstance, ctx: ServerContext): void {
  const { tokenizer } = ctx;
  app.post<{ Body: TokenizeRequest }>('/tokenize', { schema: { body: tokenizeRequestSchema } }, async (request): Promise<TokenizeResponse> => {
    const body = request.body;
    ctx.checkModel(body.model);
    const hasPrompt = body.prompt !== undefined;
    const hasMessages = body.messages !== undefined;
    if (hasPrompt === hasMessages) {
      throw new ServerError('INVALID_REQUEST', hasPrompt ? 'give either prompt or messages, not both' : 'the body needs prompt (a string) or messages (a non-empty array)', {
        param: hasPrompt ? 'messages' : 'prompt',
      });
    }
    let tokens: number[];
    if (hasPrompt) {
      tokens = tokenizer.encode(body.prompt!, { addSpecialTokens: body.add_special_tokens ?? true });
    } else {
      tokens = renderChatPrompt(ctx, body.messages!, body.add_generation_prompt ?? true, body.add_special_tokens ?? false);
    }
    const out: TokenizeResponse = { count: tokens.length, max_model_len: ctx.maxModelLen, tokens };
    if (body.return_token_strs) out.token_strs = tokens.map((t) => tokenizer.idToToken(t) ?? '');
    return out;
  });

  app.post<{ Body: DetokenizeRequest }>('/detokenize', { schema: { body: detokenizeRequestSchema } }, async (request): Promise<DetokenizeResponse> => {
    const body = request.body;
    ctx.checkModel(body.model);
    body.tokens.forEach((t, i) => {
      if (t < 0 || t >= tokenizer.vocabSize) {
        throw new ServerError('INVALID_REQUEST', `tokens[${i}] = ${t} is outside the vocabulary [0, ${tokenizer.vocabSize})`, { param: `tokens[${i}]` });
      }
    });
    return { prompt: tokenizer.decode(body.tokens, { skipSpecialTokens: false }) };
  });
}
