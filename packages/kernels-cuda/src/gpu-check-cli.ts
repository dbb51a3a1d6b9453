#!/usr/bin/env node
/**
 * `kvq-gpu-check [--out DIR] [--parity quick|full|off] [--no-bench] [--contexts 4096,16384,65536]`: run
 * {@link runGpuCheck} and write `DIR/gpu-check.json` (default DIR: `$OUT`, else `./gpu-check-out`). Prints progress
 * and a summary table. Exit code 0 when every correctness check passed, 1 when one failed, 2 when the backend is
 * unavailable here (the JSON says why), 64 for bad arguments. Bundled into one file by `bundle:gpu-check` for
 * `tooling/gpu-check.sh`.
 * @module
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { formatGpuCheck, runGpuCheck } from './gpu-check.js';

function usage(msg: string): never {
  process.stderr.write(`kvq-gpu-check: ${msg}\nusage: kvq-gpu-check [--out DIR] [--parity quick|full|off] [--no-bench] [--contexts N,N,...]\n`);
  process.exit(64);
}

const argv = process.argv.slice(2);
let out = process.env.OUT || './gpu-check-out';
let parity: 'quick' | 'full' | 'off' = 'quick';
let benchmarks = true;
let contexts: number[] | undefined;
for (let i = 0; i < argv.length; i++) {
  const a = argv[i]!;
  const value = (): string => {
    const v = argv[++i];
    if (v === undefined) usage(`${a} needs a value`);
    return v;
  };
  if (a === '--out') out = value();
  else if (a === '--parity') {
    const v = value();
    if (v !== 'quick' && v !== 'full' && v !== 'off') usage(`--parity must be quick, full or off, got ${v}`);
    parity = v;
  } else if (a === '--no-bench') benchmarks = false;
  else if (a === '--contexts') {
    contexts = value().split(',').map(Number);
    if (contexts.some((n) => !Number.isInteger(n) || n < 1)) usage('--contexts must be positive integers');
  } else usage(`unknown argument ${a}`);
}

const dir = resolve(out);
mkdirSync(dir, { recursive: true });
const report = await runGpuCheck({
  parity,
  benchmarks,
  contexts,
  log: (l) => process.stdout.write(`[gpu-check] ${l}\n`),
});
const file = join(dir, 'gpu-check.json');
writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
process.stdout.write(`${formatGpuCheck(report)}\nwrote ${file}\n`);
process.exit(report.unavailable ? 2 : report.ok ? 0 : 1);
