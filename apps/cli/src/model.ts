import { existsSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { isFp8Dtype, resolveKvCacheDtype, type KvBlockTier, type KvCacheDtypeOption } from '@kvq/cache';
import { downloadModel, EngineError, isHubId, LLM, loadModel, type KvCacheFormat, type LoadedModel, type WarningHandler } from '@kvq/engine';
import { modelTinyName, modelTinyPath } from '@kvq/model-tiny';
import { engineOptions } from './args.js';
import { CliError } from './errors.js';
import { formatBytes, ProgressBar } from './progress.js';
import type { CliIo } from './registry.js';

/** A model the CLI will load: where it is and what to call it. */
export interface ModelChoice {
  readonly path: string;
  /** `kvq-tiny` for the embedded default, the Hub id, or the folder/file name. */
  readonly name: string;
}

/**
 * Resolves `--model`: omitted → the embedded kvq-tiny; an existing path → itself; `org/name[@rev]` → downloaded
 * into the Hugging Face cache (progress on a TTY).
 */
export async function resolveModel(spec: string | undefined, io: CliIo, options: { configOnly?: boolean } = {}): Promise<ModelChoice> {
  if (spec === undefined) return { path: modelTinyPath, name: modelTinyName };
  if (existsSync(spec)) return { path: resolve(spec), name: basename(resolve(spec)) };
  if (!isHubId(spec)) throw new CliError('RUNTIME', `--model ${JSON.stringify(spec)}: no such file or folder (and not a Hub id org/name[@revision])`);
  const bar = new ProgressBar(io.stderr, 'download', (d, t) => `${formatBytes(d)} / ${formatBytes(t)}`);
  let current = '';
  try {
    const path = await downloadModel(spec, {
      ...(options.configOnly ? { configOnly: true } : {}),
      onProgress: (p) => {
        if (p.file !== current) {
          bar.done();
          current = p.file;
        }
        bar.update(p.bytes, p.total);
      },
      onNotice: (m) => {
        bar.done();
        io.stderr.write(`kvq: ${m}\n`);
      },
    });
    return { path, name: spec };
  } catch (error) {
    if (error instanceof EngineError && (error.code.startsWith('HUB_') || error.code === 'UNSUPPORTED_FORMAT')) {
      throw new CliError('RUNTIME', `--model ${spec}: not a local path, and the Hub download failed: ${error.message}`, { cause: error });
    }
    if (error instanceof EngineError && error.field === 'HF_TOKEN') throw new CliError('USAGE', error.message, { cause: error });
    throw error;
  } finally {
    bar.done();
  }
}

/** The FP8 format whose checkpoint scales apply to a `--kv-cache-dtype` (e4m3fn for non-FP8 caches). */
function kvFormatOf(dtype: KvCacheDtypeOption): KvCacheFormat {
  const storage = resolveKvCacheDtype(dtype, 'bf16');
  return isFp8Dtype(storage) ? storage : 'e4m3fn';
}

/** Loads a model with a progress bar on a TTY. */
export async function loadWithProgress(choice: ModelChoice, io: CliIo, options: { tokenizerPath?: string; kvCacheDtype: KvCacheDtypeOption }): Promise<LoadedModel> {
  const bar = new ProgressBar(io.stderr, 'loading', (d, t) => `${formatBytes(d)} / ${formatBytes(t)}`);
  try {
    return await loadModel(choice.path, {
      onProgress: (p) => bar.update(p.loadedBytes, p.totalBytes),
      kvCacheFormat: kvFormatOf(options.kvCacheDtype),
      ...(options.tokenizerPath ? { tokenizerPath: options.tokenizerPath } : {}),
    });
  } finally {
    bar.done();
  }
}

/**
 * The CLI's backend warnings: one `kvq: warning: ...` line on stderr (instead of Node's `(node:PID) KvqWarning`
 * format), e.g. when no native backend loads and the reference backend runs.
 */
export function warnTo(io: CliIo): WarningHandler {
  return (w) => io.stderr.write(`kvq: warning: ${w.message.replace(/^kvq: /, '')}\n`);
}

/** What model-running commands get: the engine, the loaded model and the choices made. */
export interface RunContext {
  readonly llm: LLM;
  readonly model: LoadedModel;
  readonly choice: ModelChoice;
  readonly kvCacheDtype: KvCacheDtypeOption;
  readonly options: ReturnType<typeof engineOptions>;
}

/**
 * Resolves, loads and builds an engine from the shared model flags.
 * @param override transforms the loaded model before the engine is built (e.g. drop checkpoint scales)
 */
export async function openModel(
  values: Record<string, unknown>,
  io: CliIo,
  extra: { maxNumSeqs?: number; maxNumBatchedTokens?: number; enablePrefixCaching?: boolean; kvTiers?: readonly KvBlockTier[]; override?: (m: LoadedModel) => LoadedModel } = {},
): Promise<RunContext> {
  const options = engineOptions(values);
  const choice = await resolveModel(values.model as string | undefined, io);
  const tokenizerPath = values.tokenizer as string | undefined;
  const loaded = await loadWithProgress(choice, io, { kvCacheDtype: options.kvCacheDtype, ...(tokenizerPath ? { tokenizerPath } : {}) });
  const model = extra.override ? extra.override(loaded) : loaded;
  for (const w of model.warnings) io.stderr.write(`kvq: warning: ${w}\n`);
  const llm = await LLM.create({
    model,
    ...options,
    onWarning: warnTo(io),
    ...(extra.maxNumSeqs !== undefined ? { maxNumSeqs: extra.maxNumSeqs } : {}),
    ...(extra.maxNumBatchedTokens !== undefined ? { maxNumBatchedTokens: extra.maxNumBatchedTokens } : {}),
    ...(extra.enablePrefixCaching !== undefined ? { enablePrefixCaching: extra.enablePrefixCaching } : {}),
    ...(extra.kvTiers !== undefined ? { kvTiers: extra.kvTiers, onKvTierLog: (m: string) => io.stderr.write(`${m}\n`) } : {}),
  });
  if (options.quantizationParamPath !== undefined && llm.kvScales) {
    // vLLM logs the same at info level ("Loaded KV cache scaling factors from %s").
    io.stderr.write(`kvq: loaded KV cache scaling factors from ${options.quantizationParamPath} (${llm.kvScales.scales.layers.length} layers)\n`);
  }
  return { llm, model, choice, kvCacheDtype: options.kvCacheDtype, options };
}

/** Engine errors caused by flag values are usage errors; the rest are runtime errors (exit 1). */
export function asCliError(error: unknown): unknown {
  if (error instanceof EngineError && error.code === 'INVALID_ARGUMENT' && error.field && /^(kvCacheMemory|maxModelLen|kvCacheDtype|fp8Query|kvCacheRotation|kvCacheDtypeSkipLayers|kvCacheKeepSink|kvCacheKeepRecent|enablePrefixCaching|blockSize)$/.test(error.field)) {
    return new CliError('USAGE', error.message, { cause: error });
  }
  return error;
}
