import { redisServerBinary, redisTestsEnabled, startRedisServer, type TestRedisServer } from '@kvq/cache-redis/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildKvTiers } from './kv-tiers.js';
import { ServerError } from './errors.js';
import { createServer, type KvqServer, type ServerOptions } from './server.js';

/**
 * Scale-out end to end: kvq servers (kvq-tiny, FP8 KV cache) on loopback ports sharing one real `redis-server`
 * (`--kv-store`), plus the faults a shared store has in production: killed, paused (slow), full, and lying (a corrupt
 * value and a value of another dtype under a real key). Every request must succeed with the output a server
 * without any tier gives, and every server's block pool must be whole again when idle.
 */

const DOC = [
  'In the beginning God created the heaven and the earth. And the earth was without form, and void; and darkness was',
  'upon the face of the deep. And the Spirit of God moved upon the face of the waters. And God said, Let there be light:',
  'and there was light. And God saw the light, that it was good: and God divided the light from the darkness.',
].join(' ');
const prompt = (tag: string) => `${tag}. ${DOC}`;

async function completion(url: string, text: string, maxTokens = 12): Promise<{ text: string; promptTokens: number }> {
  const r = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'kvq-tiny', prompt: text, max_tokens: maxTokens, temperature: 0, ignore_eos: true }),
  });
  const body = (await r.json()) as { choices?: { text: string }[]; usage?: { prompt_tokens: number }; error?: unknown };
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${JSON.stringify(body)}`);
  return { text: body.choices![0]!.text, promptTokens: body.usage!.prompt_tokens };
}

const complete = async (url: string, text: string, maxTokens = 12) => (await completion(url, text, maxTokens)).text;

function metric(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(name) && (l[name.length] === '{' || l[name.length] === ' ') && l.includes(labels));
  if (!line) throw new Error(`metric ${name}${labels} not found`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

const metrics = async (url: string) => (await fetch(`${url}/metrics`)).text();

/** The block pool is whole again (nothing leaked) once the server is idle. */
async function expectNoLeak(server: KvqServer): Promise<void> {
  await server.loop.idle();
  await server.llm.kvStore?.flush();
  const m = server.llm.engine.manager.metrics();
  expect(m.numFreeBlocks).toBe(m.numUsableBlocks);
  server.llm.engine.manager.checkInvariants();
}

describe.skipIf(!redisTestsEnabled())(`replicas sharing one ${redisServerBinary() ?? 'redis-server'}`, () => {
  let redis: TestRedisServer;
  let plain: KvqServer;
  let plainUrl: string;
  const servers: KvqServer[] = [];
  const expected = new Map<string, string>();

  async function replica(extra: Partial<ServerOptions> = {}): Promise<{ server: KvqServer; url: string }> {
    const server = await createServer({ port: 0, kvCacheDtype: 'fp8', kvCacheMemory: 4 << 20, kvStore: redis.url, onKvTierLog: () => {}, ...extra });
    servers.push(server);
    return { server, url: await server.listen() };
  }

  /** What a server without tiers answers (computed once per prompt). */
  async function want(text: string, maxTokens = 12): Promise<string> {
    const key = `${maxTokens}\u0000${text}`;
    if (!expected.has(key)) expected.set(key, await complete(plainUrl, text, maxTokens));
    return expected.get(key)!;
  }

  beforeAll(async () => {
    redis = await startRedisServer();
    plain = await createServer({ port: 0, kvCacheDtype: 'fp8', kvCacheMemory: 4 << 20 });
    plainUrl = await plain.listen();
  });
  afterAll(async () => {
    for (const s of [...servers, plain]) await s?.close({ graceMs: 0 });
    await redis?.stop();
  });

  it('a long prompt sent to replica A, then to replica B, is a prefix hit on B with identical greedy output', async () => {
    const a = await replica();
    const b = await replica();
    const text = prompt('Genesis');
    const { text: outA, promptTokens } = await completion(a.url, text);
    expect(outA).toBe(await want(text));
    await a.server.llm.kvStore!.flush();
    const stored = metric(await metrics(a.url), 'kvq:kv_tier_stored_blocks_total', 'tier="redis"');
    expect(stored).toBeGreaterThan(2);
    expect((await redis.admin.keys('kvq:kv:*')).length).toBe(stored);

    const outB = await complete(b.url, text);
    expect(outB).toBe(outA);
    const mb = await metrics(b.url);
    const hits = metric(mb, 'kvq:kv_tier_hits_total', 'tier="redis"');
    // Every full block of the prompt but the one holding its last token (which must be computed for the logits).
    expect(hits).toBe(Math.floor((promptTokens - 1) / b.server.llm.blockSize));
    expect(hits).toBeGreaterThan(2);
    expect(metric(mb, 'vllm:prefix_cache_hits_total')).toBe(hits * b.server.llm.blockSize);
    expect(metric(mb, 'kvq:kv_tier_loaded_tokens_total')).toBe(hits * b.server.llm.blockSize);
    expect(metric(mb, 'kvq:kv_tier_load_seconds_count', 'tier="redis"')).toBeGreaterThanOrEqual(1);
    expect(metric(mb, 'kvq:kv_tier_loaded_bytes_total', 'tier="redis"')).toBeGreaterThan(hits * 16 * 1536);
    await expectNoLeak(a.server);
    await expectNoLeak(b.server);
  });

  it('Redis killed mid-run: in-flight and later requests succeed with correct output; the tier recovers when Redis is back', async () => {
    const a = await replica();
    const texts = ['Exodus', 'Leviticus', 'Numbers', 'Deuteronomy', 'Joshua', 'Judges'].map(prompt);
    for (const t of texts) await want(t, 24);
    const inflight = texts.map((t) => complete(a.url, t, 24));
    await new Promise((r) => setTimeout(r, 20));
    await redis.kill();
    try {
      const outs = await Promise.all(inflight);
      for (const [i, t] of texts.entries()) expect(outs[i]).toBe(await want(t, 24));
      expect(await complete(a.url, prompt('Ruth'))).toBe(await want(prompt('Ruth')));
      await a.server.llm.kvStore!.flush();
      expect(metric(await metrics(a.url), 'kvq:kv_tier_failures_total', 'reason="unavailable"')).toBeGreaterThan(0);
      await expectNoLeak(a.server);
    } finally {
      await redis.restart();
    }
    // ioredis reconnects in the background; new blocks reach the restarted server.
    const deadline = Date.now() + 10_000;
    while ((await redis.admin.dbsize()) === 0 && Date.now() < deadline) {
      expect(await complete(a.url, prompt(`Samuel ${Date.now()}`), 2)).toBeTypeOf('string');
    }
    expect(await redis.admin.dbsize()).toBeGreaterThan(0);
  });

  it('a slow Redis (paused clients) times out: requests succeed with correct output, counted as timeouts', async () => {
    const a = await replica({ kvStoreTimeoutMs: 100 });
    const text = prompt('Kings');
    const wantText = await want(text);
    await redis.admin.call('CLIENT', 'PAUSE', '1500', 'ALL');
    const t0 = performance.now();
    expect(await complete(a.url, text)).toBe(wantText);
    expect(performance.now() - t0).toBeLessThan(1400);
    await a.server.llm.kvStore!.flush();
    expect(metric(await metrics(a.url), 'kvq:kv_tier_failures_total', 'reason="timeout"')).toBeGreaterThan(0);
    await expectNoLeak(a.server);
    await new Promise((r) => setTimeout(r, 1600 - (performance.now() - t0)));
  });

  it('a full Redis (maxmemory, noeviction) refuses writes: requests succeed, counted as full', async () => {
    const a = await replica();
    const used = Number(/used_memory:(\d+)/.exec(await redis.admin.info('memory'))![1]);
    await redis.admin.config('SET', 'maxmemory-policy', 'noeviction');
    await redis.admin.config('SET', 'maxmemory', String(used + 4096));
    try {
      const text = prompt('Chronicles');
      expect(await complete(a.url, text)).toBe(await want(text));
      await a.server.llm.kvStore!.flush();
      expect(metric(await metrics(a.url), 'kvq:kv_tier_failures_total', 'reason="full"')).toBeGreaterThan(0);
      await expectNoLeak(a.server);
    } finally {
      await redis.admin.config('SET', 'maxmemory', '0');
    }
  });

  it('a corrupt value and a value of another dtype planted under real keys are misses: correct output, counted, rewritten', async () => {
    await redis.admin.flushall();
    const a = await replica();
    const text = prompt('Psalms');
    await complete(a.url, text);
    await a.server.llm.kvStore!.flush();
    const keys = (await redis.admin.keys('kvq:kv:*')).sort();
    expect(keys.length).toBeGreaterThan(2);
    // A bf16 replica's blocks of the same text live under other keys (the dtype is in the hash): take one as the foreign value.
    const bf16 = await replica({ kvCacheDtype: 'bf16' });
    await complete(bf16.url, text);
    await bf16.server.llm.kvStore!.flush();
    const bf16Keys = (await redis.admin.keys('kvq:kv:*')).filter((k) => !keys.includes(k));
    expect(bf16Keys.length).toBeGreaterThan(0);
    const foreignValue = await redis.admin.getBuffer(bf16Keys[0]!);
    for (const k of keys) await redis.admin.set(k, Buffer.from('definitely not a KV block'));
    const b = await replica();
    expect(await complete(b.url, text)).toBe(await want(text));
    const mb = await metrics(b.url);
    expect(metric(mb, 'kvq:kv_tier_failures_total', 'reason="corrupt"')).toBe(1);
    expect(metric(mb, 'kvq:kv_tier_hits_total', 'tier="redis"')).toBe(0);
    await expectNoLeak(b.server);
    // B computed the blocks and wrote them back: the store healed. Now a foreign block under every key.
    for (const k of keys) expect((await redis.admin.getBuffer(k))!.subarray(0, 4).toString()).toBe('KVQB');
    for (const k of keys) await redis.admin.set(k, foreignValue!);
    const c = await replica();
    expect(await complete(c.url, text)).toBe(await want(text));
    const mc = await metrics(c.url);
    expect(metric(mc, 'kvq:kv_tier_failures_total', 'reason="foreign"')).toBe(1);
    expect(metric(mc, 'kvq:kv_tier_hits_total', 'tier="redis"')).toBe(0);
    await expectNoLeak(c.server);
  });

  it('bad flag values are typed errors naming the flag and the value', () => {
    expect(() => buildKvTiers({ kvStore: 'http://x:1/0' }, { kvOffloadMemory: '--kv-offload-memory', kvStore: '--kv-store' })).toThrow(/--kv-store "http:\/\/x:1\/0"/);
    expect(() => buildKvTiers({ kvOffloadMemory: 0 })).toThrow(ServerError);
    expect(() => buildKvTiers({ kvOffloadMemory: 1.5 })).toThrow(/kvOffloadMemory/);
  });
});

describe('host-memory tier (--kv-offload-memory) through the server', () => {
  it('prefixes that overflow the pool but fit the host tier are loaded from it: same output, hits in /metrics', async () => {
    // FP8 kvq-tiny: 24 KiB per 16-token block; a pool of 15 blocks against 4 prompts of ~3-4 blocks each, twice.
    const small = { port: 0, kvCacheDtype: 'fp8' as const, kvCacheMemory: 16 * 24 * 1024, maxModelLen: 128 };
    const plainServer = await createServer(small);
    const tiered = await createServer({ ...small, kvOffloadMemory: 8 << 20, onKvTierLog: () => {} });
    try {
      const [plainUrl, url] = [await plainServer.listen(), await tiered.listen()];
      const texts = ['Matthew', 'Mark', 'Luke', 'John'].map((t) => `${t} wrote: ${DOC.slice(0, 300)}`);
      const want = [];
      let fullBlocks = 0;
      for (const t of texts) {
        const r = await completion(plainUrl, t, 4);
        want.push(r.text);
        fullBlocks += Math.floor(r.promptTokens / tiered.llm.blockSize);
      }
      expect(fullBlocks).toBeGreaterThan(tiered.llm.numBlocks - 1); // the prefixes do not fit the pool
      for (const t of texts) await complete(url, t, 4);
      expect(metric(await metrics(url), 'kvq:kv_tier_hits_total', 'tier="host"')).toBe(0);
      for (const [i, t] of texts.entries()) expect(await complete(url, t, 4)).toBe(want[i]);
      const m = await metrics(url);
      const hits = metric(m, 'kvq:kv_tier_hits_total', 'tier="host"');
      expect(hits).toBeGreaterThan(0);
      expect(metric(m, 'kvq:kv_tier_loaded_tokens_total')).toBe(hits * tiered.llm.blockSize);
      expect(metric(m, 'kvq:kv_tier_stored_blocks_total', 'tier="host"')).toBeGreaterThanOrEqual(fullBlocks);
      await expectNoLeak(tiered);
    } finally {
      await plainServer.close({ graceMs: 0 });
      await tiered.close({ graceMs: 0 });
    }
  });
});
