import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, symlink, writeFile, copyFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CliError } from '../errors.js';

/** A parsed Hub model id: `org/name[@revision]`. */
export interface HubId {
  readonly repo: string;
  readonly revision: string;
}

/** Where and how the Hub is reached, from the environment (huggingface_hub's variables). */
export interface HubSettings {
  /** `HF_ENDPOINT`, default `https://huggingface.co`. */
  readonly endpoint: string;
  /** `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`, or the token file `$HF_HOME/token`). */
  readonly token: string | undefined;
  /** `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`. */
  readonly cacheDir: string;
  /** `HF_HUB_OFFLINE` set to 1/true/yes/on: only the cache is used. */
  readonly offline: boolean;
}

/** Progress of one file's download. */
export interface DownloadProgress {
  readonly file: string;
  readonly bytes: number;
  readonly total: number;
}

/** Options of {@link downloadModel}. */
export interface DownloadOptions {
  readonly settings?: HubSettings;
  readonly onProgress?: (p: DownloadProgress) => void;
  /** Called with one-line notices (cache fallbacks, resumed downloads). */
  readonly onNotice?: (message: string) => void;
  /** Attempts per file when a transfer breaks off (each resumes where the last stopped). Default 4. */
  readonly attempts?: number;
  /** Only the model's config files (`config.json`, `generation_config.json`), e.g. for capacity planning. */
  readonly configOnly?: boolean;
}

const ID = /^([A-Za-z0-9][\w.-]*)\/([\w.-]+)(?:@([\w./-]+))?$/;

/** True when `spec` looks like a Hub id (`org/name` or `org/name@rev`) rather than a path. */
export function isHubId(spec: string): boolean {
  return ID.test(spec) && !spec.startsWith('.') && !existsSync(spec);
}

/** Parses `org/name[@revision]` (revision default `main`). */
export function parseHubId(spec: string): HubId {
  const m = ID.exec(spec);
  if (!m) throw new CliError('USAGE', `${JSON.stringify(spec)} is not a Hub model id (expected org/name or org/name@revision)`);
  return { repo: `${m[1]}/${m[2]}`, revision: m[3] ?? 'main' };
}

/** Reads the Hub settings from `env` (default `process.env`). */
export function hubSettings(env: NodeJS.ProcessEnv = process.env): HubSettings {
  const hfHome = env.HF_HOME ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface');
  let token = env.HF_TOKEN ?? env.HUGGING_FACE_HUB_TOKEN;
  if (!token) {
    const file = env.HF_TOKEN_PATH ?? join(hfHome, 'token');
    try {
      token = readFileSync(file, 'utf8').trim() || undefined;
    } catch {
      token = undefined;
    }
  }
  const truthy = (v: string | undefined) => ['1', 'true', 'yes', 'on'].includes((v ?? '').toLowerCase());
  return {
    endpoint: (env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, ''),
    token,
    cacheDir: env.HF_HUB_CACHE ?? join(hfHome, 'hub'),
    offline: truthy(env.HF_HUB_OFFLINE),
  };
}

/** The cache folder of a model repo: `models--org--name`. */
export function repoFolder(settings: HubSettings, repo: string): string {
  return join(settings.cacheDir, `models--${repo.replace(/\//g, '--')}`);
}

/** Files kvq needs from a model repo, besides the weights. */
const METADATA = new Set([
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'chat_template.jinja',
  'chat_template.json',
  'model.safetensors.index.json',
]);

/** Picks the files of a repo listing that `loadModel` reads. */
export function selectFiles(files: readonly string[], repo: string): string[] {
  const safetensors = files.filter((f) => f.endsWith('.safetensors') && !f.includes('/'));
  const gguf = files.filter((f) => f.endsWith('.gguf'));
  const meta = files.filter((f) => METADATA.has(f));
  if (safetensors.length > 0) return [...meta, ...safetensors];
  if (gguf.length === 1) return [gguf[0]!];
  if (gguf.length > 1) {
    throw new CliError('RUNTIME', `${repo} has ${gguf.length} GGUF files (${gguf.slice(0, 6).join(', ')}${gguf.length > 6 ? ', ...' : ''}); download the one you want and pass its path to --model`);
  }
  throw new CliError('RUNTIME', `${repo} has neither *.safetensors nor a .gguf file kvq can load`);
}

function authHeaders(settings: HubSettings): Record<string, string> {
  return settings.token ? { authorization: `Bearer ${settings.token}` } : {};
}

function hubError(status: number, what: string, settings: HubSettings): CliError {
  if (status === 401 || status === 403) {
    return new CliError('RUNTIME', `${what}: access denied (HTTP ${status}); the repository may be private or gated${settings.token ? ' and HF_TOKEN has no access' : ': set HF_TOKEN'}`);
  }
  if (status === 404) return new CliError('RUNTIME', `${what}: not found on ${settings.endpoint} (HTTP 404); check the id and revision`);
  return new CliError('RUNTIME', `${what}: HTTP ${status} from ${settings.endpoint}`);
}

async function request(url: string, init: RequestInit, what: string): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (cause) {
    const reason = (cause as { cause?: { code?: string; message?: string } }).cause;
    throw new CliError('RUNTIME', `${what}: cannot reach ${new URL(url).origin} (${reason?.code ?? reason?.message ?? (cause as Error).message})`, { cause });
  }
}

/** Files of a cached snapshot folder, recursively, relative. */
async function listSnapshot(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await listSnapshot(join(dir, e.name), rel)));
    else out.push(rel);
  }
  return out;
}

/** The cached snapshot for an id, or undefined. */
export async function cachedSnapshot(settings: HubSettings, id: HubId): Promise<string | undefined> {
  const folder = repoFolder(settings, id.repo);
  let commit = id.revision;
  if (!/^[0-9a-f]{40}$/.test(commit)) {
    try {
      commit = (await readFile(join(folder, 'refs', id.revision), 'utf8')).trim();
    } catch {
      return undefined;
    }
  }
  const dir = join(folder, 'snapshots', commit);
  if (!existsSync(dir)) return undefined;
  const files = await listSnapshot(dir);
  const complete = (files.includes('config.json') && files.some((f) => f.endsWith('.safetensors'))) || files.some((f) => f.endsWith('.gguf'));
  if (!complete) return undefined;
  const gguf = files.filter((f) => f.endsWith('.gguf'));
  return gguf.length === 1 && !files.includes('config.json') ? join(dir, gguf[0]!) : dir;
}

function cleanEtag(v: string | null): string | undefined {
  if (!v) return undefined;
  return v.replace(/^W\//, '').replace(/^"|"$/g, '') || undefined;
}

/** Downloads one file of a snapshot into the cache (blob + snapshot link), resuming a partial blob. */
async function fetchFile(settings: HubSettings, repo: string, commit: string, file: string, options: DownloadOptions): Promise<void> {
  const folder = repoFolder(settings, repo);
  const snapshotPath = join(folder, 'snapshots', commit, file);
  if (existsSync(snapshotPath)) return;
  const url = `${settings.endpoint}/${repo}/resolve/${commit}/${file.split('/').map(encodeURIComponent).join('/')}`;
  const what = `${repo}/${file}`;
  const head = await request(url, { method: 'HEAD', headers: { ...authHeaders(settings), 'accept-encoding': 'identity' }, redirect: 'manual' }, what);
  let etag = cleanEtag(head.headers.get('x-linked-etag')) ?? cleanEtag(head.headers.get('etag'));
  let size = Number(head.headers.get('x-linked-size') ?? head.headers.get('content-length') ?? NaN);
  if (head.status >= 300 && head.status < 400 && !head.headers.get('x-linked-etag')) {
    // A plain redirect (e.g. a renamed repo): ask the target.
    const target = new URL(head.headers.get('location') ?? '', url).toString();
    const h2 = await request(target, { method: 'HEAD', headers: { ...authHeaders(settings), 'accept-encoding': 'identity' } }, what);
    if (!h2.ok) throw hubError(h2.status, what, settings);
    etag = cleanEtag(h2.headers.get('x-linked-etag')) ?? cleanEtag(h2.headers.get('etag'));
    size = Number(h2.headers.get('x-linked-size') ?? h2.headers.get('content-length') ?? NaN);
  } else if (head.status >= 400) {
    throw hubError(head.status, what, settings);
  }
  if (!etag) throw new CliError('RUNTIME', `${what}: the server sent no ETag; cannot place the file in the cache`);
  if (!/^[\w.-]+$/.test(etag)) throw new CliError('RUNTIME', `${what}: unexpected ETag ${JSON.stringify(etag)}`);
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
        const res = await request(url, { headers: { ...authHeaders(settings), 'accept-encoding': 'identity', ...(have > 0 ? { range: `bytes=${have}-` } : {}) } }, what);
        if (res.status === 416 && have > 0) break;
        if (!res.ok) throw hubError(res.status, what, settings);
        const append = res.status === 206;
        if (!res.body) throw new CliError('RUNTIME', `${what}: empty response body`);
        let done = append ? have : 0;
        const total = Number.isFinite(size) ? size : done + Number(res.headers.get('content-length') ?? 0);
        const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
        body.on('data', (chunk: Buffer) => {
          done += chunk.length;
          options.onProgress?.({ file, bytes: done, total });
        });
        await pipeline(body, createWriteStream(partial, { flags: append ? 'a' : 'w' }));
        if (!Number.isFinite(size)) size = (await stat(partial)).size;
        if ((await stat(partial)).size === size) break;
        throw new Error(`transfer ended at ${(await stat(partial)).size} of ${size} bytes`);
      } catch (error) {
        if (error instanceof CliError || attempt >= attempts) {
          if (error instanceof CliError) throw error;
          throw new CliError('RUNTIME', `${what}: download failed after ${attempt} attempts (${(error as Error).message}); run again to resume`, { cause: error });
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
        throw new CliError('RUNTIME', `${what}: SHA-256 mismatch (expected ${etag}, got ${got}); the partial download was removed, run again`);
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
}

/**
 * Resolves a Hub model id to a local folder (or .gguf file) in the standard Hugging Face cache layout
 * (`models--org--name/{blobs,snapshots/<commit>,refs/<revision>}`), downloading what is missing with resume.
 * Offline mode (`HF_HUB_OFFLINE=1`) uses the cache only; when the Hub cannot be reached, a cached snapshot is used
 * with a notice.
 * @throws CliError `RUNTIME` naming the repo/file and the HTTP status or network failure
 */
export async function downloadModel(spec: string, options: DownloadOptions = {}): Promise<string> {
  const settings = options.settings ?? hubSettings();
  const id = parseHubId(spec);
  if (settings.offline) {
    const cached = await cachedSnapshot(settings, id);
    if (!cached) throw new CliError('RUNTIME', `${spec} is not in the Hugging Face cache (${settings.cacheDir}) and HF_HUB_OFFLINE is set`);
    return cached;
  }
  const what = `${id.repo}@${id.revision}`;
  let info: Response;
  try {
    info = await request(`${settings.endpoint}/api/models/${id.repo}/revision/${encodeURIComponent(id.revision)}`, { headers: authHeaders(settings) }, what);
  } catch (error) {
    const cached = await cachedSnapshot(settings, id);
    if (cached) {
      options.onNotice?.(`${(error as Error).message}; using the cached snapshot`);
      return cached;
    }
    throw error;
  }
  if (!info.ok) throw hubError(info.status, what, settings);
  const json = (await info.json()) as { sha?: unknown; siblings?: { rfilename?: unknown }[] };
  const commit = typeof json.sha === 'string' && /^[0-9a-f]{40}$/.test(json.sha) ? json.sha : undefined;
  if (!commit || !Array.isArray(json.siblings)) throw new CliError('RUNTIME', `${what}: unexpected answer from ${settings.endpoint} (no commit sha or file list)`);
  const files = json.siblings.map((s) => s.rfilename).filter((f): f is string => typeof f === 'string');
  const wanted = options.configOnly ? files.filter((f) => f === 'config.json' || f === 'generation_config.json') : selectFiles(files, id.repo);
  if (options.configOnly && !wanted.includes('config.json')) throw new CliError('RUNTIME', `${what} has no config.json`);
  for (const file of wanted) {
    if (file.split('/').some((p) => p === '..' || p === '')) throw new CliError('RUNTIME', `${what}: refusing the file name ${JSON.stringify(file)}`);
    await fetchFile(settings, id.repo, commit, file, options);
  }
  const folder = repoFolder(settings, id.repo);
  if (id.revision !== commit) {
    await mkdir(join(folder, 'refs', dirname(id.revision)), { recursive: true });
    await writeFile(join(folder, 'refs', id.revision), commit);
  }
  const dir = join(folder, 'snapshots', commit);
  return wanted.length === 1 && wanted[0]!.endsWith('.gguf') ? join(dir, wanted[0]!) : dir;
}
