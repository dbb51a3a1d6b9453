// @ts-check
import { defineConfig } from 'vitest/config';

/**
 * Shared vitest configuration.
 * - Sibling packages resolve to their TypeScript source (`@kvq/source` export condition),
 *   so tests never wait for builds.
 * - `KVQ_TEST_SLOW=1` includes suites tagged slow (files named `*.slow.test.ts`).
 * @param {{ include?: string[], exclude?: string[], testTimeout?: number }} [options]
 */
export function kvqVitest(options = {}) {
  return defineConfig({
    resolve: { conditions: ['@kvq/source', 'import', 'module', 'node', 'default'] },
    ssr: { resolve: { conditions: ['@kvq/source', 'import', 'node', 'default'] } },
    test: {
      include: options.include ?? ['src/**/*.test.ts'],
      exclude: options.exclude ?? ['**/node_modules/**', '**/dist/**'],
      testTimeout: options.testTimeout ?? 60_000,
      hookTimeout: 60_000,
      pool: 'forks',
    },
  });
}
