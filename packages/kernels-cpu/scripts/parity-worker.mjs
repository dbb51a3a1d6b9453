#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// Runs the parity kit's cases (@kvq/kernels/testing parityCases) on one kvq_cpu.node for several ISAs, or on the
// pure-TypeScript reference backend, and writes every case's outputs to a JSON file: the arm64 half of
// qemu-arm64-check.mjs (run by an aarch64 Node under qemu-user), whose x64 half runs the reference and compares
// with the kit's own tolerances (compareOutput). Runs on any platform; loads the built JavaScript (dist/) of this
// package and @kvq/kernels, so `pnpm build` must have run.
//
// Usage: node scripts/parity-worker.mjs --out <file.json> [--addon <kvq_cpu.node>] [--isa neon,scalar | reference]
//          [--threads 2] [--size quick|full]
// While a case runs, <file.json>.progress names it (a crash leaves it behind).
// Output: { arch, platform, size, cpuIsas, autoIsa, forcedScalarIsa, isaUsed: { <isa>: backend.isa },
//   cases: [{ op, label, tolerance }], runs: { <isa>: [
//   { outputs: { <name>: { type, data (base64) } | { number } } } | { error, code } ] } }.
import { rmSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createReferenceBackend } from '@kvq/kernels';
import { parityCases } from '@kvq/kernels/testing';

const { values: args } = parseArgs({
  options: {
    out: { type: 'string' },
    addon: { type: 'string' },
    isa: { type: 'string', default: 'neon,scalar' },
    threads: { type: 'string', default: '2' },
    size: { type: 'string', default: 'quick' },
  },
});
if (!args.out) {
  process.stderr.write('usage: node parity-worker.mjs --out <file.json> [--addon <kvq_cpu.node>] [--isa neon,scalar|reference] [--threads n] [--size quick|full]\n');
  process.exit(2);
}
if (args.size !== 'quick' && args.size !== 'full') throw new Error(`--size must be quick or full, got ${args.size}`);

const cases = parityCases({ size: args.size });

/** A parity output as JSON: typed arrays as their type name and base64 bytes; numbers as strings (NaN, Infinity). */
function encode(v) {
  if (typeof v === 'number') return { number: String(v) };
  const type = Object.prototype.toString.call(v).slice(8, -1);
  return { type, data: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') };
}

// The case in progress, so that a crash (a signal, no JS error) can be pinned on it by the caller.
const progress = `${args.out}.progress`;

function runAll(backend, what) {
  return cases.map((c, i) => {
    writeFileSync(progress, `${what} case ${i} (${c.op}): ${c.label}`);
    try {
      const outputs = {};
      for (const [name, v] of Object.entries(c.run(backend))) outputs[name] = encode(v);
      return { outputs };
    } catch (e) {
      return { error: e instanceof Error ? e.message : String(e), code: e?.code ?? null };
    }
  });
}

const result = {
  arch: process.arch,
  platform: process.platform,
  size: args.size,
  cases: cases.map((c) => ({ op: c.op, label: c.label, tolerance: c.tolerance })),
  runs: {},
};
if (args.isa === 'reference') {
  result.runs.reference = runAll(createReferenceBackend(), 'reference');
} else {
  if (args.addon) process.env.KVQ_CPU_ADDON = args.addon;
  delete process.env.KVQ_CPU_ISA;
  const { cpuAvailability, createBackend } = await import('../dist/index.js');
  const avail = cpuAvailability();
  if (!avail.available) throw new Error(`the native CPU backend is unavailable: ${avail.reason}`);
  result.cpuIsas = avail.cpu.isas;
  // What `auto` picks, and that KVQ_CPU_ISA=scalar still forces the portable kernels.
  const auto = createBackend({ threads: 1 });
  result.autoIsa = auto.isa;
  auto.dispose();
  process.env.KVQ_CPU_ISA = 'scalar';
  const forced = createBackend({ threads: 1 });
  result.forcedScalarIsa = forced.isa;
  forced.dispose();
  delete process.env.KVQ_CPU_ISA;
  const threads = Number(args.threads);
  for (const isa of args.isa.split(',')) {
    const b = createBackend({ isa, threads });
    (result.isaUsed ??= {})[isa] = b.isa;
    const t0 = performance.now();
    try {
      result.runs[isa] = runAll(b, isa);
    } finally {
      b.dispose();
    }
    process.stderr.write(`[parity-worker ${process.arch}] ${isa}: ${cases.length} cases in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  }
}
writeFileSync(args.out, JSON.stringify(result));
rmSync(progress, { force: true });
