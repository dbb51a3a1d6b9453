import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { modelTinyPath } from '@kvq/model-tiny';
import { startFakeHub, type FakeHub } from '@kvq/test-utils/fake-hub';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * `kvq --model org/name` and `kvq calibrate --dataset org/name` through the built binary, against a local Hub
 * server (`@kvq/test-utils/fake-hub`, HF_ENDPOINT pointing at it). The download logic itself is tested in
 * @kvq/engine (src/hub/hub.test.ts).
 */
const COMMIT = 'a'.repeat(8) + '0123456789abcdef0123456789abcdef';
const bin = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'bin.js');
let hub: FakeHub;
let home: string;

beforeAll(async () => {
  const files = Object.fromEntries(readdirSync(modelTinyPath).map((f) => [f, readFileSync(join(modelTinyPath, f))]));
  const texts = Array.from({ length: 12 }, (_, i) => JSON.stringify({ text: `In the beginning ${i} God created the heaven` })).join('\n');
  hub = await startFakeHub([
    { id: 'kvq/tiny', commit: COMMIT, files, lfs: new Set(['model.safetensors']) },
    { type: 'dataset', id: 'kvq/texts', commit: 'f'.repeat(40), files: { 'train.jsonl': Buffer.from(texts), 'test.jsonl': Buffer.from('{"text":"x"}\n') } },
  ]);
  home = mkdtempSync(join(tmpdir(), 'kvq-cli-hub-'));
});
afterAll(async () => {
  await hub.close();
  rmSync(home, { recursive: true, force: true });
});

/** Runs the binary asynchronously (a synchronous spawn would block this process's Hub server). */
function kvqAsync(args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { encoding: 'utf8', env, timeout: 120_000 }, (error, stdout, stderr) => {
      resolve({ status: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe.skipIf(!existsSync(bin))('kvq with Hub ids (binary, local Hub)', { timeout: 240_000 }, () => {
  it('generates from a Hub id through HF_ENDPOINT/HF_HOME, then offline from the cache; a missing repo is a clear error', async () => {
    const env = { ...process.env, HF_ENDPOINT: hub.endpoint, HF_HOME: home, HF_TOKEN: '' };
    const args = ['generate', '--model', 'kvq/tiny', '--json', '--temperature', '0', '--max-tokens', '8', 'In the beginning God'];
    const online = await kvqAsync(args, env);
    expect(online.status, online.stderr).toBe(0);
    expect(existsSync(join(home, 'hub', 'models--kvq--tiny', 'snapshots', COMMIT, 'model.safetensors'))).toBe(true);
    const embedded = await kvqAsync(['generate', '--json', '--temperature', '0', '--max-tokens', '8', 'In the beginning God'], process.env);
    expect((JSON.parse(online.stdout) as { token_ids: number[] }).token_ids).toEqual((JSON.parse(embedded.stdout) as { token_ids: number[] }).token_ids);
    const offline = await kvqAsync(args, { ...env, HF_HUB_OFFLINE: '1', HF_ENDPOINT: 'http://127.0.0.1:9' });
    expect(offline.status, offline.stderr).toBe(0);
    const missing = await kvqAsync(['generate', '--model', 'kvq/other', 'x'], env);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/^kvq: --model kvq\/other: .*HTTP 404/);
  });

  it('kvq calibrate --dataset org/name reads the Hub dataset split (and says which split is missing)', async () => {
    const env = { ...process.env, HF_ENDPOINT: hub.endpoint, HF_HOME: home, HF_TOKEN: '' };
    const base = ['calibrate', '--dry-run', '--json', '--num-samples', '4', '--max-seq-len', '16', '--dataset', 'kvq/texts'];
    const r = await kvqAsync(base, env);
    expect(r.status, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { report: { layers: unknown[] } }).report.layers.length).toBeGreaterThan(0);
    expect(existsSync(join(home, 'hub', 'datasets--kvq--texts', 'snapshots', 'f'.repeat(40), 'train.jsonl'))).toBe(true);
    const local = join(home, 'texts.jsonl');
    writeFileSync(local, readFileSync(join(home, 'hub', 'datasets--kvq--texts', 'snapshots', 'f'.repeat(40), 'train.jsonl')));
    const fromFile = await kvqAsync([...base.slice(0, -1), local], process.env);
    expect(JSON.parse(fromFile.stdout).report.layers).toEqual(JSON.parse(r.stdout).report.layers);
    const split = await kvqAsync([...base, '--dataset-split', 'validation'], env);
    expect(split.status).not.toBe(0);
    expect(split.stderr).toMatch(/kvq\/texts.*no data file for split "validation" \(splits found: train, test\)/);
  });
});
