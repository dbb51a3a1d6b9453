import { afterAll, bench, describe } from 'vitest';
import { createServer } from './server.js';
import { measureThroughput } from './throughput.js';

/**
 * Serving throughput of kvq-tiny on the default backend, through HTTP + SSE on loopback: one stream vs 4 and 16 at
 * once, 64 greedy tokens each (EOS ignored). Aggregate tokens/s of level c = c × 64 × hz; the 1-stream task is the
 * baseline measured in the same run (`kvq bench` prints the ratios directly).
 */
const server = await createServer({ port: 0, kvCacheMemory: 32 << 20, maxNumSeqs: 16 });
const url = await server.listen();
afterAll(() => server.close({ graceMs: 0 }));

describe('aggregate streaming throughput, kvq-tiny, 64 tokens per stream', () => {
  for (const concurrency of [1, 4, 16]) {
    bench(`${concurrency} concurrent stream${concurrency === 1 ? '' : 's'}`, async () => {
      const r = await measureThroughput(url, { concurrency, maxTokens: 64, model: 'kvq-tiny' });
      if (r.generatedTokens !== concurrency * 64) throw new Error(`expected ${concurrency * 64} tokens, got ${r.generatedTokens}`);
    }, { iterations: 3, warmupIterations: 1, time: 0 });
  }
});
