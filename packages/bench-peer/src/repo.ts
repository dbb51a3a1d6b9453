import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

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
