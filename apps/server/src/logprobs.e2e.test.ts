import { loadTokenizer } from '@kvq/engine';
import { modelTinyPath } from '@kvq/model-tiny';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type KvqServer } from './server.js';

/**
 * Logprobs end to end with the official `openai` client: vLLM's `prompt_logprobs` extra on both endpoints (per
 * choice on /v1/completions, at the top level of a /v1/chat/completions response as vLLM's
 * `ChatCompletionResponse`, the chat values equal to those of the same token ids sent as a completion prompt, a 400
 * with `stream`), and chat logprobs `bytes` of tokens that hold part of a multi-byte character (raw bytes, as OpenAI).
 */
type Entry = Record<string, { logprob: number; rank: number; decoded_token: string | null }>;

describe('logprobs (kvq-tiny, openai client)', () => {
  let server: KvqServer;
  let url: string;
  let client: OpenAI;

  beforeAll(async () => {
    server = await createServer({ port: 0, kvCacheMemory: 16 << 20, maxNumSeqs: 16 });
    url = await server.listen();
    client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'not-needed', maxRetries: 0 });
  });
  afterAll(async () => {
    await server.close({ graceMs: 0 });
  });

  /** Checks one prompt_logprobs list against the prompt ids: null first, then the prompt token with its rank, up to k + 1 entries. */
  function checkShape(list: (Entry | null)[], ids: number[], k: number): void {
    expect(list).toHaveLength(ids.length);
    expect(list[0]).toBeNull();
    for (let i = 1; i < ids.length; i++) {
      const e = list[i]!;
      const own = e[String(ids[i])]!;
      expect(own, `position ${i}`).toBeDefined();
      expect(own.logprob).toBeLessThanOrEqual(0);
      expect(own.rank).toBeGreaterThanOrEqual(1);
      expect(typeof own.decoded_token).toBe('string');
      const entries = Object.values(e);
      expect(entries.length).toBeLessThanOrEqual(k + 1);
      expect(entries.length).toBeGreaterThanOrEqual(Math.min(k, 1));
      // The top alternatives are ranks 1..k; the prompt token is among them or ranked below.
      const ranks = entries.map((x) => x.rank).sort((a, b) => a - b);
      expect(ranks.slice(0, k)).toEqual(Array.from({ length: k }, (_, r) => r + 1));
      if (own.rank === 1) expect(own.logprob).toBeCloseTo(Math.max(...entries.map((x) => x.logprob)), 6);
    }
  }

  it('chat: prompt_logprobs at the top level, one entry per rendered prompt token, equal to the completions values', async () => {
    const messages = [{ role: 'user' as const, content: 'Tell me a story about a dog.' }];
    const chat = (await client.chat.completions.create({ model: 'kvq-tiny', messages, max_tokens: 3, temperature: 0, prompt_logprobs: 2 } as never)) as unknown as OpenAI.ChatCompletion & {
      prompt_logprobs?: (Entry | null)[];
    };
    const tok = (await (await fetch(`${url}/tokenize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages }) })).json()) as { tokens: number[] };
    expect(chat.usage!.prompt_tokens).toBe(tok.tokens.length);
    expect(chat.choices[0]).not.toHaveProperty('prompt_logprobs');
    checkShape(chat.prompt_logprobs!, tok.tokens, 2);

    const cmpl = (await client.completions.create({ model: 'kvq-tiny', prompt: tok.tokens, max_tokens: 1, temperature: 0, prompt_logprobs: 2 } as never)) as unknown as OpenAI.Completion & {
      choices: { prompt_logprobs?: (Entry | null)[] }[];
    };
    checkShape(cmpl.choices[0]!.prompt_logprobs!, tok.tokens, 2);
    const close = (a: (Entry | null)[], b: (Entry | null)[]) => {
      for (let i = 1; i < a.length; i++) {
        expect(Object.keys(a[i]!).sort()).toEqual(Object.keys(b[i]!).sort());
        for (const [id, x] of Object.entries(a[i]!)) {
          expect(x.rank).toBe(b[i]![id]!.rank);
          expect(x.decoded_token).toBe(b[i]![id]!.decoded_token);
          expect(x.logprob).toBeCloseTo(b[i]![id]!.logprob, 5);
        }
      }
    };
    close(chat.prompt_logprobs!, cmpl.choices[0]!.prompt_logprobs!);

    const none = (await client.chat.completions.create({ model: 'kvq-tiny', messages, max_tokens: 1, temperature: 0 })) as unknown as Record<string, unknown>;
    expect(none).not.toHaveProperty('prompt_logprobs');
  });

  it('prompt_logprobs 0 gives only the prompt token per position (n > 1 shares one list)', async () => {
    const messages = [{ role: 'user' as const, content: 'Hi' }];
    const chat = (await client.chat.completions.create({ model: 'kvq-tiny', messages, max_tokens: 2, n: 2, temperature: 1, seed: 1, prompt_logprobs: 0 } as never)) as unknown as OpenAI.ChatCompletion & {
      prompt_logprobs: (Entry | null)[];
    };
    expect(chat.choices).toHaveLength(2);
    expect(chat.prompt_logprobs).toHaveLength(chat.usage!.prompt_tokens);
    for (const e of chat.prompt_logprobs.slice(1)) expect(Object.keys(e!)).toHaveLength(1);
  });

  it('with stream, prompt_logprobs > 0 is a 400 naming the field on both endpoints (vLLM); 0 streams', async () => {
    for (const [path, body] of [
      ['/v1/chat/completions', { messages: [{ role: 'user', content: 'Hi' }] }],
      ['/v1/completions', { prompt: 'Hi' }],
    ] as const) {
      const r = await fetch(`${url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...body, max_tokens: 2, stream: true, prompt_logprobs: 1 }),
      });
      expect(r.status, path).toBe(400);
      const err = (await r.json()) as { error: { message: string; param: string | null } };
      expect(err.error.message).toBe('`prompt_logprobs` are not available when `stream=True`.');
      expect(err.error.param).toBe('prompt_logprobs');
      const ok = await fetch(`${url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...body, max_tokens: 2, stream: true, prompt_logprobs: 0 }),
      });
      expect(ok.status, path).toBe(200);
      expect(await ok.text()).toMatch(/data: \[DONE\]/);
    }
  });

  it('chat logprobs bytes: a token holding half of a UTF-8 character gives its raw byte, streamed and not', async () => {
    const { tokenizer } = await loadTokenizer(modelTinyPath);
    const lead = tokenizer.tokenToId('Ã')!; // byte-level piece of byte 0xC3 alone
    expect(tokenizer.decode([lead])).toBe('\uFFFD');
    const params = {
      model: 'kvq-tiny',
      messages: [{ role: 'user' as const, content: 'Hi' }],
      max_tokens: 1,
      temperature: 0,
      logprobs: true,
      top_logprobs: 2,
      logit_bias: { [String(lead)]: 100 },
    };
    const whole = await client.chat.completions.create(params);
    const [entry] = whole.choices[0]!.logprobs!.content!;
    expect(entry!.token).toBe('\uFFFD');
    expect(entry!.bytes).toEqual([0xc3]);
    // The alternatives are the model's own (logprobs come before logit_bias, as vLLM's raw logprobs): text tokens.
    expect(entry!.top_logprobs).toHaveLength(2);
    for (const t of entry!.top_logprobs) if (!t.token.includes('\uFFFD')) expect(t.bytes).toEqual([...Buffer.from(t.token, 'utf8')]);
    let streamed: number[] | undefined;
    for await (const c of await client.chat.completions.create({ ...params, stream: true })) {
      for (const lp of c.choices[0]?.logprobs?.content ?? []) streamed = lp.bytes ?? undefined;
    }
    expect(streamed).toEqual([0xc3]);
  });
});
