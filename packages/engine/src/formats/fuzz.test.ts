import { readFileSync } from 'node:fs';

import { seededRandom } from '@kvq/test-utils';
import { describe, expect, it } from 'vitest';

import { EngineError } from '../errors.js';
import { MemorySource } from '../io/source.js';
import { loadGgufFromSource } from '../load/gguf.js';
import { readHfWeights } from '../load/hf.js';
import { llama2cTokenizer, loadLlama2cFromSource } from '../load/llama2c.js';
import { randomHfTensors, testData, tinyConfig } from '../testing/fixtures.js';
import { Tokenizer } from '../tokenizer/tokenizer.js';
import { encodeSafetensors, readSafetensorsHeader } from './safetensors.js';

/**
 * Random truncations and byte flips of every binary format the engine parses must end in a typed EngineError or
 * a valid parse — never another exception, never a hang (each case runs to completion inside the test timeout).
 * Mutations favour the header, where a flipped byte changes structure rather than a weight value.
 */
type Outcome = 'ok' | EngineError['code'];

function mutate(bytes: Uint8Array, rand: () => number, headerBytes: number): Uint8Array {
  if (rand() < 0.35) return bytes.slice(0, Math.floor(rand() * bytes.length));
  const out = bytes.slice();
  const flips = 1 + Math.floor(rand() * 4);
  for (let i = 0; i < flips; i++) {
    const pos = rand() < 0.8 ? Math.floor(rand() * Math.min(headerBytes, out.length)) : Math.floor(rand() * out.length);
    out[pos] = rand() < 0.5 ? out[pos]! ^ (1 << Math.floor(rand() * 8)) : Math.floor(rand() * 256);
  }
  return out;
}

async function outcome(run: () => Promise<unknown>): Promise<Outcome> {
  try {
    await run();
    return 'ok';
  } catch (e) {
    if (e instanceof EngineError) return e.code;
    throw e;
  }
}

function tally(outcomes: Outcome[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const o of outcomes) counts[o] = (counts[o] ?? 0) + 1;
  return counts;
}

describe('fuzzing the file parsers', () => {
  it('GGUF (stories260K.gguf): typed error or valid model', async () => {
    const bytes = new Uint8Array(readFileSync(testData.storiesGguf));
    const rand = seededRandom(1234);
    const outcomes: Outcome[] = [];
    for (let i = 0; i < 160; i++) {
      const input = mutate(bytes, rand, 14_200);
      outcomes.push(
        await outcome(async () => {
          const m = await loadGgufFromSource(new MemorySource(input, 'fuzz.gguf'));
          m.tokenizer.decode(m.tokenizer.encode('Once upon a time 日本'));
        }),
      );
    }
    const counts = tally(outcomes);
    expect(counts.ok).toBeGreaterThan(0);
    expect(Object.keys(counts).length).toBeGreaterThan(2);
  });

  it('llama2.c checkpoint and tokenizer.bin: typed error or valid model', async () => {
    const model = new Uint8Array(readFileSync(testData.storiesBin));
    const tok = new Uint8Array(readFileSync(testData.storiesTok));
    const rand = seededRandom(99);
    const outcomes: Outcome[] = [];
    for (let i = 0; i < 120; i++) {
      const m = rand() < 0.5 ? mutate(model, rand, 28) : model;
      const t = m === model ? mutate(tok, rand, tok.length) : tok;
      outcomes.push(
        await outcome(async () => {
          const loaded = await loadLlama2cFromSource(new MemorySource(m, 'fuzz.bin'), t, 'fuzz-tok.bin');
          loaded.tokenizer.decode(loaded.tokenizer.encode('Once upon a time'));
        }),
      );
      outcomes.push(await outcome(() => Promise.resolve(llama2cTokenizer(t, 'fuzz-tok.bin'))));
    }
    const counts = tally(outcomes);
    expect(counts.ok).toBeGreaterThan(0);
    expect((counts.TRUNCATED ?? 0) + (counts.MALFORMED ?? 0)).toBeGreaterThan(0);
  });

  it('safetensors: typed error or valid weights', async () => {
    const config = tinyConfig();
    const bytes = encodeSafetensors(randomHfTensors(config));
    const headerBytes = 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const rand = seededRandom(7);
    const outcomes: Outcome[] = [];
    for (let i = 0; i < 250; i++) {
      const input = mutate(bytes, rand, headerBytes);
      outcomes.push(
        await outcome(async () => {
          const source = new MemorySource(input, 'fuzz.safetensors');
          await readHfWeights(config, [{ source, header: await readSafetensorsHeader(source) }], undefined, 'config.json');
        }),
      );
    }
    const counts = tally(outcomes);
    expect(counts.ok).toBeGreaterThan(0);
    expect(counts.MALFORMED).toBeGreaterThan(0);
  });

  it('tokenizer.json: structural mutations give a typed error or a working tokenizer', async () => {
    const original = JSON.parse(readFileSync(`${testData.kvqTiny}/tokenizer.json`, 'utf8')) as Record<string, unknown>;
    const rand = seededRandom(5);
    const randomValue = (): unknown =>
      [null, 0, -1, 1.5, 'x', '', true, [], [1, 'a'], {}, { type: 'Sequence' }, { type: 'BPE' }][Math.floor(rand() * 12)];
    const outcomes: Outcome[] = [];
    for (let i = 0; i < 150; i++) {
      const json = structuredClone(original);
      // Walk down a random path (top-level key, then nested keys/indices) and replace what is there.
      let node: Record<string, unknown> = json;
      for (let depth = 0; depth < 3; depth++) {
        const keys = Object.keys(node).filter((k) => k !== 'vocab' || rand() < 0.1);
        if (keys.length === 0) break;
        const key = keys[Math.floor(rand() * keys.length)]!;
        const child = node[key];
        if (depth < 2 && typeof child === 'object' && child !== null && rand() < 0.6) {
          node = child as Record<string, unknown>;
          continue;
        }
        node[key] = randomValue();
        break;
      }
      outcomes.push(
        await outcome(() => {
          const t = Tokenizer.fromJson(json);
          t.decode(t.encode('In the beginning <|im_start|> 🦙'));
          return Promise.resolve();
        }),
      );
    }
    const counts = tally(outcomes);
    expect(counts.ok).toBeGreaterThan(0);
    expect(Object.keys(counts).length).toBeGreaterThan(1);
  });
});
