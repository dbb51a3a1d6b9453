import { readFile } from 'node:fs/promises';

import type { ChatTemplate } from '../chat/chat-template.js';
import type { GenerationConfig } from '../config/generation-config.js';
import type { KvCachePlanFile } from '../weights/kv-cache-plan.js';
import type { ModelConfig } from '../config/model-config.js';
import { EngineError } from '../errors.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { CheckpointKvScales, KvCacheFormat, KvScales } from '../weights/kv-scales.js';
import type { ModelWeights } from '../weights/model-weights.js';

/** File formats `loadModel` reads. */
export type ModelFormat = 'hf' | 'gguf' | 'llama2c';

/** Progress of weight loading, reported after each tensor. */
export interface LoadProgress {
  /** Weight bytes read so far. */
  readonly loadedBytes: number;
  /** Weight bytes to read in all. */
  readonly totalBytes: number;
  /** File the last tensor came from. */
  readonly file: string;
  /** Name of the last tensor read (as stored in the file); `''` while downloading. */
  readonly tensor: string;
  /**
   * `'download'` while `LLM.create` fetches a Hub id's files (`loadedBytes`/`totalBytes` then count the bytes of
   * `file`, a path in the repo); absent while weights are read.
   */
  readonly phase?: 'download';
}

/** Options of `loadModel`. */
export interface LoadModelOptions {
  /** Called after each tensor is read. */
  onProgress?: (progress: LoadProgress) => void;
  /**
   * llama2.c only: the tokenizer file. Default: `tokenizer.bin`, then `tok<vocab>.bin`, beside the checkpoint.
   */
  tokenizerPath?: string;
  /** The FP8 KV-cache format `kvScales` are resolved for (fnuz doubling, warnings). Default `'e4m3fn'`. */
  kvCacheFormat?: KvCacheFormat;
  /** See `ResolveKvScalesOptions.doubleCompressedTensorsOnFnuz`. Default false (vLLM parity). */
  doubleCompressedTensorsOnFnuz?: boolean;
}

/**
 * A model in memory, normalized across file formats: every format yields Hugging Face tensor orientation and
 * rotate-half Q/K row order, so the same forward pass runs all of them.
 */
export interface LoadedModel {
  readonly format: ModelFormat;
  /** The folder or file it was loaded from. */
  readonly path: string;
  readonly config: ModelConfig;
  readonly weights: ModelWeights;
  readonly tokenizer: Tokenizer;
  /** The model's chat template, when it has one. */
  readonly chatTemplate: ChatTemplate | undefined;
  readonly generationConfig: GenerationConfig;
  /** KV-cache scales resolved for `options.kvCacheFormat`, when the checkpoint has any (or declares an FP8 KV cache). */
  readonly kvScales: KvScales | undefined;
  /** The raw checkpoint scales, to re-resolve for another format with `resolveKvScales`. */
  readonly checkpointKvScales: CheckpointKvScales | undefined;
  /** Things the loader skipped or assumed (unused tensors, fallback scales, ...). */
  readonly warnings: readonly string[];
  /** The checkpoint's per-layer KV-cache dtype plan (`kvq_kv_cache_plan.json` in an HF folder), when it has one. */
  readonly kvCachePlan?: KvCachePlanFile;
}

/** A tokenizer with the chat template and special-token setup of a model, without its weights. */
export interface LoadedTokenizer {
  readonly tokenizer: Tokenizer;
  readonly chatTemplate: ChatTemplate | undefined;
}

/**
 * Read and parse a JSON file.
 * @returns undefined when the file does not exist and `required` is false.
 * @throws EngineError `FILE_NOT_FOUND` (required and missing) / `MALFORMED` (bad JSON) / `IO_ERROR`.
 */
export async function readJsonFile(path: string, required: boolean): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT') {
      if (!required) return undefined;
      throw new EngineError('FILE_NOT_FOUND', `${path}: required file is missing`, { file: path, cause });
    }
    throw new EngineError('IO_ERROR', `${path}: cannot read (${(cause as Error).message})`, { file: path, cause });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (cause) {
    throw new EngineError('MALFORMED', `${path}: invalid JSON (${(cause as Error).message})`, { file: path, cause });
  }
}

/** Tracks bytes read for {@link LoadProgress}. */
export class ProgressTracker {
  private loaded = 0;
  constructor(
    private readonly totalBytes: number,
    private readonly callback: ((progress: LoadProgress) => void) | undefined,
  ) {}
  add(bytes: number, file: string, tensor: string): void {
    this.loaded += bytes;
    this.callback?.({ loadedBytes: this.loaded, totalBytes: this.totalBytes, file, tensor });
  }
}
