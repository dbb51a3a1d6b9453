import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { toGenerationConfigJson } from '../config/generation-config.js';
import { toHfConfigJson } from '../config/model-config.js';
import { EngineError } from '../errors.js';
import { writeSafetensors } from '../formats/safetensors.js';
import { loadModel } from '../load/load-model.js';
import { isDenseDType } from '../tensor.js';
import type { LoadedModel, LoadModelOptions } from '../load/types.js';
import { weightsByHfName } from '../weights/model-weights.js';

/** Options of {@link convertToHf}. */
export interface ConvertOptions extends LoadModelOptions {
  /** Write into a folder that already has files (they are overwritten). Default false. */
  overwrite?: boolean;
}

/** What {@link convertToHf} wrote. */
export interface ConvertResult {
  /** The output folder. */
  readonly dir: string;
  /** Names of the files written, relative to `dir`. */
  readonly files: readonly string[];
  /** Things the conversion could not carry over. */
  readonly warnings: readonly string[];
}

async function writeJson(path: string, value: unknown): Promise<void> {
  try {
    await writeFile(path, JSON.stringify(value, null, 2) + '\n');
  } catch (cause) {
    throw new EngineError('IO_ERROR', `${path}: write failed (${(cause as Error).message})`, { file: path, cause });
  }
}

/**
 * Convert a model (a GGUF file or llama2.c checkpoint, or any path / {@link LoadedModel} `loadModel` accepts) to a
 * Hugging Face folder: `config.json`, `generation_config.json`, `model.safetensors` (the loaded dtypes, Q/K in
 * rotate-half order, no `lm_head.weight` when tied), `tokenizer.json` and `tokenizer_config.json` (with the chat
 * template, if any). Loading the folder back gives tensors equal element for element and the same token ids.
 * @throws EngineError `UNSUPPORTED_DTYPE` (quantized weights), `INVALID_ARGUMENT` (non-empty output folder without `overwrite`; RoPE frequency factors,
 *   which config.json cannot express), `IO_ERROR`, and any `loadModel` error.
 */
export async function convertToHf(source: string | LoadedModel, outDir: string, options: ConvertOptions = {}): Promise<ConvertResult> {
  await prepareOutputFolder(outDir, options.overwrite === true);
  const model = typeof source === 'string' ? await loadModel(source, options) : source;
  const tensors = weightsByHfName(model.config, model.weights);
  for (const [name, t] of tensors) {
    if (!isDenseDType(t.dtype)) {
      throw new EngineError(
        'UNSUPPORTED_DTYPE',
        `${model.path}: tensor ${name} is ${t.dtype}; a Hugging Face folder is written with dense weights only (use kvq quantize to make a compressed-tensors folder from a dense model)`,
        { file: model.path, field: name },
      );
    }
  }
  await makeFolder(outDir);
  const warnings: string[] = [];
  if (model.kvScales) warnings.push('KV-cache scales are not written to the converted folder');
  const files = await writeHfSideFiles(model, outDir);
  await writeSafetensors(join(outDir, 'model.safetensors'), tensors, { format: 'pt' });
  return { dir: outDir, files: [...files.slice(0, 2), 'model.safetensors', ...files.slice(2)], warnings };
}

/**
 * Refuse a non-empty output folder unless `overwrite`.
 * @throws EngineError `INVALID_ARGUMENT`.
 */
export async function prepareOutputFolder(outDir: string, overwrite: boolean): Promise<void> {
  let existing: string[] = [];
  try {
    existing = await readdir(outDir);
  } catch {
    existing = [];
  }
  if (existing.length > 0 && !overwrite) {
    throw new EngineError('INVALID_ARGUMENT', `${outDir}: output folder is not empty (pass overwrite: true to replace its files)`, { file: outDir });
  }
}

async function makeFolder(outDir: string): Promise<void> {
  try {
    await mkdir(outDir, { recursive: true });
  } catch (cause) {
    throw new EngineError('IO_ERROR', `${outDir}: cannot create folder (${(cause as Error).message})`, { file: outDir, cause });
  }
}

/**
 * Write the non-weight files of a Hugging Face folder for a loaded model: `config.json` (with `extraConfig` keys
 * merged in, e.g. a `quantization_config`), `generation_config.json`, `tokenizer.json`, `tokenizer_config.json` (with
 * the chat template, if any). Creates the folder.
 * @returns the file names written, in that order.
 * @throws EngineError `IO_ERROR`, `INVALID_ARGUMENT` (a config `toHfConfigJson` cannot express).
 */
export async function writeHfSideFiles(model: LoadedModel, outDir: string, extraConfig: Record<string, unknown> = {}): Promise<string[]> {
  await makeFolder(outDir);
  await writeJson(join(outDir, 'config.json'), { ...toHfConfigJson(model.config), ...extraConfig });
  await writeJson(join(outDir, 'generation_config.json'), toGenerationConfigJson(model.generationConfig));
  await writeJson(join(outDir, 'tokenizer.json'), model.tokenizer.json);
  const tokenizerConfig: Record<string, unknown> = { ...model.tokenizer.config, model_max_length: model.config.maxPositionEmbeddings };
  if (model.chatTemplate) tokenizerConfig.chat_template = model.chatTemplate.source;
  await writeJson(join(outDir, 'tokenizer_config.json'), tokenizerConfig);
  return ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json'];
}
