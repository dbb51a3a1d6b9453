import { redisTestsEnabled, startRedisServer } from '@kvq/cache-redis/testing';
import { afterAll, bench, describe } from 'vitest';
import { createServer } from './server.js';

/**
 * Replica B's time to first token on a long prompt (kvq-tiny, FP8 KV cache, ~450 tokens, `max_tokens: 1`, so the
 * request latency is the TTFT), through HTTP on loopback, with one local `redis-server` shared by replicas A and B:
 * - cold miss: a prompt nobody has seen (every block computed);
 * - hit from Redis: a prompt replica A computed just before (its blocks written to Redis), never seen by B, so B loads
 *   every full block but the last from Redis and computes only the tail.
 * Each iteration uses a new prompt (a distinct first word changes the whole hash chain). The e2e test
 * `replicas.e2e.test.ts` proves the hit gives the same output as computing.
 */
const enabled = redisTestsEnabled();
const redis = enabled ? await startRedisServer() : undefined;
const options = { port: 0, kvCacheDtype: 'fp8' as const, kvCacheMemory: 16 << 20, kvStore: redis?.url ?? 'redis://127.0.0.1:1/0', onKvTierLog: () => {} };
const a = enabled ? await createServer(options) : undefined;
const b = enabled ? await createServer(options) : undefined;
const urlA = a ? await a.listen() : '';
const urlB = b ? await b.listen() : '';
afterAll(async () => {
  await a?.close({ graceMs: 0 });
  await b?.close({ graceMs: 0 });
  await redis?.stop();
});

const DOC =
  'In the beginning God created the heaven and the earth. And the earth was without form, and void; and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters. And God said, Let there be light: and there was light. And God saw the light, that it was good: and God divided the light from the darkness. ';
const BODY = DOC.repeat(5);
let n = 0;
const fresh = () => `Verse ${n++} ${Math.random().toString(36).slice(2, 8)}. ${BODY}`;

async function firstToken(url: string, prompt: string): Promise<void> {
  const r = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'kvq-tiny', prompt, max_tokens: 1, temperature: 0 }),
  });
  const body = (await r.json()) as { usage?: { prompt_tokens: number } };
  if (r.status !== 200 || !body.usage || body.usage.prompt_tokens < 400) throw new Error(`unexpected answer ${r.status}: ${JSON.stringify(body)}`);
}

// Prompts replica A computed (and wrote to Redis) before the runs: one per timed or warm-up iteration of the hit task.
const hitPrompts: string[] = [];
if (enabled) {
  for (let i = 0; i < 30; i++) {
    const p = fresh();
    await firstToken(urlA, p);
    hitPrompts.push(p);
  }
  await a!.llm.kvStore!.flush();
}

describe.skipIf(!enabled)('replica B time to first token, kvq-tiny FP8, ~450-token prompt', () => {
  bench('cold miss (computed)', async () => {
    await firstToken(urlB, fresh());
  }, { iterations: 20, warmupIterations: 2, time: 0 });

  bench('prefix hit from Redis (computed by replica A)', async () => {
    const p = hitPrompts.shift();
    if (p === undefined) throw new Error('more iterations than prompts prepared by replica A');
    await firstToken(urlB, p);
  }, { iterations: 20, warmupIterations: 2, time: 0 });
});

afterAll(() => {
  if (!b) return;
  const s = b.llm.kvStore!.tierStats()[0]!;
  // The hit task must really have hit: 22 prompts x (full blocks but the last) loaded from Redis.
  if (s.hits < 22 * 25) throw new Error(`replica B loaded only ${s.hits} blocks from Redis`);
  const used = 30 - hitPrompts.length;
  const tokens = b.llm.encode(fresh()).length;
  console.log(
    `replica B: ${used} hit requests, ${s.hits} blocks loaded from Redis (${(s.hits / used).toFixed(1)} per prompt of ~${tokens} tokens), ` +
      `${s.misses} misses, ${s.loads.count} lookups, mean lookup ${((s.loads.seconds / s.loads.count) * 1000).toFixed(2)} ms`,
  );
});
