import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';

import { SeededRng, type ChatMessage, type ChatTemplate, type Tokenizer } from '@kvq/engine';

import { CalibrateError, checkChoice, checkInt, describeValue } from './errors.js';

/** One calibration sample: a chat conversation (rendered with the model's chat template) or a plain text. */
export type DatasetSample =
  | { readonly kind: 'messages'; readonly messages: readonly ChatMessage[]; readonly line: number }
  | { readonly kind: 'text'; readonly text: string; readonly line: number };

/** How a dataset file is read: JSON Lines records, one text per line, or decided from the extension / content. */
export type DatasetFormat = 'auto' | 'jsonl' | 'text';

/** A parsed calibration dataset. */
export interface Dataset {
  /** Every sample, in file order. */
  readonly samples: readonly DatasetSample[];
  /** SHA-256 (hex) of the dataset bytes (for inline datasets: of their JSON Lines serialization). */
  readonly sha256: string;
  /** The file path, or `<inline>`. */
  readonly source: string;
  /** The format the samples were read as. */
  readonly format: 'jsonl' | 'text';
}

/** A dataset given inline: texts, `{ messages }` conversations or `{ text }` records. */
export type InlineDataset = readonly (string | { readonly messages: readonly ChatMessage[] } | { readonly text: string })[];

function malformed(source: string, line: number, message: string): CalibrateError {
  return new CalibrateError('DATASET_MALFORMED', `${source} line ${line}: ${message}`, { file: source, line });
}

/** Validate one JSON value as a sample (`{ "messages": [{ "role", "content" }, ...] }` or `{ "text": "..." }`). */
function recordToSample(value: unknown, source: string, line: number): DatasetSample {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw malformed(source, line, `expected an object with a "messages" array or a "text" string, got ${describeValue(value)}`);
  }
  const r = value as Record<string, unknown>;
  if (r.messages !== undefined) {
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
export function parseDataset(content: string, source = '<inline>', format: DatasetFormat = 'auto'): Dataset {
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
    samples.push(recordToSample(value, source, line));
  });
  if (samples.length === 0) {
    throw new CalibrateError('DATASET_EMPTY', `${source}: the dataset has no samples (every line is blank)`, { file: source });
  }
  return { samples, sha256: createHash('sha256').update(content).digest('hex'), source, format: resolved };
}

/**
 * Read a dataset file (`.jsonl`/`.ndjson` as JSON Lines, `.txt` as text lines, otherwise `auto`), or take an inline
 * array of texts / records.
 * @throws CalibrateError `DATASET_NOT_FOUND`, `DATASET_MALFORMED` (with `line`), `DATASET_EMPTY`, `IO_ERROR`
 */
export async function readDataset(input: string | InlineDataset, format: DatasetFormat = 'auto'): Promise<Dataset> {
  if (typeof input !== 'string') {
    if (!Array.isArray(input)) {
      throw new CalibrateError('INVALID_ARGUMENT', `dataset must be a file path or an array of samples, got ${describeValue(input)}`, { field: 'dataset' });
    }
    const samples = input.map((item, i) => (typeof item === 'string' ? ({ kind: 'text', text: item, line: i + 1 } as const) : recordToSample(item, '<inline>', i + 1)));
    const usable = samples.filter((s) => s.kind === 'messages' || s.text.trim() !== '');
    if (usable.length === 0) throw new CalibrateError('DATASET_EMPTY', '<inline>: the dataset has no samples', { field: 'dataset' });
    const serialized = input.map((item) => JSON.stringify(typeof item === 'string' ? { text: item } : item)).join('\n');
    return { samples: usable, sha256: createHash('sha256').update(serialized).digest('hex'), source: '<inline>', format: 'jsonl' };
  }
  let content: string;
  try {
    content = await readFile(input, 'utf8');
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new CalibrateError('DATASET_NOT_FOUND', `${input}: dataset file not found`, { file: input, cause });
    if (code === 'EISDIR') throw new CalibrateError('DATASET_NOT_FOUND', `${input}: is a folder, not a dataset file`, { file: input, cause });
    throw new CalibrateError('IO_ERROR', `${input}: cannot read (${(cause as Error).message})`, { file: input, cause });
  }
  const ext = extname(input).toLowerCase();
  const resolved: DatasetFormat = format !== 'auto' ? format : ext === '.jsonl' || ext === '.ndjson' ? 'jsonl' : ext === '.txt' ? 'text' : 'auto';
  return parseDataset(content, input, resolved);
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
