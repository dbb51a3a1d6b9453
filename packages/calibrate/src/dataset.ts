import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';

import { downloadDataset, EngineError, isHubId, SeededRng, type ChatMessage, type ChatTemplate, type HubDownloadProgress, type HubSettings, type Tokenizer } from '@kvq/engine';
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, parquetSchema } from 'hyparquet';

import { CalibrateError, checkChoice, checkInt, describeValue } from './errors.js';

/** One calibration sample: a chat conversation (rendered with the model's chat template) or a plain text. */
export type DatasetSample =
  | { readonly kind: 'messages'; readonly messages: readonly ChatMessage[]; readonly line: number }
  | { readonly kind: 'text'; readonly text: string; readonly line: number };

/** How a dataset file is read: JSON Lines records, one text per line, Parquet, or decided from the extension / content. */
export type DatasetFormat = 'auto' | 'jsonl' | 'text' | 'parquet';

/** A parsed calibration dataset. */
export interface Dataset {
  /** Every sample, in file order. */
  readonly samples: readonly DatasetSample[];
  /** SHA-256 (hex) of the dataset bytes (for inline datasets: of their JSON Lines serialization). */
  readonly sha256: string;
  /** The file path, `<inline>`, or for a Hub dataset `org/name@<commit>:<split>`. */
  readonly source: string;
  /** The format the samples were read as (a Hub dataset: that of its first file). */
  readonly format: 'jsonl' | 'text' | 'parquet';
}

/** Options of {@link readDataset}. */
export interface ReadDatasetOptions {
  /** Default `'auto'` (by extension, then content). */
  readonly format?: DatasetFormat;
  /**
   * The record field (JSON Lines key, Parquet column) holding each sample: a string is a text, an array of
   * `{ role, content }` a conversation. Default: `messages` when present, else `text` (llm-compressor's `text_column`).
   */
  readonly column?: string;
  /** Hub datasets: the split to read. Default `train`. */
  readonly split?: string;
  /** Hub datasets: settings. Default: the engine's `hubSettings()` of `process.env` (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`, ...). */
  readonly hub?: HubSettings;
  /** Hub datasets: download progress, per file. */
  readonly onDownloadProgress?: (p: HubDownloadProgress) => void;
  /** Hub datasets: one-line notices (resumed transfer, cached snapshot used). */
  readonly onNotice?: (message: string) => void;
}

/** A dataset given inline: texts, `{ messages }` conversations or `{ text }` records. */
export type InlineDataset = readonly (string | { readonly messages: readonly ChatMessage[] } | { readonly text: string })[];

function malformed(source: string, line: number, message: string): CalibrateError {
  return new CalibrateError('DATASET_MALFORMED', `${source} line ${line}: ${message}`, { file: source, line });
}

/**
 * Validate one JSON value as a sample (`{ "messages": [{ "role", "content" }, ...] }` or `{ "text": "..." }`, or
 * with `column`, that field as a text or a conversation).
 */
function recordToSample(value: unknown, source: string, line: number, column?: string): DatasetSample {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw malformed(source, line, `expected an object with a "messages" array or a "text" string, got ${describeValue(value)}`);
  }
  const r = value as Record<string, unknown>;
  if (column !== undefined && column !== 'messages' && column !== 'text') {
    const v = r[column];
    if (typeof v === 'string') return { kind: 'text', text: v, line };
    if (!Array.isArray(v)) throw malformed(source, line, `column ${JSON.stringify(column)} must be a string or a messages array, got ${describeValue(v)} (keys: ${Object.keys(r).slice(0, 8).join(', ') || 'none'})`);
    return recordToSample({ messages: v }, source, line);
  }
  if (column === 'text' && typeof r.text !== 'string') throw malformed(source, line, `column "text" must be a string, got ${describeValue(r.text)}`);
  if (r.messages !== undefined && column !== 'text') {
    if (!Array.isArray(r.messages) || r.messages.length === 0) {
      throw malformed(source, line, `"messages" must be a non-empty array, got ${describeValue(r.messages)}`);
    }
    r.messages.forEach((m, i) => {
      if (typeof m !== 'object' || m === null || typeof (m as { role?: unknown }).role !== 'string' || !('content' in m)) {
        throw malformed(source, line, `messages[${i}] must be an object with a string "role" and a "content", got ${describeValue(m)}`);
      }
    });
    return { kind: 'messages', messages: r.messages as ChatMessage[], line };
  }
  if (typeof r.text === 'string') return { kind: 'text', text: r.text, line };
  throw malformed(source, line, `expected a "messages" array or a "text" string (keys: ${Object.keys(r).slice(0, 5).join(', ') || 'none'})`);
}

/**
 * Parse dataset text. `jsonl`: one JSON object per non-blank line (`messages` or `text`); `text`: each non-blank
 * line is one sample; `auto`: `jsonl` when the first non-blank line starts with `{`.
 * @throws CalibrateError `DATASET_MALFORMED` naming the line, `DATASET_EMPTY` when there is no sample
 */
export function parseDataset(content: string, source = '<inline>', format: Exclude<DatasetFormat, 'parquet'> = 'auto', column?: string): Dataset {
  checkChoice('datasetFormat', format, ['auto', 'jsonl', 'text'] as const);
  const lines = content.split(/\r?\n/);
  let resolved: 'jsonl' | 'text';
  if (format === 'auto') {
    const first = lines.find((l) => l.trim() !== '');
    resolved = first?.trimStart().startsWith('{') ? 'jsonl' : 'text';
  } else resolved = format;
  const samples: DatasetSample[] = [];
  lines.forEach((raw, i) => {
    const line = i + 1;
    if (raw.trim() === '') return;
    if (resolved === 'text') {
      samples.push({ kind: 'text', text: raw, line });
      return;
    }
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch (cause) {
      throw new CalibrateError('DATASET_MALFORMED', `${source} line ${line}: invalid JSON (${(cause as Error).message})`, { file: source, line, cause });
    }
    samples.push(recordToSample(value, source, line, column));
  });
  if (samples.length === 0) {
    throw new CalibrateError('DATASET_EMPTY', `${source}: the dataset has no samples (every line is blank)`, { file: source });
  }
  return { samples, sha256: createHash('sha256').update(content).digest('hex'), source, format: resolved };
}

/** Column names of a Parquet file (top level). */
async function parquetColumns(file: Awaited<ReturnType<typeof asyncBufferFromFile>>, source: string) {
  try {
    const metadata = await parquetMetadataAsync(file);
    return { metadata, names: parquetSchema(metadata).children.map((c) => c.element.name) };
  } catch (cause) {
    throw new CalibrateError('DATASET_MALFORMED', `${source}: not a readable Parquet file (${(cause as Error).message})`, { file: source, cause });
  }
}

/**
 * Read the samples of a Parquet file (pure JS, `hyparquet`): one column, `column` or else `messages` / `text`.
 * Row numbers (from 1) stand in for lines.
 */
export async function parseParquet(path: string, column?: string): Promise<Dataset> {
  const file = await asyncBufferFromFile(path);
  const { metadata, names } = await parquetColumns(file, path);
  const col = column ?? (names.includes('messages') ? 'messages' : names.includes('text') ? 'text' : undefined);
  if (col === undefined || !names.includes(col)) {
    throw new CalibrateError('DATASET_MALFORMED', `${path}: no column ${JSON.stringify(col ?? 'text')} (columns: ${names.join(', ')}); choose one with the dataset column option`, { file: path, field: 'column' });
  }
  let rows: Record<string, unknown>[];
  try {
    rows = await parquetReadObjects({ file, metadata, columns: [col] });
  } catch (cause) {
    throw new CalibrateError('DATASET_MALFORMED', `${path}: cannot read column ${JSON.stringify(col)} (${(cause as Error).message})`, { file: path, field: col, cause });
  }
  const samples = rows.map((row, i) => recordToSample({ [col]: row[col] }, path, i + 1, col)).filter((s) => s.kind === 'messages' || s.text.trim() !== '');
  if (samples.length === 0) throw new CalibrateError('DATASET_EMPTY', `${path}: column ${JSON.stringify(col)} has no non-empty sample`, { file: path });
  return { samples, sha256: createHash('sha256').update(await readFile(path)).digest('hex'), source: path, format: 'parquet' };
}

async function readFileText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new CalibrateError('DATASET_NOT_FOUND', `${path}: dataset file not found`, { file: path, cause });
    if (code === 'EISDIR') throw new CalibrateError('DATASET_NOT_FOUND', `${path}: is a folder, not a dataset file`, { file: path, cause });
    throw new CalibrateError('IO_ERROR', `${path}: cannot read (${(cause as Error).message})`, { file: path, cause });
  }
}

/** One local file by extension: `.parquet`, `.jsonl`/`.ndjson`/`.json` as JSON Lines, `.txt` as text, else `auto`. */
async function readFileDataset(path: string, format: DatasetFormat, column: string | undefined): Promise<Dataset> {
  const ext = extname(path).toLowerCase();
  const resolved: DatasetFormat = format !== 'auto' ? format : ext === '.parquet' ? 'parquet' : ext === '.jsonl' || ext === '.ndjson' || ext === '.json' ? 'jsonl' : ext === '.txt' ? 'text' : 'auto';
  if (resolved === 'parquet') {
    if (!existsSync(path)) throw new CalibrateError('DATASET_NOT_FOUND', `${path}: dataset file not found`, { file: path });
    return parseParquet(path, column);
  }
  return parseDataset(await readFileText(path), path, resolved, column);
}

const FILE_LIKE = /\.(jsonl|ndjson|json|txt|parquet|csv)$/i;

/** A Hub dataset split: every data file read, samples concatenated (lines numbered across the files). */
async function readHubDataset(spec: string, options: ReadDatasetOptions): Promise<Dataset> {
  let hub;
  try {
    hub = await downloadDataset(spec, {
      ...(options.split !== undefined ? { split: options.split } : {}),
      ...(options.hub ? { settings: options.hub } : {}),
      ...(options.onDownloadProgress ? { onProgress: options.onDownloadProgress } : {}),
      ...(options.onNotice ? { onNotice: options.onNotice } : {}),
    });
  } catch (cause) {
    if (!(cause instanceof EngineError)) throw cause;
    const code = cause.code === 'HUB_NOT_FOUND' ? 'DATASET_NOT_FOUND' : cause.code === 'INVALID_ARGUMENT' ? 'INVALID_ARGUMENT' : 'DATASET_UNAVAILABLE';
    throw new CalibrateError(code, `dataset ${spec}: ${cause.message}`, { file: spec, field: 'dataset', cause });
  }
  const samples: DatasetSample[] = [];
  const hash = createHash('sha256');
  let format: Dataset['format'] | undefined;
  for (const file of hub.files) {
    const part = await readFileDataset(file, options.format ?? 'auto', options.column);
    format ??= part.format;
    hash.update(part.sha256);
    const offset = samples.length;
    samples.push(...part.samples.map((s, i) => ({ ...s, line: offset + i + 1 })));
  }
  return { samples, sha256: hash.digest('hex'), source: `${hub.repo}@${hub.commit}:${hub.split}`, format: format ?? 'jsonl' };
}

/**
 * Read a dataset: a local file (`.jsonl`/`.ndjson`/`.json` as JSON Lines, `.txt` as text lines, `.parquet` through
 * the pure-JS `hyparquet`, otherwise `auto`), a Hugging Face Hub dataset `org/name[@revision]` (one split's
 * Parquet / JSON Lines / text files, fetched into the Hub cache `datasets--org--name` by `@kvq/engine`; an existing
 * local path always wins), or an inline array of texts / records. For a Hub dataset `sha256` hashes the files' hashes.
 * @param options a {@link DatasetFormat} (the older form) or {@link ReadDatasetOptions}
 * @throws CalibrateError `DATASET_NOT_FOUND`, `DATASET_UNAVAILABLE`, `DATASET_MALFORMED` (with `line`), `DATASET_EMPTY`, `IO_ERROR`
 */
export async function readDataset(input: string | InlineDataset, options: DatasetFormat | ReadDatasetOptions = 'auto'): Promise<Dataset> {
  const o: ReadDatasetOptions = typeof options === 'string' ? { format: options } : options;
  checkChoice('datasetFormat', o.format ?? 'auto', ['auto', 'jsonl', 'text', 'parquet'] as const);
  if (typeof input !== 'string') {
    if (!Array.isArray(input)) {
      throw new CalibrateError('INVALID_ARGUMENT', `dataset must be a file path, a Hub id or an array of samples, got ${describeValue(input)}`, { field: 'dataset' });
    }
    const samples = input.map((item, i) => (typeof item === 'string' ? ({ kind: 'text', text: item, line: i + 1 } as const) : recordToSample(item, '<inline>', i + 1, o.column)));
    const usable = samples.filter((s) => s.kind === 'messages' || s.text.trim() !== '');
    if (usable.length === 0) throw new CalibrateError('DATASET_EMPTY', '<inline>: the dataset has no samples', { field: 'dataset' });
    const serialized = input.map((item) => JSON.stringify(typeof item === 'string' ? { text: item } : item)).join('\n');
    return { samples: usable, sha256: createHash('sha256').update(serialized).digest('hex'), source: '<inline>', format: 'jsonl' };
  }
  if (!existsSync(input) && isHubId(input) && !FILE_LIKE.test(input.split('@')[0]!)) return readHubDataset(input, o);
  return readFileDataset(input, o.format ?? 'auto', o.column);
}

/**
 * llm-compressor's `dataset.shuffle(seed).select(range(numSamples))`: a seeded Fisher–Yates shuffle (kvq's own
 * generator, so the order differs from Hugging Face `datasets`), then the first `numSamples` (all when fewer).
 */
export function selectSamples<T>(samples: readonly T[], numSamples: number, seed: number): T[] {
  checkInt('numSamples', numSamples, 1);
  checkInt('seed', seed, 0, 2 ** 32 - 1);
  const order = samples.map((_, i) => i);
  const rng = new SeededRng(seed);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order.slice(0, numSamples).map((i) => samples[i]!);
}

/** What {@link tokenizeSample} needs of a model. */
export interface SampleTokenizer {
  readonly tokenizer: Tokenizer;
  readonly chatTemplate: ChatTemplate | undefined;
}

/**
 * Token ids of one sample, truncated to `maxSeqLen`: conversations are rendered with the model's chat template
 * (no generation prompt) and encoded without adding special tokens (the template has its own), as llm-compressor's
 * examples do; plain texts are encoded with the tokenizer's own special tokens (BOS), as the model sees prompts.
 * @throws CalibrateError `NO_CHAT_TEMPLATE` for a conversation when the model has no template
 */
export function tokenizeSample(sample: DatasetSample, model: SampleTokenizer, maxSeqLen: number, source = '<dataset>'): number[] {
  let ids: number[];
  if (sample.kind === 'messages') {
    if (!model.chatTemplate) {
      throw new CalibrateError('NO_CHAT_TEMPLATE', `${source} line ${sample.line} is a conversation, but the model has no chat template; use plain-text lines`, {
        file: source,
        line: sample.line,
      });
    }
    const text = model.chatTemplate.render(sample.messages, { addGenerationPrompt: false });
    ids = model.tokenizer.encode(text, { addSpecialTokens: false });
  } else {
    ids = model.tokenizer.encode(sample.text);
  }
  return ids.length > maxSeqLen ? ids.slice(0, maxSeqLen) : ids;
}
