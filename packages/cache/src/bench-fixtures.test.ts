import { dequantizeScaled, PER_TENSOR, quantizeScaled } from '@kvq/fp8';
import { describe, expect, it } from 'vitest';
import { kvWorkload, loadedManager, nodeSha256 } from './bench-fixtures.js';
import { gatherKv, writeKv } from './storage/io.js';

/** The benchmark workloads, at small sizes, give correct results. */
describe('benchmark workloads', () => {
  it('the loaded manager is consistent and its cached prompt hits', () => {
    for (const hashFn of [undefined, nodeSha256]) {
      const { m, cachedPrompt, cachedTokens } = loadedManager(601, { promptTokens: 64, ...(hashFn ? { hashFn } : {}) });
      m.checkInvariants();
      const met = m.metrics();
      expect(met.numCachedBlocks).toBeGreaterThan(100);
      expect(met.usage).toBeGreaterThan(0.25);
      expect(m.findCachedPrefix(cachedPrompt).numCachedTokens).toBe(cachedTokens);
      m.addSequence('x', cachedPrompt);
      expect(m.allocate('x')!.numCachedTokens).toBe(cachedTokens);
      m.free('x');
      m.checkInvariants();
    }
    const off = loadedManager(601, { promptTokens: 64, enablePrefixCaching: false });
    expect(off.m.metrics().numCachedBlocks).toBe(0);
    off.m.checkInvariants();
  });

  it('node:crypto and the pure-TS hash agree (the peer hashes the same bytes)', () => {
    const a = loadedManager(301, { promptTokens: 32 });
    const b = loadedManager(301, { promptTokens: 32, hashFn: nodeSha256 });
    expect(a.m.pool.cachedEntries()).toEqual(b.m.pool.cachedEntries());
  });

  it('the KV workload round-trips like @kvq/fp8', () => {
    const w = kvWorkload('e4m3fn', 12, 40);
    writeKv(w.layer, w.key, w.value, w.slotMapping);
    const g = gatherKv(w.layer, w.blockTable, w.numTokens);
    const q = quantizeScaled(w.key, w.layer.kScale, PER_TENSOR, 'e4m3fn');
    expect(g.key).toEqual(dequantizeScaled(q, w.layer.kScale, PER_TENSOR, 'e4m3fn'));
    const f = kvWorkload('f32', 12, 40);
    writeKv(f.layer, f.key, f.value, f.slotMapping);
    expect(gatherKv(f.layer, f.blockTable, f.numTokens).value).toEqual(f.value);
  });
});
