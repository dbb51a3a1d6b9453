/**
 * The layering of the root README, enforced: the repository's own imports pass the dependency-cruiser rules of
 * `dependency-cruiser.cjs` (layers in `layers.cjs`), and imports planted in a scratch tree that breaks each rule
 * (upward, sideways, a test-only package at run time, a relative path into another package, a deep import) are
 * each reported by the rule that names it.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cruise, type ICruiseOptions, type ICruiseResult } from 'dependency-cruiser';
import { afterAll, describe, expect, it } from 'vitest';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..', '..');
const config = createRequire(import.meta.url)('../dependency-cruiser.cjs') as {
  forbidden: NonNullable<ICruiseOptions['ruleSet']>['forbidden'];
  options: ICruiseOptions;
};

async function run(baseDir: string, dirs: string[]): Promise<ICruiseResult> {
  const out = await cruise(dirs, { ...config.options, baseDir, validate: true, ruleSet: { forbidden: config.forbidden } });
  return out.output as ICruiseResult;
}

/** `rule: from -> to` for every violation. */
const violations = (r: ICruiseResult): string[] =>
  r.summary.violations.map((v) => `${v.rule.name}: ${v.from} -> ${v.to}`);

describe('the repository', () => {
  it('keeps the layering of the root README (no upward, sideways, deep or relative cross-package import, no cycle)', async () => {
    const r = await run(root, ['packages', 'apps', 'tooling']);
    expect(violations(r)).toEqual([]);
    // The cruise really resolved workspace imports to the packages' sources (a rule set that saw nothing would pass).
    expect(r.summary.totalCruised).toBeGreaterThan(200);
    const llm = r.modules.find((m) => m.source === 'packages/engine/src/llm/llm.ts');
    expect(llm?.dependencies.find((d) => d.module === '@kvq/kernels')?.resolved).toBe('packages/kernels/src/index.ts');
  }, 120_000);
});

describe('planted violations', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'kvq-boundaries-'));
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));
  const plant = (path: string, text: string): void => {
    mkdirSync(dirname(join(scratch, path)), { recursive: true });
    writeFileSync(join(scratch, path), text);
  };
  plant('packages/cache/src/upward.ts', "import { LLM } from '@kvq/engine';\nexport const x = LLM;\n");
  plant('packages/kernels-cpu/src/sideways.ts', "import { createBackend } from '@kvq/kernels-cuda';\nexport const y = createBackend;\n");
  plant('packages/engine/src/runtime-fixture.ts', "import { fixturePath } from '@kvq/fixtures';\nexport const z = fixturePath;\n");
  plant('packages/engine/src/ok.test.ts', "import { fixturePath } from '@kvq/fixtures';\nexport const t = fixturePath;\n");
  plant('packages/kernels/src/index.ts', 'export const k = 1;\n');
  plant('packages/fp8/src/relative.ts', "import { k } from '../../kernels/src/index.js';\nexport const r = k;\n");
  plant('apps/server/src/deep.ts', "import { x } from '@kvq/engine/src/llm/llm.js';\nexport const d = x;\n");

  it('each is reported by the rule that names it', async () => {
    const got = violations(await run(scratch, ['packages', 'apps']));
    expect(got).toContain('layer-cache: packages/cache/src/upward.ts -> @kvq/engine');
    expect(got).toContain('layer-kernels-cpu: packages/kernels-cpu/src/sideways.ts -> @kvq/kernels-cuda');
    expect(got).toContain('layer-engine: packages/engine/src/runtime-fixture.ts -> @kvq/fixtures');
    expect(got).toContain('layer-fp8: packages/fp8/src/relative.ts -> packages/kernels/src/index.ts');
    expect(got).toContain('no-relative-cross-package: packages/fp8/src/relative.ts -> packages/kernels/src/index.ts');
    expect(got).toContain('no-deep-imports: apps/server/src/deep.ts -> @kvq/engine/src/llm/llm.js');
    // A test may import the test-only packages: only "unresolvable" (the scratch tree has no node_modules) is said.
    expect(got.filter((v) => v.includes('ok.test.ts'))).toEqual(['not-to-unresolvable: packages/engine/src/ok.test.ts -> @kvq/fixtures']);
  }, 60_000);
});
