import { basename, dirname, extname, resolve } from 'node:path';

import { EngineError } from '../errors.js';
import { GGUF_MAGIC, readGgufHeader } from '../formats/gguf.js';
import { LLAMA2C_MAGIC, readLlama2cHeader } from '../formats/llama2c.js';
import { openFileSource, pathKind } from '../io/source.js';
import { loadGgufFromSource, ggufTokenizer } from './gguf.js';
import { loadHfModel, loadHfTokenizer, readHfConfigs } from './hf.js';
import { findLlama2cTokenizer, llama2cTokenizer, loadLlama2cFromSource, readTokenizerFile } from './llama2c.js';
import { stackLayerProjections } from './stack-projections.js';
import type { LoadedModel, LoadedTokenizer, LoadModelOptions, ModelFormat } from './types.js';

const HF_FILE_NAMES = new Set(['config.json', 'model.safetensors', 'model.safetensors.index.json', 'tokenizer.json', 'tokenizer_config.json']);

/**
 * What `path` holds: a Hugging Face folder (or one of its files), a GGUF file, or a llama2.c checkpoint.
 * Files are recognised by content (GGUF magic, llama2.c `ak42` magic) and then by extension (`.gguf`, `.bin`).
 * @returns the format and the path to load (the folder for HF files).
 * @throws EngineError `FILE_NOT_FOUND` / `UNSUPPORTED_FORMAT`.
 */
export async function detectModelFormat(path: string): Promise<{ format: ModelFormat; path: string }> {
  const abs = resolve(path);
  const kind = await pathKind(abs);
  if (!kind) throw new EngineError('FILE_NOT_FOUND', `${abs}: no such file or folder`, { file: abs });
  if (kind === 'directory') return { format: 'hf', path: abs };
  const name = basename(abs);
  if (HF_FILE_NAMES.has(name) || extname(name) === '.safetensors') return { format: 'hf', path: dirname(abs) };
  if (name === 'pytorch_model.bin' || extname(name) === '.pth' || extname(name) === '.pt') {
    throw new EngineError('UNSUPPORTED_FORMAT', `${abs}: PyTorch pickle checkpoints are not read; convert the model to safetensors`, { file: abs });
  }
  const source = await openFileSource(abs);
  let magic: number | undefined;
  try {
    const head = await source.read(0, 4);
    magic = head.length === 4 ? new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true) : undefined;
  } finally {
    await source.close();
  }
  if (magic === GGUF_MAGIC || extname(name) === '.gguf') return { format: 'gguf', path: abs };
  if (magic === LLAMA2C_MAGIC || extname(name) === '.bin') return { format: 'llama2c', path: abs };
  throw new EngineError('UNSUPPORTED_FORMAT', `${abs}: not a Hugging Face folder, GGUF file or llama2.c checkpoint (.bin)`, { file: abs });
}

/**
 * Load a model for inference: a Hugging Face folder (`config.json`, `model.safetensors` or a sharded index,
 * `tokenizer.json`, `tokenizer_config.json`, `generation_config.json`), a GGUF file (F32/F16/BF16), or a llama2.c
 * checkpoint with its `tokenizer.bin`.
 *
 * Whatever the format, weights come back in Hugging Face orientation (`[out, in]`, row-major) with Q/K rows in
 * rotate-half order (`config.ropeLayout === 'rotate_half'`): llama2.c and GGUF `llama` Q/K rows are un-permuted
 * while loading, so a llama2.c file, its GGUF conversion and `convertToHf` output load to identical tensors.
 * Each tensor's bytes are read once, straight into its typed array (16-bit weights stay raw bits in `Uint16Array`);
 * then each layer's q/k/v tensors, and its gate/up tensors, are moved into one array per group when they share a
 * stored form (dtype, width, scale layout), each tensor a row view of it (the forward pass runs the group as one
 * matrix; the values are unchanged).
 * @throws EngineError with a code naming what is wrong (see the package README's errors table).
 */
export async function loadModel(path: string, options: LoadModelOptions = {}): Promise<LoadedModel> {
  const model = await loadModelAsStored(path, options);
  // q/k/v and gate/up as row views of one array per layer each: the forward pass runs each group as one matrix.
  return { ...model, weights: stackLayerProjections(model.weights) };
}

/** {@link loadModel} without the stacking of the projections: each tensor in its own array, as read. */
async function loadModelAsStored(path: string, options: LoadModelOptions): Promise<LoadedModel> {
  const detected = await detectModelFormat(path);
  if (detected.format === 'hf') return loadHfModel(detected.path, options);
  const source = await openFileSource(detected.path);
  try {
    if (detected.format === 'gguf') return await loadGgufFromSource(source, options);
    const { header } = await readLlama2cHeader(source);
    const tokPath = await findLlama2cTokenizer(detected.path, header.vocabSize, options.tokenizerPath);
    return await loadLlama2cFromSource(source, await readTokenizerFile(tokPath), tokPath, options);
  } finally {
    await source.close();
  }
}

/**
 * Load only the tokenizer (and chat template) of a model, reading no weights. Accepts the same paths as
 * {@link loadModel}; for llama2.c checkpoints the header is read for the vocabulary size.
 */
export async function loadTokenizer(path: string, options: Pick<LoadModelOptions, 'tokenizerPath'> = {}): Promise<LoadedTokenizer> {
  const detected = await detectModelFormat(path);
  if (detected.format === 'hf') {
    const { config } = await readHfConfigs(detected.path);
    return loadHfTokenizer(detected.path, config);
  }
  const source = await openFileSource(detected.path);
  try {
    if (detected.format === 'gguf') return ggufTokenizer(await readGgufHeader(source));
    const { header } = await readLlama2cHeader(source);
    const tokPath = await findLlama2cTokenizer(detected.path, header.vocabSize, options.tokenizerPath);
    return { tokenizer: llama2cTokenizer(await readTokenizerFile(tokPath), tokPath, header.vocabSize), chatTemplate: undefined };
  } finally {
    await source.close();
  }
}
