import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { loadTokenizer } from '@kvq/engine';
import { modelTinyPath } from '@kvq/model-tiny';
import { afterAll, describe, expect, it } from 'vitest';

import { parseDataset, readDataset, selectSamples, tokenizeSample } from './dataset.js';
import { CalibrateError } from './errors.js';
import { tempDir } from './test-helpers.js';

const tmp = tempDir();
afterAll(() => tmp.remove());

async function codeOf(p: Promise<unknown> | (() => unknown)): Promise<CalibrateError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    expect(e).toBeInstanceOf(CalibrateError);
    return e as CalibrateError;
  }
  throw new Error('expected a CalibrateError');
}

describe('dataset parsing', () => {
  it('reads JSONL conversations and text records, skipping blank lines, with line numbers', () => {
    const d = parseDataset(
      '{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"}]}\n\n{"text":"plain"}\n',
      'x.jsonl',
      'jsonl',
    );
    expect(d.format).toBe('jsonl');
    expect(d.samples.map((s) => [s.kind, s.line])).toEqual([
      ['messages', 1],
      ['text', 3],
    ]);
    expect(d.sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('auto-detects text lines and JSONL', () => {
    expect(parseDataset('a line\nanother\n').format).toBe('text');
    expect(parseDataset('\n{"text":"t"}').format).toBe('jsonl');
  });

  it('names the malformed line (bad JSON, wrong shape, bad message)', async () => {
    const bad = ['{"text":"ok"}\n{"text": oops}\n', '{"text":"ok"}\n\n[1,2]\n', '{"messages":[{"content":"no role"}]}', '{"prompt":"x"}'];
    const lines = [2, 3, 1, 1];
    for (const [i, content] of bad.entries()) {
      const e = await codeOf(() => parseDataset(content, 'd.jsonl', 'jsonl'));
      expect(e.code).toBe('DATASET_MALFORMED');
      expect(e.line).toBe(lines[i]);
      expect(e.message).toContain(`d.jsonl line ${lines[i]}`);
    }
  });

  it('an empty dataset, a missing file and a folder are typed errors', async () => {
    expect((await codeOf(() => parseDataset('\n  \n', 'e.txt'))).code).toBe('DATASET_EMPTY');
    expect((await codeOf(readDataset([]))).code).toBe('DATASET_EMPTY');
    const missing = await codeOf(readDataset(join(tmp.dir, 'nope.jsonl')));
    expect(missing.code).toBe('DATASET_NOT_FOUND');
    expect(missing.message).toContain('nope.jsonl');
    expect((await codeOf(readDataset(tmp.dir))).code).toBe('DATASET_NOT_FOUND');
  });

  it('reads files by extension; the hash is of the bytes', async () => {
    const file = join(tmp.dir, 'd.txt');
    writeFileSync(file, '{"text":"this is text, not json"}\nsecond\n');
    const d = await readDataset(file);
    expect(d.format).toBe('text');
    expect(d.samples).toHaveLength(2);
    expect(d.sha256).toBe(parseDataset('{"text":"this is text, not json"}\nsecond\n', 'x', 'text').sha256);
  });
});

describe('seeded selection', () => {
  const items = Array.from({ length: 50 }, (_, i) => i);
  it('is a deterministic permutation prefix for a seed; other seeds differ', () => {
    const a = selectSamples(items, 10, 42);
    expect(selectSamples(items, 10, 42)).toEqual(a);
    expect(selectSamples(items, 10, 43)).not.toEqual(a);
    expect(new Set(a).size).toBe(10);
    expect([...selectSamples(items, 100, 1)].sort((x, y) => x - y)).toEqual(items);
  });
  it('rejects bad numSamples / seed', async () => {
    expect((await codeOf(() => selectSamples(items, 0, 1))).code).toBe('INVALID_ARGUMENT');
    expect((await codeOf(() => selectSamples(items, 1, -1))).code).toBe('INVALID_ARGUMENT');
  });
});

describe('tokenization', () => {
  it('renders conversations with the chat template, encodes without extra special tokens, truncates', async () => {
    const { tokenizer, chatTemplate } = await loadTokenizer(modelTinyPath);
    const messages = [
      { role: 'user', content: 'Continue: In the beginning' },
      { role: 'assistant', content: 'God created the heaven and the earth.' },
    ];
    const ids = tokenizeSample({ kind: 'messages', messages, line: 1 }, { tokenizer, chatTemplate }, 2048);
    const rendered = chatTemplate!.render(messages, { addGenerationPrompt: false });
    expect(rendered.startsWith('<|im_start|>user\n')).toBe(true);
    expect(ids).toEqual(tokenizer.encode(rendered, { addSpecialTokens: false }));
    expect(ids[0]).not.toBe(tokenizer.bosTokenId);
    const text = tokenizeSample({ kind: 'text', text: 'In the beginning', line: 1 }, { tokenizer, chatTemplate }, 2048);
    expect(text[0]).toBe(tokenizer.bosTokenId);
    expect(tokenizeSample({ kind: 'messages', messages, line: 1 }, { tokenizer, chatTemplate }, 5)).toEqual(ids.slice(0, 5));
  });

  it('a conversation for a model without chat template is NO_CHAT_TEMPLATE naming the line', async () => {
    const { tokenizer } = await loadTokenizer(modelTinyPath);
    const e = await codeOf(() => tokenizeSample({ kind: 'messages', messages: [{ role: 'user', content: 'x' }], line: 7 }, { tokenizer, chatTemplate: undefined }, 10, 'c.jsonl'));
    expect(e.code).toBe('NO_CHAT_TEMPLATE');
    expect(e.line).toBe(7);
  });
});
