import { isCompressedTensorsScheme, loadModel, parseQuantizeScheme, QUANTIZE_SCHEMES, quantizeModel, EngineError } from '@kvq/engine';
import { parseCommand } from '../../args.js';
import { CliError } from '../../errors.js';
import { resolveModel } from '../../model.js';
import { formatBytes, ProgressBar } from '../../progress.js';
import type { CliIo } from '../../registry.js';

const HELP = `Usage: kvq quantize [-m MODEL] --scheme SCHEME --out PATH [options]

Quantizes a dense (f32/f16/bf16) model's weights, offline, into a checkpoint kvq, vLLM or llama.cpp loads:
  compressed-tensors folders (as llm-compressor writes them; lm_head and embeddings stay dense)
    fp8      FP8 e4m3 weights, one scale per output channel (FP8_DYNAMIC: activations dynamic per token)
    w4a16    int4 weights in groups of 128 columns (halved until it divides every layer), symmetric, packed in int32
    w8a8     INT8 weights, one scale per output channel (activations dynamic per token)
  GGUF files (llama.cpp's type mix per tensor; norms F32)
    q8_0, q4_0, q4_1, q5_0, q5_1, q4_k_m, q5_k_m, q6_k
kvq runs every scheme with float32 activations (W8A16 / W4A16 math).

Options:
  -m, --model M     model folder/file or Hub id (default: the embedded kvq-tiny)
  --scheme S        one of ${QUANTIZE_SCHEMES.join(', ')}
  --out PATH        output folder (compressed-tensors) or .gguf file
  --group-size N    w4a16 only: int4 group size (default 128)
  --overwrite       replace an existing output
  --json            print JSON
  -h, --help        show this help
`;

/** \`kvq quantize\`: dense model → compressed-tensors folder or GGUF file. */
export async function run(argv: string[], io: CliIo): Promise<void> {
  const { values, positionals } = parseCommand(argv, {
    model: { type: 'string', short: 'm' },
    scheme: { type: 'string' },
    out: { type: 'string', short: 'o' },
    'group-size': { type: 'string' },
    overwrite: { type: 'boolean' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    io.stdout.write(HELP);
    return;
  }
  if (positionals.length > 0) throw new CliError('USAGE', `kvq quantize takes no positional arguments (got ${positionals.join(' ')}); use -m MODEL`);
  if (values.scheme === undefined) throw new CliError('USAGE', `kvq quantize needs --scheme (${QUANTIZE_SCHEMES.join(', ')})`);
  let scheme;
  try {
    scheme = parseQuantizeScheme(values.scheme);
  } catch (e) {
    throw new CliError('USAGE', `--scheme: ${(e as Error).message}`, { cause: e });
  }
  if (!values.out) throw new CliError('USAGE', 'kvq quantize needs --out PATH');
  let groupSize: number | undefined;
  if (values['group-size'] !== undefined) {
    if (scheme !== 'w4a16') throw new CliError('USAGE', '--group-size applies to --scheme w4a16 only');
    groupSize = Number(values['group-size']);
    if (!Number.isInteger(groupSize) || groupSize < 1) throw new CliError('USAGE', `--group-size must be a positive integer, got ${JSON.stringify(values['group-size'])}`);
  }
  if (!isCompressedTensorsScheme(scheme) && !values.out.endsWith('.gguf')) {
    io.stderr.write(`kvq: warning: --scheme ${scheme} writes a GGUF file; ${values.out} does not end in .gguf\n`);
  }
  const choice = await resolveModel(values.model, io);
  const bar = new ProgressBar(io.stderr, 'reading', (d, t) => `${formatBytes(d)} / ${formatBytes(t)}`);
  let model;
  try {
    model = await loadModel(choice.path, { onProgress: (p) => bar.update(p.loadedBytes, p.totalBytes) });
  } finally {
    bar.done();
  }
  let result;
  try {
    result = await quantizeModel(model, values.out, scheme, { overwrite: values.overwrite === true, ...(groupSize === undefined ? {} : { groupSize }) });
  } catch (e) {
    if (e instanceof EngineError && e.code === 'INVALID_ARGUMENT') throw new CliError('USAGE', e.message, { cause: e });
    throw e;
  }
  const counts = new Map<string, number>();
  for (const t of result.types.values()) counts.set(t, (counts.get(t) ?? 0) + 1);
  const mix = [...counts].map(([t, n]) => `${n} ${t}`).join(', ');
  if (values.json) {
    io.stdout.write(`${JSON.stringify({ model: choice.name, scheme, format: result.format, out: result.out, files: result.files, tensorTypes: Object.fromEntries(counts), groupSize: result.groupSize ?? null }, null, 2)}\n`);
    return;
  }
  io.stdout.write(`wrote ${result.out} (${result.format}, ${scheme}${result.groupSize ? `, group size ${result.groupSize}` : ''}): ${mix}\n`);
}
