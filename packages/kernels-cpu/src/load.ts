/**
 * Loading the native addon without ever taking the process down: each candidate path is `require`d inside
 * try/catch (via `createRequire`), its ABI checked, and every failure recorded, so the caller can report
 * "unavailable: why" and fall back.
 *
 * Cascade (first that loads wins; the sharp / napi-rs order):
 * 1. `KVQ_CPU_ADDON`: an explicit path;
 * 2. a local build from source, `build/Release/kvq_cpu.node` then `build/Debug/kvq_cpu.node` (relative to this
 *    package): someone built it on purpose;
 * 3. the prebuilt platform package for this process, `@kvq/kernels-cpu-<triple>/kvq_cpu.node`
 *    (see `platform.ts`; an optional dependency, so only the matching one is installed).
 * @module
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NATIVE_ABI, tryLoadNative } from '@kvq/kernels/native';
import type { NativeAddon } from './addon-types.js';
import { currentTarget, platformPackage, targetTriple, type PlatformPackage, type ProcessTarget } from './platform.js';

/** Where a candidate comes from (reported in `tried`). */
type AddonOrigin = 'KVQ_CPU_ADDON' | 'local build' | 'platform package' | 'path';

/** One place the addon may be. */
export interface AddonCandidate {
  /** Absolute path of a `kvq_cpu.node`, or for a platform package that is not installed `<package>/kvq_cpu.node`. */
  readonly path: string;
  /** Where the candidate comes from. */
  readonly origin: AddonOrigin;
  /** Set when the candidate is known to be unusable before loading (e.g. its package is not installed): why. */
  readonly unavailable?: string;
}

/** One failed candidate: its path, where it came from, and why it failed. */
interface TriedCandidate {
  readonly path: string;
  readonly origin: AddonOrigin;
  readonly error: string;
}

/** Outcome of {@link loadAddon}. `origin` says which step of the cascade won. */
export type AddonLoad =
  | { readonly ok: true; readonly addon: NativeAddon; readonly path: string; readonly origin: AddonOrigin }
  | { readonly ok: false; readonly reason: string; readonly tried: readonly TriedCandidate[]; readonly cause?: unknown };

/** Finds an installed package's `package.json` (absolute path), or `undefined` when the package is not installed. */
type PackageResolver = (name: string) => string | undefined;

const req = createRequire(import.meta.url);

function resolveInstalled(name: string): string | undefined {
  try {
    return req.resolve(`${name}/package.json`);
  } catch {
    return undefined;
  }
}

/** Options of {@link addonCandidates}: every input is injectable for tests. */
export interface CandidateOptions {
  /** Environment (for `KVQ_CPU_ADDON`); default `process.env`. */
  readonly env?: NodeJS.ProcessEnv;
  /** Platform, arch and libc that select the platform package; default this process's. */
  readonly target?: ProcessTarget;
  /** Package lookup; default `require.resolve('<name>/package.json')` from this package. */
  readonly resolvePackage?: PackageResolver;
}

/**
 * Candidate locations of the addon, in cascade order: `KVQ_CPU_ADDON` (when set), the two local builds, then the
 * platform package for `target` (omitted when no package is published for it; {@link platformPackage} says why).
 */
export function addonCandidates(o: CandidateOptions = {}): AddonCandidate[] {
  const env = o.env ?? process.env;
  const out: AddonCandidate[] = [];
  if (env.KVQ_CPU_ADDON) out.push({ path: env.KVQ_CPU_ADDON, origin: 'KVQ_CPU_ADDON' });
  // src/ and dist/ are both one level below the package root.
  out.push({ path: fileURLToPath(new URL('../build/Release/kvq_cpu.node', import.meta.url)), origin: 'local build' });
  out.push({ path: fileURLToPath(new URL('../build/Debug/kvq_cpu.node', import.meta.url)), origin: 'local build' });
  const pkg = platformPackage(o.target ?? currentTarget());
  if (pkg.supported) {
    const pkgJson = (o.resolvePackage ?? resolveInstalled)(pkg.name);
    out.push(
      pkgJson === undefined
        ? { path: `${pkg.name}/kvq_cpu.node`, origin: 'platform package', unavailable: `package ${pkg.name} is not installed` }
        : { path: join(dirname(pkgJson), 'kvq_cpu.node'), origin: 'platform package' },
    );
  }
  return out;
}

/** How to get a working addon on `target`: the platform package when one is published, else a source build. */
export function fixHint(target: ProcessTarget = currentTarget()): string {
  const pkg: PlatformPackage = platformPackage(target);
  const build =
    'build from source with `pnpm --filter @kvq/kernels-cpu build:native` (needs python3, make, a C++17 compiler and Node headers), or point KVQ_CPU_ADDON at a kvq_cpu.node';
  if (!pkg.supported) return `${pkg.reason}: ${build}`;
  return (
    `this platform (${targetTriple(target)}) expects the prebuilt package ${pkg.name}: install it (\`npm install ${pkg.name}\`; ` +
    'it is an optional dependency of @kvq/kernels-cpu, so installs with --omit=optional or a lockfile made on another ' +
    `platform leave it out), or ${build}`
  );
}

/**
 * Try `candidates` in order (uncached): the first that exists, loads and has the right ABI wins. Never throws.
 * Plain strings are paths (origin `'path'`). `requireFn` defaults to this module's `require`; `target` (default
 * this process) only shapes the fix-it hint of the failure reason.
 */
export function tryLoadAddon(
  candidates: readonly (string | AddonCandidate)[],
  requireFn: NodeJS.Require = req,
  target?: ProcessTarget,
): AddonLoad {
  const list = candidates.map((c): AddonCandidate => (typeof c === 'string' ? { path: c, origin: 'path' } : c));
  return tryLoadNative<NativeAddon, AddonOrigin>(list, { abi: NATIVE_ABI, hint: fixHint(target), requireFn }) as AddonLoad;
}

/**
 * Load the addon once from {@link addonCandidates} (the result, success or failure, is cached for the process).
 * Never throws: a missing file, a missing platform package, a binary for another platform, a stale ABI or a
 * throwing initializer all end up in `reason`.
 */
export function loadAddon(): AddonLoad {
  cached ??= tryLoadAddon(addonCandidates());
  return cached;
}
let cached: AddonLoad | undefined;
