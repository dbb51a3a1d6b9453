import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CacheError, isKvQuantDtype, maxConcurrency, planKvCache, resolveKvCacheDtype, isFp8Dtype, type KvStorageDtype } from '@kvq/cache';
import { detectModelFormat, loadModel, parseHfConfig, type ModelConfig } from '@kvq/engine';
import { KV_CACHE_DTYPES, KV_CACHE_QUANT_DTYPES, parseCommand, parseKvCacheDtype, parseNumber, parseSize } from '../../args.js';
import { CliError } from '../../errors.js';
import { resolveModel } from '../../model.js';
import { formatBytes } from '../../progress.js';
import type { CliIo } from '../../registry.js';

const HELP = `Usage: kvq plan --kv-cache-memory SIZE [options]

How many tokens and sequences a KV-cache budget holds, for every KV cache dtype side by side (vLLM's block
arithmetic: blocks = floor((memory - scale bytes) / bytes per block); block 0 is reserved). The dtypes scaled
when written (${KV_CACHE_QUANT_DTYPES.join(', ')}) count their scales, stored in each block, in B/token; they run
on the reference backend only for now (a dtype the model's head size does not fit is left out).

Options:
  -m, --model M             model folder/file or Hub id (default: the embedded kvq-tiny); only its config is read
  --kv-cache-memory SIZE    the budget: 512MiB, 4GB, 1048576 (required)
  --kv-cache-dtype D        mark this row (${KV_CACHE_DTYPES.join(' | ')})
  --kv-cache-value-dtype V  add a row for K in --kv-cache-dtype with V in V (separate K and V dtypes)
  --block-size N            tokens per block, a power of two (default 16)
  --max-model-len L         context length for the concurrency column (default: the model's)
  --json                    print JSON
  -h, --help                show this help
`;

const ROWS: readonly { option: string; label: string }[] = [
  { option: 'float32', label: 'float32' },
  { option: 'bfloat16', label: 'bfloat16' },
  { option: 'float16', label: 'float16' },
  { option: 'fp8_e4m3', label: 'fp8 / fp8_e4m3' },
  { option: 'fp8_e5m2', label: 'fp8_e5m2' },
  ...KV_CACHE_QUANT_DTYPES.map((d) => ({ option: d, label: d })),
];

async function readConfig(path: string): Promise<ModelConfig> {
  const { format, path: p } = await detectModelFormat(path);
  if (format === 'hf') {
    let generationEos: number[] | undefined;
    try {
      const g = JSON.parse(await readFile(join(p, 'generation_config.json'), 'utf8')) as { eos_token_id?: number | number[] };
      if (g.eos_token_id !== undefined) generationEos = Array.isArray(g.eos_token_id) ? g.eos_token_id : [g.eos_token_id];
    } catch {
      generationEos = undefined;
    }
    const file = join(p, 'config.json');
    let json: unknown;
    try {
      json = JSON.parse(await readFile(file, 'utf8'));
    } catch (error) {
      throw new CliError('RUNTIME', `${file}: cannot read (${(error as Error).message})`, { cause: error });
    }
    return parseHfConfig(json, file, generationEos);
  }
  return (await loadModel(path)).config; // GGUF / llama2.c: the header lives with the weights
}

/** `kvq plan`: KV-cache capacity per dtype. */
export async function run(argv: string[], io: CliIo): Promise<void> {
  const { values, positionals } = parseCommand(argv, {
    model: { type: 'string', short: 'm' },
    'kv-cache-memory': { type: 'string' },
    'kv-cache-dtype': { type: 'string' },
    'kv-cache-value-dtype': { type: 'string' },
    'block-size': { type: 'string' },
    'max-model-len': { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    io.stdout.write(HELP);
    return;
  }
  if (positionals.length > 0) throw new CliError('USAGE', `unexpected argument ${JSON.stringify(positionals[0])}`);
  if (values['kv-cache-memory'] === undefined) throw new CliError('USAGE', 'kvq plan needs --kv-cache-memory SIZE (e.g. 512MiB)');
  const memory = parseSize(values['kv-cache-memory'], '--kv-cache-memory');
  const blockSize = parseNumber(values['block-size'], '--block-size', { integer: true, min: 1 }) ?? 16;
  if ((blockSize & (blockSize - 1)) !== 0) throw new CliError('USAGE', `--block-size must be a power of two, got ${blockSize}`);
  const chosen = values['kv-cache-dtype'] === undefined ? undefined : parseKvCacheDtype(values['kv-cache-dtype']);
  const chosenValue = values['kv-cache-value-dtype'] === undefined ? undefined : parseKvCacheDtype(values['kv-cache-value-dtype'], '--kv-cache-value-dtype');
  if (chosenValue !== undefined && chosen === undefined) throw new CliError('USAGE', '--kv-cache-value-dtype needs --kv-cache-dtype (the K dtype)');
  const maxLenFlag = parseNumber(values['max-model-len'], '--max-model-len', { integer: true, min: 1 });
  const choice = await resolveModel(values.model, io, { configOnly: true });
  const c = await readConfig(choice.path);
  const modelDtype: KvStorageDtype = c.torchDtype === 'float32' ? 'f32' : c.torchDtype === 'float16' ? 'f16' : 'bf16';
  const contextLength = maxLenFlag ?? c.maxPositionEmbeddings;
  const chosenStorage = chosen === undefined ? undefined : resolveKvCacheDtype(chosen, modelDtype);
  const chosenValueStorage = chosenValue === undefined ? undefined : resolveKvCacheDtype(chosenValue, modelDtype);
  const mixedRow = chosenValueStorage !== undefined && chosenValueStorage !== chosenStorage;
  const model = { numLayers: c.numLayers, numKvHeads: c.numKvHeads, headSize: c.headDim, numHeads: c.numHeads };
  const specs = [
    ...ROWS.map((r) => ({ label: r.label, dtype: resolveKvCacheDtype(r.option as never, modelDtype), value: undefined as KvStorageDtype | undefined })),
    ...(mixedRow ? [{ label: `K ${chosen} / V ${chosenValue}`, dtype: chosenStorage!, value: chosenValueStorage }] : []),
  ];
  const rows = specs.flatMap(({ label, dtype, value }) => {
    let plan: ReturnType<typeof planKvCache>;
    try {
      plan = planKvCache({
        model,
        memoryBytes: memory,
        dtype,
        blockSize,
        ...(value !== undefined ? { layerValueDtypes: new Array<KvStorageDtype>(c.numLayers).fill(value) } : {}),
      });
    } catch (error) {
      // e.g. nvfp4 / int4_g64 need a head size that is a multiple of their group: not a row for this model.
      if (error instanceof CacheError && isKvQuantDtype(dtype) && value === undefined) return [];
      if (error instanceof CacheError) throw new CliError('USAGE', `K ${dtype} / V ${value}: ${error.message}`, { cause: error });
      throw error;
    }
    const conc = maxConcurrency(plan, contextLength);
    return {
      kv_cache_dtype: label,
      storage_dtype: value === undefined ? dtype : `${dtype}/${value}`,
      auto: dtype === modelDtype && value === undefined,
      chosen: mixedRow ? value !== undefined : chosenStorage === dtype,
      bytes_per_token: plan.bytesPerToken,
      bytes_per_block: plan.bytesPerBlock,
      scale_bytes: plan.scaleBytes,
      blocks: plan.numBlocks,
      usable_blocks: plan.numUsableBlocks,
      tokens: plan.numTokens,
      max_concurrency: conc.ratio,
      full_length_sequences: conc.sequences,
      fp8: isFp8Dtype(dtype),
      scaled_when_written: isKvQuantDtype(dtype),
    };
  });
  const summary = {
    model: choice.name,
    kv_cache_memory: memory,
    block_size: blockSize,
    context_length: contextLength,
    model_dtype: modelDtype,
    layers: c.numLayers,
    kv_heads: c.numKvHeads,
    head_dim: c.headDim,
    rows,
  };
  if (values.json) {
    io.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
    return;
  }
  const header = ['kv_cache_dtype', 'stored as', 'B/token', 'blocks', 'tokens', `max concurrency @ ${contextLength}`];
  const table = rows.map((r) => [
    `${r.kv_cache_dtype}${r.auto ? ' (auto)' : ''}${r.chosen ? ' *' : ''}`,
    r.storage_dtype,
    String(r.bytes_per_token),
    String(r.blocks),
    String(r.tokens),
    `${r.max_concurrency.toFixed(2)}x (${r.full_length_sequences} full sequences)`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((x, i) => (i >= 2 && i <= 4 ? x.padStart(widths[i]!) : x.padEnd(widths[i]!))).join('  ').trimEnd();
  io.stdout.write(
    [
      `${choice.name}: ${c.numLayers} layers, ${c.numKvHeads} KV heads x ${c.headDim}, ${modelDtype}; KV cache ${formatBytes(memory)} (${memory} bytes), block size ${blockSize}`,
      '',
      line(header),
      ...table.map(line),
      '',
    ].join('\n'),
  );
}
