import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { modelTinyPath } from '@kvq/model-tiny';
import { startFakeHub, type FakeHub } from '@kvq/test-utils/fake-hub';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { EngineError } from '../errors.js';
import { loadModel } from '../load/load-model.js';
import { downloadDataset, downloadModel, selectDatasetFiles, selectModelFiles } from './hub.js';
import { hubSettings, isHubId, parseHubId, type HubSettings } from './settings.js';

/**
 * The Hub downloads against a local HTTP server (`@kvq/test-utils/fake-hub`) that serves the kvq-tiny files as the
 * model repo `kvq/tiny` (model.safetensors through LFS: 302 to a CDN path, `X-Linked-Etag` = SHA-256) and a small
 * dataset repo `kvq/texts`, with Range support and fault injection.
 */
const COMMIT = 'a'.repeat(8) + '0123456789abcdef0123456789abcdef';
const DCOMMIT = 'd'.repeat(40);
const modelFiles: Record<string, Buffer> = Object.fromEntries(readdirSync(modelTinyPath).map((f) => [f, readFileSync(join(modelTinyPath, f))]));
modelFiles['README.extra.md'] = Buffer.from('not needed by kvq\n');
const trainJsonl = Buffer.from(Array.from({ length: 1500 }, (_, i) => JSON.stringify({ text: `sample ${i}` })).join('\n'));
const datasetFiles: Record<string, Buffer> = {
  'README.md': Buffer.from('# texts\n'),
  'data/train-00000-of-00001.jsonl': trainJsonl,
  'data/test-00000-of-00001.jsonl': Buffer.from('{"text":"held out"}\n'),
};
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let hub: FakeHub;
let home: string;
const settings = (over: Partial<HubSettings> = {}): HubSettings => ({ endpoint: hub.endpoint, token: undefined, cacheDir: join(home, 'hub'), offline: false, ...over });
const repoDir = () => join(home, 'hub', 'models--kvq--tiny');
const getsOf = (suffix: string) => hub.hits.filter((h) => h.method === 'GET' && h.url.endsWith(suffix));

beforeAll(async () => {
  hub = await startFakeHub([
    { id: 'kvq/tiny', commit: COMMIT, files: modelFiles, lfs: new Set(['model.safetensors']) },
    { type: 'dataset', id: 'kvq/texts', commit: DCOMMIT, files: datasetFiles, lfs: new Set(['data/train-00000-of-00001.jsonl']) },
  ]);
});
afterAll(() => hub.close());
beforeEach(() => {
  home = mkdtempSync(join(tmpdir(), 'kvq-hub-'));
  hub.hits.length = 0;
  Object.assign(hub.faults, { breakFirstCdnGet: false, requireToken: undefined, corrupt: false });
  return () => rmSync(home, { recursive: true, force: true });
});

describe('Hub ids and settings', () => {
  it('parses org/name[@revision] and tells ids from paths', () => {
    expect(parseHubId('meta-llama/Llama-3.2-1B')).toEqual({ repo: 'meta-llama/Llama-3.2-1B', revision: 'main' });
    expect(parseHubId('org/m.v2@refs/pr/3')).toEqual({ repo: 'org/m.v2', revision: 'refs/pr/3' });
    expect(isHubId('org/name')).toBe(true);
    expect(isHubId('./org/name')).toBe(false);
    expect(isHubId('/abs/path')).toBe(false);
    expect(isHubId(modelTinyPath)).toBe(false);
    expect(() => parseHubId('just-a-name')).toThrow(EngineError);
    expect(() => parseHubId('just-a-name')).toThrow(/"just-a-name" is not a Hub id/);
  });
  it('reads HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE and the token file', () => {
    const s = hubSettings({ HF_HOME: '/h', HF_ENDPOINT: 'http://e/', HF_TOKEN: 't', HF_HUB_OFFLINE: '1' });
    expect(s).toEqual({ endpoint: 'http://e', token: 't', cacheDir: '/h/hub', offline: true });
    expect(hubSettings({ HF_HOME: '/h', HF_HUB_CACHE: '/c' }).cacheDir).toBe('/c');
    expect(hubSettings({ XDG_CACHE_HOME: '/x' }).cacheDir).toBe('/x/huggingface/hub');
    expect(hubSettings({}).endpoint).toBe('https://huggingface.co');
    writeFileSync(join(home, 'token'), 'hf_from_file\n');
    expect(hubSettings({ HF_HOME: home }).token).toBe('hf_from_file');
    expect(hubSettings({ HF_HOME: home, HF_TOKEN: '' }).token).toBe('hf_from_file');
    expect(hubSettings({ HF_HOME: join(home, 'none') }).token).toBeUndefined();
    expect(hubSettings({ HF_HOME: home }).offline).toBe(false);
    expect(hubSettings({ HF_HUB_OFFLINE: 'no' }).offline).toBe(false);
  });
  it('selects the files kvq loads from a model repo', () => {
    expect(selectModelFiles(['config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin', 'README.md'], 'r').sort()).toEqual(
      ['config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json'].sort(),
    );
    expect(selectModelFiles(['m.Q8_0.gguf', 'README.md'], 'r')).toEqual(['m.Q8_0.gguf']);
    expect(() => selectModelFiles(['a.gguf', 'b.gguf'], 'r')).toThrow(/2 GGUF files/);
    expect(() => selectModelFiles(['pytorch_model.bin'], 'r')).toThrow(/neither/);
  });
  it('selects the data files of a dataset split like the datasets library', () => {
    const files = ['README.md', 'data/train-00000-of-00002.parquet', 'data/train-00001-of-00002.parquet', 'data/test-00000-of-00001.parquet', '.gitattributes'];
    expect(selectDatasetFiles(files, 'train', 'r')).toEqual(['data/train-00000-of-00002.parquet', 'data/train-00001-of-00002.parquet']);
    expect(selectDatasetFiles(files, 'test', 'r')).toEqual(['data/test-00000-of-00001.parquet']);
    expect(selectDatasetFiles(['default/train/0000.parquet', 'default/validation/0000.parquet'], 'validation', 'r')).toEqual(['default/validation/0000.parquet']);
    expect(selectDatasetFiles(['train.jsonl', 'test.jsonl'], 'train', 'r')).toEqual(['train.jsonl']);
    // No split markers: everything is train.
    expect(selectDatasetFiles(['chats.jsonl', 'more/texts.txt', 'README.md'], 'train', 'r')).toEqual(['chats.jsonl', 'more/texts.txt']);
    // "constraint" contains "train" but is not marked as the train split.
    expect(selectDatasetFiles(['constraints.jsonl'], 'train', 'r')).toEqual(['constraints.jsonl']);
    expect(() => selectDatasetFiles(files, 'validation', 'org/d')).toThrow(/dataset org\/d has no data file for split "validation" \(splits found: train, test\)/);
    expect(() => selectDatasetFiles(['README.md', 'data.csv'], 'train', 'org/d')).toThrow(/has no .*parquet.* data file/);
  });
});

describe('downloadModel (local Hub server)', () => {
  it('downloads into the HF cache layout, resumes a broken transfer with Range, verifies SHA-256, and loads', async () => {
    hub.faults.breakFirstCdnGet = true;
    const notices: string[] = [];
    const progress: number[] = [];
    const dir = await downloadModel('kvq/tiny', { settings: settings(), onNotice: (m) => notices.push(m), onProgress: (p) => p.file === 'model.safetensors' && progress.push(p.bytes) });
    expect(dir).toBe(join(repoDir(), 'snapshots', COMMIT));
    expect(readFileSync(join(repoDir(), 'refs', 'main'), 'utf8')).toBe(COMMIT);
    const weights = modelFiles['model.safetensors']!;
    const blob = join(repoDir(), 'blobs', sha256(weights));
    expect(readFileSync(blob).equals(weights)).toBe(true);
    expect(lstatSync(join(dir, 'model.safetensors')).isSymbolicLink()).toBe(true);
    expect(readlinkSync(join(dir, 'model.safetensors'))).toBe(join('..', '..', 'blobs', sha256(weights)));
    expect(existsSync(join(dir, 'README.extra.md'))).toBe(false);
    const ranged = getsOf('/cdn/model/kvq/tiny/model.safetensors');
    expect(ranged).toHaveLength(2);
    expect(ranged[1]!.range).toMatch(/^bytes=[1-9]\d*-$/);
    expect(notices.some((n) => /resuming model\.safetensors/.test(n))).toBe(true);
    expect(progress.at(-1)).toBe(weights.length);
    const a = await loadModel(dir);
    const b = await loadModel(modelTinyPath);
    expect(a.config).toEqual(b.config);
    expect(a.tokenizer.encode('In the beginning God')).toEqual(b.tokenizer.encode('In the beginning God'));
    // Second call: everything is cached, no file is fetched again.
    hub.hits.length = 0;
    expect(await downloadModel('kvq/tiny', { settings: settings() })).toBe(dir);
    expect(hub.hits.filter((h) => h.method === 'GET' && !h.url.startsWith('/api/models/kvq/tiny/revision/'))).toEqual([]);
  });

  it('configOnly fetches just the config files (for kvq plan)', async () => {
    const dir = await downloadModel('kvq/tiny', { settings: settings(), configOnly: true });
    expect(readdirSync(dir).sort()).toEqual(['config.json', 'generation_config.json']);
    expect(hub.hits.some((h) => h.url.includes('model.safetensors'))).toBe(false);
  });

  it('resumes a partial blob left by an earlier run', async () => {
    const weights = modelFiles['model.safetensors']!;
    const partial = join(repoDir(), 'blobs', `${sha256(weights)}.incomplete`);
    mkdirSync(dirname(partial), { recursive: true });
    writeFileSync(partial, weights.subarray(0, 123_456));
    const dir = await downloadModel('kvq/tiny', { settings: settings() });
    expect(getsOf('/cdn/model/kvq/tiny/model.safetensors')[0]!.range).toBe('bytes=123456-');
    expect(readFileSync(join(dir, 'model.safetensors')).equals(weights)).toBe(true);
    expect(existsSync(partial)).toBe(false);
  });

  it('rejects a corrupted transfer (SHA-256 mismatch) with HUB_DOWNLOAD_FAILED and removes the partial file', async () => {
    hub.faults.corrupt = true;
    const error = await downloadModel('kvq/tiny', { settings: settings() }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(EngineError);
    expect((error as EngineError).code).toBe('HUB_DOWNLOAD_FAILED');
    expect((error as EngineError).message).toMatch(/^kvq\/tiny\/model\.safetensors: SHA-256 mismatch/);
    expect(readdirSync(join(repoDir(), 'blobs')).some((f) => f.endsWith('.incomplete'))).toBe(false);
  });

  it('sends HF_TOKEN as a Bearer token; without it a gated repo is HUB_ACCESS_DENIED saying to set HF_TOKEN', async () => {
    hub.faults.requireToken = 'hf_test_token';
    const denied = await downloadModel('kvq/tiny', { settings: settings() }).catch((e: unknown) => e);
    expect((denied as EngineError).code).toBe('HUB_ACCESS_DENIED');
    expect((denied as EngineError).message).toMatch(/^kvq\/tiny@main: access denied \(HTTP 401\).*set HF_TOKEN/);
    const dir = await downloadModel('kvq/tiny', { settings: settings({ token: 'hf_test_token' }) });
    expect(existsSync(join(dir, 'config.json'))).toBe(true);
    expect(hub.hits.filter((h) => !h.url.startsWith('/cdn/')).every((h) => h.auth === 'Bearer hf_test_token' || h.auth === undefined)).toBe(true);
    expect(hub.hits.filter((h) => h.url.startsWith('/kvq/')).every((h) => h.auth === 'Bearer hf_test_token')).toBe(true);
    await expect(downloadModel('kvq/tiny', { settings: settings({ token: 'not-a-token' }) })).rejects.toThrow(/HF_TOKEN is not a Hugging Face token/);
  });

  it('offline mode uses the cache only; an unreachable Hub falls back to the cache; unknown repos and revisions are HUB_NOT_FOUND', async () => {
    const missing = await downloadModel('kvq/tiny', { settings: settings({ offline: true }) }).catch((e: unknown) => e);
    expect((missing as EngineError).code).toBe('HUB_NOT_CACHED');
    expect((missing as EngineError).message).toMatch(/^kvq\/tiny@main is not in the Hugging Face cache.*HF_HUB_OFFLINE/);
    const dir = await downloadModel('kvq/tiny', { settings: settings() });
    hub.hits.length = 0;
    expect(await downloadModel('kvq/tiny', { settings: settings({ offline: true }) })).toBe(dir);
    expect(await downloadModel(`kvq/tiny@${COMMIT}`, { settings: settings({ offline: true }) })).toBe(dir);
    expect(hub.hits).toEqual([]);
    const notices: string[] = [];
    expect(await downloadModel('kvq/tiny', { settings: settings({ endpoint: 'http://127.0.0.1:9' }), onNotice: (m) => notices.push(m) })).toBe(dir);
    expect(notices[0]).toMatch(/cannot reach.*using the cached snapshot/);
    const unreachable = await downloadModel('kvq/other', { settings: settings({ endpoint: 'http://127.0.0.1:9' }) }).catch((e: unknown) => e);
    expect((unreachable as EngineError).code).toBe('HUB_UNREACHABLE');
    const rev = await downloadModel('kvq/tiny@v9', { settings: settings() }).catch((e: unknown) => e);
    expect((rev as EngineError).code).toBe('HUB_NOT_FOUND');
    expect((rev as EngineError).message).toMatch(/^kvq\/tiny@v9: not found.*404/);
    await expect(downloadModel('kvq/other', { settings: settings() })).rejects.toThrow(/^kvq\/other@main: not found/);
  });
});

describe('downloadDataset (local Hub server)', () => {
  it('fetches one split into datasets--org--name, verifies LFS files, and works offline afterwards', async () => {
    const ds = await downloadDataset('kvq/texts', { settings: settings() });
    const folder = join(home, 'hub', 'datasets--kvq--texts');
    expect(ds).toEqual({ repo: 'kvq/texts', commit: DCOMMIT, split: 'train', files: [join(folder, 'snapshots', DCOMMIT, 'data', 'train-00000-of-00001.jsonl')] });
    expect(readFileSync(ds.files[0]!).equals(trainJsonl)).toBe(true);
    expect(existsSync(join(folder, 'blobs', sha256(trainJsonl)))).toBe(true);
    expect(readFileSync(join(folder, 'refs', 'main'), 'utf8')).toBe(DCOMMIT);
    expect(hub.hits.some((h) => h.url.includes('test-0000'))).toBe(false);
    expect(hub.hits.some((h) => h.url === `/api/datasets/kvq/texts/tree/${DCOMMIT}`)).toBe(true);
    hub.hits.length = 0;
    expect(await downloadDataset('kvq/texts', { settings: settings({ offline: true }) })).toEqual(ds);
    expect(hub.hits).toEqual([]);
    // The test split was never fetched: offline it is not in the cache.
    await expect(downloadDataset('kvq/texts', { split: 'test', settings: settings({ offline: true }) })).rejects.toMatchObject({ code: 'HUB_NOT_CACHED' });
    const test = await downloadDataset(`kvq/texts@${DCOMMIT}`, { split: 'test', settings: settings() });
    expect(readFileSync(test.files[0]!, 'utf8')).toBe('{"text":"held out"}\n');
    await expect(downloadDataset('kvq/texts', { split: 'validation', settings: settings() })).rejects.toThrow(/no data file for split "validation"/);
    await expect(downloadDataset('kvq/none', { settings: settings() })).rejects.toMatchObject({ code: 'HUB_NOT_FOUND', message: expect.stringMatching(/^dataset kvq\/none@main: not found/) });
    // A model id is not a dataset id.
    await expect(downloadDataset('kvq/tiny', { settings: settings() })).rejects.toMatchObject({ code: 'HUB_NOT_FOUND' });
  });
});
