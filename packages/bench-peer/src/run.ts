#!/usr/bin/env node
// `node packages/bench-peer/dist/run.js [options]`: the whole benchmark, or (`--child job.json --out result.json`)
// one measured job inside a child process.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { PEER_BENCHMARK_USAGE, parsePeerBenchmarkArgs } from './args.js';
import { runPeerBenchmark, type PeerBenchmarkReport } from './benchmark.js';
import { runJob } from './child.js';
import { BenchPeerError } from './errors.js';
import { installPeer } from './peer/install.js';
import type { Job } from './protocol.js';
import { mergeReports, writeReport } from './report/write.js';
import { findRepoRoot } from './repo.js';

async function childMain(jobFile: string, outFile: string): Promise<void> {
  const job = JSON.parse(await readFile(jobFile, 'utf8')) as Job;
  const result = await runJob(job);
  await writeFile(outFile, JSON.stringify(result));
}

async function main(argv: readonly string[]): Promise<number> {
  const c = argv.indexOf('--child');
  if (c >= 0) {
    const out = argv[argv.indexOf('--out') + 1];
    if (!argv[c + 1] || !out) throw new BenchPeerError('INVALID_ARGUMENT', '--child needs a job file and --out a result file', { field: '--child' });
    await childMain(argv[c + 1]!, out);
    // node-llama-cpp keeps native handles alive; the result is written, so leave now.
    process.exit(0);
  }
  const options = parsePeerBenchmarkArgs(argv);
  if (options.help) {
    console.log(PEER_BENCHMARK_USAGE);
    return 0;
  }
  const log = (line: string) => console.error(line);
  if (options.installOnly) {
    const dir = await installPeer({ ...(options.peerDir ? { dir: options.peerDir } : {}), log });
    console.log(`node-llama-cpp is installed in ${dir}`);
    return 0;
  }
  if (options.render) {
    const reports = await Promise.all(options.render.split(',').map(async (f) => JSON.parse(await readFile(f, 'utf8')) as PeerBenchmarkReport));
    const report = mergeReports(reports);
    const outDir = options.outDir ?? join(findRepoRoot() ?? process.cwd(), 'docs');
    for (const f of await writeReport(report, outDir)) log(`wrote ${f}`);
    return 0;
  }
  const report = await runPeerBenchmark({ ...options, log });
  for (const t of report.targets) console.log(`${t.met ? 'met    ' : 'NOT MET'}  ${t.target} [${t.model}]: ${t.measured}`);
  return 0;
}

const isChild = process.argv.includes('--child');
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    if (e instanceof BenchPeerError) {
      console.error(`kvq-bench-peer: ${e.code}: ${e.message}`);
      process.exitCode = e.code === 'INVALID_ARGUMENT' ? 2 : 1;
    } else {
      console.error(e);
      process.exitCode = 1;
    }
    // A failed child must not linger on native handles (the parent waits for it to exit).
    if (isChild) process.exit(process.exitCode);
  },
);
