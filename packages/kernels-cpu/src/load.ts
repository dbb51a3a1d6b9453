/**
 * Loading the native addon without ever taking the process down: each candidate path is `require`d inside
 * try/catch (via `createRequire`), its ABI checked, and every failure recorded, so the caller can report
 * "unavailable: why" and fall back.
 *
 * Cascade (first that loads wins): `KVQ_CPU_ADDON` (an explicit path), `build/Release/kvq_cpu.node`,
 * `build/Debug/kvq_cpu.node` (both relative to this package).
 * @module
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { ADDON_ABI, type NativeAddon } from './addon-types.js';

/** Outcome of {@link loadAddon}. */
export type AddonLoad =
  | { readonly ok: true; readonly addon: NativeAddon; readonly path: string }
  | { readonly ok: false; readonly reason: string; readonly tried: readonly { path: string; error: string }[]; readonly cause?: unknown };

let cached: AddonLoad | undefined;

/** Candidate paths of the addon, in order. */
export function addonCandidates(env: NodeJS.ProcessEnv = process.env): string[] {
  const out: string[] = [];
  if (env.KVQ_CPU_ADDON) out.push(env.KVQ_CPU_ADDON);
  // src/ and dist/ are both one level below the package root.
  out.push(fileURLToPath(new URL('../build/Release/kvq_cpu.node', import.meta.url)));
  out.push(fileURLToPath(new URL('../build/Debug/kvq_cpu.node', import.meta.url)));
  return out;
}

/**
 * Try `paths` in order (uncached): the first that exists, loads and has the right ABI wins. Never throws.
 * `requireFn` defaults to this module's `require`.
 */
export function tryLoadAddon(paths: readonly string[], requireFn: NodeJS.Require = createRequire(import.meta.url)): AddonLoad {
  const tried: { path: string; error: string }[] = [];
  let lastCause: unknown;
  for (const path of paths) {
    if (!existsSync(path)) {
      tried.push({ path, error: 'not found' });
      continue;
    }
    try {
      const addon = requireFn(path) as NativeAddon;
      if (addon === null || typeof addon !== 'object' || addon.abi !== ADDON_ABI) {
        tried.push({ path, error: `stale or foreign build: ABI ${String((addon as { abi?: unknown } | null)?.abi)}, this package needs ${ADDON_ABI}` });
        continue;
      }
      return { ok: true, addon, path };
    } catch (e) {
      lastCause = e;
      tried.push({ path, error: e instanceof Error ? (e.message.split('\n')[0] ?? e.message) : String(e) });
    }
  }
  const list = tried.map((t) => `${t.path} (${t.error})`).join('; ');
  return {
    ok: false,
    reason: `no usable native addon [${list}]. Build it with \`pnpm --filter @kvq/kernels-cpu build:native\` (needs python3, make, a C++17 compiler and Node headers), or point KVQ_CPU_ADDON at a kvq_cpu.node`,
    tried,
    cause: lastCause,
  };
}

/**
 * Load the addon once from {@link addonCandidates} (the result, success or failure, is cached for the process).
 * Never throws: a missing file, a binary for another platform, a stale ABI or a throwing initializer all end
 * up in `reason`.
 */
export function loadAddon(): AddonLoad {
  cached ??= tryLoadAddon(addonCandidates());
  return cached;
}
