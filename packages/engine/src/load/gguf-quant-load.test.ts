import { describe, expect, it } from 'vitest';

import type { ModelConfig } from '../config/model-config.js';
import { GGML_TYPE_OF_QUANT, GgufValueType, parseGguf } from '../formats/gguf.js';
import { encodeGguf, type GgufEntry, type GgufTensor } from '../formats/gguf-writer.js';
import { MemorySource } from '../io/source.js';
import { engineErrorOfAsync, ggufTensorOf, randomHfTensors, tinyConfig } from '../testing/fixtures.js';
import { GGML_BLOCKS, quantizedByteLength, type GgmlWeightDtype } from '../tensor.js';
import { expectedHfTensors, weightsByHfName } from '../weights/model-weights.js';
import { ggufNameOfHf, loadGgufFromSource } from './gguf.js';

const { STRING, UINT32, FLOAT32, ARRAY } = GgufValueType;

/** K-quant friendly shapes: every matrix has a multiple of 256 columns. */
const config: ModelConfig = tinyConfig({ hiddenSize: 256, numHeads: 4, numKvHeads: 2, headDim: 64, intermediateSize: 512, vocabSize: 32 });

function kvs(c: ModelConfig): GgufEntry[] {
  const tokens = Array.from({ length: c.vocabSize }, (_, i) => (i === c.vocabSize - 1 ? 'AB' : String.fromCharCode(0x41 + i)));
  return [
    { key: 'general.architecture', type: STRING, value: 'llama' },
    { key: 'llama.context_length', type: UINT32, value: c.maxPositionEmbeddings },
    { key: 'llama.embedding_length', type: UINT32, value: c.hiddenSize },
    { key: 'llama.block_count', type: UINT32, value: c.numLayers },
    { key: 'llama.feed_forward_length', type: UINT32, value: c.intermediateSize },
    { key: 'llama.attention.head_count', type: UINT32, value: c.numHeads },
    { key: 'llama.attention.head_count_kv', type: UINT32, value: c.numKvHeads },
    { key: 'llama.attention.layer_norm_rms_epsilon', type: FLOAT32, value: c.rmsNormEps },
    { key: 'tokenizer.ggml.model', type: STRING, value: 'gpt2' },
    { key: 'tokenizer.ggml.pre', type: STRING, value: 'llama-bpe' },
    { key: 'tokenizer.ggml.tokens', type: ARRAY, itemType: STRING, value: tokens },
    { key: 'tokenizer.ggml.merges', type: ARRAY, itemType: STRING, value: ['A B'] },
  ];
}

/** Deterministic pseudo-random block bytes (the loader never interprets them). */
function randomBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = s & 0xff;
  }
  return out;
}

/** The type llama.cpp's Q4_K_M mix gives a tensor in this test (Q6_K for attn_v / ffn_down / output, else Q4_K). */
function q4kmType(ggufName: string): GgmlWeightDtype {
  return /attn_v|ffn_down|^output\.weight/.test(ggufName) ? 'q6_k' : 'q4_k';
}

/** A GGUF file of `config` with every 2-D weight of `typeOf(name)` (random blocks) and F32 norms. */
function quantizedFile(typeOf: (ggufName: string) => GgmlWeightDtype): { bytes: Uint8Array; tensors: GgufTensor[] } {
  const dense = randomHfTensors(config, 3);
  const tensors: GgufTensor[] = [];
  let seed = 1;
  for (const [hf, t] of dense) {
    const name = ggufNameOfHf(hf)!;
    if (t.shape.length === 1) {
      tensors.push(ggufTensorOf(name, t));
      continue;
    }
    const dtype = typeOf(name);
    const [rows, cols] = t.shape as [number, number];
    tensors.push({ name, dims: [cols, rows], type: GGML_TYPE_OF_QUANT[dtype], data: randomBytes(quantizedByteLength(dtype, rows, cols), seed++) });
  }
  return { bytes: encodeGguf(kvs(config), tensors), tensors };
}

describe('GGUF block-quantized weights', () => {
  it('a Q4_K_M-style mixed file loads every weight as its raw blocks; weight memory equals the tensor bytes', async () => {
    const { bytes, tensors } = quantizedFile(q4kmType);
    const model = await loadGgufFromSource(new MemorySource(bytes, 'mixed.gguf'));
    const header = parseGguf(bytes, bytes.length, 'mixed.gguf')!;
    const loaded = weightsByHfName(model.config, model.weights);
    let loadedBytes = 0;
    let fileBytes = 0;
    for (const [hf, t] of loaded) {
      const name = ggufNameOfHf(hf)!;
      const info = header.tensors.get(name)!;
      loadedBytes += t.data.byteLength;
      fileBytes += info.byteLength!;
      if (t.shape.length === 2) {
        expect(t.dtype, name).toBe(q4kmType(name));
        expect(t.data).toBeInstanceOf(Uint8Array);
      } else {
        expect(t.dtype, name).toBe('f32');
      }
      // Non-permuted tensors are views of the file's bytes, not copies.
      if (!/attn_q|attn_k/.test(name)) {
        expect(t.data.buffer, name).toBe(bytes.buffer);
        expect(t.data.byteOffset, name).toBe(info.offset);
      }
    }
    expect(loadedBytes).toBe(fileBytes);
    expect(fileBytes).toBe(tensors.reduce((s, t) => s + t.data.byteLength, 0));
    expect(model.weights.embedTokens.dtype).toBe('q4_k'); // the token embedding stays quantized
    expect(model.weights.lmHead.dtype).toBe('q6_k');
  });

  it('un-permutes Q/K rows of block data as whole stored rows', async () => {
    const { bytes, tensors } = quantizedFile(() => 'q8_0');
    const model = await loadGgufFromSource(new MemorySource(bytes, 'q8.gguf'));
    for (const [slot, heads] of [['q', config.numHeads], ['k', config.numKvHeads]] as const) {
      const stored = tensors.find((t) => t.name === `blk.1.attn_${slot}.weight`)!.data as Uint8Array;
      const t = model.weights.layers[1]![slot];
      const rowBytes = quantizedByteLength('q8_0', 1, config.hiddenSize);
      const headDim = config.headDim;
      for (let h = 0; h < heads; h++) {
        for (let j = 0; j < headDim / 2; j++) {
          for (let i = 0; i < 2; i++) {
            // llama.cpp's interleaved row 2j+i of a head is Hugging Face's rotate-half row i*headDim/2 + j.
            const src = h * headDim + 2 * j + i;
            const dst = h * headDim + i * (headDim / 2) + j;
            expect(Buffer.from(t.data.buffer, t.data.byteOffset + dst * rowBytes, rowBytes).equals(Buffer.from(stored.buffer, stored.byteOffset + src * rowBytes, rowBytes))).toBe(true);
          }
        }
      }
    }
  });

  it.each(Object.keys(GGML_BLOCKS) as GgmlWeightDtype[])('loads %s weights (type id, block size and bytes agree with the header parser)', async (dtype) => {
    const { bytes } = quantizedFile(() => dtype);
    const model = await loadGgufFromSource(new MemorySource(bytes, `${dtype}.gguf`));
    const down = model.weights.layers[0]!.down;
    expect(down.dtype).toBe(dtype);
    expect(down.shape).toEqual([config.hiddenSize, config.intermediateSize]);
    expect(down.data.byteLength).toBe((config.hiddenSize * config.intermediateSize * GGML_BLOCKS[dtype].bytes) / GGML_BLOCKS[dtype].elements);
  });

  it('loads the same blocks from a file on disk (one read of the block bytes)', async () => {
    const { writeFile } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const { tempDir } = await import('../testing/fixtures.js');
    const { loadModel } = await import('./load-model.js');
    const { bytes } = quantizedFile(q4kmType);
    const { dir, cleanup } = await tempDir();
    try {
      await writeFile(join(dir, 'm.gguf'), bytes);
      const fromFile = await loadModel(join(dir, 'm.gguf'));
      const fromMemory = await loadGgufFromSource(new MemorySource(bytes, 'm.gguf'));
      for (const e of expectedHfTensors(config)) {
        const a = weightsByHfName(config, fromFile.weights).get(e.name)!;
        const b = weightsByHfName(config, fromMemory.weights).get(e.name)!;
        expect(a.dtype).toBe(b.dtype);
        expect(Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength).equals(Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength)), e.name).toBe(true);
      }
    } finally {
      await cleanup();
    }
  });

  it('loadModel leaves q/k/v and gate/up as row views of one array per layer where their types match (no second copy)', async () => {
    const { writeFile } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const { tempDir } = await import('../testing/fixtures.js');
    const { loadModel } = await import('./load-model.js');
    const { joinWeightRows } = await import('@kvq/kernels');
    const { asWeightMatrix } = await import('../tensor.js');
    const { dir, cleanup } = await tempDir();
    try {
      for (const [label, typeOf] of [['q8_0', () => 'q8_0' as const], ['Q4_K_M mix', q4kmType]] as const) {
        const { bytes } = quantizedFile(typeOf);
        await writeFile(join(dir, 'm.gguf'), bytes);
        const model = await loadModel(join(dir, 'm.gguf'));
        const asRead = await loadGgufFromSource(new MemorySource(bytes, 'm.gguf'));
        let weightBytes = 0;
        const buffers = new Set<ArrayBufferLike>();
        model.weights.layers.forEach((l, i) => {
          const qkv = joinWeightRows([l.q, l.k, l.v].map((t) => asWeightMatrix(t)));
          const gateUp = joinWeightRows([l.gate, l.up].map((t) => asWeightMatrix(t)));
          // The mix stores v in Q6_K beside Q4_K q/k: that group stays apart; gate/up (both Q4_K) are stacked.
          expect(qkv !== undefined, `${label} layer ${i} qkv`).toBe(label === 'q8_0');
          expect(gateUp, `${label} layer ${i} gate/up`).toBeDefined();
          for (const t of [l.q, l.k, l.v, l.o, l.gate, l.up, l.down]) {
            weightBytes += t.data.byteLength;
            buffers.add(t.data.buffer);
          }
          // The same bytes as read.
          const read = asRead.weights.layers[i]!;
          for (const key of ['q', 'k', 'v', 'gate', 'up'] as const) expect(Buffer.from(l[key].data as Uint8Array).equals(Buffer.from(read[key].data as Uint8Array)), `${label} ${key}`).toBe(true);
        });
        let bufferBytes = 0;
        for (const b of buffers) bufferBytes += b.byteLength;
        expect(bufferBytes).toBe(weightBytes); // every array is exactly the tensors viewing it
      }
    } finally {
      await cleanup();
    }
  });

  it('converting a quantized GGUF to a dense Hugging Face folder is a typed error naming the tensor', async () => {
    const { convertToHf } = await import('../convert/convert.js');
    const { tempDir } = await import('../testing/fixtures.js');
    const model = await loadGgufFromSource(new MemorySource(quantizedFile(q4kmType).bytes, 'q.gguf'));
    const { dir, cleanup } = await tempDir();
    try {
      const e = await engineErrorOfAsync(convertToHf(model, dir, { overwrite: true }));
      expect(e.code).toBe('UNSUPPORTED_DTYPE');
      expect(e.field).toBe('model.embed_tokens.weight');
      expect(e.message).toContain('q4_k');
    } finally {
      await cleanup();
    }
  });

  it('rejects quantized norms and truncated block data with typed errors naming the tensor', async () => {
    const { tensors } = quantizedFile(() => 'q8_0');
    const normQ = tensors.map((t) => (t.name === 'blk.0.attn_norm.weight' ? { ...t, type: GGML_TYPE_OF_QUANT.q8_0, data: new Uint8Array((256 / 32) * 34) } : t));
    let e = await engineErrorOfAsync(loadGgufFromSource(new MemorySource(encodeGguf(kvs(config), normQ), 'n.gguf')));
    expect(e.code).toBe('UNSUPPORTED_DTYPE');
    expect(e.field).toBe('blk.0.attn_norm.weight');
    expect(e.message).toContain('Q8_0');

    const whole = encodeGguf(kvs(config), tensors);
    const header = parseGguf(whole, whole.length, 'x')!;
    const last = [...header.tensors.values()].reduce((a, b) => (a.offset > b.offset ? a : b));
    e = await engineErrorOfAsync(loadGgufFromSource(new MemorySource(whole.subarray(0, last.offset + 10), 't.gguf')));
    expect(e.code).toBe('TRUNCATED');
    expect(e.field).toBe(last.name);
    expect(e.message).toContain(last.name);
  });
});
