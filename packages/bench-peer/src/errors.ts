/**
 * Every failure @kvq/bench-peer reports on purpose is a {@link BenchPeerError} with a string-literal `code`.
 * Messages name the option, file, field or value at fault.
 */
export type BenchPeerErrorCode =
  /** An option is out of range or has an unknown value (`repeats`, `contexts`, a KV type, a model name, ...). */
  | 'INVALID_ARGUMENT'
  /** node-llama-cpp is not installed in the peer folder (run the benchmark's own install step). */
  | 'PEER_NOT_INSTALLED'
  /** `npm install` of the pinned node-llama-cpp failed (network, registry, disk); `cause` holds the output. */
  | 'PEER_INSTALL_FAILED'
  /** This platform has no node-llama-cpp prebuilt CPU binary the harness knows. */
  | 'UNSUPPORTED_PLATFORM'
  /** The built harness (`dist/run.js`) is missing: measured runs need `pnpm --filter @kvq/bench-peer build`. */
  | 'NOT_BUILT'
  /** A measured child process failed, timed out or printed no result; the message holds its stderr tail. */
  | 'CHILD_FAILED'
  /** A result file or report could not be read or written; `cause` holds the original error. */
  | 'IO_ERROR';

/** Where a {@link BenchPeerError} happened, when known. */
export interface BenchPeerErrorDetails {
  /** The file at fault. */
  file?: string;
  /** The option or field at fault. */
  field?: string;
  /** The original error. */
  cause?: unknown;
}

/**
 * The error type of @kvq/bench-peer.
 * @example
 * try { await runPeerBenchmark({ repeats: 0 }); }
 * catch (e) { if (e instanceof BenchPeerError && e.code === 'INVALID_ARGUMENT') console.error(e.field); }
 */
export class BenchPeerError extends Error {
  override readonly name = 'BenchPeerError';
  /** Machine-readable reason. */
  readonly code: BenchPeerErrorCode;
  /** The file at fault, when there is one. */
  readonly file: string | undefined;
  /** The option or field at fault, when there is one. */
  readonly field: string | undefined;

  constructor(code: BenchPeerErrorCode, message: string, details: BenchPeerErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    this.file = details.file;
    this.field = details.field;
  }
}

/** A short, safe description of any value for error messages. */
function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}...` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint' || value == null) return String(value);
  if (Array.isArray(value)) return `an array of ${value.length}`;
  return typeof value;
}

/** Throw `INVALID_ARGUMENT` unless `value` is an integer in [min, max]; returns it. */
export function checkInt(field: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`;
    throw new BenchPeerError('INVALID_ARGUMENT', `${field} must be an integer ${range}, got ${describeValue(value)}`, { field });
  }
  return value;
}

/** Throw `INVALID_ARGUMENT` unless `value` is one of `choices`; returns it. */
export function checkChoice<T extends string>(field: string, value: unknown, choices: readonly T[]): T {
  if (typeof value !== 'string' || !(choices as readonly string[]).includes(value)) {
    throw new BenchPeerError('INVALID_ARGUMENT', `${field} must be one of ${choices.join(', ')}, got ${describeValue(value)}`, { field });
  }
  return value as T;
}
