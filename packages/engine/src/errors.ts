/**
 * Every failure @kvq/engine reports on purpose is an {@link EngineError} with a string-literal `code`.
 * Messages name the file, field and offending value so that a user can fix the input without a debugger.
 */
export type EngineErrorCode =
  /** A path given to a loader does not exist, or a required file of a model folder is missing. */
  | 'FILE_NOT_FOUND'
  /** The operating system refused a read or write (permissions, disk full, ...); `cause` holds the original error. */
  | 'IO_ERROR'
  /** A file ends before the data its own header announces. */
  | 'TRUNCATED'
  /** A file or JSON document is structurally invalid (bad magic, bad JSON, impossible sizes, overlapping data). */
  | 'MALFORMED'
  /** A file kind or version this loader does not read (GGUF v1, llama2.c v2 int8 checkpoints, big-endian files). */
  | 'UNSUPPORTED_FORMAT'
  /** A model architecture other than Llama / Mistral / Qwen2, or a variant of them this engine does not run. */
  | 'UNSUPPORTED_ARCHITECTURE'
  /**
   * A tensor type the engine does not load where a weight is expected (GGUF Q2_K / Q3_K / IQ* types, a quantized 1-D
   * tensor, a compressed-tensors part of the wrong dtype), or a quantized tensor where a dense one is needed.
   */
  | 'UNSUPPORTED_DTYPE'
  /** A tokenizer model / normalizer / pre-tokenizer / decoder type this engine does not implement. */
  | 'UNSUPPORTED_TOKENIZER'
  /** A configuration value is missing, of the wrong type, or out of range. */
  | 'INVALID_CONFIG'
  /** A tensor's shape disagrees with the model configuration. */
  | 'SHAPE_MISMATCH'
  /** A tensor the architecture requires is absent from the checkpoint. */
  | 'MISSING_TENSOR'
  /**
   * A checkpoint KV-cache scale is non-finite or not positive, or has a shape the scheme does not allow; or a
   * `kv_cache_scales.json` has a tensor-parallel rank other than 0, the wrong number of layers, or a missing layer.
   */
  | 'INVALID_KV_SCALE'
  /**
   * A `kv_cache_scheme` other than symmetric 8-bit float with strategy `tensor` or `attn_head`, or a
   * `kv_cache_scales.json` whose `kv_cache.dtype` is not `float8_e4m3fn`.
   */
  | 'UNSUPPORTED_KV_SCHEME'
  /** A chat template failed to parse or to render. */
  | 'CHAT_TEMPLATE'
  /** A caller passed an invalid argument (token id out of range, unknown option value, ...). */
  | 'INVALID_ARGUMENT'
  /** Structured outputs: an invalid JSON schema / regex / grammar, or the grammar engine cannot load. */
  | 'STRUCTURED_OUTPUT'
  /** Hugging Face Hub: the repository, revision or file does not exist (HTTP 404). */
  | 'HUB_NOT_FOUND'
  /** Hugging Face Hub: access denied (HTTP 401/403): a private or gated repository, or a token without access. */
  | 'HUB_ACCESS_DENIED'
  /** Hugging Face Hub: `HF_HUB_OFFLINE` is set and the repository is not in the local cache. */
  | 'HUB_NOT_CACHED'
  /** Hugging Face Hub: the endpoint cannot be reached or answered an unexpected status, and nothing is cached. */
  | 'HUB_UNREACHABLE'
  /** Hugging Face Hub: a transfer failed after its retries, or the file's SHA-256 differs from the Hub's. */
  | 'HUB_DOWNLOAD_FAILED'
  /** An invariant of the engine itself broke (a bug, never bad input): the message says which; please report it. */
  | 'INTERNAL';

/** Where an {@link EngineError} happened, when known. */
export interface EngineErrorDetails {
  /** The file being read or written. */
  file?: string;
  /** The field, key or tensor name at fault. */
  field?: string;
  /** The original error, for IO failures and wrapped library errors. */
  cause?: unknown;
}

/**
 * The error type of @kvq/engine.
 * @example
 * try { await loadModel(dir); } catch (e) { if (e instanceof EngineError && e.code === 'UNSUPPORTED_DTYPE') ... }
 */
export class EngineError extends Error {
  override readonly name = 'EngineError';
  /** Machine-readable category; see {@link EngineErrorCode}. */
  readonly code: EngineErrorCode;
  /** The file at fault, when known. */
  readonly file: string | undefined;
  /** The field / key / tensor at fault, when known. */
  readonly field: string | undefined;

  constructor(code: EngineErrorCode, message: string, details: EngineErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    this.file = details.file;
    this.field = details.field;
  }
}

/** Short printable form of an arbitrary JSON-ish value for error messages (at most ~80 characters). */
export function describeValue(value: unknown): string {
  let text: string;
  try {
    text = typeof value === 'bigint' ? `${value}n` : (JSON.stringify(value) ?? String(value));
  } catch {
    text = String(value);
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}
