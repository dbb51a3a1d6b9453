import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const warned = new Set<string>();

/** Absolute path of the repository root (the folder holding pnpm-workspace.yaml). */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'pnpm-workspace.yaml'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('kvq test-utils: repository root not found');
    dir = parent;
  }
}

/**
 * Absolute path of `../shared` beside the repository (or `KVQ_SHARED_DIR`), or `undefined` when absent.
 * A user's fresh clone has no shared folder: tests that need it must skip, and say so.
 */
export function sharedDir(): string | undefined {
  const fromEnv = process.env.KVQ_SHARED_DIR;
  const dir = fromEnv ? resolve(fromEnv) : resolve(repoRoot(), '..', 'shared');
  return existsSync(dir) ? dir : undefined;
}

/**
 * Path of a file under `../shared`, or `undefined` (with a one-time warning naming the file) when missing.
 * Use with `describe.skipIf(!path)`.
 */
export function sharedFile(relativePath: string): string | undefined {
  const dir = sharedDir();
  const path = dir ? join(dir, relativePath) : undefined;
  if (path && existsSync(path)) return path;
  if (!warned.has(relativePath)) {
    warned.add(relativePath);
    console.warn(`[kvq tests] skipping: ../shared/${relativePath} is absent (set KVQ_SHARED_DIR to run these tests)`);
  }
  return undefined;
}

/** Small, fast, seeded PRNG (mulberry32) for reproducible test data. Returns floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard-normal samples from a seeded PRNG (Box-Muller). */
export function seededNormal(seed: number): () => number {
  const u = seededRandom(seed);
  return () => {
    const a = Math.max(u(), 1e-12);
    return Math.sqrt(-2 * Math.log(a)) * Math.cos(2 * Math.PI * u());
  };
}
