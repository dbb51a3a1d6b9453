import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

import type { ModelConfig } from '../config/model-config.js';
import { EngineError } from '../errors.js';
import { parseLlama2cTokenizer, readLlama2cHeader, type Llama2cHeader } from '../formats/llama2c.js';
import { pathKind, readTensorData, type ByteSource } from '../io/source.js';
import { permuteRotaryRows, type Tensor } from '../tensor.js';
import { llama2cSentencePieceVocab, sentencePieceTokenizerJson } from '../tokenizer/sentencepiece.js';
import { Tokenizer } from '../tokenizer/tokenizer.js';
import { assembleWeights } from '../weights/model-weights.js';
import { ProgressTracker, type LoadedModel, type LoadModelOptions } from './types.js';

/** llama2.c's fixed hyper-parameters (run.c): RMSNorm ε 1e-5, RoPE θ 10000, BOS 1, EOS 2. */
const LLAMA2C_RMS_EPS = 1e-5;
const LLAMA2C_ROPE_THETA = 10000;

/** The {@link ModelConfig} of a llama2.c header. */
function llama2cModelConfig(h: Llama2cHeader): ModelConfig {
  return {
    architecture: 'LlamaForCausalLM',
    modelType: 'llama',
    hiddenSize: h.dim,
    numLayers: h.numLayers,
    numHeads: h.numHeads,
    numKvHeads: h.numKvHeads,
    headDim: h.dim / h.numHeads,
    intermediateSize: h.hiddenDim,
    vocabSize: h.vocabSize,
    rmsNormEps: LLAMA2C_RMS_EPS,
    ropeTheta: LLAMA2C_ROPE_THETA,
    ropeScaling: null,
    ropeLayout: 'rotate_half',
    maxPositionEmbeddings: h.seqLen,
    tieWordEmbeddings: h.sharedClassifier,
    attentionBias: false,
    attentionOutputBias: false,
    slidingWindow: null,
    hiddenAct: 'silu',
    bosTokenId: 1,
    eosTokenIds: [2],
    torchDtype: 'float32',
  };
}

/** A {@link Tokenizer} from the bytes of a llama2.c `tokenizer.bin` for a model of `vocabSize` pieces. */
export function llama2cTokenizer(bytes: Uint8Array, file: string, vocabSize?: number): Tokenizer {
  const tok = parseLlama2cTokenizer(bytes, file, vocabSize);
  const { tokenizer, config } = sentencePieceTokenizerJson(llama2cSentencePieceVocab(tok, file));
  return Tokenizer.fromJson(tokenizer, { config, file });
}

/**
 * Find the tokenizer of a llama2.c checkpoint: `explicit`, else `tokenizer.bin`, else `tok<vocab>.bin` beside it.
 * @throws EngineError `FILE_NOT_FOUND` listing the paths tried.
 */
export async function findLlama2cTokenizer(checkpointPath: string, vocabSize: number, explicit?: string): Promise<string> {
  const candidates = explicit ? [explicit] : [join(dirname(checkpointPath), 'tokenizer.bin'), join(dirname(checkpointPath), `tok${vocabSize}.bin`)];
  for (const c of candidates) if ((await pathKind(c)) === 'file') return c;
  throw new EngineError('FILE_NOT_FOUND', `${checkpointPath}: no llama2.c tokenizer found (tried ${candidates.join(', ')}); pass tokenizerPath`, {
    file: checkpointPath,
  });
}

/** Read a tokenizer file fully. */
export async function readTokenizerFile(path: string): Promise<Uint8Array> {
  try {
    return await readFile(path);
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code === 'ENOENT' ? 'FILE_NOT_FOUND' : 'IO_ERROR';
    throw new EngineError(code, `${path}: cannot read (${(cause as Error).message})`, { file: path, cause });
  }
}

/**
 * Load a llama2.c checkpoint (fp32, legacy v0 or `ak42` v1) from a byte source, with its tokenizer bytes.
 * llama2.c trains Q/K in the interleaved RoPE layout; rows are un-permuted to HF rotate-half order here.
 */
export async function loadLlama2cFromSource(
  source: ByteSource,
  tokenizerBytes: Uint8Array,
  tokenizerFile: string,
  options: LoadModelOptions = {},
): Promise<LoadedModel> {
  const { header, slots } = await readLlama2cHeader(source);
  const config = llama2cModelConfig(header);
  const tokenizer = llama2cTokenizer(tokenizerBytes, tokenizerFile, header.vocabSize);
  const weightSlots = slots.filter((s) => !s.name.startsWith('freq_cis'));
  const totalBytes = weightSlots.reduce((sum, s) => sum + 4 * s.shape.reduce((a, b) => a * b, 1), 0);
  const progress = new ProgressTracker(totalBytes, options.onProgress);
  const tensors = new Map<string, Tensor>();
  const warnings: string[] = [];
  for (const slot of slots) {
    const count = slot.shape.reduce((a, b) => a * b, 1);
    let data = (await readTensorData(source, slot.offset, count, 'f32')) as Float32Array;
    if (slot.name === 'freq_cis_real') {
      // Sanity check of the RoPE base: row 1 holds cos(θ^(-2i/headDim)).
      const half = config.headDim / 2;
      for (let i = 0; i < half && slot.shape[0]! > 1; i++) {
        const want = Math.cos(LLAMA2C_ROPE_THETA ** ((-2 * i) / config.headDim));
        if (Math.abs(data[half + i]! - want) > 1e-4) {
          warnings.push(`${source.name}: stored RoPE table differs from θ = ${LLAMA2C_ROPE_THETA} (freq_cis_real[1][${i}] = ${data[half + i]}, expected ${want})`);
          break;
        }
      }
      continue;
    }
    if (slot.name === 'freq_cis_imag') continue;
    if (slot.name.endsWith('q_proj.weight') || slot.name.endsWith('k_proj.weight')) {
      const heads = slot.name.endsWith('q_proj.weight') ? header.numHeads : header.numKvHeads;
      data = permuteRotaryRows(data, slot.shape[0]!, slot.shape[1]!, heads, 'toRotateHalf', slot.name);
    }
    tensors.set(slot.name, { dtype: 'f32', shape: slot.shape, data });
    progress.add(4 * count, source.name, slot.name);
  }
  return {
    format: 'llama2c',
    path: source.name,
    config,
    weights: assembleWeights(config, tensors, source.name),
    tokenizer,
    chatTemplate: undefined,
    generationConfig: { bosTokenId: 1, eosTokenIds: [2] },
    kvScales: undefined,
    checkpointKvScales: undefined,
    warnings,
  };
}
