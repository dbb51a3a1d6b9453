/**
 * OpenAI request shapes (the subset kvq serves, plus vLLM's sampling extras) as TypeScript types and JSON schemas
 * for fastify's validator. Unknown fields are accepted and ignored, as OpenAI-compatible servers do.
 */

const number = { type: 'number' } as const;
const integer = { type: 'integer' } as const;
const stopSchema = {
  anyOf: [
    { type: 'string', minLength: 1 },
    { type: 'array', items: { type: 'string', minLength: 1 }, maxItems: 16 },
    { type: 'null' },
  ],
} as const;

/** Sampling fields shared by /v1/completions and /v1/chat/completions (OpenAI names, vLLM extras). */
export interface CommonRequest {
  model?: string;
  n?: number;
  max_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean | null } | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  logit_bias?: Record<string, number> | null;
  user?: string;
  // vLLM extras
  top_k?: number | null;
  min_p?: number | null;
  repetition_penalty?: number | null;
  ignore_eos?: boolean;
  min_tokens?: number;
  stop_token_ids?: number[] | null;
  skip_special_tokens?: boolean;
  allowed_token_ids?: number[] | null;
  bad_words?: string[] | null;
  include_stop_str_in_output?: boolean | null;
  /** vLLM: logprobs of the prompt tokens (top-k alternatives per position). */
  prompt_logprobs?: number | null;
  /** vLLM structured outputs: exactly one of json, regex, choice, grammar, json_object. */
  structured_outputs?: { json?: unknown; regex?: string; choice?: string[]; grammar?: string; json_object?: boolean } | null;
  /** OpenAI structured outputs (chat; vLLM accepts it on completions too). */
  response_format?: { type: string; json_schema?: { name?: string; schema?: unknown; strict?: boolean } } | null;
}

/** POST /v1/completions body. */
export interface CompletionRequest extends CommonRequest {
  prompt: string | string[] | number[] | number[][];
  /** Number of top logprobs per token (OpenAI: 0..5; kvq allows up to 20). */
  logprobs?: number | null;
  echo?: boolean | null;
  best_of?: number | null;
  suffix?: string | null;
}

/** One chat message (text content, or text parts; assistant tool calls and tool results as OpenAI sends them). */
export interface ChatMessageIn {
  role: string;
  content?: string | { type: string; text?: string }[] | null;
  name?: string;
  tool_calls?: { id?: string; type?: string; function: { name: string; arguments: string } }[] | null;
  tool_call_id?: string;
}

/** POST /v1/chat/completions body. */
export interface ChatRequest extends CommonRequest {
  messages: ChatMessageIn[];
  max_completion_tokens?: number | null;
  logprobs?: boolean | null;
  top_logprobs?: number | null;
  tools?: unknown[] | null;
  tool_choice?: unknown;
  add_generation_prompt?: boolean;
}

const commonProperties = {
  model: { type: 'string' },
  n: { type: 'integer', minimum: 1, maximum: 128 },
  max_tokens: { anyOf: [{ type: 'integer', minimum: 1 }, { type: 'null' }] },
  temperature: { anyOf: [{ type: 'number', minimum: 0, maximum: 2 }, { type: 'null' }] },
  top_p: { anyOf: [{ type: 'number', exclusiveMinimum: 0, maximum: 1 }, { type: 'null' }] },
  seed: { anyOf: [integer, { type: 'null' }] },
  stop: stopSchema,
  stream: { anyOf: [{ type: 'boolean' }, { type: 'null' }] },
  stream_options: {
    anyOf: [{ type: 'object', properties: { include_usage: { anyOf: [{ type: 'boolean' }, { type: 'null' }] } } }, { type: 'null' }],
  },
  presence_penalty: { anyOf: [{ type: 'number', minimum: -2, maximum: 2 }, { type: 'null' }] },
  frequency_penalty: { anyOf: [{ type: 'number', minimum: -2, maximum: 2 }, { type: 'null' }] },
  logit_bias: {
    anyOf: [{ type: 'object', propertyNames: { pattern: '^[0-9]+$' }, additionalProperties: { type: 'number', minimum: -100, maximum: 100 } }, { type: 'null' }],
  },
  user: { type: 'string' },
  top_k: { anyOf: [{ type: 'integer', minimum: -1 }, { type: 'null' }] },
  min_p: { anyOf: [{ type: 'number', minimum: 0, maximum: 1 }, { type: 'null' }] },
  repetition_penalty: { anyOf: [{ type: 'number', exclusiveMinimum: 0 }, { type: 'null' }] },
  ignore_eos: { type: 'boolean' },
  min_tokens: { type: 'integer', minimum: 0 },
  stop_token_ids: { anyOf: [{ type: 'array', items: { type: 'integer', minimum: 0 } }, { type: 'null' }] },
  skip_special_tokens: { type: 'boolean' },
  allowed_token_ids: { anyOf: [{ type: 'array', minItems: 1, items: { type: 'integer', minimum: 0 } }, { type: 'null' }] },
  bad_words: { anyOf: [{ type: 'array', items: { type: 'string', minLength: 1 } }, { type: 'null' }] },
  include_stop_str_in_output: { anyOf: [{ type: 'boolean' }, { type: 'null' }] },
  prompt_logprobs: { anyOf: [{ type: 'integer', minimum: 0, maximum: 20 }, { type: 'null' }] },
  structured_outputs: { anyOf: [{ type: 'object' }, { type: 'null' }] },
  response_format: { anyOf: [{ type: 'object', required: ['type'], properties: { type: { type: 'string' }, json_schema: { type: 'object' } } }, { type: 'null' }] },
} as const;

/** JSON schema of {@link CompletionRequest}. */
export const completionRequestSchema = {
  type: 'object',
  required: ['prompt'],
  properties: {
    ...commonProperties,
    prompt: {
      anyOf: [
        { type: 'string' },
        { type: 'array', minItems: 1, items: { type: 'string' } },
        { type: 'array', minItems: 1, items: { type: 'integer', minimum: 0 } },
        { type: 'array', minItems: 1, items: { type: 'array', minItems: 1, items: { type: 'integer', minimum: 0 } } },
      ],
    },
    logprobs: { anyOf: [{ type: 'integer', minimum: 0, maximum: 20 }, { type: 'null' }] },
    echo: { anyOf: [{ type: 'boolean' }, { type: 'null' }] },
    best_of: { anyOf: [{ type: 'integer', minimum: 1 }, { type: 'null' }] },
    suffix: { anyOf: [{ type: 'string' }, { type: 'null' }] },
  },
} as const;

/** JSON schema of {@link ChatRequest}. */
export const chatRequestSchema = {
  type: 'object',
  required: ['messages'],
  properties: {
    ...commonProperties,
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['role'],
        properties: {
          role: { type: 'string', minLength: 1 },
          content: {
            anyOf: [
              { type: 'string' },
              { type: 'null' },
              {
                type: 'array',
                items: { type: 'object', required: ['type'], properties: { type: { type: 'string' }, text: { type: 'string' } } },
              },
            ],
          },
          name: { type: 'string' },
          tool_calls: { anyOf: [{ type: 'array' }, { type: 'null' }] },
          tool_call_id: { type: 'string' },
        },
      },
    },
    max_completion_tokens: { anyOf: [{ type: 'integer', minimum: 1 }, { type: 'null' }] },
    logprobs: { anyOf: [{ type: 'boolean' }, { type: 'null' }] },
    top_logprobs: { anyOf: [{ type: 'integer', minimum: 0, maximum: 20 }, { type: 'null' }] },
    tools: { anyOf: [{ type: 'array' }, { type: 'null' }] },
    tool_choice: { anyOf: [{ type: 'string' }, { type: 'object' }, { type: 'null' }] },
    add_generation_prompt: { type: 'boolean' },
  },
} as const;

/** `usage` of a response. */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** OpenAI finish reasons (plus vLLM's `abort`). */
export type OpenAIFinishReason = 'stop' | 'length' | 'abort' | null;
