/**
 * Every failure @kvq/calibrate reports on purpose is a {@link CalibrateError} with a string-literal `code`.
 * Messages name the argument, file, line, field or value at fault.
 */
export type CalibrateErrorCode =
  /** An option has an unknown value or is out of range (strategy, observer, method, format, numSamples, ...). */
  | 'INVALID_ARGUMENT'
  /** The dataset file does not exist (or the Hub dataset, revision or split does not). */
  | 'DATASET_NOT_FOUND'
  /** A Hub dataset cannot be fetched (access denied, Hub unreachable, offline and not cached, failed transfer); `cause` is the engine's `HUB_*` error. */
  | 'DATASET_UNAVAILABLE'
  /** A dataset line is not valid JSON, or not a `{ "messages": [...] }` / `{ "text": "..." }` record. */
  | 'DATASET_MALFORMED'
  /** The dataset has no usable sample (no non-empty line, or every sample tokenizes to nothing). */
  | 'DATASET_EMPTY'
  /** Chat-format samples but the model has no chat template. */
  | 'NO_CHAT_TEMPLATE'
  /** The model has no attention layer to calibrate. */
  | 'NO_ATTENTION_LAYERS'
  /** The model is not one a checkpoint can be written from / read as (not a Hugging Face folder, ...). */
  | 'UNSUPPORTED_MODEL'
  /** The output folder already exists (pass `overwrite: true` to replace it). */
  | 'OUTPUT_EXISTS'
  /** A checkpoint's scale files are inconsistent or malformed (kv_cache_scales.json schema, shapes, names). */
  | 'MALFORMED_CHECKPOINT'
  /** Scales cannot be converted between the two formats asked for. */
  | 'INCOMPATIBLE_FORMAT'
  /** The model produced a NaN or infinite query/key/value during calibration. */
  | 'NON_FINITE_ACTIVATION'
  /** The operation was interrupted through its AbortSignal; nothing was left behind. */
  | 'ABORTED'
  /** The operating system refused a read or write; `cause` holds the original error. */
  | 'IO_ERROR';

/** Where a {@link CalibrateError} happened, when known. */
export interface CalibrateErrorDetails {
  /** The file at fault. */
  file?: string;
  /** 1-based line number in `file`. */
  line?: number;
  /** The option, field or tensor at fault. */
  field?: string;
  /** The original error. */
  cause?: unknown;
}

/**
 * The error type of @kvq/calibrate.
 * @example
 * try { await calibrate({ model, dataset: 'chats.jsonl' }); }
 * catch (e) { if (e instanceof CalibrateError && e.code === 'DATASET_MALFORMED') console.error(e.file, e.line); }
 */
export class CalibrateError extends Error {
  override readonly name = 'CalibrateError';
  /** Machine-readable category; see {@link CalibrateErrorCode}. */
  readonly code: CalibrateErrorCode;
  /** The file at fault, when known. */
  readonly file: string | undefined;
  /** 1-based line in `file`, when known. */
  readonly line: number | undefined;
  /** The option / field / tensor at fault, when known. */
  readonly field: string | undefined;

  constructor(code: CalibrateErrorCode, message: string, details: CalibrateErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    this.file = details.file;
    this.line = details.line;
    this.field = details.field;
  }
}

/** A short printable form of any value for error messages. */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) return String(value);
  if (Array.isArray(value)) return `an array of ${value.length}`;
  return typeof value === 'object' ? 'an object' : typeof value;
}

/** Throw `INVALID_ARGUMENT` unless `value` is one of `allowed`. */
export function checkChoice<T extends string>(name: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new CalibrateError('INVALID_ARGUMENT', `${name} must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${describeValue(value)}`, {
      field: name,
    });
  }
  return value as T;
}

/** Throw `INVALID_ARGUMENT` unless `value` is an integer in [min, max]. */
export function checkInt(name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`;
    throw new CalibrateError('INVALID_ARGUMENT', `${name} must be an integer ${range}, got ${describeValue(value)}`, { field: name });
  }
  return value;
}

/** Throw `ABORTED` when the signal has fired. */
export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) {
    throw new CalibrateError('ABORTED', `${what} was aborted${signal.reason instanceof Error ? ` (${signal.reason.message})` : ''}`, {
      cause: signal.reason,
    });
  }
}
