import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { finishReason, ServerContext } from '../context.js';
import { ServerError } from '../errors.js';
import { Generation } from '../generation.js';
import { chatRequestSchema, type ChatRequest, type Usage } from '../openai/protocol.js';
import { DeltaText, chatLogprobs } from '../openai/text.js';
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
    if (body.tools && body.tools.length > 0) throw new ServerError('INVALID_REQUEST', 'tools are not supported', { param: 'tools' });
    if (body.response_format && body.response_format.type !== 'text') {
      throw new ServerError('INVALID_REQUEST', `response_format ${JSON.stringify(body.response_format.type)} is not supported`, { param: 'response_format' });
    }
    const prompt = renderChatPrompt(ctx, body.messages, body.add_generation_prompt ?? true);
    const maxTokens = ctx.maxTokensFor(prompt.length, body.max_completion_tokens ?? body.max_tokens, undefined, body.max_completion_tokens ? 'max_completion_tokens' : 'max_tokens');
    const topLogprobs = body.logprobs ? (body.top_logprobs ?? 0) : undefined;
    if (!body.logprobs && body.top_logprobs) throw new ServerError('INVALID_REQUEST', 'top_logprobs needs logprobs: true', { param: 'top_logprobs' });
    const params = ctx.samplingParams(body, maxTokens, topLogprobs);
    const id = `chatcmpl-${randomUUID().replace(/-/g, '')}`;
    const model = ctx.modelName(body.model);
    const createdAt = ctx.created();
    const holdBack = ServerContext.holdBack(params);

    if (!body.stream) {
      const gen = new Generation(ctx.loop, id, [prompt], params, () => undefined);
      ctx.track(request, reply, gen);
      const [out] = await gen.done;
      const choices = out!.outputs.map((o) => ({
        index: o.index,
        message: { role: 'assistant', content: o.text },
        logprobs: topLogprobs === undefined ? null : { content: chatLogprobs(tokenizer, o.logprobs ?? [], topLogprobs) },
        finish_reason: finishReason(o.finishReason),
        stop_reason: o.stopReason ?? null,
      }));
      const completionTokens = out!.outputs.reduce((a, o) => a + o.tokenIds.length, 0);
      return {
        id,
        object: 'chat.completion',
        created: createdAt,
        model,
        choices,
        usage: { prompt_tokens: prompt.length, completion_tokens: completionTokens, total_tokens: prompt.length + completionTokens } satisfies Usage,
      };
    }

    const states = new Map<number, { text: DeltaText; tokens: number; finished: boolean }>();
    let res: ServerResponse | undefined;
    const chunk = (choices: unknown[], usage: Usage | null = null) => ({ id, object: 'chat.completion.chunk', created: createdAt, model, choices, usage });
    const gen = new Generation(ctx.loop, id, [prompt], params, (_i, out) => {
      for (const o of out.outputs) {
        let st = states.get(o.index);
        if (!st) {
          st = { text: new DeltaText(holdBack), tokens: 0, finished: false };
          states.set(o.index, st);
          sse(res!, chunk([{ index: o.index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]));
        }
        if (st.finished) continue;
        const done = o.finishReason !== undefined;
        const delta = st.text.next(o.text, done);
        const lps = topLogprobs === undefined ? null : { content: chatLogprobs(tokenizer, (o.logprobs ?? []).slice(st.tokens), topLogprobs) };
        st.tokens = o.tokenIds.length;
        if (delta || (lps && lps.content.length)) {
          sse(res!, chunk([{ index: o.index, delta: { content: delta }, logprobs: lps, finish_reason: null }]));
        }
        if (done) {
          st.finished = true;
          sse(res!, chunk([{ index: o.index, delta: {}, logprobs: null, finish_reason: finishReason(o.finishReason), stop_reason: o.stopReason ?? null }]));
        }
      }
    });
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
