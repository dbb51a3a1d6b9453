// The MinGW-w64 build of the win32-x64-gnu binary (scripts/mingw-build.mjs) reads its targets and flags from
// binding.gyp: these tests pin what it derives, without a cross compiler (the build itself and its run under
// wine are scripts/prebuild.mjs --platform win32-x64-gnu and scripts/wine-win64-check.mjs).
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

interface Unit {
  readonly target: string;
  readonly src: string;
  readonly obj: string;
  readonly argv: readonly string[];
}
interface MingwBuildModule {
  mingwPlan(objDir: string): { units: Unit[]; def: string };
  readBindingGyp(file?: string): unknown;
}
const { mingwPlan, readBindingGyp } = (await import(new URL('../scripts/mingw-build.mjs', import.meta.url).href)) as MingwBuildModule;

const pkgDir = fileURLToPath(new URL('..', import.meta.url));
const plan = mingwPlan('/tmp/kvq-mingw-plan-obj');
const unit = (file: string): Unit => {
  const u = plan.units.find((x) => x.src === `csrc/${file}`);
  if (!u) throw new Error(`no unit for csrc/${file}`);
  return u;
};
const isaFlags = (u: Unit): string[] => u.argv.filter((a) => /^-m(avx|fma|f16c)/.test(a));

describe('MinGW-w64 build plan (win32-x64-gnu)', () => {
  it('compiles every C++ source in csrc/ exactly once (but the AArch64 NEON kernels)', () => {
    const neon = ['kernels_neon.cc', 'kernels_neon_dotprod.cc'];
    for (const f of neon) expect(plan.units.some((u) => u.src === `csrc/${f}`)).toBe(false);
    const sources = readdirSync(join(pkgDir, 'csrc'))
      .filter((f) => f.endsWith('.cc') && !neon.includes(f))
      .map((f) => `csrc/${f}`)
      .sort();
    expect(plan.units.map((u) => u.src).sort()).toEqual(sources);
    expect(new Set(plan.units.map((u) => u.obj)).size).toBe(plan.units.length);
  });

  it('gives each ISA its -m flags and the baseline units none', () => {
    expect(isaFlags(unit('kernels_avx512.cc'))).toEqual(expect.arrayContaining(['-mavx512f', '-mavx512bw', '-mavx512vl', '-mavx512dq', '-mavx512vbmi', '-mavx512vnni', '-mavx2', '-mfma', '-mf16c']));
    expect(isaFlags(unit('kernels_avx2.cc')).sort()).toEqual(['-mavx2', '-mf16c', '-mfma']);
    for (const f of ['addon.cc', 'threadpool.cc', 'kernels_scalar.cc']) expect(isaFlags(unit(f))).toEqual([]);
  });

  it('keeps the release flags of binding.gyp, assembles unaligned vector moves, drops -fPIC', () => {
    for (const u of plan.units) {
      expect(u.argv).toEqual(expect.arrayContaining(['-std=c++17', '-O3', '-ffp-contract=off', '-Wa,-muse-unaligned-vector-move', '-c']));
      expect(u.argv).not.toContain('-fPIC');
      expect(u.argv.some((a) => a.startsWith('-march'))).toBe(false);
    }
    const addon = unit('addon.cc').argv;
    expect(addon).toEqual(expect.arrayContaining(['-DNAPI_VERSION=8', '-DBUILDING_NODE_EXTENSION', '-DNODE_GYP_MODULE_NAME=kvq_cpu', '-fexceptions']));
  });

  it('finds the headers: node-addon-api, the shared kernel headers, node-api-headers; and the N-API .def', () => {
    const includes = unit('addon.cc')
      .argv.filter((a) => a.startsWith('-I'))
      .map((a) => a.slice(2));
    for (const d of includes) expect(existsSync(d), d).toBe(true);
    const has = (file: string) => includes.some((d) => existsSync(join(d, file)));
    expect(has('napi.h')).toBe(true);
    expect(has('node_api.h')).toBe(true);
    expect(has('fp8.h')).toBe(true);
    const def = readFileSync(plan.def, 'utf8');
    expect(def).toMatch(/^NAME NODE\.EXE/m);
    expect(def).toMatch(/^napi_create_function$/m);
    expect(def).toMatch(/^napi_get_typedarray_info$/m);
  });

  it('rejects a binding.gyp it cannot read, naming the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvq-gyp-'));
    try {
      const file = join(dir, 'binding.gyp');
      writeFileSync(file, '{ "targets": [ { "target_name": "x" } ], # trailing comment\n}\n');
      expect(() => readBindingGyp(file)).toThrow(/binding\.gyp: cannot read it as data for the MinGW build .*comments on their own lines/);
      writeFileSync(file, '# a comment\n{ "targets": [ { "target_name": "x", }, ], }\n');
      expect(readBindingGyp(file)).toEqual({ targets: [{ target_name: 'x' }] });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
