import { parseArgs } from 'node:util';
import {
  decodeFp8,
  encodeFp8,
  FP8_FORMAT_NAMES,
  FP8_FORMATS,
  Fp8Error,
  type Fp8Format,
  type Saturation,
} from '@kvq/fp8';
import { CliError } from '../../errors.js';
import type { CliIo } from '../../registry.js';

const HELP = `Usage: kvq fp8 [options] VALUE...

Encodes each VALUE (a decimal number, inf, -inf or nan) to FP8 in every format, quantizing x / scale
as vLLM's KV cache does, and shows the code, the decoded value (times scale) and the relative error.

Options:
  --format F       only this format (${FP8_FORMAT_NAMES.join(', ')})
  --scale S        dequantization scale (default 1)
  --nosat          overflow to NaN/inf instead of saturating to the max finite value
  --json           print JSON
  -h, --help       show this help
`;

function parseValue(text: string): number {
  const t = text.trim().toLowerCase();
  if (t === 'nan') return NaN;
  if (t === 'inf' || t === '+inf' || t === 'infinity') return Infinity;
  if (t === '-inf' || t === '-infinity') return -Infinity;
  const v = Number(t);
  if (t === '' || Number.isNaN(v)) throw new CliError('USAGE', `not a number: ${JSON.stringify(text)}`);
  return v;
}

/** `kvq fp8`: the FP8 codec demo. */
export async function run(argv: string[], io: CliIo): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        format: { type: 'string' },
        scale: { type: 'string' },
        nosat: { type: 'boolean' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    throw new CliError('USAGE', (error as Error).message, { cause: error });
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.stdout.write(HELP);
    return;
  }
  if (positionals.length === 0) throw new CliError('USAGE', 'kvq fp8: give at least one VALUE (see kvq fp8 --help)');
  const formats: Fp8Format[] = values.format ? [values.format as Fp8Format] : [...FP8_FORMAT_NAMES];
  for (const f of formats) {
    if (!FP8_FORMAT_NAMES.includes(f)) {
      throw new CliError('USAGE', `--format ${JSON.stringify(f)} is not one of ${FP8_FORMAT_NAMES.join(', ')}`);
    }
  }
  const scale = values.scale === undefined ? 1 : parseValue(values.scale);
  if (!(scale > 0) || !Number.isFinite(scale)) throw new CliError('USAGE', `--scale must be finite and > 0, got ${values.scale}`);
  const saturation: Saturation = values.nosat ? 'nosat' : 'satfinite';
  const rows = [];
  try {
    for (const text of positionals) {
      const x = parseValue(text);
      for (const format of formats) {
        const code = encodeFp8(Math.fround(x / scale), format, saturation);
        const back = Math.fround(decodeFp8(code, format) * scale);
        rows.push({ input: x, format, code, decoded: back, relativeError: x === 0 ? Math.abs(back) : Math.abs(back - x) / Math.abs(x) });
      }
    }
  } catch (error) {
    if (error instanceof Fp8Error) throw new CliError('USAGE', error.message, { cause: error });
    throw error;
  }
  if (values.json) {
    io.stdout.write(`${JSON.stringify({ scale, saturation, results: rows }, null, 2)}\n`);
    return;
  }
  const lines = [`scale ${scale}, ${saturation}`, 'input          format     code   decoded         rel.error'];
  for (const r of rows) {
    const code = `0x${r.code.toString(16).padStart(2, '0')}`;
    lines.push(
      `${String(r.input).padEnd(14)} ${r.format.padEnd(10)} ${code.padEnd(6)} ${String(r.decoded).padEnd(15)} ${Number.isFinite(r.relativeError) ? r.relativeError.toExponential(2) : String(r.relativeError)}`,
    );
  }
  lines.push('', 'formats: ' + formats.map((f) => `${f} max ${FP8_FORMATS[f].maxFinite}`).join(', '));
  io.stdout.write(`${lines.join('\n')}\n`);
}
