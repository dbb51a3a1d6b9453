import { parseArgs, type ParseArgsConfig } from 'node:util';
import { CacheError, resolveKvCacheDtype, type KvCacheDtypeOption } from '@kvq/cache';
import { KV_CACHE_ROTATIONS, type KvCacheRotation, type SamplingParams } from '@kvq/engine';
import type { BackendCandidate } from '@kvq/kernels';
import { BACKEND_NAMES, CLI_BACKEND_CANDIDATES } from './backends.js';
import { CliError } from './errors.js';

type Options = NonNullable<ParseArgsConfig['options']>;

/** Parses `argv` with node:util parseArgs; unknown flags and missing values are usage errors (exit 2). */
export function parseCommand<O extends Options>(argv: string[], options: O, allowPositionals = true): ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: boolean; strict: true }>> {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (error) {
    throw new CliError('USAGE', (error as Error).message, { cause: error });
  }
}

/**
 * `--kv-cache-dtype` values with per-tensor (or per-head) scales or none: vLLM's (`fp8*` become the FNUZ formats on
 * FNUZ hardware, as in vLLM), then kvq's explicit FNUZ storage names.
 */
const KV_CACHE_FLOAT_DTYPES = ['auto', 'fp8', 'fp8_e4m3', 'fp8_e5m2', 'bfloat16', 'float16', 'float32', 'e4m3fnuz', 'e5m2fnuz'] as const;

/**
 * `--kv-cache-dtype` values whose scales are computed when the cache is written (vLLM's `*_per_token_head` and
 * `nvfp4`, kvq's `int4_g16/32/64`, `q4_0` and `int4_g32_f16`; docs/spec/kv-dtypes.md). Every built-in backend has kernels for them (the GPU
 * ones correctness-first); on a backend without them the engine refuses them before loading the model.
 */
export const KV_CACHE_QUANT_DTYPES = ['fp8_per_token_head', 'int8_per_token_head', 'int4_per_token_head', 'int4_g16', 'int4_g32', 'int4_g64', 'nvfp4', 'q4_0', 'int4_g32_f16'] as const;

/** Every `--kv-cache-dtype` value the CLI accepts (each is what `resolveKvCacheDtype` accepts; a test keeps them in step). */
export const KV_CACHE_DTYPES = [...KV_CACHE_FLOAT_DTYPES, ...KV_CACHE_QUANT_DTYPES] as const;

/** Options every model-running command shares (vLLM's engine arguments). */
export const MODEL_OPTIONS = {
  model: { type: 'string', short: 'm' },
  tokenizer: { type: 'string' },
  'kv-cache-dtype': { type: 'string' },
  'kv-cache-value-dtype': { type: 'string' },
  'calculate-kv-scales': { type: 'boolean' },
  'fp8-query': { type: 'boolean' },
  'kv-cache-rotation': { type: 'string' },
  'kv-cache-dtype-skip-layers': { type: 'string', multiple: true },
  'kv-cache-keep-sink': { type: 'string' },
  'kv-cache-keep-recent': { type: 'string' },
  'quantization-param-path': { type: 'string' },
  'ggml-activations': { type: 'string' },
  'int4-activations': { type: 'string' },
  'max-model-len': { type: 'string' },
  'kv-cache-memory': { type: 'string' },
  'block-size': { type: 'string' },
  backend: { type: 'string' },
} as const;

/** Help lines for {@link MODEL_OPTIONS}. */
export const MODEL_HELP = `Model options:
  -m, --model M             local folder/file (HF folder, .gguf, llama2.c .bin) or Hub id org/name[@revision]
                            (default: the embedded kvq-tiny)
  --tokenizer PATH          tokenizer file for llama2.c checkpoints
  --kv-cache-dtype D        ${KV_CACHE_FLOAT_DTYPES.join(' | ')} (default auto),
                            or scaled per token when written: ${KV_CACHE_QUANT_DTYPES.slice(0, 3).join(' | ')} |
                            ${KV_CACHE_QUANT_DTYPES.slice(3).join(' | ')} (every backend; kvq plan shows
                            their bytes per token)
  --kv-cache-value-dtype D  store V in D instead (any --kv-cache-dtype value; llama.cpp's --cache-type-v),
                            e.g. --kv-cache-dtype int8_per_token_head --kv-cache-value-dtype int4_g32_f16:
                            keys are the more sensitive half (CPU, GPU and reference backends; default: V
                            like K)
  --calculate-kv-scales     FP8 scales from the first forward pass (vLLM calculate_kv_scales); with nvfp4, its
                            per-tensor K/V scales (amax / 1200)
  --fp8-query               FP8-query attention (Flash Attention 3 semantics; needs an FP8 KV cache and, to be
                            accurate, calibrated q scales: checkpoint q_scale or --calculate-kv-scales)
  --kv-cache-rotation R     none | hadamard (default none): rotate q, k, v of every head by a randomized
                            orthonormal Walsh-Hadamard transform before the cache write (scores unchanged; a
                            quantized cache loses less, most with the 4-bit dtypes)
  --kv-cache-dtype-skip-layers L
                            layers whose KV cache stays in the model dtype (vLLM's flag): indices and/or
                            sliding_window, comma-separated or repeated, e.g. 0,1,27 (default none)
  --kv-cache-keep-sink N    the first N tokens of every sequence (rounded up to whole blocks) also stay in
                            the model dtype and attention reads them from there (default 0)
  --kv-cache-keep-recent N  the newest N tokens too (up to N + block size - 1; they leave the model dtype as
                            they age out) (default 0). Both: quantized caches, CPU/reference backends,
                            prefix caching off (kvq serve turns it off for them)
  --quantization-param-path F
                            vLLM's legacy kv_cache_scales.json: one K/V scale per layer for an FP8 e4m3 cache
                            (replaces checkpoint scales; never read from the model folder unless named here)
  --ggml-activations A      q8 | f32: activations meeting GGUF-quantized weights are rounded to GGML's 8-bit
                            blocks as llama.cpp does (q8, default; int8 dot products) or kept float32 (f32)
  --int4-activations A      q16 | f32: activations meeting int4 (W4A16) weights are rounded to 16 bits in
                            blocks of 128 (q16, default; integer dot products on AVX-512 VNNI) or kept float32
  --max-model-len N         max prompt + output tokens (default: the model's)
  --kv-cache-memory SIZE    KV cache budget, e.g. 64MiB, 1GB, 1048576 (default 256MiB)
  --block-size N            tokens per KV block, a power of two (default 16)
  --backend NAME            kernel backend: ${BACKEND_NAMES.join(' | ')} (default auto, or env KVQ_BACKEND).
                            auto tries cuda, rocm, cpu, then reference, and takes the first that loads: a GPU
                            backend is skipped quietly when its addon is not built or there is no driver/device,
                            and only ending on reference prints a warning (kvq env shows every reason).
                            cuda / rocm need the built addon (pnpm --filter @kvq/kernels-cuda build:gpu,
                            pnpm --filter @kvq/kernels-rocm build:gpu) and a GPU; a named backend that cannot
                            load is an error with the reason, never a fallback`;

/** Sampling options shared by generate/chat. */
export const SAMPLING_OPTIONS = {
  temperature: { type: 'string' },
  'top-p': { type: 'string' },
  'top-k': { type: 'string' },
  'min-p': { type: 'string' },
  'repetition-penalty': { type: 'string' },
  seed: { type: 'string' },
  'max-tokens': { type: 'string' },
  stop: { type: 'string', multiple: true },
  'ignore-eos': { type: 'boolean' },
} as const;

/** Help lines for {@link SAMPLING_OPTIONS}. */
export const SAMPLING_HELP = `Sampling options (defaults: the model's generation_config.json, then vLLM's):
  --temperature T           0 = greedy
  --top-p P                 nucleus mass in (0, 1]
  --top-k K                 keep the K most likely tokens (0 = off)
  --min-p P                 drop tokens below P x the top probability
  --repetition-penalty R    > 1 discourages repeats
  --seed S                  reproducible sampling
  --max-tokens N            most tokens to generate
  --stop TEXT               stop string (repeatable)
  --ignore-eos              keep going past end-of-sequence`;

/**
 * Parses a byte size: plain bytes (`1048576`), or a number with a unit: B, KB/MB/GB/TB (powers of 1000),
 * KiB/MiB/GiB/TiB (powers of 1024); `K`, `M`, `G` alone are binary (as memory flags usually are).
 */
export function parseSize(text: string, flag: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$/i.exec(text);
  if (!m) throw new CliError('USAGE', `${flag} ${JSON.stringify(text)} is not a size (examples: 512MiB, 4GB, 1048576)`);
  const value = Number(m[1]);
  const unit = (m[2] ?? 'b').toLowerCase();
  const powers: Record<string, number> = { k: 1, m: 2, g: 3, t: 4 };
  let bytes: number;
  if (unit === 'b') bytes = value;
  else {
    const p = powers[unit[0]!]!;
    const decimal = unit.length === 2 && unit[1] === 'b';
    bytes = value * (decimal ? 1000 : 1024) ** p;
  }
  bytes = Math.floor(bytes);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new CliError('USAGE', `${flag} ${JSON.stringify(text)} must be a positive size`);
  return bytes;
}

/** A finite number flag, optionally range-checked. */
export function parseNumber(text: string | undefined, flag: string, check?: { min?: number; max?: number; integer?: boolean; minExclusive?: boolean }): number | undefined {
  if (text === undefined) return undefined;
  const v = Number(text);
  const c = check ?? {};
  const bad =
    text.trim() === '' ||
    !Number.isFinite(v) ||
    (c.integer && !Number.isInteger(v)) ||
    (c.min !== undefined && (c.minExclusive ? v <= c.min : v < c.min)) ||
    (c.max !== undefined && v > c.max);
  if (bad) {
    const rules = [c.integer ? 'an integer' : 'a number', c.min !== undefined ? `${c.minExclusive ? '>' : '>='} ${c.min}` : '', c.max !== undefined ? `<= ${c.max}` : '']
      .filter(Boolean)
      .join(' ');
    throw new CliError('USAGE', `${flag} must be ${rules}, got ${JSON.stringify(text)}`);
  }
  return v;
}

/** Validates `--kv-cache-dtype` (usage error listing the choices). */
export function parseKvCacheDtype(text: string | undefined, flag = '--kv-cache-dtype'): KvCacheDtypeOption {
  const v = (text ?? 'auto') as KvCacheDtypeOption;
  try {
    resolveKvCacheDtype(v, 'bf16');
  } catch (error) {
    if (error instanceof CacheError) throw new CliError('USAGE', `${flag} ${JSON.stringify(text)} is not one of ${KV_CACHE_DTYPES.join(', ')}`, { cause: error });
    throw error;
  }
  return v;
}

/**
 * Engine options from {@link MODEL_OPTIONS} values (model path resolution is separate), with the backend candidates
 * `--backend` chooses among ({@link CLI_BACKEND_CANDIDATES}: cuda, rocm, cpu).
 */
export function engineOptions(values: Record<string, unknown>) {
  const s = (k: string) => values[k] as string | undefined;
  const blockSize = parseNumber(s('block-size'), '--block-size', { integer: true, min: 1 });
  if (blockSize !== undefined && (blockSize & (blockSize - 1)) !== 0) throw new CliError('USAGE', `--block-size must be a power of two, got ${blockSize}`);
  const out: {
    kvCacheDtype: KvCacheDtypeOption;
    kvCacheValueDtype?: KvCacheDtypeOption;
    calculateKvScales: boolean;
    fp8Query?: boolean;
    kvCacheRotation?: KvCacheRotation;
    kvCacheDtypeSkipLayers?: (number | 'sliding_window')[];
    kvCacheKeepSink?: number;
    kvCacheKeepRecent?: number;
    quantizationParamPath?: string;
    ggmlActivations?: 'q8' | 'f32';
    int4Activations?: 'q16' | 'f32';
    maxModelLen?: number;
    kvCacheMemory?: number;
    blockSize?: number;
    backend?: string;
    backendCandidates: readonly BackendCandidate[];
  } = { kvCacheDtype: parseKvCacheDtype(s('kv-cache-dtype')), calculateKvScales: values['calculate-kv-scales'] === true, backendCandidates: CLI_BACKEND_CANDIDATES };
  if (values['fp8-query'] === true) out.fp8Query = true;
  if (s('kv-cache-value-dtype') !== undefined) out.kvCacheValueDtype = parseKvCacheDtype(s('kv-cache-value-dtype'), '--kv-cache-value-dtype');
  const rotation = s('kv-cache-rotation');
  if (rotation !== undefined) {
    if (!(KV_CACHE_ROTATIONS as readonly string[]).includes(rotation)) {
      throw new CliError('USAGE', `--kv-cache-rotation must be one of ${KV_CACHE_ROTATIONS.join(', ')}, got ${JSON.stringify(rotation)}`);
    }
    out.kvCacheRotation = rotation as KvCacheRotation;
  }
  const skip = values['kv-cache-dtype-skip-layers'] as string[] | undefined;
  if (skip !== undefined) out.kvCacheDtypeSkipLayers = parseSkipLayers(skip);
  const sink = parseNumber(s('kv-cache-keep-sink'), '--kv-cache-keep-sink', { integer: true, min: 0 });
  if (sink !== undefined) out.kvCacheKeepSink = sink;
  const recent = parseNumber(s('kv-cache-keep-recent'), '--kv-cache-keep-recent', { integer: true, min: 0 });
  if (recent !== undefined) out.kvCacheKeepRecent = recent;
  const paramPath = s('quantization-param-path');
  if (paramPath !== undefined) {
    if (paramPath.trim() === '') throw new CliError('USAGE', '--quantization-param-path needs a file path');
    out.quantizationParamPath = paramPath;
  }
  const act = s('ggml-activations');
  if (act !== undefined) {
    if (act !== 'q8' && act !== 'f32') throw new CliError('USAGE', `--ggml-activations must be q8 or f32, got ${JSON.stringify(act)}`);
    out.ggmlActivations = act;
  }
  const act4 = s('int4-activations');
  if (act4 !== undefined) {
    if (act4 !== 'q16' && act4 !== 'f32') throw new CliError('USAGE', `--int4-activations must be q16 or f32, got ${JSON.stringify(act4)}`);
    out.int4Activations = act4;
  }
  const maxModelLen = parseNumber(s('max-model-len'), '--max-model-len', { integer: true, min: 2 });
  if (maxModelLen !== undefined) out.maxModelLen = maxModelLen;
  if (s('kv-cache-memory') !== undefined) out.kvCacheMemory = parseSize(s('kv-cache-memory')!, '--kv-cache-memory');
  if (blockSize !== undefined) out.blockSize = blockSize;
  if (s('backend') !== undefined) out.backend = s('backend')!;
  return out;
}

/** `--kv-cache-dtype-skip-layers` values (comma-separated and/or repeated): layer indices and `sliding_window`. */
function parseSkipLayers(values: readonly string[]): (number | 'sliding_window')[] {
  const out: (number | 'sliding_window')[] = [];
  for (const part of values.flatMap((v) => v.split(','))) {
    const p = part.trim();
    if (p === 'sliding_window') out.push(p);
    else if (/^\d+$/.test(p)) out.push(Number(p));
    else throw new CliError('USAGE', `--kv-cache-dtype-skip-layers takes layer indices and sliding_window, got ${JSON.stringify(part)}`);
  }
  return out;
}

/** Sampling parameters from {@link SAMPLING_OPTIONS} values over `defaults`. */
export function samplingOptions(values: Record<string, unknown>, defaults: SamplingParams, maxTokensDefault: number): SamplingParams {
  const s = (k: string) => values[k] as string | undefined;
  const p: SamplingParams = { ...defaults, maxTokens: maxTokensDefault };
  const set = <K extends keyof SamplingParams>(k: K, v: SamplingParams[K] | undefined) => {
    if (v !== undefined) p[k] = v;
  };
  set('temperature', parseNumber(s('temperature'), '--temperature', { min: 0 }));
  set('topP', parseNumber(s('top-p'), '--top-p', { min: 0, max: 1, minExclusive: true }));
  set('topK', parseNumber(s('top-k'), '--top-k', { integer: true, min: -1 }));
  set('minP', parseNumber(s('min-p'), '--min-p', { min: 0, max: 1 }));
  set('repetitionPenalty', parseNumber(s('repetition-penalty'), '--repetition-penalty', { min: 0, minExclusive: true }));
  set('seed', parseNumber(s('seed'), '--seed', { integer: true }));
  set('maxTokens', parseNumber(s('max-tokens'), '--max-tokens', { integer: true, min: 1 }));
  const stop = values.stop as string[] | undefined;
  if (stop?.some((x) => x.length === 0)) throw new CliError('USAGE', '--stop needs a non-empty string');
  if (stop?.length) p.stop = stop;
  if (values['ignore-eos'] === true) p.ignoreEos = true;
  return p;
}
