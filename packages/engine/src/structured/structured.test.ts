import { modelTinyPath } from '@kvq/model-tiny';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LLM } from '../llm/llm.js';
import { engineErrorOfAsync } from '../testing/fixtures.js';
import { checkStructuredOutputs, vocabTypeOf } from './structured.js';

let llm: LLM;
beforeAll(async () => {
  // The native CPU backend when it loads (the reference one otherwise): the grammar masks are backend independent.
  llm = await LLM.create({ model: modelTinyPath, kvCacheMemory: 8 << 20, onWarning: () => {} });
});
afterAll(() => llm.dispose());

const schema = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 12 },
    age: { type: 'integer', minimum: 0, maximum: 120 },
    pet: { enum: ['dog', 'cat'] },
  },
  required: ['name', 'age', 'pet'],
};

/** A hand check of the schema above (independent of the grammar engine). */
function valid(value: unknown): boolean {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const v = value as Record<string, unknown>;
  return (
    Object.keys(v).every((k) => ['name', 'age', 'pet'].includes(k)) &&
    typeof v.name === 'string' &&
    v.name.length <= 12 &&
    Number.isInteger(v.age) &&
    (v.age as number) >= 0 &&
    (v.age as number) <= 120 &&
    (v.pet === 'dog' || v.pet === 'cat')
  );
}

describe('structured outputs (xgrammar)', () => {
  it('json schema: 12 seeded samples at temperature 1 all parse and validate', async () => {
    const prompts = Array.from({ length: 12 }, () => 'The record:');
    const outs = await llm.generate(prompts, { temperature: 1, seed: 5, maxTokens: 64, structuredOutputs: { json: schema } });
    for (const out of outs) {
      const o = out.outputs[0]!;
      expect(o.finishReason, o.text).toBe('stop');
      expect(valid(JSON.parse(o.text)), o.text).toBe(true);
    }
    // Unconstrained, the same model does not write JSON.
    const [free] = await llm.generate('The record:', { temperature: 1, seed: 5, maxTokens: 32 });
    expect(() => JSON.parse(free!.outputs[0]!.text)).toThrow();
  });

  it('json_object, n = 3: every completion is a JSON object', async () => {
    const [out] = await llm.generate('Data:', { n: 3, temperature: 0.8, seed: 2, maxTokens: 64, structuredOutputs: { json: { type: 'object', properties: { a: { type: 'integer', minimum: 0, maximum: 999 } }, required: ['a'] } } });
    expect(out!.outputs).toHaveLength(3);
    for (const o of out!.outputs) {
      expect(o.finishReason, o.text).toBe('stop');
      expect(typeof (JSON.parse(o.text) as { a: unknown }).a).toBe('number');
    }
    const [obj] = await llm.generate('Data:', { temperature: 0, maxTokens: 48, structuredOutputs: { jsonObject: true } });
    const text = obj!.outputs[0]!.text;
    if (obj!.outputs[0]!.finishReason === 'stop') expect(typeof JSON.parse(text)).toBe('object');
    else expect(text.trimStart().startsWith('{')).toBe(true); // greedy may fill max_tokens inside a string; still an object's prefix
  });

  it('choice, regex and an EBNF grammar constrain greedy and sampled output', async () => {
    const choices = ['yes', 'no', 'maybe later'];
    for (const seed of [1, 2, 3]) {
      const [c] = await llm.generate('Is it so?', { temperature: 1, seed, maxTokens: 8, structuredOutputs: { choice: choices } });
      expect(choices).toContain(c!.outputs[0]!.text);
    }
    const [r] = await llm.generate('Call me at', { temperature: 1, seed: 4, maxTokens: 16, structuredOutputs: { regex: '[0-9]{3}-[0-9]{4}' } });
    expect(r!.outputs[0]!.text).toMatch(/^[0-9]{3}-[0-9]{4}$/);
    const [g] = await llm.generate('Say', { temperature: 1, seed: 6, maxTokens: 24, structuredOutputs: { grammar: 'root ::= "(" item ("," item)* ")"\nitem ::= [a-z]+' } });
    expect(g!.outputs[0]!.text).toMatch(/^\([a-z]+(,[a-z]+)*\)$/);
  });

  it('streams constrained output too', async () => {
    let text = '';
    for await (const d of llm.stream('Is it so?', { temperature: 0, maxTokens: 8, structuredOutputs: { choice: ['absolutely', 'never'] } })) text += d.text;
    expect(['absolutely', 'never']).toContain(text);
  });

  it('bad specs are typed errors: shape (INVALID_ARGUMENT) and content (STRUCTURED_OUTPUT)', async () => {
    expect(() => checkStructuredOutputs({})).toThrow(/exactly one of/);
    expect(() => checkStructuredOutputs({ regex: 'a', choice: ['b'] })).toThrow(/exactly one of/);
    expect(() => checkStructuredOutputs({ choice: [] })).toThrow(/choice/);
    expect((await engineErrorOfAsync(llm.generate('x', { structuredOutputs: { grammar: 'root ::= (' } }))).code).toBe('STRUCTURED_OUTPUT');
    expect((await engineErrorOfAsync(llm.generate('x', { structuredOutputs: { json: { type: 'nonsense' } } }))).code).toBe('STRUCTURED_OUTPUT');
    expect((await engineErrorOfAsync(llm.generate('x', { structuredOutputs: { regex: '(' } }))).code).toBe('STRUCTURED_OUTPUT');
    // A bare engine without compiled constraints refuses instead of ignoring the spec.
    expect(() => llm.engine.addRequest('bare', [1, 2], { structuredOutputs: { choice: ['a'] } })).toThrow(/options\.constraints/);
  });

  it('reads the vocabulary type from tokenizer.json as xgrammar needs it', () => {
    expect(vocabTypeOf({ decoder: { type: 'ByteLevel' } })).toEqual({ vocabType: 'byte_level', prependSpace: false });
    const llama2 = {
      normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' }, { type: 'Replace' }] },
      decoder: { type: 'Sequence', decoders: [{ type: 'Replace' }, { type: 'ByteFallback' }, { type: 'Fuse' }] },
    };
    expect(vocabTypeOf(llama2)).toEqual({ vocabType: 'byte_fallback', prependSpace: true });
    expect(vocabTypeOf({ pre_tokenizer: { type: 'Metaspace', prepend_scheme: 'first' }, decoder: { type: 'Metaspace' } })).toEqual({ vocabType: 'raw', prependSpace: true });
  });
});
