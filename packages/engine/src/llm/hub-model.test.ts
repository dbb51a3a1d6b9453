import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { modelTinyPath } from '@kvq/model-tiny';
import { startFakeHub, type FakeHub } from '@kvq/test-utils/fake-hub';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EngineError } from '../errors.js';
import { isHubId } from '../hub/settings.js';
import type { LoadProgress } from '../load/types.js';
import { LLM } from './llm.js';

/** `LLM.create({ model: 'org/name@rev' })` against a local Hub server serving kvq-tiny as `kvq/tiny`. */
const COMMIT = 'c'.repeat(40);
let hub: FakeHub;
let home: string;
beforeAll(async () => {
  const files = Object.fromEntries(readdirSync(modelTinyPath).map((f) => [f, readFileSync(join(modelTinyPath, f))]));
  hub = await startFakeHub([{ id: 'kvq/tiny', commit: COMMIT, revisions: ['main', 'v1'], files, lfs: new Set(['model.safetensors']) }]);
  home = mkdtempSync(join(tmpdir(), 'kvq-llm-hub-'));
});
afterAll(async () => {
  await hub.close();
  rmSync(home, { recursive: true, force: true });
});

describe('LLM.create with a Hub id', { timeout: 60_000 }, () => {
  it('downloads org/name@rev (progress phase "download" first), then generates like the local model', async () => {
    const settings = { endpoint: hub.endpoint, token: undefined, cacheDir: join(home, 'hub'), offline: false };
    const events: LoadProgress[] = [];
    const fromHub = await LLM.create({ model: 'kvq/tiny@v1', hub: settings, backend: 'reference', kvCacheMemory: 4 << 20, onProgress: (p) => events.push(p) });
    expect(fromHub.model.path).toBe(join(home, 'hub', 'models--kvq--tiny', 'snapshots', COMMIT));
    const downloads = events.filter((e) => e.phase === 'download');
    expect(downloads.length).toBeGreaterThan(0);
    expect(downloads.at(-1)).toMatchObject({ file: 'model.safetensors', tensor: '' });
    expect(downloads.at(-1)!.loadedBytes).toBe(downloads.at(-1)!.totalBytes);
    const firstLoad = events.findIndex((e) => e.phase === undefined);
    expect(firstLoad).toBeGreaterThan(events.lastIndexOf(downloads.at(-1)!));
    const local = await LLM.create({ model: modelTinyPath, backend: 'reference', kvCacheMemory: 4 << 20 });
    const [a] = await fromHub.generate('In the beginning God', { temperature: 0, maxTokens: 8 });
    const [b] = await local.generate('In the beginning God', { temperature: 0, maxTokens: 8 });
    expect(a!.outputs[0]!.tokenIds).toEqual(b!.outputs[0]!.tokenIds);
    // Offline, from the cache alone.
    hub.hits.length = 0;
    await LLM.create({ model: 'kvq/tiny@v1', hub: { ...settings, offline: true }, backend: 'reference', kvCacheMemory: 4 << 20 });
    expect(hub.hits).toEqual([]);
    await expect(LLM.create({ model: 'kvq/nope', hub: settings, backend: 'reference' })).rejects.toMatchObject({ code: 'HUB_NOT_FOUND' });
    await expect(LLM.create({ model: 'kvq/nope', hub: { ...settings, offline: true }, backend: 'reference' })).rejects.toBeInstanceOf(EngineError);
  });

  it('an existing local path of the same shape as an id wins', () => {
    const dir = mkdtempSync(join(process.cwd(), 'kvq-local-'));
    try {
      mkdirSync(join(dir, 'tiny'));
      const spec = relative(process.cwd(), join(dir, 'tiny'));
      expect(spec).toMatch(/^kvq-local-\w+\/tiny$/);
      expect(isHubId(spec)).toBe(false);
      expect(isHubId(`${spec}x`)).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
