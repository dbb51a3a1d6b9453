/**
 * Backend loader: picks the best backend that loads and passes a self-test, in the order
 * `KVQ_BACKEND` override → preferred / native candidates → the reference backend, recording why each
 * rejected candidate was rejected. A broken native package (missing binary, wrong CPU, throwing
 * initializer, wrong results) never takes the process down; with `probe: 'child'` even a crashing
 * binary (segfault on load) is caught, because it is first loaded in a child process.
 *
 * This package never imports native backends statically (they depend on it). Candidates are package
 * names imported dynamically, or factories supplied by the caller (the engine, which depends on them).
 * @module
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { BackendCreateOptions, BackendModule, KernelBackend } from './contract.js';
import { KERNEL_OPS } from './contract.js';
import { KernelError } from './errors.js';
import { createReferenceBackend } from './reference/backend.js';
import { selfTest } from './self-test.js';

/** Short backend names and the packages that provide them. `reference` is built in. */
export const KNOWN_BACKENDS: Readonly<Record<string, string>> = Object.freeze({
  cuda: '@kvq/kernels-cuda',
  rocm: '@kvq/kernels-rocm',
  cpu: '@kvq/kernels-cpu',
});

/** Default candidate order (best first); the reference backend is always the last resort. */
export const DEFAULT_CANDIDATES: readonly string[] = Object.freeze(['cuda', 'rocm', 'cpu']);

/**
 * A backend candidate:
 * - a string: `'reference'`, a short name from {@link KNOWN_BACKENDS} (`'cpu'`), or a module specifier
 *   (`'@kvq/kernels-cpu'`, a path, a `file:` URL) whose module exports {@link BackendModule} `createBackend`
 *   (directly or on `default`);
 * - an object with a `load` factory, for callers that can import the package themselves
 *   (e.g. `{ name: 'cpu', load: () => import('@kvq/kernels-cpu') }`). `load` may return the module or a backend.
 */
export type BackendCandidate =
  | string
  | {
      readonly name: string;
      readonly load: () => unknown;
    };

/** Options of {@link loadBackend}. */
export interface LoadBackendOptions {
  /**
   * Hard override (default `process.env.KVQ_BACKEND`): when set (and not `''` / `'auto'`), ONLY this candidate is
   * tried, and failure throws `BACKEND_UNAVAILABLE` listing the reasons. A name, module specifier or path.
   */
  readonly env?: string | undefined;
  /**
   * Hard requirement (a library's `backend: 'cpu'`, a CLI's `--backend cpu`): ONLY this candidate is tried, and
   * failure throws `BACKEND_UNAVAILABLE` listing the reason; never a fallback. Takes precedence over `env`. A name
   * that matches a `candidates` entry (e.g. `'cpu'` and the factory `{ name: 'cpu', load }`) uses that entry.
   * `undefined`, `''` and `'auto'` mean no requirement.
   */
  readonly require?: BackendCandidate | undefined;
  /**
   * Soft preference: this candidate is tried first; if it fails, the others follow and the result carries a
   * {@link LoadedBackend.fallback} warning.
   */
  readonly prefer?: BackendCandidate | undefined;
  /** Native candidates, best first. Default {@link DEFAULT_CANDIDATES}. The reference backend is always appended. */
  readonly candidates?: readonly BackendCandidate[] | undefined;
  /** Passed to each module's `createBackend`. */
  readonly createOptions?: BackendCreateOptions | undefined;
  /**
   * Directories from which package names are resolved when this package cannot resolve them itself (pnpm
   * installs `@kvq/kernels-cpu` beside the app, not beside `@kvq/kernels`). Default `[process.cwd()]`.
   */
  readonly resolveFrom?: readonly string[] | undefined;
  /**
   * `'child'`: before importing a module candidate in-process, import it and create a backend in a child Node
   * process; a crash there (signal, abort, non-zero exit) rejects the candidate. Default `'none'`.
   */
  readonly probe?: 'none' | 'child' | undefined;
  /** Child-probe time limit in milliseconds. Default 30000. */
  readonly probeTimeoutMs?: number | undefined;
  /** Run the self-test (a few small ops against the reference) on each loaded candidate. Default `true`. */
  readonly verify?: boolean | undefined;
}

/** A candidate that was not chosen, and why. */
export interface RejectedBackend {
  /** Candidate name as given (short name, specifier, or factory name). */
  readonly name: string;
  /** Human-readable reason, e.g. `"not installed (cannot resolve @kvq/kernels-cuda)"`. */
  readonly reason: string;
  /** The underlying error, if any. */
  readonly cause?: unknown;
}

/** Result of {@link loadBackend}. */
export interface LoadedBackend {
  /** The chosen backend. */
  readonly backend: KernelBackend;
  /** Candidates tried before it, in order, with reasons. */
  readonly rejected: readonly RejectedBackend[];
  /**
   * Set when the result is a fallback the caller should tell the user about: the pure-TypeScript reference backend
   * was chosen because every native candidate was rejected, or a `prefer`red candidate was rejected. One line naming
   * the reasons and the fix (see {@link fallbackMessage}); `undefined` when nothing fell back.
   */
  readonly fallback?: string | undefined;
}

/** How to get the native CPU backend, for fallback messages. */
const CPU_FIX =
  'install the prebuilt @kvq/kernels-cpu platform package for this machine (an optional dependency of @kvq/kernels-cpu), ' +
  'or build from source with `pnpm --filter @kvq/kernels-cpu build:native`';

/**
 * The one-line warning for a fallback: what runs instead, why (every rejected candidate and its reason) and how to
 * fix it. `chosen` is the backend that runs; `wanted` names the preferred candidate when there was one.
 * @example
 * fallbackMessage('reference', [{ name: 'cpu', reason: 'no usable native addon [...]' }])
 * // "kvq: using the pure-TypeScript reference backend (much slower than the native kernels) because cpu: no usable
 * //  native addon [...]. Fix: ... Choose backend 'reference' (KVQ_BACKEND=reference) on purpose to silence this."
 */
export function fallbackMessage(chosen: string, rejected: readonly RejectedBackend[], wanted?: string): string {
  const why = rejected.length > 0 ? rejected.map((r) => `${r.name}: ${r.reason}`).join('; ') : 'no native candidate was given';
  if (chosen === 'reference') {
    const fixed = rejected.some((r) => /\bfix\b|build:native|npm install|install it/i.test(r.reason));
    return (
      `kvq: using the pure-TypeScript reference backend (much slower than the native kernels) because ${why}.` +
      `${fixed ? '' : ` Fix: ${CPU_FIX}.`} Choose backend 'reference' (KVQ_BACKEND=reference) on purpose to silence this.`
    );
  }
  return `kvq: using the ${chosen} backend instead of the requested ${wanted ?? 'one'} because ${why}. Require it (backend '${wanted ?? '<name>'}' / KVQ_BACKEND) to make this an error instead.`;
}

class Rejection extends Error {
  constructor(
    message: string,
    readonly detail?: unknown,
  ) {
    super(message);
  }
}

function candidateName(c: BackendCandidate): string {
  return typeof c === 'string' ? c : c.name;
}

function messageOf(e: unknown): string {
  if (e instanceof Error) return e.message.split('\n')[0] ?? e.message;
  return String(e);
}

function isNotFound(e: unknown, specifier: string): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND' || code === 'ERR_LOAD_URL') return true;
  const msg = messageOf(e);
  return (
    (msg.includes('Cannot find') || msg.includes('Failed to load url') || msg.includes('Failed to resolve')) &&
    msg.includes(specifier)
  );
}

/** Pick the ESM entry of a package.json `exports` / `module` / `main` (runtime conditions only). */
function packageEntry(pkg: Record<string, unknown>): string | undefined {
  const pick = (v: unknown): string | undefined => {
    if (typeof v === 'string') return v;
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const o = v as Record<string, unknown>;
      for (const cond of ['node', 'import', 'default']) {
        const r = pick(o[cond]);
        if (r) return r;
      }
    }
    return undefined;
  };
  const exp = pkg.exports;
  if (exp !== undefined) {
    if (typeof exp === 'string') return exp;
    if (exp && typeof exp === 'object') {
      const o = exp as Record<string, unknown>;
      const hasDot = Object.keys(o).some((k) => k.startsWith('.'));
      return pick(hasDot ? o['.'] : o);
    }
  }
  if (typeof pkg.module === 'string') return pkg.module;
  if (typeof pkg.main === 'string') return pkg.main;
  return 'index.js';
}

/**
 * Resolve a bare package name to a file URL from the given directories, or `undefined`: walk Node's
 * `node_modules` lookup paths of each directory for `<name>/package.json` (this works even when the package's
 * `exports` hide `./package.json`), then take its ESM entry.
 */
function resolveFromDirs(specifier: string, dirs: readonly string[]): string | undefined {
  for (const dir of dirs) {
    const req = createRequire(join(resolvePath(dir), '__kvq_resolve__.js'));
    for (const base of req.resolve.paths(specifier) ?? []) {
      const pkgJsonPath = join(base, specifier, 'package.json');
      if (!existsSync(pkgJsonPath)) continue;
      try {
        const pkg = JSON.parse(readFileSync(pkgJsonPath, 'utf8')) as Record<string, unknown>;
        const entry = packageEntry(pkg);
        if (entry) return pathToFileURL(join(dirname(pkgJsonPath), entry)).href;
      } catch {
        // unreadable package.json: keep looking
      }
    }
  }
  return undefined;
}

/** Turn a path into a file URL; bare names stay as they are (and may need {@link resolveFromDirs}). */
function toImportable(specifier: string): { url: string; viaResolve: boolean } {
  if (specifier.startsWith('file:')) return { url: specifier, viaResolve: false };
  if (specifier.startsWith('.') || specifier.startsWith('/') || /^[A-Za-z]:[\\/]/.test(specifier)) {
    return { url: pathToFileURL(resolvePath(specifier)).href, viaResolve: false };
  }
  return { url: specifier, viaResolve: true };
}

async function importModule(specifier: string, dirs: readonly string[]): Promise<{ mod: unknown; url: string }> {
  const { url, viaResolve } = toImportable(specifier);
  try {
    return { mod: await import(url), url };
  } catch (e) {
    if (!viaResolve || !isNotFound(e, specifier)) throw new Rejection(`import failed: ${messageOf(e)}`, e);
  }
  const resolved = resolveFromDirs(specifier, dirs);
  if (!resolved) {
    throw new Rejection(`not installed (cannot resolve ${specifier} from @kvq/kernels or ${dirs.join(', ')})`);
  }
  try {
    return { mod: await import(resolved), url: resolved };
  } catch (e) {
    throw new Rejection(`import of ${resolved} failed: ${messageOf(e)}`, e);
  }
}

function probeUrlFor(specifier: string, dirs: readonly string[]): string | undefined {
  const { url, viaResolve } = toImportable(specifier);
  return viaResolve ? resolveFromDirs(specifier, dirs) : url;
}

const PROBE_MARK = 'KVQ_PROBE_ERROR: ';

/** Import the module and create a backend in a child Node process; reject on crash, timeout or failure. */
function childProbe(url: string, createOptions: BackendCreateOptions | undefined, timeoutMs: number): Promise<void> {
  const script = [
    `try {`,
    `const m = await import(${JSON.stringify(url)});`,
    `const create = typeof m.createBackend === 'function' ? m.createBackend : m.default?.createBackend;`,
    `if (typeof create !== 'function') throw new Error('module does not export createBackend()');`,
    `const b = await create(${JSON.stringify(createOptions ?? {})});`,
    `if (!b || typeof b.linear !== 'function') throw new Error('createBackend() did not return a backend');`,
    `const x = new Float32Array([1, 2]); const out = new Float32Array(1);`,
    `b.linear({ x, weight: { dtype: 'f32', data: new Float32Array([3, 4]), rows: 1, cols: 2 }, out, rows: 1 });`,
    `if (out[0] !== 11) throw new Error('linear smoke test gave ' + out[0] + ' instead of 11');`,
    `b.dispose?.();`,
    `} catch (e) { console.error('${PROBE_MARK}' + String(e && e.message || e).split('\\n')[0]); process.exit(2); }`,
  ].join('\n');
  return new Promise((resolveProbe, rejectProbe) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', script],
      { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1 << 20, env: { ...process.env, KVQ_BACKEND: '' } },
      (error, _stdout, stderr) => {
        if (!error) return resolveProbe();
        const err = error as NodeJS.ErrnoException & { signal?: string | null; killed?: boolean; code?: unknown };
        const text = String(stderr);
        const marked = text.split('\n').find((l) => l.startsWith(PROBE_MARK));
        const tail = marked ? marked.slice(PROBE_MARK.length) : text.trim().split('\n').slice(-3).join(' | ');
        const how =
          err.killed && err.signal === 'SIGKILL'
            ? `timed out after ${timeoutMs} ms`
            : err.signal
              ? `crashed with ${err.signal}`
              : `exited with code ${String(err.code)}`;
        rejectProbe(new Rejection(`child-process probe ${how}${tail ? `: ${tail}` : ''}`, error));
      },
    );
  });
}

function checkShape(b: unknown): KernelBackend {
  if (!b || typeof b !== 'object') throw new Rejection(`createBackend() returned ${b === null ? 'null' : typeof b}`);
  const backend = b as KernelBackend;
  if (typeof backend.name !== 'string' || backend.name === '') throw new Rejection('backend has no name');
  if (!backend.info || typeof backend.info !== 'object') throw new Rejection('backend has no info');
  const missing = KERNEL_OPS.filter((op) => typeof (backend as unknown as Record<string, unknown>)[op] !== 'function');
  if (missing.length > 0) throw new Rejection(`backend lacks ops: ${missing.join(', ')}`);
  return backend;
}

async function fromModule(mod: unknown, createOptions: BackendCreateOptions | undefined): Promise<KernelBackend> {
  const m = mod as Partial<BackendModule> & { default?: Partial<BackendModule> };
  const create = typeof m?.createBackend === 'function' ? m.createBackend : m?.default?.createBackend;
  if (typeof create !== 'function') {
    // A factory may also hand back a ready backend.
    if (mod && typeof mod === 'object' && typeof (mod as { linear?: unknown }).linear === 'function') return checkShape(mod);
    throw new Rejection('module does not export createBackend()');
  }
  let b: unknown;
  try {
    b = await create(createOptions);
  } catch (e) {
    throw new Rejection(`createBackend() failed: ${messageOf(e)}`, e);
  }
  return checkShape(b);
}

async function tryCandidate(c: BackendCandidate, opts: LoadBackendOptions): Promise<KernelBackend> {
  const dirs = opts.resolveFrom ?? [process.cwd()];
  if (typeof c !== 'string') {
    let loaded: unknown;
    try {
      loaded = await c.load();
    } catch (e) {
      throw new Rejection(`load() failed: ${messageOf(e)}`, e);
    }
    return fromModule(loaded, opts.createOptions);
  }
  if (c === 'reference') return createReferenceBackend();
  const specifier = Object.hasOwn(KNOWN_BACKENDS, c) ? KNOWN_BACKENDS[c]! : c;
  if (opts.probe === 'child') {
    const url = probeUrlFor(specifier, dirs);
    if (!url) throw new Rejection(`not installed (cannot resolve ${specifier} from ${dirs.join(', ')})`);
    await childProbe(url, opts.createOptions, opts.probeTimeoutMs ?? 30_000);
  }
  const { mod } = await importModule(specifier, dirs);
  return fromModule(mod, opts.createOptions);
}

async function attempt(c: BackendCandidate, opts: LoadBackendOptions): Promise<KernelBackend> {
  let backend: KernelBackend;
  try {
    backend = await tryCandidate(c, opts);
  } catch (e) {
    if (e instanceof Rejection) throw e;
    throw new Rejection(messageOf(e), e);
  }
  if (opts.verify !== false && backend.name !== 'reference') {
    try {
      selfTest(backend);
    } catch (e) {
      try {
        backend.dispose?.();
      } catch {
        // ignore: the backend is being rejected anyway
      }
      throw new Rejection(`self-test failed: ${messageOf(e)}`, e);
    }
  }
  return backend;
}

function isUnset(v: BackendCandidate | undefined): boolean {
  return v === undefined || (typeof v === 'string' && (v.trim() === '' || v.trim() === 'auto'));
}

/** A named candidate from `candidates` when `c` is a plain name of one of them (`'cpu'` → the caller's factory). */
function byName(c: BackendCandidate, candidates: readonly BackendCandidate[] | undefined): BackendCandidate {
  if (typeof c !== 'string') return c;
  const name = c.trim();
  return candidates?.find((x) => typeof x !== 'string' && x.name === name) ?? name;
}

async function required(c: BackendCandidate, what: string, argument: string, undo: string, options: LoadBackendOptions): Promise<LoadedBackend> {
  try {
    return { backend: await attempt(byName(c, options.candidates), options), rejected: [] };
  } catch (e) {
    const r = e as Rejection;
    throw new KernelError('BACKEND_UNAVAILABLE', `${what} was requested but cannot be used: ${r.message}. ${undo}`, {
      argument,
      cause: r.detail ?? r,
    });
  }
}

/**
 * Load the best available backend.
 *
 * Order: `require` if set, alone and failing loudly; else the `env` override (default `process.env.KVQ_BACKEND`)
 * if set, alone and failing loudly; otherwise `prefer`, then `candidates` (default {@link DEFAULT_CANDIDATES}),
 * then `'reference'`, which always loads. Every rejected candidate is reported with its reason, and a fallback
 * (to the reference backend, or away from `prefer`) comes with a {@link LoadedBackend.fallback} message; a bad
 * candidate never throws out of this function.
 *
 * @throws KernelError `BACKEND_UNAVAILABLE` when `require` or the env override names a backend that cannot load
 *   (the message lists the reason; `cause` holds the underlying error; `argument` is `'backend'` or `'KVQ_BACKEND'`).
 */
export async function loadBackend(options: LoadBackendOptions = {}): Promise<LoadedBackend> {
  if (!isUnset(options.require)) {
    const c = options.require!;
    return required(c, `backend ${JSON.stringify(candidateName(c))}`, 'backend', "Choose another backend, or 'auto' to use the best available one.", options);
  }
  const env = 'env' in options ? options.env : process.env.KVQ_BACKEND;
  const override = env?.trim();
  if (override && override !== 'auto') {
    return required(
      override,
      `KVQ_BACKEND=${override}`,
      'KVQ_BACKEND',
      "Unset KVQ_BACKEND (or set it to 'auto' or 'reference') to fall back automatically.",
      options,
    );
  }
  const list: BackendCandidate[] = [];
  if (options.prefer !== undefined && !isUnset(options.prefer)) list.push(byName(options.prefer, options.candidates));
  for (const c of options.candidates ?? DEFAULT_CANDIDATES) {
    if (!list.some((x) => candidateName(x) === candidateName(c))) list.push(c);
  }
  const wanted = list.length > 0 && options.prefer !== undefined && !isUnset(options.prefer) ? candidateName(list[0]!) : undefined;
  const rejected: RejectedBackend[] = [];
  for (const c of list) {
    if (c === 'reference') break;
    try {
      const backend = await attempt(c, options);
      const fellBack = wanted !== undefined && candidateName(c) !== wanted;
      return fellBack ? { backend, rejected, fallback: fallbackMessage(candidateName(c), rejected, wanted) } : { backend, rejected };
    } catch (e) {
      const r = e as Rejection;
      rejected.push(r.detail === undefined ? { name: candidateName(c), reason: r.message } : { name: candidateName(c), reason: r.message, cause: r.detail });
    }
  }
  // The reference backend by choice (first in the list), or with no native candidate at all, is no fallback.
  const chosenOnPurpose = list[0] === 'reference' || rejected.length === 0;
  return chosenOnPurpose
    ? { backend: createReferenceBackend(), rejected }
    : { backend: createReferenceBackend(), rejected, fallback: fallbackMessage('reference', rejected, wanted) };
}

/** One-line summary of a load result for logs, e.g. `"cpu (avx2, 8 threads); rejected: cuda: not installed"`. */
export function describeLoad(result: LoadedBackend): string {
  const { backend, rejected } = result;
  const head = `${backend.name} (${backend.info.simd}, ${backend.info.threads} thread${backend.info.threads === 1 ? '' : 's'})`;
  if (rejected.length === 0) return head;
  return `${head}; rejected: ${rejected.map((r) => `${r.name}: ${r.reason}`).join('; ')}`;
}
