// Test support only (not exported from the package): test-data paths, temporary folders and small synthetic
// models for the loader tests.
import type { QuantizeScheme } from '../quantize/schemes.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { fixturePath, fixtures } from '@kvq/fixtures';
import { seededNormal } from '@kvq/test-utils';

import type { ModelConfig } from '../config/model-config.js';
import type { GgufTensor } from '../formats/gguf-writer.js';
import { EngineError } from '../errors.js';
import { permuteRotaryRows, shapeSize, type Tensor, type WeightDType } from '../tensor.js';
import { expectedHfTensors } from '../weights/model-weights.js';

/** Absolute paths of the test models, reference outputs and evaluation text (@kvq/fixtures; throws when one is missing). */
export const testData = {
  storiesBin: fixturePath('models/stories260K/stories260K.bin'),
  storiesGguf: fixturePath('models/stories260K/stories260K.gguf'),
  storiesTok: fixturePath('models/stories260K/tok512.bin'),
  babyBin: fixturePath('models/babyllama-tok105/model.bin'),
  babyTok: fixturePath('models/babyllama-tok105/tok105.bin'),
  kvqTiny: fixtures.kvqTinyDir,
  evalText: fixturePath('eval/kjv-fortunes-public.txt'),
  refStories: fixturePath('reference/stories260K.json'),
  refBaby: fixturePath('reference/babyllama-tok105.json'),
  refKvqTiny: fixturePath('reference/kvq-tiny.json'),
};

/** A fresh temporary folder and a function removing it. */
export async function tempDir(prefix = 'kvq-engine-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** A small Llama config for synthetic tests. */
export function tinyConfig(overrides: Partial<ModelConfig> = {}): ModelConfig {
  return {
    architecture: 'LlamaForCausalLM',
    modelType: 'llama',
    hiddenSize: 16,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 4,
    intermediateSize: 24,
    vocabSize: 32,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    ropeLayout: 'rotate_half',
    maxPositionEmbeddings: 64,
    tieWordEmbeddings: false,
    attentionBias: false,
    attentionOutputBias: false,
    slidingWindow: null,
    hiddenAct: 'silu',
    bosTokenId: 1,
    eosTokenIds: [2],
    torchDtype: 'float32',
    ...overrides,
  };
}

/** The HF `config.json` fields of {@link tinyConfig}. */
export function tinyConfigJson(config: ModelConfig = tinyConfig()): Record<string, unknown> {
  return {
    architectures: [config.architecture],
    model_type: config.modelType,
    hidden_size: config.hiddenSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numKvHeads,
    head_dim: config.headDim,
    intermediate_size: config.intermediateSize,
    vocab_size: config.vocabSize,
    rms_norm_eps: config.rmsNormEps,
    max_position_embeddings: config.maxPositionEmbeddings,
    tie_word_embeddings: config.tieWordEmbeddings,
    attention_bias: config.attentionBias,
    bos_token_id: config.bosTokenId,
    eos_token_id: config.eosTokenIds[0],
    torch_dtype: 'float32',
  };
}

/** Seeded random tensors for every weight of `config` (HF names), float32 unless `dtype` says otherwise. */
export function randomHfTensors(config: ModelConfig, seed = 1, dtype: WeightDType = 'f32'): Map<string, Tensor> {
  const normal = seededNormal(seed);
  const out = new Map<string, Tensor>();
  for (const e of expectedHfTensors(config)) {
    const n = shapeSize(e.shape);
    const values = Float32Array.from({ length: n }, () => 0.1 * normal());
    out.set(e.name, dtype === 'f32' ? { dtype, shape: e.shape, data: values } : { dtype, shape: e.shape, data: toBits(values, dtype) });
  }
  return out;
}

/** Round-to-nearest-even conversion of float32 values to bf16 / f16 bits (test data only). */
export function toBits(values: Float32Array, dtype: 'bf16' | 'f16'): Uint16Array {
  const out = new Uint16Array(values.length);
  const u32 = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) {
    const bits = u32[i]!;
    if (dtype === 'bf16') {
      out[i] = ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
    } else {
      out[i] = f32ToF16(values[i]!);
    }
  }
  return out;
}

function f32ToF16(x: number): number {
  // Values used in tests are small normals; exact RNE handling of the full range is not needed here.
  if (x === 0) return Object.is(x, -0) ? 0x8000 : 0;
  const sign = x < 0 ? 0x8000 : 0;
  const a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  if (e < -14) return sign | Math.round(a / 2 ** -24);
  let m = Math.round((a / 2 ** e - 1) * 1024);
  if (m === 1024) {
    m = 0;
    e++;
  }
  return sign | ((e + 15) << 10) | m;
}

/** Q/K rows of a rotate-half tensor permuted to the interleaved (llama.cpp / llama2.c) order. */
export function toInterleaved(t: Tensor, heads: number): Tensor {
  const rows = t.shape[0]!;
  const cols = t.shape.length === 2 ? t.shape[1]! : 1;
  return { ...t, data: permuteRotaryRows(t.data, rows, cols, heads, 'toInterleaved') };
}

/** Same dtype, shape and bits. */
export function sameTensor(a: Tensor, b: Tensor): boolean {
  if (a.dtype !== b.dtype || a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) return false;
  if (a.data.length !== b.data.length) return false;
  const x = new Uint8Array(a.data.buffer, a.data.byteOffset, a.data.byteLength);
  const y = new Uint8Array(b.data.buffer, b.data.byteOffset, b.data.byteLength);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** The EngineError thrown by `fn` (fails the test when nothing or something else is thrown). */
export function engineErrorOf(fn: () => unknown): EngineError {
  try {
    fn();
  } catch (e) {
    if (e instanceof EngineError) return e;
    throw new Error(`expected an EngineError, got ${String(e)}`, { cause: e });
  }
  throw new Error('expected an EngineError, nothing was thrown');
}

/** The EngineError `promise` rejects with (fails the test when it resolves or rejects with something else). */
export async function engineErrorOfAsync(promise: Promise<unknown>): Promise<EngineError> {
  try {
    await promise;
  } catch (e) {
    if (e instanceof EngineError) return e;
    throw new Error(`expected an EngineError, got ${String(e)}`, { cause: e });
  }
  throw new Error('expected an EngineError, the promise resolved');
}

/** A tensor in HF order (`[out, in]`) as a GGUF tensor of its own dtype (ggml dims reversed). */
export function ggufTensorOf(name: string, t: Tensor): GgufTensor {
  const type = t.dtype === 'f32' ? 'F32' : t.dtype === 'f16' ? 'F16' : 'BF16';
  return { name, dims: [...t.shape].reverse(), type, data: t.data as Float32Array | Uint16Array };
}

/** Which stored dtype the loader must give q_proj of layer 0 (cols 256) and down_proj (cols 704) per scheme. */
export const EXPECTED_Q: Record<QuantizeScheme, string> = {
  fp8: 'fp8_e4m3',
  w8a8: 'int8',
  w4a16: 'int4',
  q8_0: 'q8_0',
  q4_0: 'q4_0',
  q4_1: 'q4_1',
  q5_0: 'q5_0',
  q5_1: 'q5_1',
  q4_k_m: 'q4_k',
  q5_k_m: 'q5_k',
  q6_k: 'q6_k',
};
