import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { convertToHf } from '../convert/convert.js';
import { encodeSafetensors, writeSafetensors } from '../formats/safetensors.js';
import { MemorySource } from '../io/source.js';
import {
  engineErrorOfAsync,
  randomHfTensors,
  sameTensor,
  testData,
  tempDir,
  tinyConfig,
  tinyConfigJson,
} from '../testing/fixtures.js';
import { asWeightMatrix, type Tensor } from '../tensor.js';
import { layerMatrices, weightsByHfName } from '../weights/model-weights.js';
import { readHfWeights, type SafetensorsShard } from './hf.js';
import { detectModelFormat, loadModel, loadTokenizer } from './load-model.js';
import { readSafetensorsHeader } from '../formats/safetensors.js';
import type { LoadedModel, LoadProgress } from './types.js';

function expectSameWeights(a: LoadedModel, b: LoadedModel): void {
  const wa = weightsByHfName(a.config, a.weights);
  const wb = weightsByHfName(b.config, b.weights);
  for (const [name, t] of wa) {
    if (name === 'lm_head.weight') continue;
    expect(sameTensor(t, wb.get(name)!), name).toBe(true);
  }
  expect(sameTensor(a.weights.lmHead, b.weights.lmHead), 'lm head').toBe(true);
}

describe('stories260K: llama2.c .bin, GGUF and converted HF folders', () => {
  it('load to element-wise identical weights and equal configs', async () => {
    const bin = await loadModel(testData.storiesBin);
    const gguf = await loadModel(testData.storiesGguf);
    expect(bin.format).toBe('llama2c');
    expect(gguf.format).toBe('gguf');
    expectSameWeights(bin, gguf);
    // The GGUF conversion stored a separate output.weight and a 2048 context; the rest of the config agrees.
    expect({ ...gguf.config, tieWordEmbeddings: true, maxPositionEmbeddings: 512 }).toEqual(bin.config);
    expect(bin.weights.lmHead).toBe(bin.weights.embedTokens);
    expect(bin.config).toMatchObject({ hiddenSize: 64, numLayers: 5, numHeads: 8, numKvHeads: 4, headDim: 8, vocabSize: 512, ropeLayout: 'rotate_half' });
    expect(bin.weights.layers[0]!.q.dtype).toBe('f32');
    expect(asWeightMatrix(bin.weights.layers[0]!.k)).toMatchObject({ rows: 32, cols: 64 });
    expect(layerMatrices(bin.weights.layers[4]!).down).toMatchObject({ rows: 64, cols: 172 });

    const { dir, cleanup } = await tempDir();
    try {
      for (const [source, sub] of [[testData.storiesBin, 'from-bin'], [testData.storiesGguf, 'from-gguf']] as const) {
        const out = join(dir, sub);
        const result = await convertToHf(source, out);
        expect(result.files).toContain('model.safetensors');
        const hf = await loadModel(out);
        expect(hf.format).toBe('hf');
        expectSameWeights(bin, hf);
        const original = source === testData.storiesBin ? bin : gguf;
        expect(hf.config).toEqual(original.config);
        const text = readFileSync(testData.evalText, 'utf8').slice(0, 5000);
        expect(hf.tokenizer.encode(text)).toEqual(original.tokenizer.encode(text));
        expect(hf.tokenizer.decode(hf.tokenizer.encode(text), { skipSpecialTokens: true })).toBe(original.tokenizer.decode(original.tokenizer.encode(text), { skipSpecialTokens: true }));
        const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
        expect(config).toMatchObject({ architectures: ['LlamaForCausalLM'], hidden_size: 64, head_dim: 8, num_key_value_heads: 4 });
        const tokConfig = JSON.parse(await readFile(join(out, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
        expect(tokConfig).toMatchObject({ bos_token: '<s>', eos_token: '</s>', add_bos_token: true });
        const header = await readSafetensorsHeader(new MemorySource(await readFile(join(out, 'model.safetensors'))));
        expect(header.tensors.has('lm_head.weight')).toBe(source === testData.storiesGguf);
      }
      const again = await engineErrorOfAsync(convertToHf(testData.storiesBin, join(dir, 'from-bin')));
      expect(again.code).toBe('INVALID_ARGUMENT');
      await convertToHf(bin, join(dir, 'from-bin'), { overwrite: true });
    } finally {
      await cleanup();
    }
  });

  it('reports monotonic progress ending at the total weight bytes', async () => {
    const events: LoadProgress[] = [];
    await loadModel(testData.storiesGguf, { onProgress: (p) => events.push(p) });
    expect(events.length).toBe(48);
    expect(events.every((e, i) => i === 0 || e.loadedBytes > events[i - 1]!.loadedBytes)).toBe(true);
    expect(events.at(-1)!.loadedBytes).toBe(events.at(-1)!.totalBytes);
  });

  it('finds tok512.bin beside the checkpoint and reports a missing tokenizer by the paths tried', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      await copyFile(testData.storiesBin, join(dir, 'model.bin'));
      const e = await engineErrorOfAsync(loadModel(join(dir, 'model.bin')));
      expect(e.code).toBe('FILE_NOT_FOUND');
      expect(e.message).toContain('tok512.bin');
      const withPath = await loadModel(join(dir, 'model.bin'), { tokenizerPath: testData.storiesTok });
      expect(withPath.tokenizer.vocabSize).toBe(512);
    } finally {
      await cleanup();
    }
  });
});

describe('babyllama (char-level tokenizer, GQA) through the converter', () => {
  it('converts and reloads identically', async () => {
    const bin = await loadModel(testData.babyBin);
    expect(bin.config).toMatchObject({ hiddenSize: 128, headDim: 16, numHeads: 8, numKvHeads: 4, intermediateSize: 352, maxPositionEmbeddings: 256 });
    const { dir, cleanup } = await tempDir();
    try {
      await convertToHf(bin, dir, { overwrite: true });
      const hf = await loadModel(dir);
      expectSameWeights(bin, hf);
      expect(hf.config).toEqual(bin.config);
      expect(hf.tokenizer.encode('Tom and his dog.')).toEqual(bin.tokenizer.encode('Tom and his dog.'));
    } finally {
      await cleanup();
    }
  });
});

describe('kvq-tiny Hugging Face folder', () => {
  it('loads bf16 weights as raw bits, with the ChatML template and generation defaults', async () => {
    const m = await loadModel(testData.kvqTiny);
    expect(m.config).toMatchObject({ architecture: 'LlamaForCausalLM', headDim: 64, numHeads: 4, numKvHeads: 2, vocabSize: 2048, torchDtype: 'bfloat16' });
    const q = m.weights.layers[0]!.q;
    expect(q.dtype).toBe('bf16');
    expect(q.data).toBeInstanceOf(Uint16Array);
    expect(q.shape).toEqual([256, 256]);
    expect(m.weights.lmHead).not.toBe(m.weights.embedTokens);
    expect(m.generationConfig).toMatchObject({ eosTokenIds: [1, 3], temperature: 0.7, topP: 0.8, doSample: true });
    expect(m.chatTemplate?.render([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true })).toBe(
      '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n',
    );
    expect(m.kvScales).toBeUndefined();
    expect(m.warnings).toEqual([]);
    expect(await detectModelFormat(join(testData.kvqTiny, 'config.json'))).toEqual({ format: 'hf', path: testData.kvqTiny });
    expect(await detectModelFormat(join(testData.kvqTiny, 'model.safetensors'))).toEqual({ format: 'hf', path: testData.kvqTiny });
  });

  it('reads a sharded checkpoint through model.safetensors.index.json', async () => {
    const m = await loadModel(testData.kvqTiny);
    const { dir, cleanup } = await tempDir();
    try {
      const all = [...weightsByHfName(m.config, m.weights)];
      const half = Math.floor(all.length / 2);
      await writeSafetensors(join(dir, 'model-00001-of-00002.safetensors'), all.slice(0, half));
      await writeSafetensors(join(dir, 'model-00002-of-00002.safetensors'), all.slice(half));
      const weightMap = Object.fromEntries(all.map(([n], i) => [n, i < half ? 'model-00001-of-00002.safetensors' : 'model-00002-of-00002.safetensors']));
      await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
      for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json']) await copyFile(join(testData.kvqTiny, f), join(dir, f));
      const sharded = await loadModel(dir);
      expectSameWeights(m, sharded);
      await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { x: '../escape.safetensors' } }));
      expect((await engineErrorOfAsync(loadModel(dir))).code).toBe('MALFORMED');
    } finally {
      await cleanup();
    }
  });

  it('loads only the tokenizer with loadTokenizer', async () => {
    const { tokenizer, chatTemplate } = await loadTokenizer(testData.kvqTiny);
    expect(tokenizer.vocabSize).toBe(2048);
    expect(chatTemplate).toBeDefined();
  });
});

/** A synthetic HF folder (tiny random Llama) whose files a test can corrupt. */
async function syntheticFolder(dir: string, configJson: Record<string, unknown>, tensors: Map<string, Tensor>): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.json'), JSON.stringify(configJson));
  await writeSafetensors(join(dir, 'model.safetensors'), tensors);
  const vocab: Record<string, number> = {};
  for (let i = 0; i < 32; i++) vocab[String.fromCharCode(0x41 + i)] = i;
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify({ model: { type: 'BPE', vocab, merges: [] } }));
}

describe('bad input gives typed errors naming the file, field and value', () => {
  it('unsupported architecture, shape mismatch, missing tensor, unsupported dtype, missing tokenizer', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const config = tinyConfig();
      const tensors = randomHfTensors(config);
      await syntheticFolder(dir, tinyConfigJson(config), tensors);
      const ok = await loadModel(dir);
      expect(ok.config.hiddenSize).toBe(16);

      await writeFile(join(dir, 'config.json'), JSON.stringify({ ...tinyConfigJson(config), architectures: ['GPT2LMHeadModel'] }));
      let e = await engineErrorOfAsync(loadModel(dir));
      expect(e.code).toBe('UNSUPPORTED_ARCHITECTURE');
      expect(e.message).toContain('GPT2LMHeadModel');
      expect(e.file).toContain('config.json');

      await writeFile(join(dir, 'config.json'), JSON.stringify({ ...tinyConfigJson(config), intermediate_size: 20 }));
      e = await engineErrorOfAsync(loadModel(dir));
      expect(e.code).toBe('SHAPE_MISMATCH');
      expect(e.message).toContain('model.layers.0.mlp.gate_proj.weight');
      expect(e.message).toContain('[24, 16]');
      expect(e.message).toContain('[20, 16]');

      await writeFile(join(dir, 'config.json'), JSON.stringify(tinyConfigJson(config)));
      const missing = new Map(tensors);
      missing.delete('model.layers.1.self_attn.v_proj.weight');
      await writeSafetensors(join(dir, 'model.safetensors'), missing);
      e = await engineErrorOfAsync(loadModel(dir));
      expect(e.code).toBe('MISSING_TENSOR');
      expect(e.field).toBe('model.layers.1.self_attn.v_proj.weight');

      const f64 = encodeSafetensors(tensors);
      const text = new TextDecoder().decode(f64.subarray(8, 8 + Number(new DataView(f64.buffer).getBigUint64(0, true))));
      // Relabel the (4-byte) norm of layer 0 as a 2-byte-per-element dtype the loader does not support.
      const header = JSON.parse(text) as Record<string, { dtype: string; shape: number[] }>;
      header['model.layers.0.input_layernorm.weight']!.dtype = 'I16';
      header['model.layers.0.input_layernorm.weight']!.shape = [32];
      const json = new TextEncoder().encode(JSON.stringify(header).padEnd(text.length, ' '));
      const patched = new Uint8Array(f64);
      patched.set(json, 8);
      await writeFile(join(dir, 'model.safetensors'), patched);
      e = await engineErrorOfAsync(loadModel(dir));
      expect(e.code).toBe('UNSUPPORTED_DTYPE');
      expect(e.message).toContain('I16');
      expect(e.message).toContain('model.layers.0.input_layernorm.weight');

      await writeSafetensors(join(dir, 'model.safetensors'), tensors);
      await writeFile(join(dir, 'tokenizer.json'), '{"model": ');
      e = await engineErrorOfAsync(loadModel(dir));
      expect(e.code).toBe('MALFORMED');
      expect(e.file).toContain('tokenizer.json');

      e = await engineErrorOfAsync(loadModel(join(dir, 'nope')));
      expect(e.code).toBe('FILE_NOT_FOUND');
    } finally {
      await cleanup();
    }
  });

  it('truncated safetensors data surfaces as TRUNCATED from the in-memory reader too', async () => {
    const config = tinyConfig();
    const bytes = encodeSafetensors(randomHfTensors(config));
    const source = new MemorySource(bytes.subarray(0, bytes.length - 10), 'cut.safetensors');
    const e = await engineErrorOfAsync(
      (async () => {
        const shard: SafetensorsShard = { source, header: await readSafetensorsHeader(source) };
        return readHfWeights(config, [shard], undefined, 'config.json');
      })(),
    );
    expect(e.code).toBe('TRUNCATED');
    expect(e.message).toContain('cut.safetensors');
  });
});
