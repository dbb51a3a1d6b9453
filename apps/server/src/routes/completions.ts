import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { finishReason, ServerContext } from '../context.js';
import { ServerError } from '../errors.js';
import { Generation } from '../generation.js';
import { completionRequestSchema, type CompletionRequest, type Usage } from '../openai/protocol.js';
import { DeltaText, completionLogprobs, promptLogprobsJson } from '../openai/text.js';
import { sse, sseDone, sseError, sseStart } from '../sse.js';

/** Completions per request at most (prompts x n). */
const MAX_COMPLETIONS = 256;

/**
 * `POST /v1/completions`: `prompt` as a string, strings, token ids or lists of token ids; `n` completions per
 * prompt (choice index = prompt index x n + completion index); streamed as SSE when `stream` is set.
 */
export function registerCompletions(app: FastifyInstance, ctx: ServerContext): void {
  const { tokenizer } = ctx;
  app.post<{ Body: CompletionRequest }>('/v1/completions', { schema: { body: completionRequestSchema } }, async (request, reply) => {
    const body = request.body;
    ctx.admit(body);
    if (body.suffix) throw new ServerError('INVALID_REQUEST', 'suffix is not supported', { param: 'suffix' });
    const n = body.n ?? 1;
    if (body.best_of !== undefined && body.best_of !== null && body.best_of !== n) {
      throw new ServerError('INVALID_REQUEST', `best_of (${body.best_of}) different from n (${n}) is not supported`, { param: 'best_of' });
    }
    const raw = body.prompt;
    const promptTexts: (string | undefined)[] = [];
    const prompts: number[][] = [];
    if (typeof raw === 'string') {
      promptTexts.push(raw);
      prompts.push(tokenizer.encode(raw));
    } else if (raw.every((x) => typeof x === 'string')) {
      for (const t of raw as string[]) {
        promptTexts.push(t);
        prompts.push(tokenizer.encode(t));
      }
    } else if (raw.every((x) => typeof x === 'number')) {
      promptTexts.push(undefined);
      prompts.push(raw as number[]);
    } else {
      for (const ids of raw as number[][]) {
        promptTexts.push(undefined);
        prompts.push(ids);
      }
    }
    if (prompts.length * n > MAX_COMPLETIONS) {
      throw new ServerError('INVALID_REQUEST', `too many completions in one request (${prompts.length} prompts x n=${n}; at most ${MAX_COMPLETIONS})`, { param: 'n' });
    }
    // One max_tokens for all prompts (OpenAI default 16), checked against the longest prompt.
    const longest = Math.max(...prompts.map((p) => p.length));
    const maxTokens = ctx.maxTokensFor(longest, body.max_tokens, 16, 'max_tokens');
    const logprobs = body.logprobs ?? undefined;
    const params = ctx.samplingParams(body, maxTokens, logprobs);
    const echoText = (i: number) => (body.echo ? (promptTexts[i] ?? tokenizer.decode(prompts[i]!, { skipSpecialTokens: false })) : '');
    const id = `cmpl-${randomUUID().replace(/-/g, '')}`;
    const model = ctx.modelName(body.model);
    const createdAt = ctx.created();
    const holdBack = ServerContext.holdBack(params);
    const promptTokens = prompts.reduce((a, p) => a + p.length, 0);
    const options = await Promise.all(prompts.map(() => ctx.requestOptions(params)));

    if (!body.stream) {
      const gen = new Generation(ctx.loop, id, prompts, params, () => undefined, options);
      ctx.track(request, reply, gen);
      const outs = await gen.done;
      let completionTokens = 0;
      const choices = outs.flatMap((out, i) =>
        out.outputs.map((o) => {
          completionTokens += o.tokenIds.length;
          const echo = echoText(i);
          return {
            index: i * n + o.index,
            text: echo + o.text,
            logprobs: logprobs === undefined ? null : completionLogprobs(tokenizer, o.logprobs ?? [], echo.length),
            finish_reason: finishReason(o.finishReason),
            stop_reason: o.stopReason ?? null,
            ...(params.promptLogprobs === undefined ? {} : { prompt_logprobs: promptLogprobsJson(out.promptTokenLogprobs) }),
          };
        }),
      );
      return {
        id,
        object: 'text_completion',
        created: createdAt,
        model,
        choices,
        usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens } satisfies Usage,
      };
    }

    const deltas = new Map<number, { text: DeltaText; tokens: number; finished: boolean; offset: number }>();
    let res: ServerResponse | undefined;
    const chunk = (choices: unknown[], usage: Usage | null = null) => ({ id, object: 'text_completion', created: createdAt, model, choices, usage });
    const gen = new Generation(ctx.loop, id, prompts, params, (i, out) => {
      for (const o of out.outputs) {
        const index = i * n + o.index;
        let st = deltas.get(index);
        let prefix = '';
        if (!st) {
          st = { text: new DeltaText(holdBack), tokens: 0, finished: false, offset: 0 };
          deltas.set(index, st);
          prefix = echoText(i);
        }
        if (st.finished) continue;
        const done = o.finishReason !== undefined;
        const text = prefix + st.text.next(o.text, done);
        const newLps = logprobs === undefined ? null : completionLogprobs(tokenizer, (o.logprobs ?? []).slice(st.tokens), st.offset);
        st.tokens = o.tokenIds.length;
        if (newLps) st.offset += newLps.tokens.reduce((a, t) => a + t.length, 0);
        if (!text && !done && !(newLps && newLps.tokens.length)) continue;
        st.finished = done;
        sse(res!, chunk([{ index, text, logprobs: newLps, finish_reason: done ? finishReason(o.finishReason) : null, stop_reason: done ? (o.stopReason ?? null) : null }]));
      }
    }, options);
    res = sseStart(reply);
    ctx.track(request, reply, gen);
    try {
      const outs = await gen.done;
      if (body.stream_options?.include_usage) {
        const completionTokens = outs.reduce((a, out) => a + out.outputs.reduce((b, o) => b + o.tokenIds.length, 0), 0);
        sse(res, chunk([], { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens }));
      }
      sseDone(res);
    } catch (error) {
      sseError(res, error);
    }
    return reply;
  });
}
