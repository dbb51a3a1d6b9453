import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';

/** One repository served by {@link startFakeHub}. */
export interface FakeRepo {
  /** `model` (default) or `dataset`. */
  readonly type?: 'model' | 'dataset';
  /** `org/name`. */
  readonly id: string;
  /** 40 hex digits: the commit every revision name resolves to. */
  readonly commit: string;
  /** Revision names besides the commit itself that resolve to it. Default `['main']`. */
  readonly revisions?: readonly string[];
  /** Path in the repo → content. */
  readonly files: Readonly<Record<string, Buffer>>;
  /** Files stored with Git LFS: their resolve URL redirects (302) to a CDN path with `X-Linked-Etag` = SHA-256. */
  readonly lfs?: ReadonlySet<string>;
}

/** One request the fake Hub received. */
export interface FakeHubHit {
  readonly method: string;
  readonly url: string;
  readonly range: string | undefined;
  readonly auth: string | undefined;
}

/** Fault injection, changeable between requests. */
export interface FakeHubFaults {
  /** The next full GET of a CDN (LFS) file sends a third of the body, then drops the connection. */
  breakFirstCdnGet: boolean;
  /** Every non-CDN request needs `Authorization: Bearer <token>` (401 otherwise), like a gated repo. */
  requireToken: string | undefined;
  /** CDN files are served with byte 1000 flipped (an integrity failure). */
  corrupt: boolean;
}

/** A running fake Hub. */
export interface FakeHub {
  /** `http://127.0.0.1:<port>`, for `HF_ENDPOINT`. */
  readonly endpoint: string;
  /** Requests received so far (clear with `hits.length = 0`). */
  readonly hits: FakeHubHit[];
  readonly faults: FakeHubFaults;
  close(): Promise<void>;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** Git's blob id (what the Hub sends as ETag for regular files). */
const gitOid = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

/**
 * A loopback HTTP server speaking the subset of the Hugging Face Hub protocol that kvq uses:
 * `GET /api/{models,datasets}/{id}/revision/{rev}` (sha, siblings), `GET /api/{models,datasets}/{id}/tree/{rev}`
 * (recursive listing), `HEAD/GET /[datasets/]{id}/resolve/{rev}/{file}` with LFS files answering 302 to `/cdn/...`
 * and `X-Linked-Etag`/`X-Linked-Size` like huggingface.co, Range requests on the CDN, and fault injection.
 * Unknown repos answer 404 with `X-Error-Code: RepoNotFound`, unknown revisions `RevisionNotFound`.
 */
export async function startFakeHub(repos: readonly FakeRepo[]): Promise<FakeHub> {
  const hits: FakeHubHit[] = [];
  const faults: FakeHubFaults = { breakFirstCdnGet: false, requireToken: undefined, corrupt: false };
  const find = (type: string, id: string) => repos.find((r) => (r.type ?? 'model') === type && r.id === id);
  const commitOf = (repo: FakeRepo, rev: string) => (rev === repo.commit || (repo.revisions ?? ['main']).includes(rev) ? repo.commit : undefined);
  const notFound = (res: ServerResponse, code: string): void => void res.writeHead(404, { 'content-type': 'application/json', 'x-error-code': code }).end(JSON.stringify({ error: code }));

  function handler(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const path = decodeURIComponent(url.pathname);
    hits.push({ method: req.method ?? '', url: url.pathname, range: req.headers.range, auth: req.headers.authorization });
    if (faults.requireToken && req.headers.authorization !== `Bearer ${faults.requireToken}` && !path.startsWith('/cdn/')) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"Invalid credentials in Authorization header"}');
      return;
    }
    const api = /^\/api\/(models|datasets)\/([^/]+\/[^/]+)\/(revision|tree)\/(.+)$/.exec(path);
    if (api) {
      const repo = find(api[1] === 'models' ? 'model' : 'dataset', api[2]!);
      if (!repo) return notFound(res, 'RepoNotFound');
      const commit = commitOf(repo, api[4]!);
      if (!commit) return notFound(res, 'RevisionNotFound');
      const names = Object.keys(repo.files);
      const body =
        api[3] === 'revision'
          ? { _id: repo.id, id: repo.id, sha: commit, private: false, siblings: names.map((f) => ({ rfilename: f })) }
          : names.map((f) => {
              const b = repo.files[f]!;
              return { type: 'file', path: f, size: b.length, oid: gitOid(b), ...(repo.lfs?.has(f) ? { lfs: { oid: sha256(b), size: b.length, pointerSize: 130 } } : {}) };
            });
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      return;
    }
    const resolve = /^\/(datasets\/)?([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    if (resolve) {
      const repo = find(resolve[1] ? 'dataset' : 'model', resolve[2]!);
      if (!repo) return notFound(res, 'RepoNotFound');
      const commit = commitOf(repo, resolve[3]!);
      if (!commit) return notFound(res, 'RevisionNotFound');
      const file = resolve[4]!;
      const body = repo.files[file];
      if (!body) return notFound(res, 'EntryNotFound');
      if (repo.lfs?.has(file)) {
        const location = `/cdn/${repo.type ?? 'model'}/${repo.id}/${file}`;
        res.writeHead(302, { location, 'x-linked-etag': `"${sha256(body)}"`, 'x-linked-size': String(body.length), 'x-repo-commit': commit, etag: '"pointer"' }).end();
        return;
      }
      res.writeHead(200, { etag: `"${gitOid(body)}"`, 'content-length': body.length, 'x-repo-commit': commit });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    const cdn = /^\/cdn\/(model|dataset)\/([^/]+\/[^/]+)\/(.+)$/.exec(path);
    const cdnRepo = cdn ? find(cdn[1]!, cdn[2]!) : undefined;
    const original = cdn && cdnRepo ? cdnRepo.files[cdn[3]!] : undefined;
    if (original) {
      const body = faults.corrupt ? Buffer.from(original.map((b, i) => (i === 1000 ? b ^ 0xff : b))) : original;
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
      if (faults.breakFirstCdnGet && req.method === 'GET') {
        faults.breakFirstCdnGet = false;
        res.write(body.subarray(0, Math.floor(body.length / 3)), () => setTimeout(() => res.destroy(), 20));
        return;
      }
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    res.writeHead(404).end();
  }

  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    hits,
    faults,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
