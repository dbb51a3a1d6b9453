import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { arch, cpus, freemem, platform, release, totalmem } from 'node:os';
import { describeLoad, loadBackend, type LoadedBackend } from '@kvq/kernels';
import { parseCommand } from '../../args.js';
import { CLI_BACKEND_CANDIDATES } from '../../backends.js';
import { CliError } from '../../errors.js';
import { formatBytes } from '../../progress.js';
import type { CliIo } from '../../registry.js';

const HELP = `Usage: kvq env [--json]

Prints what to paste into a bug report: versions, CPU and its vector features, memory, the kernel backend kvq
picks and why every other candidate was rejected, and the environment variables kvq reads (token values are
never printed).

Options:
  --json        print JSON
  -h, --help    show this help
`;

const PACKAGES = ['@kvq/cli', '@kvq/server', '@kvq/engine', '@kvq/cache', '@kvq/fp8', '@kvq/kernels', '@kvq/kernels-cpu', '@kvq/kernels-cuda', '@kvq/kernels-rocm', '@kvq/model-tiny'];
const FLAGS = ['sse4_2', 'avx', 'avx2', 'fma', 'f16c', 'avx512f', 'avx512bw', 'avx512vl', 'avx512_bf16', 'avx512_fp16', 'amx_bf16', 'neon', 'asimd', 'fphp', 'asimdhp', 'asimddp'];
const ENV = ['KVQ_BACKEND', 'KVQ_CPU_THREADS', 'KVQ_CPU_ISA', 'KVQ_CPU_SPIN_US', 'KVQ_CPU_ADDON', 'KVQ_NATIVE_FLAGS', 'KVQ_CUDA_ADDON', 'KVQ_CUDA_DEVICE', 'KVQ_ROCM_ADDON', 'KVQ_ROCM_DEVICE', 'HF_HOME', 'HF_HUB_CACHE', 'HF_ENDPOINT', 'HF_HUB_OFFLINE', 'HF_TOKEN', 'CUDA_HOME', 'ROCM_PATH'];

function version(name: string): string {
  try {
    const require = createRequire(import.meta.url);
    return (require(`${name}/package.json`) as { version: string }).version;
  } catch {
    return 'not installed';
  }
}

function cpuFlags(): string[] {
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    const line = /^(?:flags|Features)\s*:\s*(.*)$/m.exec(info);
    const have = new Set((line?.[1] ?? '').split(/\s+/));
    return FLAGS.filter((f) => have.has(f));
  } catch {
    return [];
  }
}

/** `kvq env`: the environment report. */
export async function run(argv: string[], io: CliIo): Promise<void> {
  const { values, positionals } = parseCommand(argv, { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } });
  if (values.help) {
    io.stdout.write(HELP);
    return;
  }
  if (positionals.length > 0) throw new CliError('USAGE', `unexpected argument ${JSON.stringify(positionals[0])}`);
  let load: LoadedBackend | undefined;
  let loadError: string | undefined;
  try {
    // The candidates model-running commands use (cuda, rocm, cpu; then reference), so the report matches them.
    load = await loadBackend({ candidates: CLI_BACKEND_CANDIDATES });
  } catch (error) {
    loadError = (error as Error).message;
  }
  const c = cpus();
  const report = {
    kvq: version('@kvq/cli'),
    packages: Object.fromEntries(PACKAGES.map((p) => [p, version(p)])),
    node: process.version,
    v8: process.versions.v8,
    napi: process.versions.napi,
    platform: `${platform()} ${release()} ${arch()}`,
    cpu: { model: c[0]?.model ?? 'unknown', logical_cores: c.length, features: cpuFlags() },
    memory: { total: totalmem(), free: freemem() },
    backend: load
      ? {
          chosen: load.backend.name,
          info: load.backend.info,
          summary: describeLoad(load),
          rejected: load.rejected.map((r) => ({ name: r.name, reason: r.reason })),
          // The warning a model-running command prints for this choice (null when a native backend runs).
          fallback: load.fallback ?? null,
        }
      : { error: loadError },
    environment: Object.fromEntries(ENV.map((k) => [k, process.env[k] === undefined ? null : k === 'HF_TOKEN' ? '(set)' : process.env[k]!])),
  };
  load?.backend.dispose?.();
  if (values.json) {
    io.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return;
  }
  const lines = [
    `kvq ${report.kvq}`,
    `node ${report.node} (v8 ${report.v8}, N-API ${report.napi}), ${report.platform}`,
    `CPU: ${report.cpu.model}, ${report.cpu.logical_cores} logical cores, features: ${report.cpu.features.join(' ') || 'unknown'}`,
    `memory: ${formatBytes(report.memory.total)} total, ${formatBytes(report.memory.free)} free`,
    '',
    'kernel backend:',
  ];
  if (load) {
    lines.push(`  chosen: ${load.backend.name}: ${load.backend.info.description} (${load.backend.info.simd}, ${load.backend.info.threads} thread${load.backend.info.threads === 1 ? '' : 's'}${load.backend.info.version ? `, v${load.backend.info.version}` : ''})`);
    for (const r of load.rejected) lines.push(`  rejected ${r.name}: ${r.reason}`);
    if (load.fallback) lines.push(`  warning: ${load.fallback.replace(/^kvq: /, '')}`);
  } else {
    lines.push(`  error: ${loadError}`);
  }
  lines.push('', 'packages:', ...Object.entries(report.packages).map(([k, v]) => `  ${k} ${v}`), '', 'environment:');
  for (const [k, v] of Object.entries(report.environment)) lines.push(`  ${k}=${v ?? '(unset)'}`);
  io.stdout.write(`${lines.join('\n')}\n`);
}
