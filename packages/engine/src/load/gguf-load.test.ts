import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import type { ModelConfig } from '../config/model-config.js';
import { GgufValueType } from '../formats/gguf.js';
import { writeSafetensors } from '../formats/safetensors.js';
import { MemorySource } from '../io/source.js';
import { encodeGguf, type GgufEntry as GgufKv, type GgufTensor } from '../formats/gguf-writer.js';
import {
  ggufTensorOf,
  engineErrorOfAsync,
  randomHfTensors,
  sameTensor,
  testData,
  tempDir,
  tinyConfig,
  tinyConfigJson,
  toBits,
  toInterleaved,
} from '../testing/fixtures.js';
import { tensorToFloat32, type Tensor } from '../tensor.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { expectedHfTensors, weightsByHfName } from '../weights/model-weights.js';
import { ggufNameOfHf, hfNameOfGguf, loadGgufFromSource } from './gguf.js';
import { loadModel } from './load-model.js';

const { STRING, UINT32, FLOAT32, BOOL, ARRAY, INT32 } = GgufValueType;

/** GGUF metadata for a model config (llama.cpp key names). */
function modelKvs(arch: string, c: ModelConfig): GgufKv[] {
  return [
    { key: 'general.architecture', type: STRING, value: arch },
    { key: `${arch}.context_length`, type: UINT32, value: c.maxPositionEmbeddings },
    { key: `${arch}.embedding_length`, type: UINT32, value: c.hiddenSize },
    { key: `${arch}.block_count`, type: UINT32, value: c.numLayers },
    { key: `${arch}.feed_forward_length`, type: UINT32, value: c.intermediateSize },
    { key: `${arch}.attention.head_count`, type: UINT32, value: c.numHeads },
    { key: `${arch}.attention.head_count_kv`, type: UINT32, value: c.numKvHeads },
    { key: `${arch}.rope.dimension_count`, type: UINT32, value: c.headDim },
    { key: `${arch}.attention.layer_norm_rms_epsilon`, type: FLOAT32, value: c.rmsNormEps },
    { key: `${arch}.rope.freq_base`, type: FLOAT32, value: c.ropeTheta },
  ];
}

/** GGUF byte-level BPE tokenizer metadata equivalent to a loaded HF tokenizer (tokenizer.ggml.model = gpt2). */
function gpt2TokenizerKvs(tokenizer: Tokenizer, pre: string, chatTemplate?: string): GgufKv[] {
  const json = tokenizer.json as { model: { merges: unknown[] } };
  const tokens = Array.from({ length: tokenizer.vocabSize }, (_, i) => tokenizer.idToToken(i)!);
  const specials = new Set(tokenizer.addedTokens.filter((t) => t.special).map((t) => t.id));
  const merges = json.model.merges.map((m) => (Array.isArray(m) ? m.join(' ') : String(m)));
  const kvs: GgufKv[] = [
    { key: 'tokenizer.ggml.model', type: STRING, value: 'gpt2' },
    { key: 'tokenizer.ggml.pre', type: STRING, value: pre },
    { key: 'tokenizer.ggml.tokens', type: ARRAY, itemType: STRING, value: tokens },
    { key: 'tokenizer.ggml.token_type', type: ARRAY, itemType: INT32, value: tokens.map((_, i) => (specials.has(i) ? 3 : 1)) },
    { key: 'tokenizer.ggml.merges', type: ARRAY, itemType: STRING, value: merges },
    { key: 'tokenizer.ggml.add_bos_token', type: BOOL, value: tokenizer.addsBos },
  ];
  if (tokenizer.bosTokenId !== undefined) kvs.push({ key: 'tokenizer.ggml.bos_token_id', type: UINT32, value: tokenizer.bosTokenId });
  const [eos, eot] = tokenizer.eosTokenIds;
  if (eos !== undefined) kvs.push({ key: 'tokenizer.ggml.eos_token_id', type: UINT32, value: eos });
  if (eot !== undefined) kvs.push({ key: 'tokenizer.ggml.eot_token_id', type: UINT32, value: eot });
  if (chatTemplate) kvs.push({ key: 'tokenizer.chat_template', type: STRING, value: chatTemplate });
  return kvs;
}

/** GGUF tensors of HF-layout tensors, Q/K (and their biases) permuted to llama.cpp's interleaved order when asked. */
function ggufTensors(c: ModelConfig, tensors: ReadonlyMap<string, Tensor>, permute: boolean, convert?: (t: Tensor) => Tensor): GgufTensor[] {
  return [...tensors].map(([name, t0]) => {
    let t = convert ? convert(t0) : t0;
    if (permute && /q_proj\.(weight|bias)$/.test(name)) t = toInterleaved(t, c.numHeads);
    if (permute && /k_proj\.(weight|bias)$/.test(name)) t = toInterleaved(t, c.numKvHeads);
    return ggufTensorOf(ggufNameOfHf(name)!, t);
  });
}

describe('GGUF tensor names', () => {
  it('map both ways for every tensor of a model with biases', () => {
    for (const e of expectedHfTensors(tinyConfig({ attentionBias: true, attentionOutputBias: true }))) {
      expect(hfNameOfGguf(ggufNameOfHf(e.name)!)).toBe(e.name);
    }
  });
});

describe('kvq-tiny written as GGUF (byte-level BPE tokenizer, BF16 / F16, permuted Q/K)', () => {
  it('loads back to the HF folder: same weights bit for bit, config, tokenizer and chat template', async () => {
    const hf = await loadModel(testData.kvqTiny);
    const c = hf.config;
    const bytes = encodeGguf(
      [...modelKvs('llama', c), ...gpt2TokenizerKvs(hf.tokenizer, 'gpt-2', hf.chatTemplate!.source)],
      ggufTensors(c, weightsByHfName(c, hf.weights), true),
    );
    const gguf = await loadGgufFromSource(new MemorySource(bytes, 'kvq-tiny.gguf'));
    expect(gguf.config).toEqual(c);
    for (const [name, t] of weightsByHfName(c, hf.weights)) {
      expect(sameTensor(weightsByHfName(c, gguf.weights).get(name)!, t), name).toBe(true);
    }
    const text = readFileSync(testData.evalText, 'utf8');
    expect(gguf.tokenizer.encode(text)).toEqual(hf.tokenizer.encode(text));
    const chat = [{ role: 'user', content: 'Hi' }];
    expect(gguf.chatTemplate!.render(chat, { addGenerationPrompt: true })).toBe(hf.chatTemplate!.render(chat, { addGenerationPrompt: true }));
    expect(gguf.tokenizer.eosTokenIds).toEqual([1, 3]);

    // F16 tensors: the loader returns the stored bits, un-permuted.
    const toF16 = (t: Tensor): Tensor => ({ dtype: 'f16', shape: t.shape, data: toBits(tensorToFloat32(t), 'f16') });
    const f16 = await loadGgufFromSource(
      new MemorySource(encodeGguf([...modelKvs('llama', c), ...gpt2TokenizerKvs(hf.tokenizer, 'gpt-2')], ggufTensors(c, weightsByHfName(c, hf.weights), true, toF16))),
    );
    expect(f16.config.torchDtype).toBe('float16');
    const q = f16.weights.layers[3]!.q;
    expect(q.dtype).toBe('f16');
    expect(sameTensor(q, toF16(hf.weights.layers[3]!.q))).toBe(true);
    expect(sameTensor(f16.weights.layers[3]!.k, toF16(hf.weights.layers[3]!.k))).toBe(true);
  });
});

describe('synthetic GGUF models', () => {
  const vocabKvs = (n: number, pre: string): GgufKv[] => {
    const tokens = Array.from({ length: n }, (_, i) => (i === n - 1 ? 'AB' : String.fromCharCode(0x41 + i)));
    return [
      { key: 'tokenizer.ggml.model', type: STRING, value: 'gpt2' },
      { key: 'tokenizer.ggml.pre', type: STRING, value: pre },
      { key: 'tokenizer.ggml.tokens', type: ARRAY, itemType: STRING, value: tokens },
      { key: 'tokenizer.ggml.merges', type: ARRAY, itemType: STRING, value: ['A B'] },
      { key: 'tokenizer.ggml.eos_token_id', type: UINT32, value: 2 },
    ];
  };

  it.each([
    ['llama with q/k/v/o biases (biases un-permuted too)', 'llama', tinyConfig({ attentionBias: true, attentionOutputBias: true }), true],
    ['qwen2 (NeoX RoPE, stored unpermuted)', 'qwen2', tinyConfig({ architecture: 'Qwen2ForCausalLM', modelType: 'qwen2', attentionBias: true }), false],
  ] as const)('%s loads to the same tensors as the HF folder', async (_what, arch, config, permute) => {
    const tensors = randomHfTensors(config, 5);
    const gguf = await loadGgufFromSource(new MemorySource(encodeGguf([...modelKvs(arch, config), ...vocabKvs(32, arch === 'qwen2' ? 'qwen2' : 'llama-bpe')], ggufTensors(config, tensors, permute))));
    expect(gguf.config.architecture).toBe(config.architecture);
    expect(gguf.config.attentionBias).toBe(true);
    const { dir, cleanup } = await tempDir();
    try {
      await writeFile(join(dir, 'config.json'), JSON.stringify(tinyConfigJson(config)));
      await writeSafetensors(join(dir, 'model.safetensors'), tensors);
      const vocab = Object.fromEntries(Array.from({ length: 32 }, (_, i) => [i === 31 ? 'AB' : String.fromCharCode(0x41 + i), i]));
      await writeFile(join(dir, 'tokenizer.json'), JSON.stringify({ model: { type: 'BPE', vocab, merges: ['A B'] } }));
      const hf = await loadModel(dir);
      for (const [name, t] of weightsByHfName(hf.config, hf.weights)) {
        expect(sameTensor(weightsByHfName(gguf.config, gguf.weights).get(name)!, t), name).toBe(true);
      }
    } finally {
      await cleanup();
    }
  });

  it('rejects quantized tensors, unknown architectures and pre-tokenizers with typed errors', async () => {
    const config = tinyConfig();
    const tensors = ggufTensors(config, randomHfTensors(config), true);
    const q4ok = tensors.map((t) =>
      t.name === 'blk.1.ffn_up.weight' ? { ...t, type: 2, dims: [16, 24], data: new Uint16Array((24 * 16 * 18) / 64) } : t,
    );
    const bad = encodeGguf([...modelKvs('llama', config), ...vocabKvs(32, 'gpt-2')], q4ok);
    let e = await engineErrorOfAsync(loadGgufFromSource(new MemorySource(bad, 'q.gguf')));
    expect(e.code).toBe('MALFORMED'); // a 16-element row is not a whole number of Q4_0 blocks
    // Q2_K (type 10) is a ggml type kvq does not load.
    const q2row = tinyConfig({ hiddenSize: 256, headDim: 64 });
    const q2tensors = ggufTensors(q2row, randomHfTensors(q2row), true).map((t) =>
      t.name === 'blk.1.ffn_up.weight' ? { ...t, type: 10, dims: [256, 24], data: new Uint8Array(24 * 84) } : t,
    );
    e = await engineErrorOfAsync(loadGgufFromSource(new MemorySource(encodeGguf([...modelKvs('llama', q2row), ...vocabKvs(32, 'gpt-2')], q2tensors), 'q2.gguf')));
    expect(e.code).toBe('UNSUPPORTED_DTYPE');
    expect(e.message).toContain('Q2_K');
    expect(e.message).toContain('blk.1.ffn_up.weight');

    e = await engineErrorOfAsync(loadGgufFromSource(new MemorySource(encodeGguf([...modelKvs('phi3', config), ...vocabKvs(32, 'gpt-2')], tensors), 'p.gguf')));
    expect(e.code).toBe('UNSUPPORTED_ARCHITECTURE');
    expect(e.message).toContain('phi3');
    e = await engineErrorOfAsync(loadGgufFromSource(new MemorySource(encodeGguf([...modelKvs('llama', config), ...vocabKvs(32, 'falcon')], tensors), 'f.gguf')));
    expect(e.code).toBe('UNSUPPORTED_TOKENIZER');
    expect(e.field).toBe('tokenizer.ggml.pre');
  });
});
