import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import type { ReadableStream } from 'node:stream/web';
import { pipeline } from 'node:stream/promises';
import { datasetInfo, HubApiError, listFiles, modelInfo } from '@huggingface/hub';
import { EngineError } from '../errors.js';
import { repoCacheFolder, type HubId, type HubRepoType, type HubSettings } from './settings.js';

/** Progress of one file's download, in bytes. */
export interface HubDownloadProgress {
  /** Path of the file in the repo. */
  readonly file: string;
  readonly bytes: number;
  readonly total: number;
}

/** Options shared by the Hub downloads. */
export interface HubFetchOptions {
  /** Default: {@link hubSettings} of `process.env`. */
  readonly settings?: HubSettings;
  /** Called as bytes arrive. */
  readonly onProgress?: (p: HubDownloadProgress) => void;
  /** One-line notices: a resumed transfer, a cached snapshot used because the Hub could not be reached. */
  readonly onNotice?: (message: string) => void;
  /** Attempts per file when a transfer breaks off; each resumes where the last stopped. Default 4. */
  readonly attempts?: number;
}

/** A revision resolved to its commit and file list. */
export interface RepoRevision {
  readonly commit: string;
  readonly files: readonly string[];
}

function hubFailure(error: unknown, what: string, settings: HubSettings): EngineError {
  if (error instanceof EngineError) return error;
  if (error instanceof HubApiError) return httpError(error.statusCode, what, settings, error);
  if (error instanceof TypeError && /access token/i.test(error.message)) {
    return new EngineError('INVALID_ARGUMENT', `${what}: HF_TOKEN is not a Hugging Face token (${error.message})`, { field: 'HF_TOKEN', cause: error });
  }
  const reason = (error as { cause?: { code?: string; message?: string } }).cause;
  return new EngineError('HUB_UNREACHABLE', `${what}: cannot reach ${settings.endpoint} (${reason?.code ?? reason?.message ?? (error as Error).message})`, { file: what, cause: error });
}

function httpError(status: number, what: string, settings: HubSettings, cause?: unknown): EngineError {
  const details = { file: what, ...(cause === undefined ? {} : { cause }) };
  if (status === 401 || status === 403) {
    return new EngineError('HUB_ACCESS_DENIED', `${what}: access denied (HTTP ${status}); the repository may be private or gated${settings.token ? ' and HF_TOKEN has no access to it' : ': set HF_TOKEN'}`, details);
  }
  if (status === 404) return new EngineError('HUB_NOT_FOUND', `${what}: not found on ${settings.endpoint} (HTTP 404); check the id and revision`, details);
  return new EngineError('HUB_UNREACHABLE', `${what}: HTTP ${status} from ${settings.endpoint}`, details);
}

const COMMIT = /^[0-9a-f]{40}$/;

/**
 * Resolves a revision to its commit and the repo's file paths through `@huggingface/hub` (`modelInfo` for models;
 * `datasetInfo` and a recursive `listFiles` for datasets).
 * @throws EngineError `HUB_NOT_FOUND`, `HUB_ACCESS_DENIED`, `HUB_UNREACHABLE`
 */
export async function resolveRevision(id: HubId, type: HubRepoType, settings: HubSettings): Promise<RepoRevision> {
  const what = `${type === 'dataset' ? 'dataset ' : ''}${id.repo}@${id.revision}`;
  const credentials = { hubUrl: settings.endpoint, ...(settings.token ? { accessToken: settings.token } : {}) };
  try {
    if (type === 'model') {
      const info = await modelInfo({ ...credentials, name: id.repo, revision: id.revision, additionalFields: ['sha', 'filePaths'] });
      if (typeof info.sha !== 'string' || !COMMIT.test(info.sha)) throw new EngineError('HUB_UNREACHABLE', `${what}: unexpected answer from ${settings.endpoint} (no commit sha)`, { file: what });
      return { commit: info.sha, files: info.filePaths };
    }
    const info = await datasetInfo({ ...credentials, name: id.repo, revision: id.revision, additionalFields: ['sha'] });
    const commit = (info as { sha?: unknown }).sha;
    if (typeof commit !== 'string' || !COMMIT.test(commit)) throw new EngineError('HUB_UNREACHABLE', `${what}: unexpected answer from ${settings.endpoint} (no commit sha)`, { file: what });
    const files: string[] = [];
    for await (const entry of listFiles({ ...credentials, repo: { type: 'dataset', name: id.repo }, revision: commit, recursive: true })) {
      if (entry.type === 'file') files.push(entry.path);
    }
    return { commit, files };
  } catch (error) {
    throw hubFailure(error, what, settings);
  }
}

/** Files of a cached snapshot folder, recursively, relative, `/`-separated. */
async function listSnapshot(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await listSnapshot(join(dir, e.name), rel)));
    else out.push(rel);
  }
  return out;
}

/** The cached snapshot folder of an id (revision resolved through `refs/`), with its files, or undefined. */
export async function cachedSnapshot(settings: HubSettings, id: HubId, type: HubRepoType): Promise<{ dir: string; commit: string; files: string[] } | undefined> {
  const folder = repoCacheFolder(settings, id.repo, type);
  let commit = id.revision;
  if (!COMMIT.test(commit)) {
    try {
      commit = (await readFile(join(folder, 'refs', id.revision), 'utf8')).trim();
    } catch {
      return undefined;
    }
  }
  const dir = join(folder, 'snapshots', commit);
  if (!existsSync(dir)) return undefined;
  return { dir, commit, files: await listSnapshot(dir) };
}

/** Records `refs/<revision>` → commit, as huggingface_hub does, so that offline runs find the snapshot. */
export async function writeRef(settings: HubSettings, id: HubId, type: HubRepoType, commit: string): Promise<void> {
  if (id.revision === commit) return;
  const folder = repoCacheFolder(settings, id.repo, type);
  await mkdir(join(folder, 'refs', dirname(id.revision)), { recursive: true });
  await writeFile(join(folder, 'refs', id.revision), commit);
}

function cleanEtag(v: string | null): string | undefined {
  if (!v) return undefined;
  return v.replace(/^W\//, '').replace(/^"|"$/g, '') || undefined;
}

async function request(url: string, init: RequestInit, what: string, settings: HubSettings): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (cause) {
    throw hubFailure(cause, what, settings);
  }
}

/**
 * Downloads one file of a commit into the cache (`blobs/<etag>` + `snapshots/<commit>/<file>` link), resuming a
 * partial `blobs/<etag>.incomplete` with a Range request and checking LFS files' SHA-256 (their ETag) before the
 * blob becomes visible.
 * NOTE: our own transfer, not `@huggingface/hub`'s `downloadFileToCacheDir`: measured with 2.17.5 against a local
 * server, that one restarts a partial blob from byte 0, caches a corrupted LFS body without checking its SHA-256,
 * writes no `refs/`, and cannot answer from the cache offline.
 * @throws EngineError `HUB_NOT_FOUND`, `HUB_ACCESS_DENIED`, `HUB_UNREACHABLE`, `HUB_DOWNLOAD_FAILED`
 */
export async function fetchFile(settings: HubSettings, repo: string, type: HubRepoType, commit: string, file: string, options: HubFetchOptions = {}): Promise<string> {
  const what = `${type === 'dataset' ? 'dataset ' : ''}${repo}/${file}`;
  if (file.split('/').some((p) => p === '..' || p === '' || p === '.')) {
    throw new EngineError('HUB_DOWNLOAD_FAILED', `${what}: refusing the file name ${JSON.stringify(file)}`, { file: what });
  }
  const folder = repoCacheFolder(settings, repo, type);
  const snapshotPath = join(folder, 'snapshots', commit, ...file.split('/'));
  if (existsSync(snapshotPath)) return snapshotPath;
  const url = `${settings.endpoint}/${type === 'dataset' ? 'datasets/' : ''}${repo}/resolve/${commit}/${file.split('/').map(encodeURIComponent).join('/')}`;
  const auth: Record<string, string> = settings.token ? { authorization: `Bearer ${settings.token}` } : {};
  const head = await request(url, { method: 'HEAD', headers: { ...auth, 'accept-encoding': 'identity' }, redirect: 'manual' }, what, settings);
  let etag = cleanEtag(head.headers.get('x-linked-etag')) ?? cleanEtag(head.headers.get('etag'));
  let size = Number(head.headers.get('x-linked-size') ?? head.headers.get('content-length') ?? NaN);
  if (head.status >= 300 && head.status < 400 && !head.headers.get('x-linked-etag')) {
    // A plain redirect (e.g. a renamed repo): ask the target.
    const target = new URL(head.headers.get('location') ?? '', url).toString();
    const h2 = await request(target, { method: 'HEAD', headers: { ...auth, 'accept-encoding': 'identity' } }, what, settings);
    if (!h2.ok) throw httpError(h2.status, what, settings);
    etag = cleanEtag(h2.headers.get('x-linked-etag')) ?? cleanEtag(h2.headers.get('etag'));
    size = Number(h2.headers.get('x-linked-size') ?? h2.headers.get('content-length') ?? NaN);
  } else if (head.status >= 400) {
    throw httpError(head.status, what, settings);
  }
  if (!etag) throw new EngineError('HUB_DOWNLOAD_FAILED', `${what}: the server sent no ETag; cannot place the file in the cache`, { file: what });
  if (!/^[\w.-]+$/.test(etag)) throw new EngineError('HUB_DOWNLOAD_FAILED', `${what}: unexpected ETag ${JSON.stringify(etag)}`, { file: what });
  const blob = join(folder, 'blobs', etag);
  await mkdir(dirname(blob), { recursive: true });
  if (!existsSync(blob)) {
    const partial = `${blob}.incomplete`;
    const attempts = options.attempts ?? 4;
    for (let attempt = 1; ; attempt++) {
      const have = existsSync(partial) ? (await stat(partial)).size : 0;
      if (Number.isFinite(size) && have === size) break;
      if (have > 0) options.onNotice?.(`resuming ${file} at ${have} bytes`);
      try {
        const res = await request(url, { headers: { ...auth, 'accept-encoding': 'identity', ...(have > 0 ? { range: `bytes=${have}-` } : {}) } }, what, settings);
        if (res.status === 416 && have > 0) break;
        if (!res.ok) throw httpError(res.status, what, settings);
        const append = res.status === 206;
        if (!res.body) throw new EngineError('HUB_DOWNLOAD_FAILED', `${what}: empty response body`, { file: what });
        let done = append ? have : 0;
        const total = Number.isFinite(size) ? size : done + Number(res.headers.get('content-length') ?? 0);
        const body = Readable.fromWeb(res.body as ReadableStream<Uint8Array>);
        body.on('data', (chunk: Buffer) => {
          done += chunk.length;
          options.onProgress?.({ file, bytes: done, total });
        });
        // Positional writes (never O_APPEND) and the file closed before anything reads its size: a write still in
        // flight when a broken transfer rejects lands at its own offset with the same bytes, instead of being appended
        // after the resumed data (which corrupted the blob).
        const out = createWriteStream(partial, append ? { flags: 'r+', start: have } : { flags: 'w' });
        try {
          await pipeline(body, out);
        } finally {
          if (!out.closed) await once(out, 'close');
        }
        if (!Number.isFinite(size)) size = (await stat(partial)).size;
        if ((await stat(partial)).size === size) break;
        throw new Error(`transfer ended at ${(await stat(partial)).size} of ${size} bytes`);
      } catch (error) {
        if (error instanceof EngineError) throw error;
        if (attempt >= attempts) {
          throw new EngineError('HUB_DOWNLOAD_FAILED', `${what}: download failed after ${attempt} attempts (${(error as Error).message}); run again to resume`, { file: what, cause: error });
        }
      }
    }
    // LFS ETags are the file's SHA-256: verify before the blob becomes visible.
    if (/^[0-9a-f]{64}$/.test(etag)) {
      const hash = createHash('sha256');
      await pipeline(createReadStream(partial), hash);
      const got = hash.digest('hex');
      if (got !== etag) {
        await rm(partial, { force: true });
        throw new EngineError('HUB_DOWNLOAD_FAILED', `${what}: SHA-256 mismatch (expected ${etag}, got ${got}); the partial download was removed, run again`, { file: what });
      }
    }
    await rename(partial, blob);
  }
  await mkdir(dirname(snapshotPath), { recursive: true });
  try {
    await symlink(relative(dirname(snapshotPath), blob), snapshotPath);
  } catch {
    await copyFile(blob, snapshotPath); // filesystems without symlinks (huggingface_hub does the same)
  }
  return snapshotPath;
}
