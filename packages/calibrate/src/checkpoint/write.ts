import { randomBytes } from 'node:crypto';
import { copyFile, link, mkdir, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';

import { classifyKvScaleName, convertToHf, encodeSafetensors, type Tensor } from '@kvq/engine';
import { f32ToBf16Bits, f32ToF16Bits, f16BitsToF32, bf16BitsToF32, type Fp8Format } from '@kvq/fp8';

import { CalibrateError, checkChoice, describeValue, throwIfAborted } from '../errors.js';
import type { ObserverKind } from '../observers.js';
import { kvqVersion, type Provenance } from '../provenance.js';
import { reportToJson, type CalibrationReport } from '../report.js';
import { CALIBRATION_FORMATS, convertScaleFormat, validateCalibratedScales, type CalibratedScales, type LayerScales } from '../scales.js';
import {
  CALIBRATION_JSON,
  CHECKPOINT_FLAVORS,
  compressedTensorsQuantizationConfig,
  modelOptQuantizationConfig,
  quarkQuantizationConfig,
  scaleTensorName,
  VLLM_SCALES_JSON,
  type CheckpointFlavor,
} from './formats.js';
import { copySafetensorsWithout, readShardHeaders } from './safetensors.js';

/** How the original weight files reach the output folder (they are never rewritten). */
export type WeightLinkMode = 'hardlink' | 'symlink' | 'copy';

/** Options of {@link writeCheckpoint}. */
export interface WriteCheckpointOptions {
  /**
   * The source model: a Hugging Face folder (weights linked or copied, never rewritten), or a GGUF / llama2.c
   * file (converted to a Hugging Face folder first with the engine's `convertToHf`).
   */
  readonly model: string;
  /** The folder to create. It must not exist (unless `overwrite`). Written beside it, then renamed into place. */
  readonly out: string;
  readonly scales: CalibratedScales;
  /** Default `'compressed-tensors'`. */
  readonly flavor?: CheckpointFlavor;
  /**
   * The FP8 format convention the written scales follow. Scales are converted (×2 / ÷2, recorded in the metadata)
   * when it differs from `scales.format`. Default: `scales.format` for compressed-tensors (vLLM applies those
   * scales as they are), and the OCP format (`e4m3fn` / `e5m2`) for the other flavors, whose loaders assume
   * OCP scales and double them on FNUZ hardware.
   */
  readonly scaleFormat?: Fp8Format;
  /** `kv_cache_scheme.observer`. Default: `provenance.observer`, else `'static_minmax'`. */
  readonly observer?: ObserverKind | string;
  /** Recorded in `kvq_calibration.json` and the scale file's metadata. */
  readonly provenance?: Provenance;
  /** Written into `kvq_calibration.json`. */
  readonly report?: CalibrationReport;
  /** Replace an existing output folder (swapped in only once the new one is complete). Default false. */
  readonly overwrite?: boolean;
  /** Default `'hardlink'` (falling back to a copy across file systems). */
  readonly linkWeights?: WeightLinkMode;
  /** Stops with `ABORTED`; the temporary folder is removed, the target never appears half-written. */
  readonly signal?: AbortSignal;
}

/** What {@link writeCheckpoint} wrote. */
export interface WriteCheckpointResult {
  readonly dir: string;
  /** Every file of the new folder. */
  readonly files: readonly string[];
  /** Names of the scale tensors written. */
  readonly scaleTensors: readonly string[];
  /** The scales as stored (converted to `scaleFormat` and rounded to the model dtype). */
  readonly writtenScales: CalibratedScales;
  /** Source shards that held old KV scales and were re-written without them (tensor bytes unchanged). */
  readonly rewrittenShards: readonly string[];
  readonly warnings: readonly string[];
}

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CalibrateError('IO_ERROR', `${path}: cannot read (${(cause as Error).message})`, { file: path, cause });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (cause) {
    throw new CalibrateError('MALFORMED_CHECKPOINT', `${path}: invalid JSON (${(cause as Error).message})`, { file: path, cause });
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function writeJson(path: string, value: unknown): Promise<void> {
  await writeFile(path, JSON.stringify(value, null, 2) + '\n');
}

type ScaleDtype = 'f32' | 'f16' | 'bf16';

function dtypeOfConfig(raw: Record<string, unknown>, fallback: string | undefined): ScaleDtype {
  const d = raw.torch_dtype ?? raw.dtype;
  if (d === 'float32') return 'f32';
  if (d === 'float16') return 'f16';
  if (d === 'bfloat16') return 'bf16';
  return fallback === 'F32' ? 'f32' : fallback === 'F16' ? 'f16' : fallback === 'BF16' ? 'bf16' : 'f16';
}

/** Round scales to the model dtype (what is stored) and give the tensor. */
function scaleTensor(values: Float32Array, shape: number[], dtype: ScaleDtype): { tensor: Tensor; rounded: Float32Array } {
  if (dtype === 'f32') return { tensor: { dtype, shape, data: Float32Array.from(values) }, rounded: Float32Array.from(values) };
  const bits = Uint16Array.from(values, (x) => (dtype === 'bf16' ? f32ToBf16Bits(x) : f32ToF16Bits(x)));
  const rounded = Float32Array.from(bits, (b) => (dtype === 'bf16' ? bf16BitsToF32(b) : f16BitsToF32(b)));
  rounded.forEach((x, i) => {
    if (!(x > 0) || !Number.isFinite(x)) {
      throw new CalibrateError('INVALID_ARGUMENT', `scale ${values[i]} is not representable in the model dtype ${dtype} (rounds to ${x})`, { field: 'scales' });
    }
  });
  return { tensor: { dtype, shape, data: bits }, rounded };
}

function ocpOf(format: Fp8Format): Fp8Format {
  return format === 'e4m3fnuz' ? 'e4m3fn' : format === 'e5m2fnuz' ? 'e5m2' : format;
}

async function placeFile(src: string, dst: string, mode: WeightLinkMode): Promise<'linked' | 'copied'> {
  try {
    if (mode === 'hardlink') {
      try {
        await link(src, dst);
        return 'linked';
      } catch {
        // other file system, or links not allowed: copy
      }
    } else if (mode === 'symlink') {
      await symlink(resolve(src), dst);
      return 'linked';
    }
    await copyFile(src, dst);
    return 'copied';
  } catch (cause) {
    throw new CalibrateError('IO_ERROR', `${dst}: cannot place ${src} (${(cause as Error).message})`, { file: dst, cause });
  }
}

/**
 * Write a model folder that serves with calibrated FP8 KV-cache scales: the original weights (hard-linked or
 * copied, never rewritten), a new safetensors file with the scale tensors in the model dtype, an index mapping
 * every tensor to its file, `config.json` with the flavor's `quantization_config`, the tokenizer and other files
 * copied, and `kvq_calibration.json` (provenance, scales, report).
 *
 * compressed-tensors (default): `model.layers.N.self_attn.{k,v}_scale` (+ `q_scale` when the scales have q) of shape
 * `[1]` (tensor) or `[H,1,1]` (attn_head: `numKvHeads` for k/v, `numHeads` for q); `kv_cache_scheme` = FP8 args
 * (`num_bits` 8, `type` float, `strategy`, `dynamic` false, `symmetric` true, `observer`); q adds an `attention`
 * config group with the same args as `input_activations`.
 *
 * The folder is built in a temporary directory beside `out` and renamed at the end: an error or an abort leaves
 * nothing behind.
 * @throws CalibrateError `OUTPUT_EXISTS`, `INVALID_ARGUMENT` (flavor, scale shapes; per-head scales for a per-tensor
 *   flavor), `INCOMPATIBLE_FORMAT`, `UNSUPPORTED_MODEL`, `MALFORMED_CHECKPOINT`, `ABORTED`, `IO_ERROR`
 */
export async function writeCheckpoint(options: WriteCheckpointOptions): Promise<WriteCheckpointResult> {
  const flavor = checkChoice('flavor', options.flavor ?? 'compressed-tensors', CHECKPOINT_FLAVORS);
  const mode = checkChoice('linkWeights', options.linkWeights ?? 'hardlink', ['hardlink', 'symlink', 'copy'] as const);
  if (typeof options.out !== 'string' || options.out === '') {
    throw new CalibrateError('INVALID_ARGUMENT', `out must be a folder path, got ${describeValue(options.out)}`, { field: 'out' });
  }
  validateCalibratedScales(options.scales);
  const scaleFormat = checkChoice(
    'scaleFormat',
    options.scaleFormat ?? (flavor === 'compressed-tensors' ? options.scales.format : ocpOf(options.scales.format)),
    CALIBRATION_FORMATS,
  );
  const scales = convertScaleFormat(options.scales, scaleFormat);
  if (flavor !== 'compressed-tensors' && scales.strategy === 'attn_head') {
    throw new CalibrateError(
      'INVALID_ARGUMENT',
      `flavor '${flavor}' holds per-tensor scales only (vLLM: "Only support per-tensor scaling factor"); calibrate with strategy 'tensor' or write compressed-tensors`,
      { field: 'flavor' },
    );
  }
  if (flavor === 'vllm-json' && scaleFormat !== 'e4m3fn') {
    throw new CalibrateError('INCOMPATIBLE_FORMAT', `kv_cache_scales.json holds float8_e4m3fn scales only, got scales for ${scaleFormat}`, { field: 'scaleFormat' });
  }
  const out = resolve(options.out);
  const { signal } = options;
  throwIfAborted(signal, 'writing the checkpoint');
  if ((await exists(out)) && !options.overwrite) {
    throw new CalibrateError('OUTPUT_EXISTS', `${out}: output folder already exists (choose another path or pass overwrite: true)`, { file: out, field: 'out' });
  }
  const tmp = join(dirname(out), `.${basename(out)}.kvq-tmp-${randomBytes(6).toString('hex')}`);
  try {
    await mkdir(dirname(out), { recursive: true });
    await mkdir(tmp);
  } catch (cause) {
    throw new CalibrateError('IO_ERROR', `${tmp}: cannot create (${(cause as Error).message})`, { file: tmp, cause });
  }
  try {
    const result = await build(options, flavor, mode, scales, out, tmp);
    throwIfAborted(signal, 'writing the checkpoint');
    if (await exists(out)) {
      if (!options.overwrite) throw new CalibrateError('OUTPUT_EXISTS', `${out}: output folder appeared while writing`, { file: out, field: 'out' });
      const old = join(dirname(out), `.${basename(out)}.kvq-old-${randomBytes(6).toString('hex')}`);
      await rename(out, old);
      await rename(tmp, out);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(tmp, out);
    }
    return result;
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    if (e instanceof CalibrateError || (e as { name?: string }).name === 'EngineError') throw e;
    throw new CalibrateError('IO_ERROR', `writing ${out} failed (${(e as Error).message})`, { file: out, cause: e });
  }
}

async function build(
  options: WriteCheckpointOptions,
  flavor: CheckpointFlavor,
  mode: WeightLinkMode,
  scales: CalibratedScales,
  out: string,
  tmp: string,
): Promise<WriteCheckpointResult> {
  const { signal } = options;
  const warnings: string[] = [];
  // 1. The source as a Hugging Face folder (convert GGUF / llama2.c files into the temporary folder itself).
  let srcDir = options.model;
  let converted = false;
  let kind: 'directory' | 'file' | undefined;
  try {
    const s = await stat(srcDir);
    kind = s.isDirectory() ? 'directory' : s.isFile() ? 'file' : undefined;
  } catch (cause) {
    throw new CalibrateError('UNSUPPORTED_MODEL', `${srcDir}: model not found`, { file: srcDir, cause });
  }
  if (kind === 'file' && basename(srcDir) === 'config.json') srcDir = dirname(srcDir);
  else if (kind === 'file') {
    await convertToHf(srcDir, tmp);
    converted = true;
    srcDir = tmp;
  }
  const configPath = join(srcDir, 'config.json');
  const raw = (await readJson(configPath)) as Record<string, unknown> | undefined;
  if (raw === undefined || typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new CalibrateError('UNSUPPORTED_MODEL', `${configPath}: missing or not a JSON object; expected a Hugging Face model folder`, { file: configPath });
  }
  const numLayers = (raw.text_config as Record<string, unknown> | undefined)?.num_hidden_layers ?? raw.num_hidden_layers;
  if (typeof numLayers !== 'number' || numLayers !== scales.layers.length) {
    throw new CalibrateError('INVALID_ARGUMENT', `${configPath}: num_hidden_layers ${describeValue(numLayers)} does not match the ${scales.layers.length} layers of the scales`, {
      file: configPath,
      field: 'num_hidden_layers',
    });
  }
  const existingQc = raw.quantization_config as Record<string, unknown> | undefined;
  const wantMethod = flavor === 'compressed-tensors' ? 'compressed-tensors' : flavor === 'modelopt' ? 'modelopt' : flavor === 'quark' ? 'quark' : undefined;
  if (existingQc !== undefined && existingQc !== null && existingQc.quant_method !== wantMethod) {
    throw new CalibrateError(
      'UNSUPPORTED_MODEL',
      `${configPath}: already has a quantization_config with quant_method ${describeValue(existingQc.quant_method)}; kvq adds ${flavor} KV scales only to unquantized or ${wantMethod ?? 'unquantized'} checkpoints`,
      { file: configPath, field: 'quantization_config.quant_method' },
    );
  }

  // 2. Weights: link every shard; shards that hold old KV scales are re-written without them.
  const { shards, index } = await readShardHeaders(srcDir, readJson);
  const weightMap: Record<string, string> = {};
  const placed: string[] = [];
  const rewritten: string[] = [];
  let totalSize = 0;
  const sharded = index !== undefined;
  const scaleFile = sharded ? 'model-kv-cache-scales.safetensors' : 'model-00002-of-00002.safetensors';
  const writesTensors = flavor !== 'vllm-json';
  for (const shard of shards) {
    throwIfAborted(signal, 'writing the checkpoint');
    const old = new Set([...shard.header.tensors.keys()].filter((n) => classifyKvScaleName(n) !== undefined));
    const target = !writesTensors ? shard.file : sharded ? shard.file : 'model-00001-of-00002.safetensors';
    const src = join(srcDir, shard.file);
    const dst = join(tmp, target);
    if (old.size > 0) {
      totalSize += await copySafetensorsWithout(src, shard.header, converted && src === dst ? `${dst}.new` : dst, old);
      if (converted && src === dst) await rename(`${dst}.new`, dst);
      rewritten.push(shard.file);
      warnings.push(`${shard.file}: ${old.size} old KV-cache scale tensors dropped (the file was re-written with the other tensors' bytes unchanged)`);
    } else {
      if (converted) {
        if (src !== dst) await rename(src, dst);
      } else {
        await placeFile(src, dst, mode);
      }
      for (const t of shard.header.tensors.values()) totalSize += t.end - t.begin;
    }
    placed.push(target);
    for (const name of shard.header.tensors.keys()) if (!old.has(name)) weightMap[name] = target;
  }

  // 3. Scale tensors in the model dtype.
  const firstWeight = shards[0]?.header.tensors.get('model.layers.0.self_attn.q_proj.weight')?.dtype;
  const dtype = dtypeOfConfig(raw, firstWeight);
  const tensors: Array<[string, Tensor]> = [];
  const written: LayerScales[] = [];
  const perHead = scales.strategy === 'attn_head';
  const shapeOf = (n: number) => (flavor === 'compressed-tensors' ? (perHead ? [n, 1, 1] : [1]) : []);
  let droppedQ = false;
  scales.layers.forEach((l, i) => {
    const entry = (slot: 'k' | 'v' | 'q', values: Float32Array | undefined): Float32Array | undefined => {
      if (!values) return undefined;
      const name = scaleTensorName(flavor, i, slot);
      if (!name) {
        if (slot === 'q') droppedQ = true;
        return writesTensors ? undefined : values;
      }
      const { tensor, rounded } = scaleTensor(values, shapeOf(values.length), dtype);
      tensors.push([name, tensor]);
      return rounded;
    };
    const k = entry('k', l.k)!;
    const v = entry('v', l.v)!;
    written.push({ k, v, q: entry('q', l.q) });
  });
  if (droppedQ && flavor === 'modelopt') warnings.push('q scales are not written: ModelOpt checkpoints carry no q scale name vLLM reads');
  const writtenScales: CalibratedScales = { ...scales, layers: written };
  const metadata: Record<string, string> = {
    format: 'pt',
    kvq_version: kvqVersion(),
    kvq_flavor: flavor,
    kvq_strategy: scales.strategy,
    kvq_scale_format: scales.format,
    ...(scales.convertedFrom ? { kvq_converted_from: scales.convertedFrom } : {}),
    ...(options.provenance ? provenanceMetadata(options.provenance) : {}),
  };
  if (writesTensors) {
    await writeFile(join(tmp, scaleFile), encodeSafetensors(tensors, metadata));
    placed.push(scaleFile);
    for (const [name, t] of tensors) {
      weightMap[name] = scaleFile;
      totalSize += t.data.byteLength;
    }
    await writeJson(join(tmp, 'model.safetensors.index.json'), {
      metadata: { ...((index?.metadata as Record<string, unknown> | undefined) ?? {}), total_size: totalSize },
      weight_map: Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => a.localeCompare(b))),
    });
  } else if (index !== undefined) {
    await writeJson(join(tmp, 'model.safetensors.index.json'), { ...index, weight_map: weightMap });
  }
  if (converted && writesTensors && !sharded && (await exists(join(tmp, 'model.safetensors')))) await rm(join(tmp, 'model.safetensors'));

  // 4. config.json (+ flavor files).
  const observer = options.observer ?? options.provenance?.observer ?? 'static_minmax';
  const config: Record<string, unknown> = { ...raw };
  const architecture = Array.isArray(raw.architectures) && typeof raw.architectures[0] === 'string' ? raw.architectures[0] : 'LlamaForCausalLM';
  const extraFiles: string[] = [];
  if (flavor === 'compressed-tensors') {
    config.quantization_config = compressedTensorsQuantizationConfig({
      strategy: scales.strategy,
      observer,
      withQuery: scales.layers.some((l) => l.q !== undefined),
      architecture,
      existing: existingQc ?? undefined,
    });
  } else if (flavor === 'modelopt') {
    const mo = modelOptQuantizationConfig(existingQc ?? undefined, kvqVersion());
    config.quantization_config = mo.config;
    await writeJson(join(tmp, 'hf_quant_config.json'), mo.hfQuantConfig);
    extraFiles.push('hf_quant_config.json');
  } else if (flavor === 'quark') {
    config.quantization_config = quarkQuantizationConfig(scales.layers.some((l) => l.q !== undefined));
  } else {
    await writeJson(join(tmp, VLLM_SCALES_JSON), vllmScalesJson(writtenScales, typeof raw.model_type === 'string' ? raw.model_type : null));
    extraFiles.push(VLLM_SCALES_JSON);
  }
  await writeJson(join(tmp, 'config.json'), config);

  // 5. Every other top-level file (tokenizer, generation config, chat template, README, ...).
  const skip = new Set(['config.json', 'model.safetensors.index.json', CALIBRATION_JSON, VLLM_SCALES_JSON, 'hf_quant_config.json', ...shards.map((s) => s.file)]);
  if (!converted) {
    for (const entry of await readdir(srcDir, { withFileTypes: true })) {
      throwIfAborted(signal, 'writing the checkpoint');
      if (skip.has(entry.name) || entry.name.endsWith('.safetensors')) {
        if ([VLLM_SCALES_JSON, 'hf_quant_config.json'].includes(entry.name) && !extraFiles.includes(entry.name)) {
          warnings.push(`${entry.name} of the source is not carried over (the new scales replace it)`);
        }
        continue;
      }
      if (entry.isFile()) await copyFile(join(srcDir, entry.name), join(tmp, entry.name));
      else warnings.push(`${entry.name}: not a regular file, not copied`);
    }
  }

  // 6. Provenance, scales and report.
  await writeFile(
    join(tmp, CALIBRATION_JSON),
    calibrationJson({ flavor, scales: writtenScales, provenance: options.provenance, report: options.report, warnings }),
  );
  const files = (await readdir(tmp)).sort();
  return { dir: out, files, scaleTensors: tensors.map(([n]) => n), writtenScales, rewrittenShards: rewritten, warnings };
}

function provenanceMetadata(p: Provenance): Record<string, string> {
  const m: Record<string, string> = {
    kvq_method: p.method,
    kvq_seed: String(p.seed),
    kvq_num_samples: String(p.numSamples),
    kvq_num_tokens: String(p.numTokens),
    kvq_max_seq_len: String(p.maxSeqLen),
    kvq_quantize_query: String(p.quantizeQuery),
  };
  if (p.observer) m.kvq_observer = p.observer;
  if (p.datasetSha256) m.kvq_dataset_sha256 = p.datasetSha256;
  return m;
}

/** vLLM's legacy `kv_cache_scales.json` (`QuantParamSchema`): one float per layer (max of k and v), TP rank 0. */
export function vllmScalesJson(scales: CalibratedScales, modelType: string | null): Record<string, unknown> {
  const perLayer: Record<string, number> = {};
  scales.layers.forEach((l, i) => {
    perLayer[String(i)] = Math.max(...l.k, ...l.v);
  });
  return { model_type: modelType, kv_cache: { dtype: 'float8_e4m3fn', scaling_factor: { '0': perLayer } } };
}

function calibrationJson(value: {
  flavor: CheckpointFlavor;
  scales: CalibratedScales;
  provenance: Provenance | undefined;
  report: CalibrationReport | undefined;
  warnings: string[];
}): string {
  const s = value.scales;
  const body = {
    flavor: value.flavor,
    scaleFormat: s.format,
    convertedFrom: s.convertedFrom ?? null,
    strategy: s.strategy,
    provenance: value.provenance ?? null,
    scales: s.layers.map((l, i) => ({ layer: i, k: [...l.k], v: [...l.v], q: l.q ? [...l.q] : null })),
    warnings: value.warnings,
    // Non-finite numbers (an exact SQNR is Infinity) as strings, which JSON cannot hold otherwise.
    report: value.report ? (JSON.parse(reportToJson(value.report)) as unknown) : null,
  };
  return JSON.stringify(body, null, 2) + '\n';
}
