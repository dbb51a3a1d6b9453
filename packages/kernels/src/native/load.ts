/**
 * Loading a native addon without ever taking the process down, for every native backend: each candidate path is
 * `require`d inside try/catch, its ABI (and the backend's own checks) verified, and every failure recorded, so the
 * caller can report "unavailable: why" and fall back. The backends decide the candidates (env override, local
 * build, platform package) and the fix-it hint; this module walks them.
 * @module
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

/** One place an addon may be. */
export interface NativeCandidate<O extends string = string> {
  /** Absolute path of a `.node` file (or, for a package that is not installed, `<package>/<file>.node`). */
  readonly path: string;
  /** Where the candidate comes from (e.g. `'local build'`), shown before the path in reasons. */
  readonly origin?: O | undefined;
  /** Set when the candidate is known to be unusable before loading (e.g. its package is not installed): why. */
  readonly unavailable?: string | undefined;
}

/** One failed candidate: its path, where it came from, and why it failed. */
export interface NativeTried<O extends string = string> {
  readonly path: string;
  readonly origin?: O | undefined;
  readonly error: string;
}

/** Outcome of {@link tryLoadNative}. */
export type NativeLoad<A, O extends string = string> =
  | { readonly ok: true; readonly addon: A; readonly path: string; readonly origin?: O | undefined }
  | { readonly ok: false; readonly reason: string; readonly tried: readonly NativeTried<O>[]; readonly cause?: unknown };

/** Options of {@link tryLoadNative}. */
export interface TryLoadNativeOptions<A> {
  /** ABI the facade speaks; a module whose `abi` differs is a stale or foreign build. */
  readonly abi: number;
  /** Further check of a loaded module (e.g. its GPU vendor): a reason to reject it, or `undefined` to accept. */
  readonly accept?: ((addon: A) => string | undefined) | undefined;
  /** How to get a working addon, appended to the failure reason. */
  readonly hint: string;
  /** `require` used to load candidates. Default: this module's. */
  readonly requireFn?: NodeJS.Require | undefined;
}

/** The first line of an error's message (native loader errors can be long). */
export function firstLine(e: unknown): string {
  return e instanceof Error ? (e.message.split('\n')[0] ?? e.message) : String(e);
}

/**
 * Try `candidates` in order (uncached): the first that exists, loads, reports `abi` and passes `accept` wins.
 * Never throws. The failure reason lists every candidate tried, as `[<origin> <path> (<why>); ...]`, then `hint`.
 */
export function tryLoadNative<A, O extends string = string>(
  candidates: readonly (string | NativeCandidate<O>)[],
  options: TryLoadNativeOptions<A>,
): NativeLoad<A, O> {
  const requireFn = options.requireFn ?? createRequire(import.meta.url);
  const tried: NativeTried<O>[] = [];
  let lastCause: unknown;
  for (const c of candidates) {
    const { path, origin, unavailable } = typeof c === 'string' ? { path: c, origin: undefined, unavailable: undefined } : c;
    const fail = (error: string): void => {
      tried.push(origin === undefined ? { path, error } : { path, origin, error });
    };
    if (unavailable !== undefined) {
      fail(unavailable);
      continue;
    }
    if (!existsSync(path)) {
      fail('not found');
      continue;
    }
    try {
      const addon = requireFn(path) as A;
      const abi = (addon as { abi?: unknown } | null)?.abi;
      if (addon === null || typeof addon !== 'object' || abi !== options.abi) {
        fail(`stale or foreign build: ABI ${String(abi)}, this package needs ${options.abi}`);
        continue;
      }
      const rejected = options.accept?.(addon);
      if (rejected !== undefined) {
        fail(rejected);
        continue;
      }
      return { ok: true, addon, path, ...(origin === undefined ? {} : { origin }) };
    } catch (e) {
      lastCause = e;
      fail(firstLine(e));
    }
  }
  return { ok: false, reason: notLoadedReason(tried, options.hint), tried, cause: lastCause };
}

/** The reason no candidate loaded: `no usable native addon [<origin> <path> (<why>); ...]. <hint>`. */
export function notLoadedReason(tried: readonly NativeTried[], hint: string): string {
  const list = tried.map((t) => `${t.origin === undefined ? '' : `${t.origin} `}${t.path} (${t.error})`).join('; ');
  return `no usable native addon [${list}]. ${hint}`;
}
