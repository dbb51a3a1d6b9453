// scripts/isa-units.mjs, the check prebuild.mjs runs on every platform build: an ISA-flagged object may export only
// its table function. Here on two small objects compiled with this machine's g++ (one clean, one with the kind of
// stray symbol that makes run-time dispatch unsafe), and on the objects of this checkout's native build if present.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

interface IsaUnitsModule {
  checkIsaUnits(buildDir: string, nm: string): { checked: string[]; problems: string[] };
}
const { checkIsaUnits } = (await import(new URL('../scripts/isa-units.mjs', import.meta.url).href)) as IsaUnitsModule;

const pkgDir = fileURLToPath(new URL('..', import.meta.url));
const hasTools = spawnSync('g++', ['--version']).status === 0 && spawnSync('nm', ['--version']).status === 0;
const dir = mkdtempSync(join(tmpdir(), 'kvq-isa-units-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Compiles `source` to <sub>/<name>.o under the temporary folder. */
function compile(sub: string, name: string, source: string): void {
  mkdirSync(join(dir, sub), { recursive: true });
  const src = join(dir, sub, `${name}.cc`);
  writeFileSync(src, source);
  const r = spawnSync('g++', ['-std=c++17', '-O2', '-c', src, '-o', join(dir, sub, `${name}.o`)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`g++ failed: ${r.stderr}`);
}

const TABLE = 'namespace kvq { struct KernelTable; namespace avx2 { static int k = 1; } const KernelTable* kernels_avx2() { return (const KernelTable*)&avx2::k; } }\n';

describe.skipIf(!hasTools)('ISA units export only their table function', () => {
  it('accepts an object whose only global is kvq::kernels_avx2()', () => {
    // Static helpers (local symbols) are fine: nothing outside the unit can bind to them.
    const local = 'namespace kvq { namespace avx2 { __attribute__((noinline)) static int helper(int x) { return x * 3; } static int k2 = helper(2); } }\n';
    compile('clean', 'kernels_avx2', TABLE + local);
    const r = checkIsaUnits(join(dir, 'clean'), 'nm');
    expect(r.checked.map((p) => p.split('/').pop())).toEqual(['kernels_avx2.o']);
    expect(r.problems).toEqual([]);
  });

  it('reports an inline function and a template instantiation the linker could share', () => {
    const stray =
      'namespace kvq { __attribute__((noinline)) inline int shared_helper(int x) { return x + 1; }\n' +
      'template <class T> __attribute__((noinline)) T twice(T x) { return x + x; }\n' +
      'int use(int x) { return shared_helper(x) + twice(x); } }\n';
    compile('stray', 'kernels_avx2', TABLE + stray);
    // Objects of other units (here: the baseline scalar one) are not the rule's business.
    compile('stray', 'kernels_scalar', 'namespace kvq { int anything(int x) { return x; } }\n');
    const r = checkIsaUnits(join(dir, 'stray'), 'nm');
    expect(r.checked.map((p) => p.split('/').pop())).toEqual(['kernels_avx2.o']);
    expect(r.problems).toEqual(
      expect.arrayContaining([
        'kernels_avx2.o exports kvq::shared_helper(int)',
        'kernels_avx2.o exports int kvq::twice<int>(int)',
        'kernels_avx2.o exports kvq::use(int)',
      ]),
    );
    expect(r.problems.some((p) => p.includes('kernels_avx2()'))).toBe(false);
  });

  it.skipIf(!existsSync(join(pkgDir, 'build', 'Release', 'obj.target')))('holds for this checkout\'s native build', () => {
    const r = checkIsaUnits(join(pkgDir, 'build', 'Release', 'obj.target'), 'nm');
    expect(r.checked.length).toBeGreaterThan(0);
    expect(r.problems).toEqual([]);
  });
});
