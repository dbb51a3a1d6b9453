import { cpus } from 'node:os';
import { afterAll, bench, describe } from 'vitest';
import { createServer } from './server.js';
import { quantile, runSoak, type SoakResult } from './soak.js';

/**
 * Latency under load, kvq-tiny through HTTP + SSE on loopback (client-side TTFT and inter-token latency): 64
 * concurrent streaming clients against the baseline of 1 client measured in the same run, each for
 * `KVQ_SOAK_BENCH_SECONDS` (default 20), no disconnects or bad requests. Prints p50/p99 and the ratios to the
 * baseline, with the CPU model and the backend's ISA, and the server-side means from the histograms. NOTE: the
 * clients run in the server's process and event loop, so client-side figures include the clients' own work and the
 * wait for the event loop while an engine step runs; the server-side TTFT starts when the request reaches the engine.
 *
 *   pnpm --filter @kvq/server exec vitest bench --run src/soak.bench.ts
 */
const SECONDS = Number(process.env.KVQ_SOAK_BENCH_SECONDS ?? 20);
const server = await createServer({ port: 0, kvCacheMemory: 32 << 20, maxNumSeqs: 64 });
const url = await server.listen();
afterAll(() => server.close({ graceMs: 0 }));

const results = new Map<number, SoakResult>();
/** The value of a series labelled only with `model_name` in a Prometheus text (0 before any observation). */
const value = (text: string, name: string) => Number(/ (\S+)$/.exec(text.split('\n').find((l) => l.startsWith(`${name}{`)) ?? ' 0')![1]);
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
      const before = await server.metrics.render();
      const r = await runSoak(url, { clients, durationMs: SECONDS * 1000, disconnectRate: 0, badRequestRate: 0, seed: 7 });
      if (r.failures.length > 0) throw new Error(`failures: ${r.failures.slice(0, 3).join('; ')}`);
      const after = await server.metrics.render();
      results.set(clients, r);
      console.log(line(clients, r, clients === 1 ? undefined : results.get(1)));
      // Server side (from the histograms' _sum/_count over this level): where the time to first token goes.
      const mean = (name: string) => (value(after, `${name}_sum`) - value(before, `${name}_sum`)) / (value(after, `${name}_count`) - value(before, `${name}_count`));
      console.log(
        `   server side means: TTFT ${(mean('vllm:time_to_first_token_seconds') * 1000).toFixed(1)} ms, queue ${(mean('vllm:request_queue_time_seconds') * 1000).toFixed(1)} ms, ` +
          `ITL ${(mean('vllm:inter_token_latency_seconds') * 1000).toFixed(1)} ms, e2e ${(mean('vllm:e2e_request_latency_seconds') * 1000).toFixed(1)} ms`,
      );
    }, { iterations: 1, warmupIterations: 0, warmupTime: 0, time: 0 });
  }
});
