import {
  CALIBRATION_METHODS,
  CalibrateError,
  calibrate,
  CHECKPOINT_FLAVORS,
  formatReportTable,
  KV_PLAN_CANDIDATES,
  OBSERVER_KINDS,
  planKvCacheLayers,
  readDataset,
  selectSamples,
  tokenizeSample,
  reportToJson,
  SCALE_STRATEGIES,
  writeCheckpoint,
  type CalibrationMethod,
  type CheckpointFlavor,
  type KvPlanResult,
  type ObserverKind,
  type ScaleStrategy,
} from '@kvq/calibrate';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isFp8Dtype, resolveKvCacheDtype } from '@kvq/cache';
import { KV_CACHE_PLAN_FILE, KV_CACHE_ROTATIONS, kvCachePlanJson, type KvCacheDtype, type KvCacheRotation, type LoadedModel } from '@kvq/engine';
import { parseCommand, parseKvCacheDtype, parseNumber } from '../../args.js';
import { CliError } from '../../errors.js';
import { loadWithProgress, resolveModel } from '../../model.js';
import { formatBytes, ProgressBar } from '../../progress.js';
import type { CliIo } from '../../registry.js';

const HELP = `Usage: kvq calibrate [options] --out DIR

Calibrates FP8 KV-cache scales (vLLM's three ways: none = scale 1.0, random-token warm-up, dataset observers) and
writes a checkpoint folder vLLM and kvq load (the source weights linked, never rewritten), with a per-layer report
(amax, scale, saturated/flushed fractions, SQNR).

Options:
  -m, --model M             model folder/file or Hub id (default: the embedded kvq-tiny)
  --tokenizer PATH          tokenizer file for llama2.c checkpoints
  --out DIR                 the checkpoint folder to create (required unless --dry-run)
  --method M                ${CALIBRATION_METHODS.join(' | ')} (default: dataset with --dataset, else random)
  --dataset D               JSONL ({"messages": [...]} or {"text": ...}), a text file (one sample per line), a
                            Parquet file, or a Hugging Face Hub dataset org/name[@revision] (HF_ENDPOINT, HF_TOKEN,
                            HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE as in huggingface_hub; a local path wins)
  --dataset-split S         the Hub dataset's split (default train)
  --dataset-column C        the field / Parquet column of each sample (default messages if present, else text)
  --strategy S              ${SCALE_STRATEGIES.join(' | ')} (default tensor)
  --observer O              ${OBSERVER_KINDS.join(' | ')} (default static_minmax)
  --num-samples N           dataset samples (default 512)
  --max-seq-len N           tokens per sample (default 2048, at most the context - 1)
  --seed S                  shuffle / random-token seed (default 42)
  --kv-cache-dtype D        the FP8 cache the scales are for: fp8 | fp8_e4m3 | fp8_e5m2 | e4m3fnuz | e5m2fnuz
                            (default fp8)
  --quantize-query          also calibrate q scales (FP8 attention)
  --flavor F                ${CHECKPOINT_FLAVORS.join(' | ')} (default compressed-tensors)
  --plan                    also choose a KV dtype per layer (automatic mixed precision): measure on --dataset the
                            KL each candidate causes on each layer's K alone and V alone, pick the least total
                            within --kv-bytes-per-token, and write it into the checkpoint (kvq_kv_cache_plan.json,
                            which kvq loads when --kv-cache-dtype is auto)
  --kv-bytes-per-token B    the plan's budget: KV bytes per token over all layers (kvq plan shows them per dtype)
  --plan-dtypes LIST        candidates, comma-separated (default ${KV_PLAN_CANDIDATES.join(',')})
  --plan-samples N          dataset samples the plan is measured on (default 16)
  --plan-max-seq-len N      tokens per plan sample (default 512)
  --kv-cache-rotation R     none | hadamard: the rotation the plan is measured and run with (default none)
  --plan-same-kv            one dtype per layer for K and V, measured together (half the passes; a plan the
                            uniform kernels run: the GPU backends' fast ones, and backends without kernels for
                            separate K and V dtypes)
  --backend NAME            kernel backend for the plan's measurements (default auto)
  --overwrite               replace an existing --out folder
  --dry-run                 calibrate and report, write nothing
  --json                    print JSON (report, written files)
  -h, --help                show this help
`;

/** `kvq calibrate`: FP8 KV-cache scales into a checkpoint. */
export async function run(argv: string[], io: CliIo): Promise<void> {
  const { values, positionals } = parseCommand(argv, {
    model: { type: 'string', short: 'm' },
    tokenizer: { type: 'string' },
    out: { type: 'string', short: 'o' },
    method: { type: 'string' },
    dataset: { type: 'string' },
    'dataset-split': { type: 'string' },
    'dataset-column': { type: 'string' },
    strategy: { type: 'string' },
    observer: { type: 'string' },
    'num-samples': { type: 'string' },
    'max-seq-len': { type: 'string' },
    seed: { type: 'string' },
    'kv-cache-dtype': { type: 'string' },
    'quantize-query': { type: 'boolean' },
    plan: { type: 'boolean' },
    'kv-bytes-per-token': { type: 'string' },
    'plan-dtypes': { type: 'string' },
    'plan-samples': { type: 'string' },
    'plan-max-seq-len': { type: 'string' },
    'kv-cache-rotation': { type: 'string' },
    'plan-same-kv': { type: 'boolean' },
    backend: { type: 'string' },
    flavor: { type: 'string' },
    overwrite: { type: 'boolean' },
    'dry-run': { type: 'boolean' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    io.stdout.write(HELP);
    return;
  }
  if (positionals.length > 0) throw new CliError('USAGE', `unexpected argument ${JSON.stringify(positionals[0])}`);
  if (!values.out && !values['dry-run']) throw new CliError('USAGE', 'kvq calibrate needs --out DIR (or --dry-run)');
  const choice = <T extends string>(flag: string, v: string | undefined, list: readonly T[]): T | undefined => {
    if (v === undefined) return undefined;
    if (!(list as readonly string[]).includes(v)) throw new CliError('USAGE', `--${flag} must be one of ${list.join(', ')}, got ${JSON.stringify(v)}`);
    return v as T;
  };
  const method = choice<CalibrationMethod>('method', values.method, CALIBRATION_METHODS);
  const strategy = choice<ScaleStrategy>('strategy', values.strategy, SCALE_STRATEGIES);
  const observer = choice<ObserverKind>('observer', values.observer, OBSERVER_KINDS);
  const flavor = choice<CheckpointFlavor>('flavor', values.flavor, CHECKPOINT_FLAVORS);
  if (method === 'dataset' && !values.dataset) throw new CliError('USAGE', '--method dataset needs --dataset FILE');
  for (const flag of ['dataset-split', 'dataset-column'] as const) {
    if (values[flag] !== undefined && !values.dataset) throw new CliError('USAGE', `--${flag} needs --dataset`);
    if (values[flag] === '') throw new CliError('USAGE', `--${flag} must not be empty`);
  }
  const dtype = parseKvCacheDtype(values['kv-cache-dtype'] ?? 'fp8');
  const format = resolveKvCacheDtype(dtype, 'bf16');
  if (!isFp8Dtype(format)) throw new CliError('USAGE', `--kv-cache-dtype must be an FP8 dtype for calibration, got ${JSON.stringify(dtype)}`);
  const numSamples = parseNumber(values['num-samples'], '--num-samples', { integer: true, min: 1 });
  const maxSeqLen = parseNumber(values['max-seq-len'], '--max-seq-len', { integer: true, min: 1 });
  const seed = parseNumber(values.seed, '--seed', { integer: true });

  const planArgs = parsePlanArgs(values);
  const model = await resolveModel(values.model, io);
  const loaded = await loadWithProgress(model, io, { kvCacheDtype: dtype, ...(values.tokenizer ? { tokenizerPath: values.tokenizer } : {}) });
  const bar = new ProgressBar(io.stderr, 'calibrate', (d, t) => `${d}/${t} samples`);
  const download = new ProgressBar(io.stderr, 'download', (d, t) => `${formatBytes(d)} / ${formatBytes(t)}`);
  try {
    const result = await calibrate({
      model: loaded,
      format,
      ...(method ? { method } : {}),
      ...(values.dataset ? { dataset: values.dataset } : {}),
      ...(values['dataset-split'] ? { datasetSplit: values['dataset-split'] } : {}),
      ...(values['dataset-column'] ? { datasetColumn: values['dataset-column'] } : {}),
      onDownloadProgress: (p) => download.update(p.bytes, p.total),
      ...(strategy ? { strategy } : {}),
      ...(observer ? { observer } : {}),
      ...(numSamples !== undefined ? { numSamples } : {}),
      ...(maxSeqLen !== undefined ? { maxSeqLen } : {}),
      ...(seed !== undefined ? { seed } : {}),
      quantizeQuery: values['quantize-query'] === true,
      onProgress: (p) => {
        download.done();
        bar.update(p.samplesDone, p.samplesTotal);
      },
    });
    bar.done();
    for (const w of result.warnings) io.stderr.write(`kvq: warning: ${w}\n`);
    const written = values['dry-run']
      ? undefined
      : await writeCheckpoint({
          model: loaded.path,
          out: values.out!,
          scales: result.scales,
          provenance: result.provenance,
          report: result.report,
          overwrite: values.overwrite === true,
          ...(flavor ? { flavor } : {}),
          ...(observer ? { observer } : {}),
        });
    const plan = planArgs ? await runPlan(planArgs, loaded, values, io) : undefined;
    const planFile = plan && written ? join(written.dir, KV_CACHE_PLAN_FILE) : undefined;
    if (plan && planFile) {
      await writeFile(
        planFile,
        kvCachePlanJson(
          { layerDtypes: plan.layerDtypes, ...(plan.layerValueDtypes ? { layerValueDtypes: plan.layerValueDtypes } : {}), rotation: plan.rotation, kvBytesPerToken: plan.kvBytesPerToken },
          planDetails(plan),
        ),
      );
    }
    if (values.json) {
      io.stdout.write(
        `${JSON.stringify({ model: model.name, report: JSON.parse(reportToJson(result.report)) as unknown, out: written?.dir ?? null, files: [...(written?.files ?? []), ...(planFile ? [planFile] : [])], scale_tensors: written?.scaleTensors ?? [], ...(plan ? { kv_cache_plan: { layer_dtypes: plan.layerDtypes, ...(plan.layerValueDtypes ? { layer_value_dtypes: plan.layerValueDtypes } : {}), kv_cache_rotation: plan.rotation, kv_bytes_per_token: plan.kvBytesPerToken, ...planDetails(plan) } } : {}) }, null, 2)}\n`,
      );
      return;
    }
    io.stdout.write(`${formatReportTable(result.report)}\n`);
    if (plan) io.stdout.write(`${formatPlan(plan)}\n`);
    if (written) io.stdout.write(`wrote ${written.dir} (${written.scaleTensors.length} scale tensors${planFile ? ', and the KV plan' : ''}); serve it with: kvq serve ${written.dir} --kv-cache-dtype ${plan ? 'auto' : dtype}\n`);
  } catch (error) {
    download.done();
    bar.done();
    if (error instanceof CalibrateError && error.code === 'INVALID_ARGUMENT') throw new CliError('USAGE', error.message, { cause: error });
    throw error;
  }
}

interface PlanArgs {
  readonly kvBytesPerToken: number;
  readonly candidates: readonly KvCacheDtype[] | undefined;
  readonly samples: number;
  readonly maxSeqLen: number;
  readonly rotation: KvCacheRotation;
  readonly separateKv: boolean;
  readonly backend: string | undefined;
}

/** The `--plan` flags, validated (usage errors); undefined without `--plan`. */
function parsePlanArgs(values: Record<string, unknown>): PlanArgs | undefined {
  const s = (k: string) => values[k] as string | undefined;
  const planOnly = ['kv-bytes-per-token', 'plan-dtypes', 'plan-samples', 'plan-max-seq-len', 'kv-cache-rotation', 'plan-same-kv', 'backend'];
  if (values.plan !== true) {
    const stray = planOnly.find((k) => values[k] !== undefined);
    if (stray) throw new CliError('USAGE', `--${stray} is a --plan option; add --plan`);
    return undefined;
  }
  if (!values.dataset) throw new CliError('USAGE', '--plan measures on text: it needs --dataset');
  const bytes = parseNumber(s('kv-bytes-per-token'), '--kv-bytes-per-token', { min: 0, minExclusive: true });
  if (bytes === undefined) throw new CliError('USAGE', '--plan needs --kv-bytes-per-token B (the budget: KV bytes per token over all layers)');
  const rotation = s('kv-cache-rotation') ?? 'none';
  if (!(KV_CACHE_ROTATIONS as readonly string[]).includes(rotation)) throw new CliError('USAGE', `--kv-cache-rotation must be one of ${KV_CACHE_ROTATIONS.join(', ')}, got ${JSON.stringify(rotation)}`);
  const candidates = s('plan-dtypes')
    ?.split(',')
    .map((d) => {
      try {
        return parseKvCacheDtype(d.trim());
      } catch (error) {
        throw new CliError('USAGE', `--plan-dtypes: ${JSON.stringify(d.trim())} is not a KV cache dtype (${(error as Error).message.replace(/^--kv-cache-dtype "[^"]*" is not /, '')})`, { cause: error });
      }
    });
  return {
    kvBytesPerToken: bytes,
    candidates,
    samples: parseNumber(s('plan-samples'), '--plan-samples', { integer: true, min: 1 }) ?? 16,
    maxSeqLen: parseNumber(s('plan-max-seq-len'), '--plan-max-seq-len', { integer: true, min: 2 }) ?? 512,
    rotation: rotation as KvCacheRotation,
    separateKv: values['plan-same-kv'] !== true,
    backend: s('backend'),
  };
}

/** Reads the plan's samples from `--dataset` and runs {@link planKvCacheLayers} with a progress bar. */
async function runPlan(args: PlanArgs, model: LoadedModel, values: Record<string, unknown>, io: CliIo): Promise<KvPlanResult> {
  const dataset = await readDataset(values.dataset as string, {
    ...(values['dataset-column'] ? { column: values['dataset-column'] as string } : {}),
    ...(values['dataset-split'] ? { split: values['dataset-split'] as string } : {}),
  });
  const seed = parseNumber(values.seed as string | undefined, '--seed', { integer: true }) ?? 42;
  const maxSeqLen = Math.min(args.maxSeqLen, model.config.maxPositionEmbeddings - 1);
  const sequences = selectSamples(dataset.samples, args.samples, seed).map((x) => tokenizeSample(x, model, maxSeqLen, dataset.source));
  const bar = new ProgressBar(io.stderr, 'plan', (d, t) => `${d}/${t} runs`);
  try {
    return await planKvCacheLayers({
      model,
      sequences,
      kvBytesPerToken: args.kvBytesPerToken,
      ...(args.candidates ? { candidates: args.candidates } : {}),
      rotation: args.rotation,
      separateKv: args.separateKv,
      backend: args.backend ?? 'auto',
      onProgress: (d, t) => bar.update(d, t),
    });
  } finally {
    bar.done();
  }
}

/** The measurements kept beside the plan in its file and in `--json`. */
function planDetails(plan: KvPlanResult): Record<string, unknown> {
  return {
    budget_bytes_per_token: plan.budgetBytesPerToken,
    predicted_kl: plan.predictedKl,
    measured_kl: plan.measuredKl,
    positions: plan.positions,
    measurements: plan.measurements.map((m) => ({ layer: m.layer, pool: m.pool, dtype: m.dtype, kl: m.kl, bytes_per_token: m.bytesPerToken })),
  };
}

/** The plan as text: each layer's dtype, then the plan against every candidate on all layers. */
function formatPlan(plan: KvPlanResult): string {
  const lines = [
    `KV plan (budget ${plan.budgetBytesPerToken} B/token, rotation ${plan.rotation}, ${plan.positions} positions): ${plan.kvBytesPerToken} B/token, KL ${plan.measuredKl.toExponential(3)} (sum of layers ${plan.predictedKl.toExponential(3)})`,
    ...plan.layerDtypes.map((d, l) => {
      const v = plan.layerValueDtypes?.[l];
      return v === undefined || v === d ? `  layer ${l}: ${d}` : `  layer ${l}: K ${d}, V ${v}`;
    }),
    'every layer one dtype:',
    ...plan.measurements.filter((m) => m.layer === 'all').map((m) => `  ${m.dtype.padEnd(22)} ${String(m.bytesPerToken).padStart(7)} B/token  KL ${m.kl.toExponential(3)}`),
  ];
  return lines.join('\n');
}
