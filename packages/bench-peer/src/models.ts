import { existsSync } from 'node:fs';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { loadModel, openFileSource, readGgufHeader } from '@kvq/engine';
import { fixturePath } from '@kvq/fixtures';
import { modelTinyPath } from '@kvq/model-tiny';

import { BenchPeerError } from './errors.js';
import { writeHfModelAsGguf } from './gguf/from-hf.js';
import { SYNTHETIC_VOCAB, type LlamaShape } from './gguf/llama.js';
import { writeRandomLlamaGguf } from './gguf/random-model.js';
import type { GgmlTensorType } from '@kvq/engine';
import type { ModelDims } from './protocol.js';

/** Bump when the writer's output for the same spec changes, so cached files are rewritten. */
const WRITER_VERSION = 1;

/** The random-weight shapes of the benchmark. */
export const RANDOM_SHAPES = {
  'llama-768x12': { hiddenSize: 768, numLayers: 12, numHeads: 12, numKvHeads: 4, headDim: 64, intermediateSize: 2048, vocabSize: 32000, contextLength: 16384 },
  'tinyllama-1.1b': { hiddenSize: 2048, numLayers: 22, numHeads: 32, numKvHeads: 4, headDim: 64, intermediateSize: 5632, vocabSize: 32000, contextLength: 16384 },
} as const satisfies Record<string, LlamaShape>;

/** Models the speed benchmark can run. */
export const SPEED_MODELS = ['stories260K', 'llama-768x12-f32', 'llama-768x12-f16', 'tinyllama-1.1b-f16'] as const;
/** A model name of {@link SPEED_MODELS}. */
export type SpeedModelName = (typeof SPEED_MODELS)[number];

/** A model file both engines load, with what the harness needs to know about it. */
export interface PreparedModel {
  readonly name: string;
  readonly path: string;
  /** How it was made (for the report). */
  readonly origin: string;
  readonly weightType: string;
  readonly dims: ModelDims & { readonly hiddenSize: number; readonly numHeads: number; readonly intermediateSize: number; readonly contextLength: number };
  /** Prompt token ids are drawn from [lo, hi): normal tokens (no BOS/EOS/control ids). */
  readonly tokenRange: readonly [number, number];
  readonly fileBytes: number;
}

async function cached(path: string, spec: unknown, make: () => Promise<unknown>): Promise<void> {
  const marker = `${path}.json`;
  const want = JSON.stringify({ writer: WRITER_VERSION, spec });
  if (existsSync(path) && existsSync(marker) && (await readFile(marker, 'utf8')) === want) return;
  await make();
  await writeFile(marker, want);
}

async function dimsOf(path: string, name: string, origin: string, weightType: string, tokenRange: readonly [number, number]): Promise<PreparedModel> {
  const source = await openFileSource(path);
  try {
    const g = await readGgufHeader(source);
    const u = (k: string) => Number(g.metadata.get(`llama.${k}`));
    const hiddenSize = u('embedding_length');
    const numHeads = u('attention.head_count');
    const tokens = g.metadata.get('tokenizer.ggml.tokens') as unknown[];
    const dims = {
      hiddenSize,
      numHeads,
      numLayers: u('block_count'),
      numKvHeads: u('attention.head_count_kv'),
      headDim: hiddenSize / numHeads,
      intermediateSize: u('feed_forward_length'),
      vocabSize: tokens.length,
      contextLength: u('context_length'),
    };
    return { name, path, origin, weightType, dims, tokenRange, fileBytes: (await stat(path)).size };
  } finally {
    await source.close();
  }
}

/**
 * Write (or reuse from `workDir`) one speed model: stories260K is llama.cpp's own GGUF from @kvq/fixtures, used as is;
 * the random shapes are written by this package's GGUF writer with seed 7.
 * @throws BenchPeerError `INVALID_ARGUMENT` for an unknown name; FixturesError when stories260K.gguf is missing from the checkout
 */
export async function prepareSpeedModel(name: SpeedModelName, workDir: string): Promise<PreparedModel> {
  await mkdir(workDir, { recursive: true });
  if (name === 'stories260K') {
    const path = fixturePath('models/stories260K/stories260K.gguf');
    // tok512: 0 <unk>, 1 <s>, 2 </s>, then bytes and merges.
    return dimsOf(path, name, "llama.cpp's conversion of karpathy's stories260K (F32), from @kvq/fixtures", 'F32', [3, 512]);
  }
  const m = /^(llama-768x12|tinyllama-1\.1b)-(f32|f16)$/.exec(name);
  if (!m) throw new BenchPeerError('INVALID_ARGUMENT', `unknown model ${JSON.stringify(name)} (${SPEED_MODELS.join(', ')})`, { field: 'models' });
  const shape = RANDOM_SHAPES[m[1] as keyof typeof RANDOM_SHAPES];
  const type = m[2]!.toUpperCase() as GgmlTensorType;
  const path = join(workDir, `${name}.gguf`);
  const seed = 7;
  await cached(path, { shape, type, seed }, () => writeRandomLlamaGguf(path, shape, { type, seed, name }));
  const s = shape;
  return dimsOf(
    path,
    name,
    `random weights (seed ${seed}) written by @kvq/bench-peer's GGUF writer: ${s.hiddenSize} wide, ${s.numLayers} layers, ${s.numHeads}/${s.numKvHeads} heads, ffn ${s.intermediateSize}, vocab ${s.vocabSize} (synthetic SentencePiece vocabulary)`,
    type,
    [SYNTHETIC_VOCAB.firstNormal, s.vocabSize],
  );
}

/** kvq-tiny (HF, bf16) written as GGUF BF16 (bit-exact weights) for the quality comparison. */
export async function prepareQualityModel(workDir: string): Promise<PreparedModel> {
  await mkdir(workDir, { recursive: true });
  const path = join(workDir, 'kvq-tiny-bf16.gguf');
  await cached(path, { source: 'kvq-tiny', type: 'BF16' }, async () => writeHfModelAsGguf(path, await loadModel(modelTinyPath), 'BF16'));
  return dimsOf(path, 'kvq-tiny-bf16', 'kvq-tiny (@kvq/model-tiny, HF bfloat16) converted to GGUF BF16 by @kvq/bench-peer (weights bit-exact)', 'BF16', [4, 2048]);
}
