import { CacheError, encodeKvBlock, TieredKvStore, type KvBlockFormat } from '@kvq/cache';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CacheRedisError } from './errors.js';
import { parseRedisUrl, RedisKvTier } from './redis-tier.js';
import { redisServerBinary, redisTestsEnabled, startRedisServer, type TestRedisServer } from './testing.js';

const FORMAT: KvBlockFormat = { dtype: 'e4m3fn', layout: 'L', scaleVersion: 0, scaleFingerprint: 's', modelFingerprint: 'm' };
const block = (h: string, bytes = 64) => ({ hash: h, value: encodeKvBlock(h, FORMAT, new Uint8Array(bytes).fill(h.charCodeAt(h.length - 1))) });

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

describe('parseRedisUrl', () => {
  it('reads host, port, database, credentials and TLS', () => {
    expect(parseRedisUrl('redis://127.0.0.1:6380/3')).toEqual({ host: '127.0.0.1', port: 6380, db: 3, username: undefined, password: undefined, tls: false });
    expect(parseRedisUrl('rediss://u:p%40ss@cache.internal')).toMatchObject({ host: 'cache.internal', port: 6379, db: 0, username: 'u', password: 'p@ss', tls: true });
    expect(parseRedisUrl('valkey://[::1]:7000/')).toMatchObject({ host: '::1', port: 7000, db: 0 });
  });

  it('rejects bad URLs with INVALID_URL naming the flag and the value', () => {
    for (const bad of ['', 'localhost:6379', 'http://h:1/0', 'redis://h:0/0', 'redis://h:70000/0', 'redis://h:1/x', 'redis://h:1/0?x=1', 'redis://:6379/0']) {
      let e: unknown;
      try {
        parseRedisUrl(bad, '--kv-store');
      } catch (err) {
        e = err;
      }
      expect(e, bad).toBeInstanceOf(CacheRedisError);
      expect((e as CacheRedisError).code).toBe('INVALID_URL');
      expect((e as CacheRedisError).field).toBe('--kv-store');
      expect((e as Error).message).toContain('--kv-store');
      expect((e as Error).message).toContain(JSON.stringify(bad));
    }
    expect(() => new RedisKvTier({ url: 'redis://127.0.0.1:1/0', commandTimeoutMs: 0 })).toThrow(/commandTimeoutMs/);
  });
});

describe.skipIf(!redisTestsEnabled())(`RedisKvTier on a real ${redisServerBinary() ?? 'redis-server'}`, () => {
  let server: TestRedisServer;
  beforeAll(async () => {
    server = await startRedisServer();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('stores and loads serialized blocks through one MGET; absent keys are misses', async () => {
    const tier = new RedisKvTier({ url: server.url, keyPrefix: 'rt1:' });
    await tier.ready();
    await tier.set([block('a1'), block('a2')]);
    const got = await tier.get(['a1', 'zz', 'a2']);
    expect(got[1]).toBeUndefined();
    expect(Array.from(got[0]!)).toEqual(Array.from(block('a1').value));
    expect(Array.from(got[2]!)).toEqual(Array.from(block('a2').value));
    expect(await server.admin.exists('rt1:a1')).toBe(1);
    const ttl = new RedisKvTier({ url: server.url, keyPrefix: 'rt1t:', ttlSeconds: 100 });
    await ttl.ready();
    await ttl.set([block('t')]);
    const left = await server.admin.ttl('rt1t:t');
    expect(left).toBeGreaterThan(90);
    await Promise.all([tier.close(), ttl.close()]);
  });

  it('a full server (maxmemory, noeviction) fails writes as TIER_FULL; reads still work', async () => {
    const tier = new RedisKvTier({ url: server.url, keyPrefix: 'rt2:' });
    await tier.ready();
    await tier.set([block('f0')]);
    const used = Number(/used_memory:(\d+)/.exec(await server.admin.info('memory'))![1]);
    await server.admin.config('SET', 'maxmemory-policy', 'noeviction');
    await server.admin.config('SET', 'maxmemory', String(used + 1000));
    try {
      const e = await rejection(tier.set(Array.from({ length: 50 }, (_, i) => block(`f${i + 1}`, 4096))));
      expect(e).toBeInstanceOf(CacheError);
      expect((e as CacheError).code).toBe('TIER_FULL');
      expect((await tier.get(['f0']))[0]).toBeDefined();
    } finally {
      await server.admin.config('SET', 'maxmemory', '0');
    }
    await tier.close();
  });

  it('a paused server times out (TIER_TIMEOUT); the store treats it as a miss within its limit', async () => {
    const tier = new RedisKvTier({ url: server.url, keyPrefix: 'rt3:', commandTimeoutMs: 100 });
    await tier.ready();
    await tier.set([block('p0')]);
    await server.admin.call('CLIENT', 'PAUSE', '600', 'ALL');
    const t0 = performance.now();
    const e = await rejection(tier.get(['p0']));
    expect((e as CacheError).code).toBe('TIER_TIMEOUT');
    expect(performance.now() - t0).toBeLessThan(500);
    const store = new TieredKvStore({ tiers: [tier], log: () => {} });
    expect(await store.load(['p0'], FORMAT)).toEqual([]);
    expect(store.tierStats()[0]!.failures.timeout).toBe(1);
    await new Promise((r) => setTimeout(r, 700));
    expect((await store.load(['p0'], FORMAT)).length).toBe(1);
    await tier.close();
  });

  it('a killed server fails fast (TIER_UNAVAILABLE), and the tier reconnects when it is back', async () => {
    const tier = new RedisKvTier({ url: server.url, keyPrefix: 'rt4:' });
    await tier.ready();
    await server.kill();
    await new Promise((r) => setTimeout(r, 50));
    const t0 = performance.now();
    const e = await rejection(tier.get(['k0']));
    expect((e as CacheError).code).toBe('TIER_UNAVAILABLE');
    expect(performance.now() - t0).toBeLessThan(200);
    expect((await rejection(tier.set([block('k0')])) as CacheError).code).toBe('TIER_UNAVAILABLE');
    await server.restart();
    await tier.ready(5000);
    await tier.set([block('k0')]);
    expect((await tier.get(['k0']))[0]).toBeDefined();
    await tier.close();
  });

  it('an unreachable URL never throws at construction; calls fail as TIER_UNAVAILABLE', async () => {
    const tier = new RedisKvTier({ url: 'redis://127.0.0.1:1/0', connectTimeoutMs: 200 });
    const e = await rejection(tier.get(['x']));
    expect((e as CacheError).code).toBe('TIER_UNAVAILABLE');
    await tier.close();
  });
});
