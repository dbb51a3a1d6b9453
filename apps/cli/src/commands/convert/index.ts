import { convertToHf, detectModelFormat, fileTypeOf, GGUF_OUT_TYPES, loadModel, writeModelAsGguf, type GgufOutType } from '@kvq/engine';
import { existsSync } from 'node:fs';
import { parseCommand } from '../../args.js';
import { CliError } from '../../errors.js';
import { formatBytes, ProgressBar } from '../../progress.js';
import type { CliIo } from '../../registry.js';

const HELP = `Usage: kvq convert --from llama2c|gguf INPUT --out DIR [options]
       kvq convert --from hf INPUT --outtype TYPE --out FILE.gguf [options]

Converts a llama2.c checkpoint or a dense GGUF file (F32/F16/BF16) to a Hugging Face folder (config.json,
model.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json) that kvq, transformers and vLLM
read; Q/K rows are stored in Hugging Face's rotate-half order. With --from hf, writes a Hugging Face folder (Llama,
Mistral, Qwen2, dense weights, byte-level BPE tokenizer) as a GGUF file llama.cpp runs, every matrix in --outtype
(${GGUF_OUT_TYPES.join(', ')}; norms F32; for llama.cpp's mixed Q4_K_M / Q5_K_M files use kvq quantize).

Options:
  --from F          input format: llama2c, gguf or hf (checked against the input)
  --out PATH        output folder (must be empty unless --overwrite), or the .gguf file for --from hf
  --outtype T       --from hf: the GGUF tensor type of the matrices
  --tokenizer PATH  llama2.c tokenizer file (default: tokenizer.bin or tok<vocab>.bin beside the checkpoint)
  --overwrite       write into a folder that already has files
  --json            print JSON
  -h, --help        show this help
`;

/** `kvq convert`: llama2.c / GGUF → Hugging Face folder. */
export async function run(argv: string[], io: CliIo): Promise<void> {
  const { values, positionals } = parseCommand(argv, {
    from: { type: 'string' },
    out: { type: 'string', short: 'o' },
    outtype: { type: 'string' },
    tokenizer: { type: 'string' },
    overwrite: { type: 'boolean' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    io.stdout.write(HELP);
    return;
  }
  if (values.from !== 'llama2c' && values.from !== 'gguf' && values.from !== 'hf') throw new CliError('USAGE', `--from must be llama2c, gguf or hf, got ${JSON.stringify(values.from)}`);
  if ((values.outtype !== undefined) !== (values.from === 'hf')) throw new CliError('USAGE', '--outtype goes with --from hf (HF folder → GGUF file), and --from hf needs --outtype');
  if (positionals.length !== 1) throw new CliError('USAGE', 'kvq convert needs exactly one INPUT file');
  if (!values.out) throw new CliError('USAGE', 'kvq convert needs --out DIR');
  if (values.tokenizer && values.from !== 'llama2c') throw new CliError('USAGE', '--tokenizer applies to --from llama2c only (GGUF files embed their tokenizer)');
  const input = positionals[0]!;
  const { format } = await detectModelFormat(input);
  if (format !== values.from) throw new CliError('USAGE', `${input} is a ${format} model, not ${values.from}; fix --from`);
  const bar = new ProgressBar(io.stderr, 'reading', (d, t) => `${formatBytes(d)} / ${formatBytes(t)}`);
  let model;
  try {
    model = await loadModel(input, { onProgress: (p) => bar.update(p.loadedBytes, p.totalBytes), ...(values.tokenizer ? { tokenizerPath: values.tokenizer } : {}) });
  } finally {
    bar.done();
  }
  if (values.from === 'hf') {
    const outtype = values.outtype!.toLowerCase() as GgufOutType;
    if (!GGUF_OUT_TYPES.includes(outtype)) throw new CliError('USAGE', `--outtype must be one of ${GGUF_OUT_TYPES.join(', ')}, got ${JSON.stringify(values.outtype)}`);
    if (!values.overwrite && existsSync(values.out)) throw new CliError('USAGE', `${values.out} already exists (pass --overwrite to replace it)`);
    const written = await writeModelAsGguf(model, values.out, { typeOf: () => outtype, fileType: fileTypeOf(outtype) });
    if (values.json) {
      io.stdout.write(`${JSON.stringify({ input, from: 'hf', out: written.path, outtype, bytes: written.bytes }, null, 2)}\n`);
      return;
    }
    io.stdout.write(`wrote ${written.path} (${outtype}, ${formatBytes(written.bytes)})\n`);
    return;
  }
  const result = await convertToHf(model, values.out, { overwrite: values.overwrite === true });
  for (const w of result.warnings) io.stderr.write(`kvq: warning: ${w}\n`);
  if (values.json) {
    io.stdout.write(`${JSON.stringify({ input, from: values.from, out: result.dir, files: result.files, warnings: result.warnings }, null, 2)}\n`);
    return;
  }
  io.stdout.write(`wrote ${result.dir}: ${result.files.join(', ')}\n`);
}
