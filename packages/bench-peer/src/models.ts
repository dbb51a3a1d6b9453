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
import { GGML_TENSOR_TYPES, quantizeModel, type GgmlTensorType, type GgufScheme } from '@kvq/engine';
import type { ModelDims } from './protocol.js';

/** Bump when the writer's output for the same spec changes, so cached files are rewritten. */
const WRITER_VERSION = 1;

/** The random-weight shapes of the benchmark. */
export const RANDOM_SHAPES = {
  'llama-768x12': { hiddenSize: 768, numLayers: 12, numHeads: 12, numKvHeads: 4, headDim: 64, intermediateSize: 2048, vocabSize: 32000, contextLength: 16384 },
  'tinyllama-1.1b': { hiddenSize: 2048, numLayers: 22, numHeads: 32, numKvHeads: 4, headDim: 64, intermediateSize: 5632, vocabSize: 32000, contextLength: 16384 },
} as const satisfies Record<string, LlamaShape>;

/** llama.cpp file types (kvq `quantize` schemes) the quantized-weight comparisons use. */
export const QUANT_SCHEMES = ['q8_0', 'q4_0', 'q4_k_m', 'q5_k_m', 'q6_k'] as const satisfies readonly GgufScheme[];
/** A scheme of {@link QUANT_SCHEMES}. */
export type QuantScheme = (typeof QUANT_SCHEMES)[number];

/** Models the speed benchmark can run (the random shapes dense or quantized with one of {@link QUANT_SCHEMES}). */
export const SPEED_MODELS = [
  'stories260K',
  'llama-768x12-f32',
  'llama-768x12-f16',
  'tinyllama-1.1b-f16',
  ...QUANT_SCHEMES.map((q) => `llama-768x12-${q}` as const),
  ...QUANT_SCHEMES.map((q) => `tinyllama-1.1b-${q}` as const),
] as const;
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
  /** How many tensors of each GGUF type the file holds (`{ Q4_K: 73, Q6_K: 13, F32: 25 }`). */
  readonly tensorTypes?: Readonly<Record<string, number>>;
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
    const typeName = new Map<number, string>(Object.entries(GGML_TENSOR_TYPES).map(([k, v]) => [v, k]));
    const tensorTypes: Record<string, number> = {};
    for (const t of g.tensors.values()) {
      const k = typeName.get(t.type) ?? `type ${t.type}`;
      tensorTypes[k] = (tensorTypes[k] ?? 0) + 1;
    }
    return { name, path, origin, weightType, dims, tokenRange, fileBytes: (await stat(path)).size, tensorTypes };
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
  const m = /^(llama-768x12|tinyllama-1\.1b)-(f32|f16|q8_0|q4_0|q4_k_m|q5_k_m|q6_k)$/.exec(name);
  if (!m) throw new BenchPeerError('INVALID_ARGUMENT', `unknown model ${JSON.stringify(name)} (${SPEED_MODELS.join(', ')})`, { field: 'models' });
  return prepareRandomModel(m[1] as keyof typeof RANDOM_SHAPES, m[2] as 'f32' | 'f16' | QuantScheme, workDir);
}

/**
 * Write (or reuse from `workDir`) a random-weight model of one of {@link RANDOM_SHAPES} (seed 7), dense (`f32`,
 * `f16`) or quantized as llama.cpp's file type `q8_0` / `q4_0` / `q4_k_m` / `q5_k_m` / `q6_k` (llama.cpp's type mix).
 */
export async function prepareRandomModel(shapeName: keyof typeof RANDOM_SHAPES, weights: 'f32' | 'f16' | QuantScheme, workDir: string): Promise<PreparedModel> {
  await mkdir(workDir, { recursive: true });
  const shape = RANDOM_SHAPES[shapeName];
  const name = `${shapeName}-${weights}`;
  const dense = weights === 'f32' || weights === 'f16';
  const type = (dense ? weights.toUpperCase() : 'F32') as GgmlTensorType;
  const scheme = dense ? undefined : weights;
  const path = join(workDir, `${name}.gguf`);
  const seed = 7;
  await cached(path, { shape, type, seed, ...(scheme ? { scheme } : {}) }, () => writeRandomLlamaGguf(path, shape, { type, seed, name, ...(scheme ? { scheme } : {}) }));
  const s = shape;
  return dimsOf(
    path,
    name,
    `random weights (seed ${seed}) written by @kvq/bench-peer's GGUF writer${scheme ? ` and quantized by @kvq/kernels' quantizeMatrix with llama.cpp's ${scheme.toUpperCase()} type mix` : ''}: ${s.hiddenSize} wide, ${s.numLayers} layers, ${s.numHeads}/${s.numKvHeads} heads, ffn ${s.intermediateSize}, vocab ${s.vocabSize} (synthetic SentencePiece vocabulary)`,
    scheme ? scheme.toUpperCase() : type,
    [SYNTHETIC_VOCAB.firstNormal, s.vocabSize],
  );
}

/**
 * kvq-tiny quantized as llama.cpp's file type `scheme` by `@kvq/engine`'s `quantizeModel` (what `kvq quantize
 * --scheme` runs; the same bf16 weights as {@link prepareQualityModel}'s BF16 file, written through the engine's
 * GGUF writer with llama.cpp's type mix). kvq-tiny is 256 wide with ffn 704: K-quant rows of 704 fall back as
 * llama.cpp's do (Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0).
 */
export async function prepareQuantizedTinyModel(scheme: QuantScheme, workDir: string): Promise<PreparedModel> {
  await mkdir(workDir, { recursive: true });
  const name = `kvq-tiny-${scheme}`;
  const path = join(workDir, `${name}.gguf`);
  await cached(path, { source: 'kvq-tiny', scheme }, async () => quantizeModel(await loadModel(modelTinyPath), path, scheme, { overwrite: true }));
  return dimsOf(path, name, `kvq-tiny (@kvq/model-tiny, HF bfloat16) quantized by @kvq/engine's quantizeModel (kvq quantize --scheme ${scheme})`, scheme.toUpperCase(), [4, 2048]);
}

/** kvq-tiny (HF, bf16) written as GGUF F32 (every bf16 value exact): the dense control of the cross-engine comparison. */
export async function prepareTinyF32Model(workDir: string): Promise<PreparedModel> {
  await mkdir(workDir, { recursive: true });
  const path = join(workDir, 'kvq-tiny-f32.gguf');
  await cached(path, { source: 'kvq-tiny', type: 'F32' }, async () => writeHfModelAsGguf(path, await loadModel(modelTinyPath), 'F32'));
  return dimsOf(path, 'kvq-tiny-f32', 'kvq-tiny (@kvq/model-tiny, HF bfloat16) converted to GGUF F32 by @kvq/bench-peer (weights exact)', 'F32', [4, 2048]);
}

/** kvq-tiny (HF, bf16) written as GGUF BF16 (bit-exact weights) for the quality comparison. */
export async function prepareQualityModel(workDir: string): Promise<PreparedModel> {
  await mkdir(workDir, { recursive: true });
  const path = join(workDir, 'kvq-tiny-bf16.gguf');
  await cached(path, { source: 'kvq-tiny', type: 'BF16' }, async () => writeHfModelAsGguf(path, await loadModel(modelTinyPath), 'BF16'));
  return dimsOf(path, 'kvq-tiny-bf16', 'kvq-tiny (@kvq/model-tiny, HF bfloat16) converted to GGUF BF16 by @kvq/bench-peer (weights bit-exact)', 'BF16', [4, 2048]);
}
