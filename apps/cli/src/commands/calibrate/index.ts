import {
  CALIBRATION_METHODS,
  CalibrateError,
  calibrate,
  CHECKPOINT_FLAVORS,
  formatReportTable,
  OBSERVER_KINDS,
  reportToJson,
  SCALE_STRATEGIES,
  writeCheckpoint,
  type CalibrationMethod,
  type CheckpointFlavor,
  type ObserverKind,
  type ScaleStrategy,
} from '@kvq/calibrate';
import { isFp8Dtype, resolveKvCacheDtype } from '@kvq/cache';
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
    if (values.json) {
      io.stdout.write(`${JSON.stringify({ model: model.name, report: JSON.parse(reportToJson(result.report)) as unknown, out: written?.dir ?? null, files: written?.files ?? [], scale_tensors: written?.scaleTensors ?? [] }, null, 2)}\n`);
      return;
    }
    io.stdout.write(`${formatReportTable(result.report)}\n`);
    if (written) io.stdout.write(`wrote ${written.dir} (${written.scaleTensors.length} scale tensors); serve it with: kvq serve ${written.dir} --kv-cache-dtype ${dtype}\n`);
  } catch (error) {
    download.done();
    bar.done();
    if (error instanceof CalibrateError && error.code === 'INVALID_ARGUMENT') throw new CliError('USAGE', error.message, { cause: error });
    throw error;
  }
}
