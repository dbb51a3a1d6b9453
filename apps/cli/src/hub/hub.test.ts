import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel } from '@kvq/engine';
import { modelTinyPath } from '@kvq/model-tiny';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CliError } from '../errors.js';
import { downloadModel, hubSettings, isHubId, parseHubId, selectFiles, type HubSettings } from './hub.js';

/**
 * The Hub download against a local HTTP server that implements the Hub's endpoints over the kvq-tiny files:
 * `GET /api/models/{repo}/revision/{rev}` and `HEAD/GET /{repo}/resolve/{commit}/{file}` (LFS files answer with a
 * 302 to a CDN path and `X-Linked-Etag` = SHA-256, like huggingface.co), with Range support and fault injection.
 */
const COMMIT = 'a'.repeat(8) + '0123456789abcdef0123456789abcdef';
const LFS = new Set(['model.safetensors']);
const FILES = [...readdirSync(modelTinyPath), 'README.extra.md'];

interface Hit {
  method: string;
  url: string;
  range: string | undefined;
  auth: string | undefined;
}

let server: Server;
let endpoint: string;
let hits: Hit[] = [];
const faults = { breakFirstCdnGet: false, requireToken: undefined as string | undefined, corrupt: false };

function content(file: string): Buffer {
  if (file === 'README.extra.md') return Buffer.from('not needed by kvq\n');
  return readFileSync(join(modelTinyPath, file));
}
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const gitEtag = (b: Buffer) => createHash('sha1').update(b).digest('hex');

function handler(req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://x');
  hits.push({ method: req.method ?? '', url: url.pathname, range: req.headers.range, auth: req.headers.authorization });
  if (faults.requireToken && req.headers.authorization !== `Bearer ${faults.requireToken}` && !url.pathname.startsWith('/cdn/')) {
    res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"Invalid credentials"}');
    return;
  }
  const api = /^\/api\/models\/kvq\/tiny\/revision\/(.+)$/.exec(url.pathname);
  if (api) {
    if (decodeURIComponent(api[1]!) !== 'main' && decodeURIComponent(api[1]!) !== COMMIT) {
      res.writeHead(404).end('{"error":"Revision Not Found"}');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: 'kvq/tiny', sha: COMMIT, siblings: FILES.map((f) => ({ rfilename: f })) }));
    return;
  }
  const resolve = /^\/kvq\/tiny\/resolve\/([0-9a-f]{40})\/(.+)$/.exec(url.pathname);
  if (resolve) {
    const file = decodeURIComponent(resolve[2]!);
    if (!FILES.includes(file)) {
      res.writeHead(404).end();
      return;
    }
    const body = content(file);
    if (LFS.has(file)) {
      res.writeHead(302, { location: `/cdn/${file}`, 'x-linked-etag': `"${sha256(body)}"`, 'x-linked-size': String(body.length), 'x-repo-commit': COMMIT, etag: '"pointer"' }).end();
      return;
    }
    res.writeHead(200, { etag: `"${gitEtag(body)}"`, 'content-length': body.length, 'x-repo-commit': COMMIT });
    res.end(req.method === 'HEAD' ? undefined : body);
    return;
  }
  const cdn = /^\/cdn\/(.+)$/.exec(url.pathname);
  if (cdn) {
    let body = content(decodeURIComponent(cdn[1]!));
    if (faults.corrupt) body = Buffer.from(body.map((b, i) => (i === 1000 ? b ^ 0xff : b)));
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (m) {
      const start = Number(m[1]);
      if (start >= body.length) {
        res.writeHead(416).end();
        return;
      }
      res.writeHead(206, { 'content-range': `bytes ${start}-${body.length - 1}/${body.length}`, 'content-length': body.length - start });
      res.end(body.subarray(start));
      return;
    }
    res.writeHead(200, { 'content-length': body.length });
    if (faults.breakFirstCdnGet) {
      faults.breakFirstCdnGet = false;
      res.write(body.subarray(0, Math.floor(body.length / 3)), () => setTimeout(() => res.destroy(), 20));
      return;
    }
    res.end(body);
    return;
  }
  res.writeHead(404).end();
}

let home: string;
const settings = (over: Partial<HubSettings> = {}): HubSettings => ({ endpoint, token: undefined, cacheDir: join(home, 'hub'), offline: false, ...over });
const repoDir = () => join(home, 'hub', 'models--kvq--tiny');

beforeAll(async () => {
  server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address() as { port: number };
  endpoint = `http://127.0.0.1:${addr.port}`;
});
afterAll(async () => {
  await new Promise((r) => server.close(r));
});
beforeEach(() => {
  home = mkdtempSync(join(tmpdir(), 'kvq-hub-'));
  hits = [];
  Object.assign(faults, { breakFirstCdnGet: false, requireToken: undefined, corrupt: false });
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
    expect(() => parseHubId('just-a-name')).toThrow(CliError);
  });
  it('reads HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE', () => {
    const s = hubSettings({ HF_HOME: '/h', HF_ENDPOINT: 'http://e/', HF_TOKEN: 't', HF_HUB_OFFLINE: '1' });
    expect(s).toEqual({ endpoint: 'http://e', token: 't', cacheDir: '/h/hub', offline: true });
    expect(hubSettings({ HF_HOME: '/h', HF_HUB_CACHE: '/c' }).cacheDir).toBe('/c');
    writeFileSync(join(home, 'token'), 'hf_from_file\n');
    expect(hubSettings({ HF_HOME: home }).token).toBe('hf_from_file');
    expect(hubSettings({ HF_HOME: home }).offline).toBe(false);
  });
  it('selects the files kvq loads', () => {
    expect(selectFiles(['config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin', 'README.md'], 'r').sort()).toEqual(
      ['config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json'].sort(),
    );
    expect(selectFiles(['m.Q8_0.gguf', 'README.md'], 'r')).toEqual(['m.Q8_0.gguf']);
    expect(() => selectFiles(['a.gguf', 'b.gguf'], 'r')).toThrow(/2 GGUF files/);
    expect(() => selectFiles(['pytorch_model.bin'], 'r')).toThrow(/neither/);
  });
});

describe('downloadModel (local Hub server)', () => {
  it('downloads into the HF cache layout, resumes a broken transfer with Range, verifies SHA-256, and loads', async () => {
    faults.breakFirstCdnGet = true;
    const notices: string[] = [];
    const dir = await downloadModel('kvq/tiny', { settings: settings(), onNotice: (m) => notices.push(m) });
    expect(dir).toBe(join(repoDir(), 'snapshots', COMMIT));
    expect(readFileSync(join(repoDir(), 'refs', 'main'), 'utf8')).toBe(COMMIT);
    const weights = content('model.safetensors');
    const blob = join(repoDir(), 'blobs', sha256(weights));
    expect(readFileSync(blob).equals(weights)).toBe(true);
    expect(lstatSync(join(dir, 'model.safetensors')).isSymbolicLink()).toBe(true);
    expect(readlinkSync(join(dir, 'model.safetensors'))).toBe(join('..', '..', 'blobs', sha256(weights)));
    expect(existsSync(join(dir, 'README.extra.md'))).toBe(false);
    expect(existsSync(join(dir, 'training.json'))).toBe(false);
    const ranged = hits.filter((h) => h.url === '/cdn/model.safetensors' && h.method === 'GET');
    expect(ranged).toHaveLength(2);
    expect(ranged[1]!.range).toMatch(/^bytes=[1-9]\d*-$/);
    expect(notices.some((n) => /resuming model\.safetensors/.test(n))).toBe(true);
    const a = await loadModel(dir);
    const b = await loadModel(modelTinyPath);
    expect(a.config).toEqual(b.config);
    expect(a.tokenizer.encode('In the beginning God')).toEqual(b.tokenizer.encode('In the beginning God'));
    // Second call: everything is cached, no file is fetched again.
    hits = [];
    expect(await downloadModel('kvq/tiny', { settings: settings() })).toBe(dir);
    expect(hits.filter((h) => h.method === 'GET' && h.url !== '/api/models/kvq/tiny/revision/main')).toEqual([]);
  });

  it('configOnly fetches just the config files (for kvq plan)', async () => {
    const dir = await downloadModel('kvq/tiny', { settings: settings(), configOnly: true });
    expect(readdirSync(dir).sort()).toEqual(['config.json', 'generation_config.json']);
    expect(hits.some((h) => h.url.includes('model.safetensors'))).toBe(false);
  });

  it('resumes a partial blob left by an earlier run', async () => {
    const weights = content('model.safetensors');
    const partial = join(repoDir(), 'blobs', `${sha256(weights)}.incomplete`);
    mkdirSync(dirname(partial), { recursive: true });
    writeFileSync(partial, weights.subarray(0, 123_456));
    const dir = await downloadModel('kvq/tiny', { settings: settings() });
    expect(hits.find((h) => h.url === '/cdn/model.safetensors')!.range).toBe('bytes=123456-');
    expect(readFileSync(join(dir, 'model.safetensors')).equals(weights)).toBe(true);
    expect(existsSync(partial)).toBe(false);
  });

  it('rejects a corrupted transfer (SHA-256 mismatch) and removes the partial file', async () => {
    faults.corrupt = true;
    await expect(downloadModel('kvq/tiny', { settings: settings() })).rejects.toThrow(/SHA-256 mismatch/);
    expect(readdirSync(join(repoDir(), 'blobs')).some((f) => f.endsWith('.incomplete'))).toBe(false);
  });

  it('sends HF_TOKEN as a Bearer token; without it a gated repo says to set HF_TOKEN', async () => {
    faults.requireToken = 'hf_test_token';
    await expect(downloadModel('kvq/tiny', { settings: settings() })).rejects.toThrow(/HTTP 401.*set HF_TOKEN/);
    const dir = await downloadModel('kvq/tiny', { settings: settings({ token: 'hf_test_token' }) });
    expect(existsSync(join(dir, 'config.json'))).toBe(true);
    expect(hits.filter((h) => !h.url.startsWith('/cdn/')).every((h) => h.auth === 'Bearer hf_test_token' || h.auth === undefined)).toBe(true);
    expect(hits.filter((h) => h.url.startsWith('/kvq/')).every((h) => h.auth === 'Bearer hf_test_token')).toBe(true);
  });

  it('offline mode uses the cache only; an unreachable Hub falls back to the cache; unknown revisions are 404', async () => {
    await expect(downloadModel('kvq/tiny', { settings: settings({ offline: true }) })).rejects.toThrow(/not in the Hugging Face cache.*HF_HUB_OFFLINE/);
    const dir = await downloadModel('kvq/tiny', { settings: settings() });
    hits = [];
    expect(await downloadModel('kvq/tiny', { settings: settings({ offline: true }) })).toBe(dir);
    expect(await downloadModel(`kvq/tiny@${COMMIT}`, { settings: settings({ offline: true }) })).toBe(dir);
    expect(hits).toEqual([]);
    const notices: string[] = [];
    expect(await downloadModel('kvq/tiny', { settings: settings({ endpoint: 'http://127.0.0.1:9' }), onNotice: (m) => notices.push(m) })).toBe(dir);
    expect(notices[0]).toMatch(/cannot reach.*using the cached snapshot/);
    await expect(downloadModel('kvq/tiny@v9', { settings: settings() })).rejects.toThrow(/not found.*404/);
  });
});

const bin = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'bin.js');
/** Runs the binary asynchronously (a synchronous spawn would block this process's Hub server). */
function kvqAsync(args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { encoding: 'utf8', env, timeout: 120_000 }, (error, stdout, stderr) => {
      resolve({ status: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe.skipIf(!existsSync(bin))('kvq --model org/name (binary, local Hub)', { timeout: 240_000 }, () => {
  it('generates from a Hub id through HF_ENDPOINT/HF_HOME, then offline from the cache', async () => {
    const env = { ...process.env, HF_ENDPOINT: endpoint, HF_HOME: home, HF_TOKEN: '' };
    const args = ['generate', '--model', 'kvq/tiny', '--json', '--temperature', '0', '--max-tokens', '8', 'In the beginning God'];
    const online = await kvqAsync(args, env);
    expect(online.status, online.stderr).toBe(0);
    const embedded = await kvqAsync(['generate', '--json', '--temperature', '0', '--max-tokens', '8', 'In the beginning God'], process.env);
    expect((JSON.parse(online.stdout) as { token_ids: number[] }).token_ids).toEqual((JSON.parse(embedded.stdout) as { token_ids: number[] }).token_ids);
    const offline = await kvqAsync(args, { ...env, HF_HUB_OFFLINE: '1', HF_ENDPOINT: 'http://127.0.0.1:9' });
    expect(offline.status, offline.stderr).toBe(0);
    const missing = await kvqAsync(['generate', '--model', 'kvq/other', 'x'], env);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/^kvq: --model kvq\/other: .*HTTP 404/);
  });
});
