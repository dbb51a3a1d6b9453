import { randomUUID } from 'node:crypto';
import { checkTools, EngineError, forcedToolCalls, parseToolCalls, ToolCallStreamParser, toolCallFormatOf, toolChoiceConstraint, type ParsedToolCall, type ToolCallFormat, type ToolChoice, type ToolDefinition } from '@kvq/engine';
import type { ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { finishReason, ServerContext } from '../context.js';
import { ServerError } from '../errors.js';
import { Generation } from '../generation.js';
import { chatRequestSchema, type ChatRequest, type Usage } from '../openai/protocol.js';
import { DeltaText, chatLogprobs, promptLogprobsJson } from '../openai/text.js';
import { sse, sseDone, sseError, sseStart } from '../sse.js';
import { renderChatPrompt } from './chat-prompt.js';

/**
 * `POST /v1/chat/completions`: the model's chat template over the messages, `n` choices, logprobs as
 * `choices[].logprobs.content[]`; streamed as SSE (a `role` delta first per choice, then content deltas, then a
 * chunk with `finish_reason` per choice) when `stream` is set.
 */
export function registerChat(app: FastifyInstance, ctx: ServerContext): void {
  const { tokenizer } = ctx;
  app.post<{ Body: ChatRequest }>('/v1/chat/completions', { schema: { body: chatRequestSchema } }, async (request, reply) => {
    const body = request.body;
    ctx.admit(body);
    const tooling = toolingOf(ctx, body);
    const prompt = renderChatPrompt(ctx, body.messages, body.add_generation_prompt ?? true, false, tooling.choice === 'none' ? undefined : tooling.tools);
    const maxTokens = ctx.maxTokensFor(prompt.length, body.max_completion_tokens ?? body.max_tokens, undefined, body.max_completion_tokens ? 'max_completion_tokens' : 'max_tokens');
    const topLogprobs = body.logprobs ? (body.top_logprobs ?? 0) : undefined;
    if (!body.logprobs && body.top_logprobs) throw new ServerError('INVALID_REQUEST', 'top_logprobs needs logprobs: true', { param: 'top_logprobs' });
    const params = ctx.samplingParams(body, maxTokens, topLogprobs);
    const forced = toolChoiceConstraint(tooling.tools, tooling.choice);
    if (forced) {
      if (params.structuredOutputs) throw new ServerError('INVALID_REQUEST', 'tool_choice "required" or a named tool cannot be combined with response_format / structured_outputs', { param: 'tool_choice' });
      params.structuredOutputs = forced;
    }
    const options = [await ctx.requestOptions(params)];
    const id = `chatcmpl-${randomUUID().replace(/-/g, '')}`;
    const model = ctx.modelName(body.model);
    const createdAt = ctx.created();
    const holdBack = ServerContext.holdBack(params);

    if (!body.stream) {
      const gen = new Generation(ctx.loop, id, [prompt], params, () => undefined, options);
      ctx.track(request, reply, gen);
      const [out] = await gen.done;
      const choices = out!.outputs.map((o) => {
        const { content, calls } = tooling.split(o.text, o.finishReason);
        return {
          index: o.index,
          message: { role: 'assistant', content, ...(calls.length > 0 ? { tool_calls: calls.map((c) => toolCallJson(c)) } : {}) },
          logprobs: topLogprobs === undefined ? null : { content: chatLogprobs(tokenizer, o.logprobs ?? [], topLogprobs) },
          finish_reason: calls.length > 0 && tooling.choice === 'auto' ? 'tool_calls' : finishReason(o.finishReason),
          stop_reason: o.stopReason ?? null,
        };
      });
      const completionTokens = out!.outputs.reduce((a, o) => a + o.tokenIds.length, 0);
      return {
        id,
        object: 'chat.completion',
        created: createdAt,
        model,
        choices,
        usage: { prompt_tokens: prompt.length, completion_tokens: completionTokens, total_tokens: prompt.length + completionTokens } satisfies Usage,
        // vLLM's ChatCompletionResponse.prompt_logprobs: one list for the rendered prompt, at the top level.
        ...(params.promptLogprobs === undefined ? {} : { prompt_logprobs: promptLogprobsJson(out!.promptTokenLogprobs) }),
      };
    }

    const states = new Map<number, { text: DeltaText; tokens: number; finished: boolean; tools: ToolCallStreamParser | undefined; forcedText: string; calls: number }>();
    let res: ServerResponse | undefined;
    const chunk = (choices: unknown[], usage: Usage | null = null) => ({ id, object: 'chat.completion.chunk', created: createdAt, model, choices, usage });
    const gen = new Generation(ctx.loop, id, [prompt], params, (_i, out) => {
      for (const o of out.outputs) {
        let st = states.get(o.index);
        if (!st) {
          st = { text: new DeltaText(holdBack), tokens: 0, finished: false, tools: tooling.streamParser(), forcedText: '', calls: 0 };
          states.set(o.index, st);
          sse(res!, chunk([{ index: o.index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]));
        }
        if (st.finished) continue;
        const done = o.finishReason !== undefined;
        const raw = st.text.next(o.text, done);
        const lps = topLogprobs === undefined ? null : { content: chatLogprobs(tokenizer, (o.logprobs ?? []).slice(st.tokens), topLogprobs) };
        st.tokens = o.tokenIds.length;
        // With tools the text goes through the tool-call parser (auto) or is held until the end (forced calls).
        let delta = raw;
        let calls: (ParsedToolCall & { index: number })[] = [];
        if (tooling.forced) {
          st.forcedText += raw;
          delta = '';
          if (done) calls = tooling.split(st.forcedText, o.finishReason).calls.map((c, k) => ({ ...c, index: k }));
        } else if (st.tools) {
          const a = st.tools.push(raw);
          const b = done ? st.tools.finish() : { content: '', toolCalls: [] };
          delta = a.content + b.content;
          calls = [...a.toolCalls, ...b.toolCalls];
        }
        if (delta || (lps && lps.content.length)) {
          sse(res!, chunk([{ index: o.index, delta: { content: delta }, logprobs: lps, finish_reason: null }]));
        }
        if (calls.length > 0) {
          st.calls += calls.length;
          sse(res!, chunk([{ index: o.index, delta: { tool_calls: calls.map((c) => ({ index: c.index, ...toolCallJson(c) })) }, logprobs: null, finish_reason: null }]));
        }
        if (done) {
          st.finished = true;
          const reason = st.calls > 0 && tooling.choice === 'auto' ? 'tool_calls' : finishReason(o.finishReason);
          sse(res!, chunk([{ index: o.index, delta: {}, logprobs: null, finish_reason: reason, stop_reason: o.stopReason ?? null }]));
        }
      }
    }, options);
    res = sseStart(reply);
    ctx.track(request, reply, gen);
    try {
      const [out] = await gen.done;
      if (body.stream_options?.include_usage) {
        const completionTokens = out!.outputs.reduce((a, o) => a + o.tokenIds.length, 0);
        sse(res, chunk([], { prompt_tokens: prompt.length, completion_tokens: completionTokens, total_tokens: prompt.length + completionTokens }));
      }
      sseDone(res);
    } catch (error) {
      sseError(res, error);
    }
    return reply;
  });
}

/** How a chat request uses tools: the checked tools and choice, the model's call format, and output splitting. */
interface Tooling {
  readonly tools: readonly ToolDefinition[];
  readonly choice: ToolChoice;
  /** `required` or a named function: the output is constrained and is all calls. */
  readonly forced: boolean;
  /** A whole output as message content (null when only calls) and calls. */
  split(text: string, reason: string | undefined): { content: string | null; calls: ParsedToolCall[] };
  /** A fresh stream parser for `auto` with tools, else undefined. */
  streamParser(): ToolCallStreamParser | undefined;
}

/**
 * Reads `tools` / `tool_choice` (OpenAI; vLLM semantics, docs/spec/tool-calling.md).
 * @throws ServerError `INVALID_REQUEST` for bad tools, or `auto` tools on a model whose chat template has no tool-call format
 */
function toolingOf(ctx: ServerContext, body: ChatRequest): Tooling {
  let checked: { tools: ToolDefinition[]; choice: ToolChoice };
  try {
    checked = checkTools(body.tools, body.tool_choice ?? (body.tools && body.tools.length > 0 ? 'auto' : 'none'));
  } catch (error) {
    if (error instanceof EngineError) throw new ServerError('INVALID_REQUEST', error.message, { param: error.field ?? 'tools' });
    throw error;
  }
  const { tools, choice } = checked;
  const forced = choice === 'required' || typeof choice === 'object';
  let format: ToolCallFormat | undefined;
  if (tools.length > 0 && choice === 'auto') {
    format = toolCallFormatOf(ctx.llm.model.chatTemplate?.source ?? '');
    if (!format) {
      throw new ServerError('INVALID_REQUEST', `tool_choice "auto" needs a chat template that writes tool calls (hermes <tool_call> or Llama 3 JSON); the model ${ctx.names[0]}'s does not`, { param: 'tools' });
    }
  }
  return {
    tools,
    choice,
    forced,
    split(text, reason) {
      if (forced) {
        if (reason !== 'stop') return { content: text, calls: [] }; // cut by max_tokens: not complete JSON
        try {
          return { content: null, calls: forcedToolCalls(text, choice) };
        } catch {
          return { content: text, calls: [] };
        }
      }
      if (!format) return { content: text, calls: [] };
      const parsed = parseToolCalls(text, format);
      return { content: parsed.toolCalls.length > 0 && parsed.content === '' ? null : parsed.content, calls: [...parsed.toolCalls] };
    },
    streamParser: () => (format ? new ToolCallStreamParser(format) : undefined),
  };
}

/** A parsed call as OpenAI's `tool_calls[]` entry (a fresh `call_` id). */
function toolCallJson(call: ParsedToolCall): { id: string; type: 'function'; function: { name: string; arguments: string } } {
  return { id: `call_${randomUUID().replace(/-/g, '').slice(0, 24)}`, type: 'function', function: { name: call.name, arguments: call.arguments } };
}
