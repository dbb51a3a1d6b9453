import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root above `from` (the folder holding pnpm-workspace.yaml), or undefined outside a checkout. */
export function findRepoRoot(from: string = process.cwd()): string | undefined {
  let dir = resolve(from);
  for (;;) {
    if (existsSync(join(dir, 'pnpm-workspace.yaml'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

/**
 * Path of a file under the shared data folder (`KVQ_SHARED_DIR`, else `../shared` beside the repository root), or
 * undefined when it is absent.
 */
export function sharedFile(relativePath: string): string | undefined {
  const root = findRepoRoot() ?? findRepoRoot(dirname(fileURLToPath(import.meta.url)));
  const dir = process.env.KVQ_SHARED_DIR ? resolve(process.env.KVQ_SHARED_DIR) : root ? resolve(root, '..', 'shared') : undefined;
  const path = dir ? join(dir, relativePath) : undefined;
  return path && existsSync(path) ? path : undefined;
}
