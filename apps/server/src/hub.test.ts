import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { modelTinyPath } from '@kvq/model-tiny';
import { startFakeHub, type FakeHub } from '@kvq/test-utils/fake-hub';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer } from './server.js';

/** `createServer({ model: 'org/name@rev' })` against a local Hub server serving kvq-tiny as `kvq/tiny`. */
const COMMIT = '1'.repeat(40);
let hub: FakeHub;
let home: string;
beforeAll(async () => {
  const files = Object.fromEntries(readdirSync(modelTinyPath).map((f) => [f, readFileSync(join(modelTinyPath, f))]));
  hub = await startFakeHub([{ id: 'kvq/tiny', commit: COMMIT, revisions: ['main', 'v1'], files, lfs: new Set(['model.safetensors']) }]);
  home = mkdtempSync(join(tmpdir(), 'kvq-server-hub-'));
});
afterAll(async () => {
  await hub.close();
  rmSync(home, { recursive: true, force: true });
});

describe('createServer with a Hub id', { timeout: 60_000 }, () => {
  it('downloads org/name@rev into the Hub cache, serves it as org/name, and fails clearly for a missing repo', async () => {
    const settings = { endpoint: hub.endpoint, token: undefined, cacheDir: join(home, 'hub'), offline: false };
    const server = await createServer({ model: 'kvq/tiny@v1', hub: settings, port: 0, kvCacheMemory: 4 << 20 });
    try {
      const url = await server.listen();
      const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string; root: string }[] };
      expect(models.data.map((m) => m.id)).toEqual(['kvq/tiny']);
      expect(models.data[0]!.root).toBe(join(home, 'hub', 'models--kvq--tiny', 'snapshots', COMMIT));
      const r = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'kvq/tiny', prompt: 'In the beginning God', max_tokens: 3, temperature: 0 }) });
      expect(r.status).toBe(200);
      expect(((await r.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBe(3);
    } finally {
      await server.close({ graceMs: 0 });
    }
    await expect(createServer({ model: 'kvq/absent', hub: settings, port: 0 })).rejects.toMatchObject({ code: 'HUB_NOT_FOUND', message: expect.stringMatching(/^kvq\/absent@main: not found/) });
  });
});
