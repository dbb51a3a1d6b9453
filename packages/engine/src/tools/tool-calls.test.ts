import { describe, expect, it } from 'vitest';
import { checkTools, forcedToolCalls, parseToolCalls, ToolCallStreamParser, toolCallFormatOf, toolChoiceConstraint, type ToolDefinition } from './tool-calls.js';

const weather: ToolDefinition = {
  type: 'function',
  function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
};
const time: ToolDefinition = { type: 'function', function: { name: 'get_time' } };

/** Feeds text in chunks of `size` characters and collects what the stream parser emits. */
function streamed(text: string, format: 'hermes' | 'llama3_json', size: number) {
  const p = new ToolCallStreamParser(format);
  let content = '';
  const calls: { index: number; name: string; arguments: string }[] = [];
  const take = (d: ReturnType<ToolCallStreamParser['push']>) => {
    content += d.content;
    calls.push(...d.toolCalls);
  };
  for (let i = 0; i < text.length; i += size) take(p.push(text.slice(i, i + size)));
  take(p.finish());
  return { content, calls };
}

describe('tool-call formats', () => {
  it('are read from the chat template', () => {
    expect(toolCallFormatOf('{% if tools %}<tool_call>{{ tool }}</tool_call>{% endif %}')).toBe('hermes');
    expect(toolCallFormatOf('{{- "<|python_tag|>" }}')).toBe('llama3_json');
    expect(toolCallFormatOf('{% for m in messages %}{{ m.content }}{% endfor %}')).toBeUndefined();
  });

  it('hermes / Qwen: content before the first tag, every <tool_call> JSON a call', () => {
    const text = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>';
    expect(parseToolCalls(text, 'hermes')).toEqual({
      content: 'Let me check.',
      toolCalls: [
        { name: 'get_weather', arguments: '{"city":"Paris"}' },
        { name: 'get_time', arguments: '{}' },
      ],
    });
    expect(parseToolCalls('no calls here', 'hermes')).toEqual({ content: 'no calls here', toolCalls: [] });
    // malformed JSON inside the tag stays content (vLLM's parsers do the same)
    expect(parseToolCalls('<tool_call>{"name": </tool_call>', 'hermes').toolCalls).toEqual([]);
  });

  it('llama3_json: one or more {name, parameters} objects, optional <|python_tag|>, separated by ;', () => {
    expect(parseToolCalls('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}; {"name": "get_time", "parameters": {}}', 'llama3_json')).toEqual({
      content: '',
      toolCalls: [
        { name: 'get_weather', arguments: '{"city":"Oslo"}' },
        { name: 'get_time', arguments: '{}' },
      ],
    });
    expect(parseToolCalls('The weather is {fine}.', 'llama3_json').toolCalls).toEqual([]);
    expect(parseToolCalls('{"city": "Oslo"}', 'llama3_json').toolCalls).toEqual([]); // no name: not a call
  });

  it('streaming gives the same calls and content as parsing the whole text, whatever the chunking', () => {
    const hermes = 'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>';
    const llama = '{"name": "get_weather", "parameters": {"city": "Rome"}}';
    for (const size of [1, 3, 7, 1000]) {
      const h = streamed(hermes, 'hermes', size);
      expect(h.calls).toEqual([{ index: 0, name: 'get_weather', arguments: '{"city":"Rome"}' }]);
      expect(h.content.trim()).toBe('Sure.');
      const l = streamed(llama, 'llama3_json', size);
      expect(l.calls).toEqual([{ index: 0, name: 'get_weather', arguments: '{"city":"Rome"}' }]);
      expect(l.content).toBe('');
      const plain = streamed('Just text, <tool_ no call.', 'hermes', size);
      expect(plain).toEqual({ content: 'Just text, <tool_ no call.', calls: [] });
    }
  });

  it('a call is emitted as soon as it is complete, before the output ends', () => {
    const p = new ToolCallStreamParser('hermes');
    expect(p.push('<tool_call>{"name": "get_time", "arguments": {}}').toolCalls).toEqual([]);
    expect(p.push('</tool_call>\n<tool_call>').toolCalls).toEqual([{ index: 0, name: 'get_time', arguments: '{}' }]);
  });
});

describe('tool_choice', () => {
  it('required: a JSON array of {name, parameters}, each one of the tools (vLLM schema)', () => {
    const spec = toolChoiceConstraint([weather, time], 'required') as { json: { type: string; minItems: number; items: { anyOf: unknown[] } } };
    expect(spec.json.type).toBe('array');
    expect(spec.json.minItems).toBe(1);
    expect(spec.json.items.anyOf).toEqual([
      { properties: { name: { type: 'string', enum: ['get_weather'] }, parameters: weather.function.parameters }, required: ['name', 'parameters'] },
      { properties: { name: { type: 'string', enum: ['get_time'] }, parameters: { type: 'object', properties: {} } }, required: ['name', 'parameters'] },
    ]);
    expect(forcedToolCalls('[{"name": "get_time", "parameters": {}}]', 'required')).toEqual([{ name: 'get_time', arguments: '{}' }]);
  });

  it('named: the function parameters schema; the output is the arguments object', () => {
    const choice = { type: 'function', function: { name: 'get_weather' } } as const;
    expect(toolChoiceConstraint([weather, time], choice)).toEqual({ json: weather.function.parameters });
    expect(forcedToolCalls('{"city": "Lima"}', choice)).toEqual([{ name: 'get_weather', arguments: '{"city":"Lima"}' }]);
    expect(toolChoiceConstraint([weather], 'auto')).toBeUndefined();
    expect(() => forcedToolCalls('{"city": "Li', choice)).toThrow(/not complete JSON/);
  });

  it('bad tools and choices are typed errors naming the field', () => {
    expect(() => checkTools([{ type: 'function', function: {} }])).toThrow(/tools\[0\]/);
    expect(() => checkTools([weather, weather])).toThrow(/defined twice/);
    expect(() => checkTools([weather], { type: 'function', function: { name: 'nope' } })).toThrow(/not in tools/);
    expect(() => checkTools([], 'required')).toThrow(/at least one tool/);
    expect(() => checkTools([weather], 'sometimes')).toThrow(/tool_choice/);
    expect(checkTools(undefined).tools).toEqual([]);
  });
});
