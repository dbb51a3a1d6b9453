import { readFileSync } from 'node:fs';
import { fixturePath } from '@kvq/fixtures';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type KvqServer } from './server.js';

/**
 * End-to-end: the real server on a loopback port with the embedded kvq-tiny, driven by the official `openai`
 * client (no retries, so every status code is seen as sent).
 */

function metricValue(text: string, name: string, labels?: string): number {
  const line = text.split('\n').find((l) => l.startsWith(name) && (l[name.length] === '{' || l[name.length] === ' ') && (!labels || l.includes(labels)));
  if (!line) throw new Error(`metric ${name} not found`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

async function metrics(url: string): Promise<string> {
  const r = await fetch(`${url}/metrics`);
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toMatch(/^text\/plain/);
  return r.text();
}

async function waitFor(check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('condition not met in time');
}

const PROMPTS = [
  'In the beginning God',
  'And the LORD said unto Moses',
  'A fortune:',
  'Blessed are the meek',
  'You will meet',
  'The heavens declare',
  'Love your enemies',
  'Q: What is the meaning of life?',
];

describe('OpenAI-compatible server (kvq-tiny, openai client)', () => {
  let server: KvqServer;
  let url: string;
  let client: OpenAI;

  beforeAll(async () => {
    server = await createServer({ port: 0, kvCacheMemory: 16 << 20, maxNumSeqs: 64 });
    url = await server.listen();
    client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'not-needed', maxRetries: 0 });
  });
  afterAll(async () => {
    await server.close({ graceMs: 0 });
  });

  it('lists the served model and answers /health', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['kvq-tiny']);
    expect((await fetch(`${url}/health`)).status).toBe(200);
  });

  it('greedy completion matches the independent reference tokens', async () => {
    const r = await client.completions.create({ model: 'kvq-tiny', prompt: 'In the beginning God', max_tokens: 24, temperature: 0 });
    expect(r.object).toBe('text_completion');
    expect(r.choices).toHaveLength(1);
    expect(r.choices[0]!.finish_reason).toBe('length');
    expect(r.usage).toEqual({ prompt_tokens: 6, completion_tokens: 24, total_tokens: 30 });
    const reference = JSON.parse(readFileSync(fixturePath('reference/kvq-tiny.json'), 'utf8')) as { greedy: { prompt: string; token_ids: number[] }[] };
    const expected = reference.greedy.find((g) => g.prompt === 'In the beginning God');
    expect(expected).toBeDefined();
    const text = server.llm.model.tokenizer.decode(expected!.token_ids.slice(0, 24), { skipSpecialTokens: true });
    expect(r.choices[0]!.text).toBe(text);
  });

  it('streams completions: deltas concatenate to the non-streamed text, usage last, then [DONE]', async () => {
    const params = { model: 'kvq-tiny', prompt: 'And the LORD said unto Moses', max_tokens: 40, temperature: 0 } as const;
    const whole = await client.completions.create(params);
    const stream = await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    let chunks = 0;
    for await (const c of stream) {
      chunks++;
      if (c.usage) {
        expect(c.choices).toEqual([]);
        usage = c.usage;
        continue;
      }
      text += c.choices[0]!.text;
      finish = c.choices[0]!.finish_reason ?? finish;
    }
    expect(chunks).toBeGreaterThan(5);
    expect(text).toBe(whole.choices[0]!.text);
    expect(finish).toBe(whole.choices[0]!.finish_reason);
    expect(usage).toEqual(whole.usage);
    // Raw SSE framing: the stream ends with [DONE].
    const raw = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...params, max_tokens: 3, stream: true }) });
    expect(raw.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const body = await raw.text();
    expect(body.trimEnd().endsWith('data: [DONE]')).toBe(true);
  });

  it('chat completions, streaming and not, give the same greedy reply with the chat template', async () => {
    const messages = [{ role: 'user' as const, content: 'Tell me my fortune.' }];
    const whole = await client.chat.completions.create({ model: 'kvq-tiny', messages, max_tokens: 32, temperature: 0 });
    expect(whole.object).toBe('chat.completion');
    expect(whole.choices[0]!.message.role).toBe('assistant');
    // Prompt tokens are the ChatML rendering (no BOS added by the template).
    const rendered = server.llm.model.chatTemplate!.render(messages, { addGenerationPrompt: true });
    expect(whole.usage!.prompt_tokens).toBe(server.llm.model.tokenizer.encode(rendered, { addSpecialTokens: false }).length);
    const stream = await client.chat.completions.create({ model: 'kvq-tiny', messages, max_tokens: 32, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let content = '';
    let role: string | undefined;
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const c of stream) {
      if (c.usage) usage = c.usage;
      const ch = c.choices[0];
      if (!ch) continue;
      role ??= ch.delta.role;
      content += ch.delta.content ?? '';
      finish = ch.finish_reason ?? finish;
    }
    expect(role).toBe('assistant');
    expect(content).toBe(whole.choices[0]!.message.content);
    expect(finish).toBe(whole.choices[0]!.finish_reason);
    expect(usage).toEqual(whole.usage);
  });

  it('n, seed, stop and logprobs', async () => {
    const a = await client.completions.create({ model: 'kvq-tiny', prompt: 'A fortune:', max_tokens: 16, n: 3, seed: 7, temperature: 1 });
    const b = await client.completions.create({ model: 'kvq-tiny', prompt: 'A fortune:', max_tokens: 16, n: 3, seed: 7, temperature: 1 });
    expect(a.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    expect(b.choices.map((c) => c.text)).toEqual(a.choices.map((c) => c.text));
    expect(new Set(a.choices.map((c) => c.text)).size).toBeGreaterThan(1);

    const greedy = await client.completions.create({ model: 'kvq-tiny', prompt: 'In the beginning God', max_tokens: 24, temperature: 0 });
    const full = greedy.choices[0]!.text; // " of Israel, and the LORD God of Israel, ..."
    const stopped = await client.completions.create({ model: 'kvq-tiny', prompt: 'In the beginning God', max_tokens: 24, temperature: 0, stop: ['LORD'] });
    expect(stopped.choices[0]!.finish_reason).toBe('stop');
    expect(stopped.choices[0]!.text).toBe(full.slice(0, full.indexOf('LORD')));
    // Streaming with a stop string never leaks part of it.
    const s = await client.completions.create({ model: 'kvq-tiny', prompt: 'In the beginning God', max_tokens: 24, temperature: 0, stop: ['LORD'], stream: true });
    let streamed = '';
    for await (const c of s) streamed += c.choices[0]?.text ?? '';
    expect(streamed).toBe(stopped.choices[0]!.text);

    const lp = await client.completions.create({ model: 'kvq-tiny', prompt: 'In the beginning God', max_tokens: 8, temperature: 0, logprobs: 3 });
    const l = lp.choices[0]!.logprobs!;
    expect(l.tokens).toHaveLength(8);
    expect(l.tokens!.join('')).toBe(lp.choices[0]!.text);
    for (let i = 0; i < 8; i++) {
      expect(l.token_logprobs![i]!).toBeLessThanOrEqual(0);
      const top = l.top_logprobs![i]!;
      expect(Object.keys(top).length).toBeLessThanOrEqual(3);
      // Greedy: the chosen token is the most likely one.
      expect(Math.max(...Object.values(top))).toBeCloseTo(l.token_logprobs![i]!, 6);
    }
    // logit_bias (OpenAI) and allowed_token_ids (vLLM) change what greedy decoding picks.
    const [forced] = server.llm.encode(' LORD').slice(-1);
    const biased = await client.completions.create({ model: 'kvq-tiny', prompt: 'In the beginning God', max_tokens: 4, temperature: 0, logit_bias: { [String(forced)]: 100 } });
    expect(biased.choices[0]!.text).toBe(server.llm.model.tokenizer.decode([forced!, forced!, forced!, forced!]));
    expect(biased.choices[0]!.text).not.toBe(full.slice(0, biased.choices[0]!.text.length));
    const allowed = server.llm.encode(' and the').slice(-2);
    const restricted = await client.completions.create({ model: 'kvq-tiny', prompt: 'In the beginning God', max_tokens: 6, temperature: 0, allowed_token_ids: allowed } as never);
    const restrictedIds = server.llm.encode(`In the beginning God${restricted.choices[0]!.text}`).slice(server.llm.encode('In the beginning God').length);
    for (const t of restrictedIds) expect(allowed).toContain(t);
    const chat = await client.chat.completions.create({ model: 'kvq-tiny', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 2 });
    const content = chat.choices[0]!.logprobs!.content!;
    expect(content.length).toBe(chat.usage!.completion_tokens);
    for (const c of content) expect(c.top_logprobs.length).toBe(2);
  });

  it('completions logprobs: the sampled token is always in top_logprobs (up to logprobs + 1 entries), streamed equal to non-streamed', async () => {
    const params = { model: 'kvq-tiny', prompt: 'A fortune:', max_tokens: 24, temperature: 1.5, seed: 3, logprobs: 1 } as const;
    const r = await client.completions.create(params);
    const l = r.choices[0]!.logprobs!;
    let extra = 0;
    for (let i = 0; i < l.tokens!.length; i++) {
      const top = l.top_logprobs![i]!;
      expect(top[l.tokens![i]!]).toBe(l.token_logprobs![i]);
      expect(Object.keys(top).length).toBeLessThanOrEqual(2);
      if (Object.keys(top).length === 2) extra++;
    }
    expect(extra, 'at temperature 1.5 some sampled tokens are not the most likely').toBeGreaterThan(0);
    const s = await client.completions.create({ ...params, stream: true });
    const tokens: string[] = [];
    const lps: number[] = [];
    const offsets: number[] = [];
    for await (const c of s) {
      const cl = c.choices[0]?.logprobs;
      if (!cl) continue;
      tokens.push(...cl.tokens!);
      lps.push(...cl.token_logprobs!);
      offsets.push(...cl.text_offset!);
    }
    expect(tokens).toEqual(l.tokens);
    expect(lps).toEqual(l.token_logprobs);
    expect(offsets).toEqual(l.text_offset);
  });

  it('streams n > 1 for completions (2 prompts x n=3) and chat (n=3): every index streamed, one finish per index, equal to non-streamed', async () => {
    const cparams = { model: 'kvq-tiny', prompt: ['A fortune:', 'You will meet'], max_tokens: 12, n: 3, temperature: 1, seed: 11 };
    const whole = await client.completions.create(cparams);
    expect(whole.choices.map((c) => c.index).sort()).toEqual([0, 1, 2, 3, 4, 5]);
    const text = new Map<number, string>();
    const finishes = new Map<number, string[]>();
    for await (const c of await client.completions.create({ ...cparams, stream: true })) {
      for (const ch of c.choices) {
        text.set(ch.index, (text.get(ch.index) ?? '') + ch.text);
        if (ch.finish_reason) finishes.set(ch.index, [...(finishes.get(ch.index) ?? []), ch.finish_reason]);
      }
    }
    for (const ch of whole.choices) {
      expect(text.get(ch.index), `completion index ${ch.index}`).toBe(ch.text);
      expect(finishes.get(ch.index)).toEqual([ch.finish_reason]);
    }
    expect(new Set(whole.choices.map((c) => c.text)).size).toBeGreaterThan(1);

    const messages = [{ role: 'user' as const, content: 'Tell me my fortune.' }];
    const chatParams = { model: 'kvq-tiny', messages, max_tokens: 12, n: 3, temperature: 1, seed: 5, logprobs: true, top_logprobs: 2 } as const;
    const chatWhole = await client.chat.completions.create(chatParams);
    expect(chatWhole.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    const content = new Map<number, string>();
    const roles = new Map<number, number>();
    const chatFinishes = new Map<number, string[]>();
    const lpTokens = new Map<number, string[]>();
    for await (const c of await client.chat.completions.create({ ...chatParams, stream: true })) {
      for (const ch of c.choices) {
        if (ch.delta.role) roles.set(ch.index, (roles.get(ch.index) ?? 0) + 1);
        content.set(ch.index, (content.get(ch.index) ?? '') + (ch.delta.content ?? ''));
        if (ch.finish_reason) chatFinishes.set(ch.index, [...(chatFinishes.get(ch.index) ?? []), ch.finish_reason]);
        for (const lp of ch.logprobs?.content ?? []) lpTokens.set(ch.index, [...(lpTokens.get(ch.index) ?? []), lp.token]);
      }
    }
    for (const ch of chatWhole.choices) {
      expect(roles.get(ch.index), `role delta once for index ${ch.index}`).toBe(1);
      expect(content.get(ch.index)).toBe(ch.message.content);
      expect(chatFinishes.get(ch.index)).toEqual([ch.finish_reason]);
      const entries = ch.logprobs!.content!;
      expect(lpTokens.get(ch.index)).toEqual(entries.map((e) => e.token));
      for (const e of entries) {
        // OpenAI's entry shape: token, logprob, bytes (UTF-8 of the token text; raw bytes for part of a character,
        // logprobs.e2e.test.ts), top_logprobs with the same fields.
        if (!e.token.includes('\uFFFD')) expect(e.bytes).toEqual([...Buffer.from(e.token, 'utf8')]);
        expect(e.logprob).toBeLessThanOrEqual(0);
        expect(e.top_logprobs).toHaveLength(2);
        for (const t of e.top_logprobs) if (!t.token.includes('\uFFFD')) expect(t.bytes).toEqual([...Buffer.from(t.token, 'utf8')]);
        expect(e.top_logprobs[0]!.logprob).toBeGreaterThanOrEqual(e.top_logprobs[1]!.logprob);
      }
    }
  });

  it('rejects bad requests with OpenAI-shaped errors and the right status codes', async () => {
    const expectError = async (p: Promise<unknown>, status: number, pattern: RegExp) => {
      const e = (await p.then(() => undefined, (x: unknown) => x)) as InstanceType<typeof OpenAI.APIError> | undefined;
      expect(e, 'expected an error').toBeInstanceOf(OpenAI.APIError);
      expect(e!.status).toBe(status);
      expect(e!.message).toMatch(pattern);
      expect(JSON.stringify(e!.error)).not.toMatch(/at .*\.ts:\d+/); // never a stack trace
    };
    await expectError(client.completions.create({ model: 'kvq-tiny', prompt: 'x', temperature: -1 }), 400, /temperature/);
    await expectError(client.completions.create({ model: 'gpt-4', prompt: 'x' }), 404, /gpt-4/);
    await expectError(client.completions.create({ model: 'kvq-tiny', prompt: 'x', max_tokens: 600 }), 400, /maximum context length is 512/);
    await expectError(client.completions.create({ model: 'kvq-tiny', prompt: [5000] }), 400, /outside the vocabulary/);
    await expectError(client.completions.create({ model: 'kvq-tiny', prompt: 'word '.repeat(600) }), 400, /maximum context length/);
    await expectError(client.chat.completions.create({ model: 'kvq-tiny', messages: [] }), 400, /messages/);
    await expectError(client.completions.create({ model: 'kvq-tiny', prompt: 'x', logit_bias: { '5': 101 } }), 400, /logit_bias/);
    await expectError(client.completions.create({ model: 'kvq-tiny', prompt: 'x', logit_bias: { '5000': 1 } }), 400, /logitBias.*outside the vocabulary/);

    const post = (body: string, headers: Record<string, string> = { 'content-type': 'application/json' }) => fetch(`${url}/v1/completions`, { method: 'POST', headers, body });
    const bad = await post('{"prompt": "x",');
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { type: string } }).error.type).toBe('invalid_request_error');
    const huge = await post(JSON.stringify({ model: 'kvq-tiny', prompt: 'x'.repeat(2 * 1024 * 1024) }));
    expect(huge.status).toBe(413);
    expect(((await huge.json()) as { error: { type: string } }).error).toBeDefined();
    const missing = await fetch(`${url}/v1/nothing`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { type: string } }).error.type).toBe('not_found_error');
    const m = await metrics(url);
    expect(metricValue(m, 'kvq:http_errors_total', 'status="413"')).toBeGreaterThanOrEqual(1);
  });

  it('a client that disconnects mid-stream aborts its request and frees its blocks', async () => {
    const before = await metrics(url);
    const disconnectsBefore = metricValue(before, 'kvq:client_disconnects_total');
    expect(metricValue(before, 'kvq:kv_cache_blocks_used')).toBe(0);
    const controller = new AbortController();
    const stream = await client.completions.create(
      { model: 'kvq-tiny', prompt: 'Blessed are the meek', max_tokens: 400, temperature: 0, ignore_eos: true, stream: true } as OpenAI.CompletionCreateParamsStreaming,
      { signal: controller.signal },
    );
    let seen = 0;
    let during = '';
    try {
      for await (const c of stream) {
        seen += c.choices[0]?.text.length ?? 0;
        if (seen > 20) {
          during = await metrics(url);
          controller.abort();
        }
      }
    } catch (e) {
      expect((e as Error).name).toMatch(/Abort/);
    }
    expect(metricValue(during, 'kvq:kv_cache_blocks_used')).toBeGreaterThan(0);
    expect(metricValue(during, 'vllm:num_requests_running')).toBe(1);
    await waitFor(async () => {
      const m = await metrics(url);
      return metricValue(m, 'kvq:kv_cache_blocks_used') === 0 && metricValue(m, 'vllm:num_requests_running') === 0;
    });
    const after = await metrics(url);
    expect(metricValue(after, 'kvq:client_disconnects_total')).toBe(disconnectsBefore + 1);
    expect(metricValue(after, 'vllm:request_success_total', 'finished_reason="abort"')).toBeGreaterThanOrEqual(1);
    // Far fewer than 400 tokens were generated for it.
    expect(metricValue(after, 'vllm:generation_tokens_total') - metricValue(before, 'vllm:generation_tokens_total')).toBeLessThan(400);
  });

  it('32 concurrent greedy streams complete and equal the sequential outputs', async () => {
    const prompts = Array.from({ length: 32 }, (_, i) => `${PROMPTS[i % PROMPTS.length]!}${i >= PROMPTS.length ? ` (${i})` : ''}`);
    const sequential: string[] = [];
    for (const p of prompts) {
      const r = await client.completions.create({ model: 'kvq-tiny', prompt: p, max_tokens: 20, temperature: 0 });
      sequential.push(r.choices[0]!.text);
    }
    const stepsBefore = metricValue(await metrics(url), 'kvq:engine_steps_total');
    let maxRunning = 0;
    const poll = setInterval(() => {
      void metrics(url).then((m) => (maxRunning = Math.max(maxRunning, metricValue(m, 'vllm:num_requests_running'))), () => undefined);
    }, 15);
    const concurrent = await Promise.all(
      prompts.map(async (p) => {
        const s = await client.completions.create({ model: 'kvq-tiny', prompt: p, max_tokens: 20, temperature: 0, stream: true });
        let text = '';
        let finish: string | null = null;
        for await (const c of s) {
          text += c.choices[0]?.text ?? '';
          finish = c.choices[0]?.finish_reason ?? finish;
        }
        expect(finish).not.toBeNull();
        return text;
      }),
    );
    clearInterval(poll);
    expect(concurrent).toEqual(sequential);
    const m = await metrics(url);
    // Batched: far fewer steps than 32 x 21 sequential ones, and many requests ran at once.
    expect(metricValue(m, 'kvq:engine_steps_total') - stepsBefore).toBeLessThan(32 * 21 / 4);
    expect(maxRunning).toBeGreaterThan(8);
    expect(metricValue(m, 'kvq:kv_cache_blocks_used')).toBe(0);
  });

  it('latency histograms have vLLM names and buckets, and move by one observation per request (ITL: per token after the first)', async () => {
    const histograms = [
      'vllm:time_to_first_token_seconds',
      'vllm:inter_token_latency_seconds',
      'vllm:e2e_request_latency_seconds',
      'vllm:request_queue_time_seconds',
      'vllm:request_prompt_tokens',
      'vllm:request_generation_tokens',
    ];
    const before = await metrics(url);
    for (const name of histograms) {
      expect(before).toMatch(new RegExp(`^# TYPE ${name} histogram$`, 'm'));
      expect(before).toMatch(new RegExp(`^${name}_bucket\\{le="\\+Inf",model_name="kvq-tiny"\\} `, 'm'));
    }
    // vLLM's first and last finite edges.
    expect(before).toMatch(/^vllm:time_to_first_token_seconds_bucket\{le="0.001",model_name="kvq-tiny"\}/m);
    expect(before).toMatch(/^vllm:time_to_first_token_seconds_bucket\{le="2560",model_name="kvq-tiny"\}/m);
    expect(before).toMatch(/^vllm:inter_token_latency_seconds_bucket\{le="80",model_name="kvq-tiny"\}/m);
    expect(before).toMatch(/^vllm:e2e_request_latency_seconds_bucket\{le="7680",model_name="kvq-tiny"\}/m);
    expect(before).toMatch(/^vllm:request_prompt_tokens_bucket\{le="500",model_name="kvq-tiny"\}/m); // 1-2-5 up to max_model_len 512
    const count = (m: string, name: string) => metricValue(m, `${name}_count`);
    const T = 7;
    // 4 single-sequence requests (2 streamed) and one with n = 3: 5 engine requests, 7 sequences of T tokens.
    await Promise.all([
      ...PROMPTS.slice(0, 2).map((prompt) => client.completions.create({ model: 'kvq-tiny', prompt, max_tokens: T, temperature: 0, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming)),
      ...PROMPTS.slice(2, 4).map(async (prompt) => {
        const s = await client.completions.create({ model: 'kvq-tiny', prompt, max_tokens: T, temperature: 0, ignore_eos: true, stream: true } as OpenAI.CompletionCreateParamsStreaming);
        for await (const _ of s);
      }),
      client.completions.create({ model: 'kvq-tiny', prompt: PROMPTS[4]!, max_tokens: T, n: 3, temperature: 1, seed: 1, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming),
    ]);
    const after = await metrics(url);
    for (const name of ['vllm:time_to_first_token_seconds', 'vllm:e2e_request_latency_seconds', 'vllm:request_queue_time_seconds', 'vllm:request_prompt_tokens', 'vllm:request_generation_tokens']) {
      expect(count(after, name) - count(before, name), name).toBe(5);
    }
    expect(count(after, 'vllm:inter_token_latency_seconds') - count(before, 'vllm:inter_token_latency_seconds')).toBe(7 * (T - 1));
    expect(metricValue(after, 'vllm:request_generation_tokens_sum') - metricValue(before, 'vllm:request_generation_tokens_sum')).toBe(7 * T);
    const promptSum = [0, 1, 2, 3, 4].reduce((a, i) => a + server.llm.encode(PROMPTS[i]!).length, 0);
    expect(metricValue(after, 'vllm:request_prompt_tokens_sum') - metricValue(before, 'vllm:request_prompt_tokens_sum')).toBe(promptSum);
    // Cumulative buckets: +Inf equals _count; no observation is negative.
    expect(metricValue(after, 'vllm:time_to_first_token_seconds_bucket', 'le="+Inf"')).toBe(count(after, 'vllm:time_to_first_token_seconds'));
    expect(metricValue(after, 'vllm:inter_token_latency_seconds_sum')).toBeGreaterThanOrEqual(0);
    expect(server.metrics.trackedRequests).toBe(0);
  });

  it('two servers in one process keep separate registries', async () => {
    const other = await createServer({ port: 0, kvCacheMemory: 4 << 20, servedModelName: 'other' });
    try {
      const otherUrl = await other.listen();
      const mine = count2(await metrics(url));
      const r = await new OpenAI({ baseURL: `${otherUrl}/v1`, apiKey: 'x', maxRetries: 0 }).completions.create({ model: 'other', prompt: 'Hi', max_tokens: 3 });
      expect(r.choices).toHaveLength(1);
      const theirs = await metrics(otherUrl);
      expect(metricValue(theirs, 'vllm:e2e_request_latency_seconds_count')).toBe(1);
      expect(theirs).toMatch(/model_name="other"/);
      expect(theirs).not.toMatch(/model_name="kvq-tiny"/);
      expect(count2(await metrics(url))).toBe(mine);
    } finally {
      await other.close({ graceMs: 0 });
    }
    function count2(m: string): number {
      return metricValue(m, 'vllm:e2e_request_latency_seconds_count');
    }
  });

  it("vLLM's /tokenize and /detokenize: prompt or chat messages, special tokens, token strings, typed 400s", async () => {
    const post = async (path: string, body: unknown) => {
      const r = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: r.status, json: (await r.json()) as Record<string, unknown> & { error?: { type: string; message: string; param: string | null } } };
    };
    const tok = server.llm.model.tokenizer;
    const text = 'In the beginning God';
    const a = await post('/tokenize', { model: 'kvq-tiny', prompt: text });
    expect(a.status).toBe(200);
    expect(a.json).toEqual({ count: tok.encode(text).length, max_model_len: 512, tokens: tok.encode(text) });
    const noSpecial = await post('/tokenize', { prompt: text, add_special_tokens: false, return_token_strs: true });
    expect(noSpecial.json.tokens).toEqual(tok.encode(text, { addSpecialTokens: false }));
    expect(noSpecial.json.token_strs).toEqual((noSpecial.json.tokens as number[]).map((t) => tok.idToToken(t)));
    // Chat: the same ids the chat endpoint feeds the engine (usage.prompt_tokens), with or without the generation prompt.
    const messages = [{ role: 'user', content: 'Tell me my fortune.' }];
    const chat = await post('/tokenize', { messages });
    const rendered = server.llm.model.chatTemplate!.render(messages, { addGenerationPrompt: true });
    expect(chat.json.tokens).toEqual(tok.encode(rendered, { addSpecialTokens: false }));
    const completion = await client.chat.completions.create({ model: 'kvq-tiny', messages: messages as OpenAI.ChatCompletionMessageParam[], max_tokens: 1 });
    expect(chat.json.count).toBe(completion.usage!.prompt_tokens);
    const noGen = await post('/tokenize', { messages, add_generation_prompt: false });
    expect(noGen.json.count as number).toBeLessThan(chat.json.count as number);
    // Round trip.
    const back = await post('/detokenize', { model: 'kvq-tiny', tokens: noSpecial.json.tokens });
    expect(back).toEqual({ status: 200, json: { prompt: text } });
    // Typed 400s (and 404 for an unknown model).
    const bad = async (path: string, body: unknown, status: number, param: RegExp | null, message: RegExp) => {
      const r = await post(path, body);
      expect(r.status, JSON.stringify(body)).toBe(status);
      expect(r.json.error!.message).toMatch(message);
      if (param) expect(r.json.error!.param).toMatch(param);
    };
    await bad('/detokenize', { tokens: [1, 5000] }, 400, /^tokens\[1\]$/, /5000 is outside the vocabulary/);
    await bad('/detokenize', { tokens: [-1] }, 400, /^tokens\[0\]$/, /outside the vocabulary/);
    await bad('/detokenize', { tokens: 'abc' }, 400, null, /tokens/);
    await bad('/detokenize', {}, 400, null, /tokens/);
    await bad('/tokenize', {}, 400, /^prompt$/, /prompt .* or messages/);
    await bad('/tokenize', { prompt: 'x', messages }, 400, /^messages$/, /not both/);
    await bad('/tokenize', { messages: [] }, 400, null, /messages/);
    await bad('/tokenize', { prompt: 5 }, 400, null, /prompt/);
    await bad('/tokenize', { model: 'gpt-4', prompt: 'x' }, 404, /^model$/, /gpt-4/);
    await bad('/detokenize', { model: 'gpt-4', tokens: [1] }, 404, /^model$/, /gpt-4/);
  });

  it('/metrics uses vLLM names and reports the KV cache dtype and bytes per token', async () => {
    const m = await metrics(url);
    for (const name of [
      'vllm:kv_cache_usage_perc',
      'vllm:prefix_cache_queries_total',
      'vllm:prefix_cache_hits_total',
      'vllm:num_preemptions_total',
      'vllm:num_requests_running',
      'vllm:num_requests_waiting',
      'vllm:prompt_tokens_total',
      'vllm:generation_tokens_total',
    ]) {
      expect(m).toMatch(new RegExp(`^# TYPE ${name} (gauge|counter)$`, 'm'));
      expect(Number.isFinite(metricValue(m, name))).toBe(true);
    }
    expect(metricValue(m, 'vllm:prompt_tokens_total')).toBeGreaterThan(100);
    expect(metricValue(m, 'vllm:prefix_cache_hits_total')).toBeGreaterThan(0); // repeated prompts above
    expect(m).toMatch(/kvq:kv_cache_info\{model_name="kvq-tiny",kv_cache_dtype="auto",storage_dtype="bf16",fp8="false"/);
    // kvq-tiny: 6 layers x 2 (K, V) x 2 kv heads x 64 x 2 bytes (bf16).
    expect(metricValue(m, 'kvq:kv_cache_bytes_per_token')).toBe(3072);
  });
});

describe('server options: API key, FP8 cache, shutdown, overload, engine failures', () => {
  it('with --api-key every /v1 route needs the Bearer key; /health and /metrics do not', async () => {
    const server = await createServer({ port: 0, kvCacheMemory: 4 << 20, apiKey: 'sk-test-123', servedModelName: ['tiny', 'kvq-tiny'] });
    try {
      const url = await server.listen();
      const good = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'sk-test-123', maxRetries: 0 });
      const wrong = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
      expect((await good.models.list()).data.map((m) => m.id)).toEqual(['tiny', 'kvq-tiny']);
      const r = await good.completions.create({ model: 'tiny', prompt: 'Hi', max_tokens: 2 });
      expect(r.model).toBe('tiny');
      await expect(wrong.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
      await expect(wrong.completions.create({ model: 'tiny', prompt: 'Hi', max_tokens: 2 })).rejects.toMatchObject({ status: 401 });
      const none = await fetch(`${url}/v1/models`);
      expect(none.status).toBe(401);
      expect(((await none.json()) as { error: { type: string } }).error.type).toBe('authentication_error');
      expect((await fetch(`${url}/health`)).status).toBe(200);
      expect((await fetch(`${url}/metrics`)).status).toBe(200);
    } finally {
      await server.close({ graceMs: 0 });
    }
  });

  it('serves an FP8 KV cache (half the bytes per token) and reports it', async () => {
    const server = await createServer({ port: 0, kvCacheMemory: 4 << 20, kvCacheDtype: 'fp8' });
    try {
      const url = await server.listen();
      const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 });
      const r = await client.completions.create({ model: 'kvq-tiny', prompt: 'In the beginning God', max_tokens: 12, temperature: 0 });
      expect(r.choices[0]!.text.length).toBeGreaterThan(10);
      const m = await metrics(url);
      expect(m).toMatch(/kvq:kv_cache_info\{[^}]*kv_cache_dtype="fp8",storage_dtype="e4m3fn",fp8="true"/);
      expect(metricValue(m, 'kvq:kv_cache_bytes_per_token')).toBe(1536);
      expect(m).toMatch(/vllm:cache_config_info\{block_size="16",cache_dtype="fp8"/);
      // FP8 telemetry: per layer and tensor, values written (2 KV heads x 64 per token, the same in every layer and
      // for K and V), saturated and flushed (present, whatever they count).
      const per = (name: string) =>
        [...m.matchAll(new RegExp(`^${name}\\{model_name="kvq-tiny",layer="(\\d+)",tensor="([kv])"\\} (\\S+)$`, 'gm'))].map((x) => ({ layer: Number(x[1]), tensor: x[2], value: Number(x[3]) }));
      const written = per('kvq:kv_cache_written_values_total');
      expect(written).toHaveLength(12);
      expect(new Set(written.map((w) => w.value)).size).toBe(1);
      expect(written[0]!.value % 128).toBe(0);
      expect(written[0]!.value).toBeGreaterThanOrEqual(128 * 5);
      expect(per('kvq:kv_cache_saturated_values_total')).toHaveLength(12);
      expect(per('kvq:kv_cache_flushed_values_total')).toHaveLength(12);
    } finally {
      await server.close({ graceMs: 0 });
    }
  });

  it('graceful shutdown finishes short requests, aborts long ones after the grace period, then refuses', async () => {
    const server = await createServer({ port: 0, kvCacheMemory: 4 << 20 });
    const url = await server.listen();
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 });
    const long = client.completions.create({ model: 'kvq-tiny', prompt: 'Love your enemies', max_tokens: 500, ignore_eos: true, stream: true } as OpenAI.CompletionCreateParamsStreaming);
    const stream = await long;
    const it = stream[Symbol.asyncIterator]();
    await it.next(); // generation is under way
    const closing = server.close({ graceMs: 150 });
    let finish: string | null = null;
    for (;;) {
      const { value, done } = await it.next();
      if (done) break;
      finish = value.choices[0]?.finish_reason ?? finish;
    }
    expect(finish).toBe('abort');
    await closing;
    await expect(fetch(`${url}/health`)).rejects.toThrow();
  });

  it('answers 429 beyond maxQueuedRequests', async () => {
    const server = await createServer({ port: 0, kvCacheMemory: 4 << 20, maxQueuedRequests: 1 });
    try {
      const url = await server.listen();
      const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 });
      const first = client.completions.create({ model: 'kvq-tiny', prompt: 'Hi', max_tokens: 50, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
      await waitFor(async () => server.llm.engine.numUnfinishedRequests === 1);
      await expect(client.completions.create({ model: 'kvq-tiny', prompt: 'Hi', max_tokens: 5 })).rejects.toBeInstanceOf(OpenAI.RateLimitError);
      expect((await first).choices[0]!.finish_reason).toBe('length');
    } finally {
      await server.close({ graceMs: 0 });
    }
  });

  it('an engine failure is a 500 (or a streamed error event) without internals, and the server keeps serving', async () => {
    const server = await createServer({ port: 0, kvCacheMemory: 4 << 20 });
    try {
      const url = await server.listen();
      const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'x', maxRetries: 0 });
      const engine = server.llm.engine;
      const step = engine.step.bind(engine);
      engine.step = () => {
        throw new Error('secret internal detail /home/x/file.ts:12');
      };
      const e = (await client.completions.create({ model: 'kvq-tiny', prompt: 'Hi', max_tokens: 3 }).catch((x: unknown) => x)) as InstanceType<typeof OpenAI.APIError>;
      expect(e.status).toBe(500);
      expect(e.message).toMatch(/internal server error/);
      expect(JSON.stringify(e.error)).not.toMatch(/secret|file\.ts/);
      const raw = await fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 3, stream: true }),
      });
      const text = await raw.text();
      expect(text).toMatch(/"type":"server_error"/);
      expect(text).not.toMatch(/secret/);
      expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
      engine.step = step;
      const ok = await client.completions.create({ model: 'kvq-tiny', prompt: 'Hi', max_tokens: 3 });
      expect(ok.choices[0]!.finish_reason).toBe('length');
      expect(engine.manager.metrics().numUsableBlocks - engine.manager.metrics().numFreeBlocks).toBe(0);
    } finally {
      await server.close({ graceMs: 0 });
    }
  });
});
