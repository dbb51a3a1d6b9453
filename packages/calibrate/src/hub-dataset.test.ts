import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel, type LoadedModel } from '@kvq/engine';
import { modelTinyPath } from '@kvq/model-tiny';
import { startFakeHub, type FakeHub } from '@kvq/test-utils/fake-hub';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { calibrate } from './calibrate.js';
import { readDataset } from './dataset.js';
import { CalibrateError } from './errors.js';

/**
 * Parquet and Hub datasets. The Parquet files are written in the test with `hyparquet-writer` (snappy, the
 * pyarrow default) and served by a local Hub server (`@kvq/test-utils/fake-hub`) as the dataset repo `kvq/calib`:
 * `data/train-0000{0,1}-of-00002.parquet` (LFS, SHA-256 checked) and `data/test-00000-of-00001.jsonl`.
 */
const TEXTS = Array.from({ length: 40 }, (_, i) => `In the beginning ${i} God created the heaven and the earth, number ${i * 7}.`);
const parquet = (texts: readonly string[], extra = false) =>
  Buffer.from(
    parquetWriteBuffer({
      columnData: [
        { name: 'id', data: texts.map((_, i) => i), type: 'INT32' },
        { name: 'text', data: [...texts], type: 'STRING' },
        ...(extra ? [{ name: 'prompt', data: texts.map((t) => t.toUpperCase()), type: 'STRING' as const }] : []),
      ],
    }),
  );
const COMMIT = 'e'.repeat(40);
let hub: FakeHub;
let home: string;
let model: LoadedModel;
const settings = (over = {}) => ({ endpoint: hub.endpoint, token: undefined, cacheDir: join(home, 'hub'), offline: false, ...over });

beforeAll(async () => {
  home = mkdtempSync(join(tmpdir(), 'kvq-calib-hub-'));
  hub = await startFakeHub([
    {
      type: 'dataset',
      id: 'kvq/calib',
      commit: COMMIT,
      files: {
        'README.md': Buffer.from('# calib\n'),
        'data/train-00000-of-00002.parquet': parquet(TEXTS.slice(0, 25)),
        'data/train-00001-of-00002.parquet': parquet(TEXTS.slice(25)),
        'data/test-00000-of-00001.jsonl': Buffer.from('{"text":"held out","q":"other column"}\n'),
      },
      lfs: new Set(['data/train-00000-of-00002.parquet', 'data/train-00001-of-00002.parquet']),
    },
  ]);
  model = await loadModel(modelTinyPath);
});
afterAll(async () => {
  await hub.close();
  rmSync(home, { recursive: true, force: true });
});

describe('Parquet datasets (hyparquet)', () => {
  it('reads the text column, another column on request, and names the columns when the one asked for is missing', async () => {
    const file = join(home, 'local.parquet');
    writeFileSync(file, parquet(TEXTS.slice(0, 5), true));
    const d = await readDataset(file);
    expect(d.format).toBe('parquet');
    expect(d.samples).toEqual(TEXTS.slice(0, 5).map((text, i) => ({ kind: 'text', text, line: i + 1 })));
    const p = await readDataset(file, { column: 'prompt' });
    expect(p.samples.map((s) => (s.kind === 'text' ? s.text : ''))).toEqual(TEXTS.slice(0, 5).map((t) => t.toUpperCase()));
    const missing = await readDataset(file, { column: 'answer' }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(CalibrateError);
    expect((missing as CalibrateError).code).toBe('DATASET_MALFORMED');
    expect((missing as CalibrateError).message).toMatch(/local\.parquet: no column "answer" \(columns: id, text, prompt\)/);
    const numbers = await readDataset(file, { column: 'id' }).catch((e: unknown) => e);
    expect((numbers as CalibrateError).message).toMatch(/line 1: column "id" must be a string or a messages array, got 0/);
    writeFileSync(join(home, 'bad.parquet'), 'not parquet at all');
    await expect(readDataset(join(home, 'bad.parquet'))).rejects.toMatchObject({ code: 'DATASET_MALFORMED', message: expect.stringMatching(/bad\.parquet: not a readable Parquet file/) });
    await expect(readDataset(join(home, 'none.parquet'))).rejects.toMatchObject({ code: 'DATASET_NOT_FOUND' });
  });
});

describe('Hub datasets (local Hub server)', { timeout: 60_000 }, () => {
  it('reads a split from datasets--org--name (Parquet shards in order), other splits and columns, then offline from the cache', async () => {
    const d = await readDataset('kvq/calib', { hub: settings() });
    expect(d.source).toBe(`kvq/calib@${COMMIT}:train`);
    expect(d.format).toBe('parquet');
    expect(d.samples).toEqual(TEXTS.map((text, i) => ({ kind: 'text', text, line: i + 1 })));
    const test = await readDataset(`kvq/calib@${COMMIT}`, { hub: settings(), split: 'test', column: 'q' });
    expect(test.samples).toEqual([{ kind: 'text', text: 'other column', line: 1 }]);
    hub.hits.length = 0;
    const offline = await readDataset('kvq/calib', { hub: settings({ offline: true }) });
    expect(offline).toEqual(d);
    expect(hub.hits).toEqual([]);
  });

  it('maps Hub failures to typed errors naming the dataset', async () => {
    const nf = await readDataset('kvq/absent', { hub: settings() }).catch((e: unknown) => e);
    expect(nf).toMatchObject({ code: 'DATASET_NOT_FOUND', message: expect.stringMatching(/^dataset kvq\/absent: dataset kvq\/absent@main: not found/) });
    await expect(readDataset('kvq/calib', { hub: settings(), split: 'validation' })).rejects.toMatchObject({ code: 'DATASET_NOT_FOUND' });
    hub.faults.requireToken = 'hf_secret';
    try {
      const denied = await readDataset('kvq/calib', { hub: settings({ cacheDir: join(home, 'other') }) }).catch((e: unknown) => e);
      expect(denied).toMatchObject({ code: 'DATASET_UNAVAILABLE', message: expect.stringMatching(/HTTP 401.*set HF_TOKEN/) });
      expect(((denied as Error).cause as { code: string }).code).toBe('HUB_ACCESS_DENIED');
    } finally {
      hub.faults.requireToken = undefined;
    }
    const notCached = await readDataset('kvq/calib', { hub: settings({ offline: true, cacheDir: join(home, 'empty') }) }).catch((e: unknown) => e);
    expect(notCached).toMatchObject({ code: 'DATASET_UNAVAILABLE', message: expect.stringMatching(/not in the Hugging Face cache/) });
    // A missing local file that looks like org/name.jsonl is a missing file, not a Hub request.
    hub.hits.length = 0;
    await expect(readDataset('kvq/missing.jsonl', { hub: settings() })).rejects.toMatchObject({ code: 'DATASET_NOT_FOUND' });
    expect(hub.hits).toEqual([]);
  });

  it('calibrate() on a Hub dataset gives the scales of the same texts given inline', async () => {
    const opts = { model, strategy: 'tensor' as const, numSamples: 6, maxSeqLen: 24, seed: 3, reportSamples: 0, fakeQuantize: false, backend: 'reference' };
    const fromHub = await calibrate({ ...opts, dataset: 'kvq/calib', hub: settings() });
    const inline = await calibrate({ ...opts, dataset: TEXTS });
    expect(fromHub.scales.layers).toEqual(inline.scales.layers);
  });
});
