import { encodeKvBlock, HostMemoryTier, type KvBlockTier, type KvTierEntry } from '@kvq/cache';
import { modelTinyPath } from '@kvq/model-tiny';
import { describe, expect, it } from 'vitest';
import { loadModel } from '../load/load-model.js';
import { modelFingerprint } from './fingerprint.js';
import { LLM, type LLMOptions } from './llm.js';

/**
 * KV tiers through the LLM on kvq-tiny: a block computed by one engine is loaded by another (a shared tier) or by the
 * same engine after its pool evicted it (the host tier), with outputs identical to computing it, and nothing a tier
 * does wrong reaches a request. The Redis tier is exercised with a real server in apps/server's replica tests.
 */

const model = await loadModel(modelTinyPath);
const GREEDY = { temperature: 0, maxTokens: 8, ignoreEos: true } as const;
const DOC = 'In the beginning God created the heaven and the earth. And the earth was without form, and void; and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters.';

/** A tier that records what it is asked (wrapping a host tier), so the tests can see lookups and writes. */
class Recording implements KvBlockTier {
  readonly name: string;
  gets = 0;
  sets = 0;
  /** Keys written, in order. */
  readonly keys: string[] = [];
  constructor(readonly inner: HostMemoryTier, name = inner.name) {
    this.name = name;
  }
  get(hashes: readonly string[]) {
    this.gets++;
    return this.inner.get(hashes);
  }
  set(entries: readonly KvTierEntry[]) {
    this.sets += entries.length;
    for (const e of entries) this.keys.push(e.hash);
    return this.inner.set(entries);
  }
  close() {
    return Promise.resolve();
  }
}

const create = (tiers: readonly KvBlockTier[] | undefined, extra: Partial<LLMOptions> = {}) =>
  LLM.create({ model, kvCacheDtype: 'fp8', kvCacheMemory: 1 << 20, ...(tiers ? { kvTiers: tiers } : {}), onKvTierLog: () => {}, ...extra });

async function run(llm: LLM, prompt: string) {
  const [out] = await llm.generate(prompt, GREEDY);
  await llm.kvStore?.flush();
  return out!;
}

describe('KV tiers on kvq-tiny', () => {
  it('a prompt computed by replica A is loaded by replica B from the shared tier: same output, fewer tokens computed', async () => {
    const shared = new HostMemoryTier({ capacityBytes: 64 << 20, name: 'shared' });
    const a = await create([shared]);
    const b = await create([shared]);
    const plain = await create(undefined);
    const want = (await run(plain, DOC)).outputs[0]!.tokenIds;
    const outA = await run(a, DOC);
    expect(outA.outputs[0]!.tokenIds).toEqual(want);
    expect(shared.size).toBeGreaterThan(0);
    const free0 = b.engine.manager.metrics().numFreeBlocks;
    const outB = await run(b, DOC);
    expect(outB.outputs[0]!.tokenIds).toEqual(want);
    const promptLen = outB.promptTokenIds.length;
    const fullBlocks = Math.floor((promptLen - 1) / b.blockSize);
    expect(outB.metrics.numCachedTokens).toBe(fullBlocks * b.blockSize);
    expect(b.engine.stats().kvTierLoadedTokens).toBe(fullBlocks * b.blockSize);
    expect(b.engine.stats().promptTokens).toBe(promptLen - fullBlocks * b.blockSize);
    expect(b.kvStore!.tierStats()[0]).toMatchObject({ tier: 'shared', hits: fullBlocks });
    expect(b.engine.manager.metrics().numFreeBlocks).toBe(free0);
    b.engine.manager.checkInvariants();
  });

  it('replicas of another KV format or model never load each other\'s blocks', async () => {
    const shared = new Recording(new HostMemoryTier({ capacityBytes: 64 << 20 }));
    const fp8 = await create([shared]);
    await run(fp8, DOC);
    const bf16 = await create([shared], { kvCacheDtype: 'bf16' });
    const want = (await run(await create(undefined, { kvCacheDtype: 'bf16' }), DOC)).outputs[0]!.tokenIds;
    const out = await run(bf16, DOC);
    expect(out.outputs[0]!.tokenIds).toEqual(want);
    expect(out.metrics.numCachedTokens).toBe(0);
    expect(bf16.kvStore!.tierStats()[0]!.hits).toBe(0);
    expect(shared.gets).toBeGreaterThan(0); // it did look
    expect(shared.sets).toBeGreaterThan(0);
    // Another model (other weights): another fingerprint, so another hash space.
    const other = { ...model, weights: { ...model.weights, finalNorm: { ...model.weights.finalNorm, data: model.weights.finalNorm.data.slice().fill(0) } } };
    expect(modelFingerprint(other)).not.toBe(modelFingerprint(model));
    expect(modelFingerprint(await loadModel(modelTinyPath))).toBe(modelFingerprint(model));
    // The same bytes with W8A8 int8 activations (dynamic, or another static scale) compute other K/V: other fingerprints.
    const withActs = (a: { staticScale?: number }) => ({ ...model, weights: { ...model.weights, layers: model.weights.layers.map((l) => ({ ...l, q: { ...l.q, int8Activations: a } })) } });
    const prints = [modelFingerprint(model), modelFingerprint(withActs({})), modelFingerprint(withActs({ staticScale: 0.5 })), modelFingerprint(withActs({ staticScale: 0.25 }))];
    expect(new Set(prints).size).toBe(4);
  });

  it('corrupt or foreign values under real keys are misses: correct output, counted, no leaked blocks', async () => {
    const inner = new HostMemoryTier({ capacityBytes: 64 << 20 });
    const recorder = new Recording(inner);
    const a = await create([recorder]);
    await run(a, DOC);
    const keys = recorder.keys; // in chain order: the prompt's blocks first
    expect(keys.length).toBeGreaterThan(2);
    // Block 0: garbage; block 1: a well-formed block of another model under this key.
    await inner.set([
      { hash: keys[0]!, value: new TextEncoder().encode('not a block') },
    ]);
    const b = await create([inner]);
    const plain = await create(undefined);
    const want = (await run(plain, DOC)).outputs[0]!.tokenIds;
    const free0 = b.engine.manager.metrics().numFreeBlocks;
    expect((await run(b, DOC)).outputs[0]!.tokenIds).toEqual(want);
    expect(b.kvStore!.tierStats()[0]!.failures.corrupt).toBe(1);
    expect(b.engine.stats().kvTierLoadedTokens).toBe(0);
    // B recomputed block 0 and wrote it back: the tier healed. Now plant a foreign block under block 1's key.
    const foreign = encodeKvBlock(keys[1]!, { dtype: 'bf16', layout: 'x', scaleVersion: 0, scaleFingerprint: 'x', modelFingerprint: 'another-model' }, new Uint8Array(16));
    await inner.set([{ hash: keys[1]!, value: foreign }]);
    const c = await create([inner]);
    const outC = await run(c, DOC);
    expect(outC.outputs[0]!.tokenIds).toEqual(want);
    expect(c.kvStore!.tierStats()[0]!.failures.foreign).toBe(1);
    expect(outC.metrics.numCachedTokens).toBe(c.blockSize); // block 0 loaded, the chain stops at the foreign block
    expect(b.engine.manager.metrics().numFreeBlocks).toBe(free0);
    expect(c.engine.manager.metrics().numFreeBlocks).toBe(c.engine.manager.metrics().numUsableBlocks);
  });

  it('host tier: prefixes that overflow the pool but fit the host tier are loaded from it', async () => {
    // A pool of ~12 blocks (FP8 kvq-tiny: 24 KiB per 16-token block) and 4 documents of ~3-4 blocks each.
    const host = new Recording(new HostMemoryTier({ capacityBytes: 8 << 20 }));
    const docs = ['And God said, Let there be light', 'Blessed are the meek: for they shall inherit', 'The LORD is my shepherd; I shall not want', 'Love your enemies, bless them that curse you'].map(
      (d, i) => `${d}. ${DOC.slice(i * 7)}`,
    );
    const llm = await create([host], { kvCacheMemory: 13 * 24 * 1024, maxModelLen: 160 });
    const plain = await create(undefined, { kvCacheMemory: 13 * 24 * 1024, maxModelLen: 160 });
    expect(llm.numBlocks - 1).toBeLessThan(docs.length * 3);
    const want: number[][] = [];
    for (const d of docs) want.push([...(await run(plain, d)).outputs[0]!.tokenIds]);
    for (const d of docs) await run(llm, d);
    const before = llm.kvStore!.tierStats()[0]!.hits;
    expect(before).toBe(0);
    for (const [i, d] of docs.entries()) expect((await run(llm, d)).outputs[0]!.tokenIds).toEqual(want[i]);
    const st = llm.kvStore!.tierStats()[0]!;
    expect(st.hits).toBeGreaterThan(0);
    expect(llm.engine.stats().kvTierLoadedTokens).toBe(st.hits * llm.blockSize);
    expect(llm.engine.manager.metrics().numFreeBlocks).toBe(llm.engine.manager.metrics().numUsableBlocks);
    llm.engine.manager.checkInvariants();
  });

  it('refuses tiers without prefix caching', async () => {
    await expect(create([new HostMemoryTier({ capacityBytes: 1 << 20 })], { enablePrefixCaching: false })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'kvTiers' });
  });
});
