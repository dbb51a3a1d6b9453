import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { hfNameOfGguf, loadModel, permuteRotaryRows, weightsByHfName, type Tensor } from '@kvq/engine';
import { modelTinyPath } from '@kvq/model-tiny';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { BenchPeerError } from '../errors.js';
import { writeHfModelAsGguf } from './from-hf.js';
import { llamaTensorSlots, SYNTHETIC_VOCAB, syntheticVocab, type LlamaShape } from './llama.js';
import { randomTensorValues, toGgmlData, writeRandomLlamaGguf } from './random-model.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kvq-bench-peer-test-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const SHAPE: LlamaShape = { hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16, intermediateSize: 96, vocabSize: 400, contextLength: 256 };

function bits(t: Tensor): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

describe('random-weight Llama GGUF', () => {
  for (const type of ['F32', 'F16', 'BF16'] as const) {
    it(`${type}: kvq's GGUF loader reads back the generated weights bit for bit (Q/K un-permuted), config and vocab`, async () => {
      const path = join(dir, `random-${type}.gguf`);
      const size = await writeRandomLlamaGguf(path, SHAPE, { type, seed: 11, name: 'random-test' });
      expect((await stat(path)).size).toBe(size);
      const model = await loadModel(path);
      const c = model.config;
      expect([c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim, c.intermediateSize, c.vocabSize, c.maxPositionEmbeddings]).toEqual([64, 2, 4, 2, 16, 96, 400, 256]);
      expect(c.tieWordEmbeddings).toBe(false);
      const loaded = weightsByHfName(c, model.weights);
      let compared = 0;
      for (const slot of llamaTensorSlots(SHAPE)) {
        const want = toGgmlData(randomTensorValues(slot, 11), slot.kind === 'norm' ? 'F32' : type);
        const rows = slot.dims[1] ?? slot.dims[0]!;
        const cols = slot.dims.length === 2 ? slot.dims[0]! : 1;
        const heads = slot.name.includes('attn_q') ? 4 : slot.name.includes('attn_k') ? 2 : 0;
        const hfOrder = heads ? permuteRotaryRows(want, rows, cols, heads, 'toRotateHalf') : want;
        const got = loaded.get(hfNameOfGguf(slot.name)!)!;
        expect(got.shape, slot.name).toEqual([...slot.dims].reverse());
        expect(Buffer.from(bits(got)).equals(Buffer.from(hfOrder.buffer, hfOrder.byteOffset, hfOrder.byteLength)), slot.name).toBe(true);
        compared++;
      }
      expect(compared).toBe(3 + 9 * SHAPE.numLayers);
      // The synthetic SentencePiece vocabulary loads as a working tokenizer with byte fallback.
      const tok = model.tokenizer;
      expect(tok.vocabSize).toBe(400);
      expect(tok.bosTokenId).toBe(SYNTHETIC_VOCAB.bos);
      const ids = tok.encode('tea at noon, ☃');
      expect(ids[0]).toBe(SYNTHETIC_VOCAB.bos);
      expect(ids.some((id) => id >= SYNTHETIC_VOCAB.firstByte && id < SYNTHETIC_VOCAB.firstNormal)).toBe(true); // ☃ via bytes
      expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('tea at noon, ☃');
    });
  }

  it('different seeds give different weights, the same seed the same file', async () => {
    const a = join(dir, 'a.gguf');
    const b = join(dir, 'b.gguf');
    const c = join(dir, 'c.gguf');
    await writeRandomLlamaGguf(a, SHAPE, { type: 'F16', seed: 1, name: 'x' });
    await writeRandomLlamaGguf(b, SHAPE, { type: 'F16', seed: 1, name: 'x' });
    await writeRandomLlamaGguf(c, SHAPE, { type: 'F16', seed: 2, name: 'x' });
    const [ba, bb, bc] = await Promise.all([readFile(a), readFile(b), readFile(c)]);
    expect(ba.equals(bb)).toBe(true);
    expect(ba.equals(bc)).toBe(false);
    expect(ba.length).toBe(bc.length);
  });
});

describe('kvq-tiny (HF bf16) written as GGUF', () => {
  for (const type of ['BF16', 'F32'] as const) {
    it(`${type}: loads back with the HF weights bit for bit (after widening), same config and tokenizer`, async () => {
      const hf = await loadModel(modelTinyPath);
      const path = join(dir, `kvq-tiny-${type}.gguf`);
      await writeHfModelAsGguf(path, hf, type);
      const gguf = await loadModel(path);
      const { torchDtype: _a, ...want } = hf.config;
      const { torchDtype: _b, ...got } = gguf.config;
      expect(got).toEqual(want);
      const wantW = weightsByHfName(hf.config, hf.weights);
      for (const [name, t] of weightsByHfName(gguf.config, gguf.weights)) {
        const w = wantW.get(name)!;
        expect(t.shape, name).toEqual(w.shape);
        if (t.dtype === w.dtype) {
          expect(Buffer.from(bits(t)).equals(Buffer.from(bits(w))), name).toBe(true);
        } else {
          // widened to F32: every value exact
          const wide = t.data as Float32Array;
          const narrow = w.data as Uint16Array;
          for (let i = 0; i < wide.length; i += 97) expect(new Uint32Array(Float32Array.of(wide[i]!).buffer)[0]! >>> 16, name).toBe(narrow[i]);
        }
      }
      const text = 'And the angel said unto them, Fear not.';
      expect(gguf.tokenizer.encode(text)).toEqual(hf.tokenizer.encode(text));
    });
  }
});

describe('synthetic vocabulary', () => {
  it('syntheticVocab: unique pieces, byte tokens, requested size', () => {
    const v = syntheticVocab(32000);
    expect(v.tokens.length).toBe(32000);
    expect(new Set(v.tokens).size).toBe(32000);
    expect(v.tokens[SYNTHETIC_VOCAB.firstByte + 0x0a]).toBe('<0x0A>');
    expect(() => syntheticVocab(100)).toThrow(BenchPeerError);
  });
});
