import { ChatTemplate, loadModel } from '@kvq/engine';
import { modelTinyPath } from '@kvq/model-tiny';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type KvqServer } from './server.js';

/**
 * Structured outputs and tool calling end to end with the official `openai` client. kvq-tiny gets a small
 * Hermes-style chat template (tools in the system turn, calls as `<tool_call>` JSON), so the tool paths run on the
 * embedded model.
 */
const HERMES_TEMPLATE = [
  '{%- if tools %}<|system|>Tools: {{ tools | tojson }}\n{% endif %}',
  '{%- for m in messages %}<|{{ m.role }}|>{% if m.content %}{{ m.content }}{% endif %}',
  '{%- if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}</tool_call>{% endfor %}{% endif %}\n',
  '{%- endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}',
].join('');

const personSchema = {
  type: 'object',
  properties: { name: { type: 'string', maxLength: 10 }, age: { type: 'integer', minimum: 0, maximum: 99 } },
  required: ['name', 'age'],
  additionalProperties: false,
};
const isPerson = (v: unknown): boolean => {
  const o = v as { name?: unknown; age?: unknown };
  return (
    typeof v === 'object' && v !== null && Object.keys(v).sort().join() === 'age,name' && typeof o.name === 'string' && o.name.length <= 10 && Number.isInteger(o.age) && (o.age as number) >= 0 && (o.age as number) <= 99
  );
};
const weather = {
  type: 'function' as const,
  function: { name: 'get_weather', description: 'Weather of a city', parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 12 } }, required: ['city'], additionalProperties: false } },
};
/** A `tool_calls` entry as a function call (openai's type also allows custom tools, which kvq never returns). */
const fn = (c: OpenAI.ChatCompletionMessageToolCall): { name: string; arguments: string } => {
  expect(c.type).toBe('function');
  return (c as { function: { name: string; arguments: string } }).function;
};
const clock = { type: 'function' as const, function: { name: 'get_time', parameters: { type: 'object', properties: {}, additionalProperties: false } } };

describe('structured outputs and tools (kvq-tiny, openai client)', () => {
  let server: KvqServer;
  let client: OpenAI;

  beforeAll(async () => {
    const base = await loadModel(modelTinyPath);
    const model = { ...base, chatTemplate: new ChatTemplate(HERMES_TEMPLATE, base.tokenizer.specialTokens) };
    server = await createServer({ model, servedModelName: 'model', port: 0, kvCacheMemory: 32 << 20, maxNumSeqs: 128, onWarning: () => {} });
    client = new OpenAI({ baseURL: `${await server.listen()}/v1`, apiKey: 'x', maxRetries: 0 });
  });
  afterAll(async () => {
    await server.close({ graceMs: 0 });
  });

  it('response_format json_schema: 100 seeded samples at temperature 1 all parse and validate', async () => {
    const requests = Array.from({ length: 10 }, (_, i) =>
      client.chat.completions.create({
        model: 'model',
        messages: [{ role: 'user', content: 'Describe a person.' }],
        temperature: 1,
        seed: 100 + i,
        n: 10,
        max_tokens: 64,
        response_format: { type: 'json_schema', json_schema: { name: 'person', schema: personSchema, strict: true } },
      }),
    );
    const outs = await Promise.all(requests);
    const texts = outs.flatMap((r) => r.choices.map((c) => c.message.content ?? ''));
    expect(texts).toHaveLength(100);
    for (const t of texts) expect(isPerson(JSON.parse(t)), t).toBe(true);
    expect(new Set(texts).size).toBeGreaterThan(10); // sampled, not one greedy answer
  }, 180_000);

  it('completions take structured_outputs (vLLM) and response_format json_object', async () => {
    const c = await client.completions.create({ model: 'model', prompt: 'Answer:', max_tokens: 8, temperature: 1, seed: 3, structured_outputs: { choice: ['yes', 'no'] } } as never);
    expect(['yes', 'no']).toContain(c.choices[0]!.text);
    const r = await client.completions.create({ model: 'model', prompt: 'Data:', max_tokens: 12, temperature: 1, seed: 4, structured_outputs: { regex: '[A-Z]{2}-[0-9]{3}' } } as never);
    expect(r.choices[0]!.text).toMatch(/^[A-Z]{2}-[0-9]{3}$/);
    const o = await client.chat.completions.create({ model: 'model', messages: [{ role: 'user', content: 'x' }], max_tokens: 64, temperature: 0, response_format: { type: 'json_object' } });
    const text = o.choices[0]!.message.content!;
    if (o.choices[0]!.finish_reason === 'stop') expect(typeof JSON.parse(text)).toBe('object');
    else expect(text.startsWith('{')).toBe(true);
  });

  it('a named tool_choice returns that call with arguments that follow its schema, then a tool round trip', async () => {
    const r = await client.chat.completions.create({
      model: 'model',
      messages: [{ role: 'user', content: 'Weather in Paris?' }],
      tools: [weather, clock],
      tool_choice: { type: 'function', function: { name: 'get_weather' } },
      max_tokens: 32,
      temperature: 1,
      seed: 9,
    });
    const call = r.choices[0]!.message.tool_calls![0]!;
    expect(call.type).toBe('function');
    expect(call.id).toMatch(/^call_/);
    expect(fn(call).name).toBe('get_weather');
    expect(typeof (JSON.parse(fn(call).arguments) as { city: unknown }).city).toBe('string');
    // The assistant's call and the tool's result go back through the chat template.
    const follow = await client.chat.completions.create({
      model: 'model',
      messages: [
        { role: 'user', content: 'Weather in Paris?' },
        { role: 'assistant', content: null, tool_calls: [call] },
        { role: 'tool', tool_call_id: call.id, content: '{"temperature": 21}' },
      ],
      tools: [weather, clock],
      max_tokens: 8,
      temperature: 0,
    });
    expect(follow.choices[0]!.message.role).toBe('assistant');
  });

  it('tool_choice required returns at least one call of the given tools, streamed or not', async () => {
    // vLLM's schema lets the array grow without bound; a bias on "]" makes the tiny model close it after a call.
    const close = server.llm.model.tokenizer.encode(']', { addSpecialTokens: false });
    const req = { model: 'model', messages: [{ role: 'user' as const, content: 'Time?' }], tools: [weather, clock], tool_choice: 'required' as const, max_tokens: 128, temperature: 1, seed: 2, logit_bias: { [String(close[0])]: 10 } };
    const r = await client.chat.completions.create(req);
    expect(r.choices[0]!.finish_reason).toBe('stop');
    const calls = r.choices[0]!.message.tool_calls!;
    expect(calls.length).toBeGreaterThan(0);
    for (const c of calls) expect(['get_weather', 'get_time']).toContain(fn(c).name);
    const s = await client.chat.completions.create({ ...req, stream: true });
    const streamed: { name?: string; arguments?: string }[] = [];
    for await (const chunk of s) for (const tc of chunk.choices[0]?.delta.tool_calls ?? []) streamed[tc.index] = { name: tc.function?.name, arguments: (streamed[tc.index]?.arguments ?? '') + (tc.function?.arguments ?? '') };
    expect(streamed.map((c) => ({ name: c.name, arguments: JSON.parse(c.arguments!) as unknown }))).toEqual(calls.map((c) => ({ name: fn(c).name, arguments: JSON.parse(fn(c).arguments) as unknown })));
  }, 180_000);

  it('tool_choice auto parses <tool_call> output into tool_calls (finish_reason tool_calls), streamed or not', async () => {
    // The model is made to write a Hermes call by a grammar, so the parser path runs on a tiny model.
    const grammar = 'root ::= "Checking.<tool_call>{\\"name\\": \\"get_weather\\", \\"arguments\\": {\\"city\\": \\"Oslo\\"}}</tool_call>"';
    const body = { model: 'model', messages: [{ role: 'user' as const, content: 'Weather in Oslo?' }], tools: [weather], max_tokens: 256, temperature: 0, structured_outputs: { grammar } };
    const r = await client.chat.completions.create(body as never);
    const choice = (r as OpenAI.ChatCompletion).choices[0]!;
    expect(choice.finish_reason).toBe('tool_calls');
    expect(choice.message.content).toBe('Checking.');
    expect(choice.message.tool_calls!.map((c) => [fn(c).name, JSON.parse(fn(c).arguments)])).toEqual([['get_weather', { city: 'Oslo' }]]);
    const s = (await client.chat.completions.create({ ...body, stream: true } as never)) as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>;
    let content = '';
    const calls: string[] = [];
    let finish: string | null = null;
    for await (const chunk of s) {
      const c = chunk.choices[0];
      if (!c) continue;
      content += c.delta.content ?? '';
      for (const tc of c.delta.tool_calls ?? []) calls.push(`${tc.function?.name}:${tc.function?.arguments}`);
      finish = c.finish_reason ?? finish;
    }
    expect(content).toBe('Checking.');
    expect(calls).toEqual(['get_weather:{"city":"Oslo"}']);
    expect(finish).toBe('tool_calls');
  }, 180_000);

  it('bad tool requests are 400s naming the field', async () => {
    const bad = async (p: Promise<unknown>, pattern: RegExp) => {
      const e = (await p.then(() => undefined, (x: unknown) => x)) as InstanceType<typeof OpenAI.APIError>;
      expect(e).toBeInstanceOf(OpenAI.APIError);
      expect(e.status).toBe(400);
      expect(e.message).toMatch(pattern);
    };
    const msgs = [{ role: 'user' as const, content: 'x' }];
    await bad(client.chat.completions.create({ model: 'model', messages: msgs, tools: [weather], tool_choice: { type: 'function', function: { name: 'nope' } } }), /not in tools/);
    await bad(client.chat.completions.create({ model: 'model', messages: msgs, tool_choice: 'required' }), /at least one tool/);
    await bad(client.chat.completions.create({ model: 'model', messages: msgs, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'nonsense' } } } }), /json|schema/i);
    await bad(client.chat.completions.create({ model: 'model', messages: msgs, response_format: { type: 'json_object' }, structured_outputs: { choice: ['a'] } } as never), /not both/);
  });
});
