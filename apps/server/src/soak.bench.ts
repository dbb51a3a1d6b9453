import { cpus } from 'node:os';
import { afterAll, bench, describe } from 'vitest';
import { createServer } from './server.js';
import { quantile, runSoak, type SoakResult } from './soak.js';

/**
 * Latency under load, kvq-tiny through HTTP + SSE on loopback (client-side TTFT and inter-token latency): 64
 * concurrent streaming clients against the baseline of 1 client measured in the same run, each for
 * `KVQ_SOAK_BENCH_SECONDS` (default 20), no disconnects or bad requests. Prints p50/p99 and the ratios to the
 * baseline, with the CPU model and the backend's ISA.
 *
 *   pnpm --filter @kvq/server exec vitest bench --run src/soak.bench.ts
 */
const SECONDS = Number(process.env.KVQ_SOAK_BENCH_SECONDS ?? 20);
const server = await createServer({ port: 0, kvCacheMemory: 32 << 20, maxNumSeqs: 64 });
const url = await server.listen();
afterAll(() => server.close({ graceMs: 0 }));

const results = new Map<number, SoakResult>();
const line = (clients: number, r: SoakResult, base: SoakResult | undefined) => {
  const q = (xs: readonly number[], p: number) => quantile(xs, p);
  const ratio = (xs: readonly number[], bs: readonly number[] | undefined, p: number) => (bs ? ` (${(q(xs, p) / q(bs, p)).toFixed(2)}x)` : '');
  return (
    `${String(clients).padStart(2)} clients: TTFT p50 ${q(r.ttftMs, 0.5).toFixed(1)} ms${ratio(r.ttftMs, base?.ttftMs, 0.5)} p99 ${q(r.ttftMs, 0.99).toFixed(1)} ms${ratio(r.ttftMs, base?.ttftMs, 0.99)}; ` +
    `ITL p50 ${q(r.itlMs, 0.5).toFixed(1)} ms${ratio(r.itlMs, base?.itlMs, 0.5)} p99 ${q(r.itlMs, 0.99).toFixed(1)} ms${ratio(r.itlMs, base?.itlMs, 0.99)}; ` +
    `${r.completed} streams, ${(r.chunks / (r.elapsedMs / 1000)).toFixed(0)} chunks/s`
  );
};

describe(`latency under load, kvq-tiny, ${SECONDS} s per level (${cpus()[0]?.model ?? 'unknown CPU'}, ${server.llm.backend.info.description})`, () => {
  for (const clients of [1, 64]) {
    bench(`${clients} streaming client${clients === 1 ? '' : 's'}`, async () => {
      const r = await runSoak(url, { clients, durationMs: SECONDS * 1000, disconnectRate: 0, badRequestRate: 0, seed: 7 });
      if (r.failures.length > 0) throw new Error(`failures: ${r.failures.slice(0, 3).join('; ')}`);
      results.set(clients, r);
      console.log(line(clients, r, clients === 1 ? undefined : results.get(1)));
    }, { iterations: 1, warmupIterations: 0, warmupTime: 0, time: 0 });
  }
});
