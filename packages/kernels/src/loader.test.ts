import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KernelBackend, LinearArgs } from './contract.js';
import { KernelError } from './errors.js';
import { describeLoad, loadBackend, type BackendCandidate } from './loader.js';
import { createReferenceBackend } from './reference/backend.js';

const g = globalThis as { __kvqTestBackend?: KernelBackend };
let dir = '';

/** Write a fake backend package `name` under `dir/node_modules` with the given ESM source. */
function fakePackage(name: string, source: string, exportsField: unknown = { '.': { import: './index.js' } }): void {
  const pkgDir = join(dir, 'node_modules', ...name.split('/'));
  mkdirSync(pkgDir, { recursive: true });
  writeFileSync(join(pkgDir, 'package.json'), JSON.stringify({ name, version: '0.0.0', type: 'module', exports: exportsField }));
  writeFileSync(join(pkgDir, 'index.js'), source);
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'kvq-loader-'));
  fakePackage('@fake/good', 'export function createBackend() { return globalThis.__kvqTestBackend; }\n');
  fakePackage('@fake/nobinary', "export function createBackend() { throw new Error('no prebuilt binary for this platform (linux-x64, avx2)'); }\n");
  fakePackage('@fake/badimport', "throw new Error('undefined symbol: _ZN4kvq6linearEv');\n");
  fakePackage('@fake/noexport', 'export const x = 1;\n');
  fakePackage('@fake/crash', 'process.abort();\n');
  fakePackage('@fake/hang', 'await new Promise(() => setInterval(() => {}, 1000));\n');
  g.__kvqTestBackend = { ...createReferenceBackend(), name: 'fake-good', info: { description: 'fake', simd: 'avx2', threads: 4 } };
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  delete g.__kvqTestBackend;
});

const factory = (name: string, make: () => unknown): BackendCandidate => ({ name, load: () => ({ createBackend: make }) });

/** Why the CUDA backend cannot be used on a machine without a GPU: not installed, not built, or no device. */
const CUDA_UNUSABLE = /not installed \(cannot resolve @kvq\/kernels-cuda|kernels-cuda\/dist\/index\.js failed|unavailable|no usable CUDA device|not built/;

describe('loadBackend', () => {
  it('falls back to the reference, reporting why each default candidate was rejected', async () => {
    const r = await loadBackend({ env: '', candidates: ['cuda', '@fake/absent'], resolveFrom: [dir] });
    expect(r.backend.name).toBe('reference');
    expect(r.rejected.map((x) => x.name)).toEqual(['cuda', '@fake/absent']);
    // In a workspace @kvq/kernels-cuda may resolve (unbuilt, or built on a machine with no GPU): any of these.
    expect(r.rejected[0]!.reason).toMatch(CUDA_UNUSABLE);
    expect(describeLoad(r)).toMatch(/^reference \(none, 1 thread\); rejected: cuda: \S/);
  });

  it('loads a package by name from resolveFrom (the app directory) when it is not resolvable from here', async () => {
    const r = await loadBackend({ env: '', candidates: ['@fake/good'], resolveFrom: [dir] });
    expect(r.backend.name).toBe('fake-good');
    expect(r.rejected).toEqual([]);
  });

  it('loads a module by file URL or path', async () => {
    const file = join(dir, 'node_modules', '@fake', 'good', 'index.js');
    expect((await loadBackend({ env: '', candidates: [pathToFileURL(file).href] })).backend.name).toBe('fake-good');
    expect((await loadBackend({ env: '', candidates: [file] })).backend.name).toBe('fake-good');
  });

  it('rejects, with reasons, modules that throw on import, in createBackend, or export nothing useful', async () => {
    const r = await loadBackend({ env: '', candidates: ['@fake/badimport', '@fake/nobinary', '@fake/noexport'], resolveFrom: [dir] });
    expect(r.backend.name).toBe('reference');
    expect(r.rejected.map((x) => [x.name, x.reason])).toEqual([
      ['@fake/badimport', expect.stringContaining('undefined symbol: _ZN4kvq6linearEv')],
      ['@fake/nobinary', 'createBackend() failed: no prebuilt binary for this platform (linux-x64, avx2)'],
      ['@fake/noexport', 'module does not export createBackend()'],
    ]);
    expect(r.rejected[1]!.cause).toBeInstanceOf(Error);
  });

  it('rejects factories that throw, return non-backends, or lack ops', async () => {
    const incomplete = { ...createReferenceBackend(), name: 'incomplete' } as Partial<KernelBackend>;
    delete incomplete.pagedAttention;
    const r = await loadBackend({
      env: '',
      candidates: [
        { name: 'throws', load: () => Promise.reject(new Error('dlopen failed')) },
        factory('null', () => null),
        factory('incomplete', () => incomplete),
        factory('async-fail', () => Promise.reject(new Error('no AVX2 on this CPU'))),
      ],
    });
    expect(r.backend.name).toBe('reference');
    expect(r.rejected.map((x) => x.reason)).toEqual([
      'load() failed: dlopen failed',
      'createBackend() returned null',
      'backend lacks ops: pagedAttention',
      'createBackend() failed: no AVX2 on this CPU',
    ]);
  });

  it('rejects a backend that loads but computes wrong results (self-test), and disposes it', async () => {
    let disposed = 0;
    const wrong: KernelBackend = {
      ...createReferenceBackend(),
      name: 'wrong',
      linear: (a: LinearArgs) => {
        createReferenceBackend().linear(a);
        a.out[0] = a.out[0]! + 1e-3;
      },
      dispose: () => {
        disposed++;
      },
    };
    const r = await loadBackend({ env: '', candidates: [factory('wrong', () => wrong)] });
    expect(r.backend.name).toBe('reference');
    expect(r.rejected[0]!.reason).toMatch(/^self-test failed: linear: element 0 is/);
    expect(disposed).toBe(1);
    // verify: false skips the self-test.
    expect((await loadBackend({ env: '', verify: false, candidates: [factory('wrong', () => wrong)] })).backend.name).toBe('wrong');
  });

  it('accepts a factory that returns the backend directly, and honours prefer', async () => {
    const a = { ...createReferenceBackend(), name: 'a' };
    const b = { ...createReferenceBackend(), name: 'b' };
    const r = await loadBackend({ env: '', prefer: { name: 'b', load: () => b }, candidates: [{ name: 'a', load: () => a }] });
    expect(r.backend).toBe(b);
    const r2 = await loadBackend({ env: '', prefer: factory('broken', () => null), candidates: [{ name: 'a', load: () => a }] });
    expect(r2.backend).toBe(a);
    expect(r2.rejected.map((x) => x.name)).toEqual(['broken']);
  });

  it("'reference' in the candidate list stops the search there", async () => {
    const r = await loadBackend({ env: '', candidates: ['reference', factory('later', () => g.__kvqTestBackend)] });
    expect(r.backend.name).toBe('reference');
    expect(r.rejected).toEqual([]);
  });

  describe('fallback warning and required backends', () => {
    const failing = factory('cpu', () => {
      throw new Error('no usable native addon [/x/kvq_cpu.node (not found)]');
    });

    it('says why when only the reference backend is left, naming the rejected candidate and its reason', async () => {
      const r = await loadBackend({ env: '', candidates: [failing] });
      expect(r.backend.name).toBe('reference');
      expect(r.fallback).toMatch(/^kvq: using the pure-TypeScript reference backend .* because cpu: createBackend\(\) failed: no usable native addon \[\/x\/kvq_cpu\.node \(not found\)\]/);
      expect(r.fallback).toMatch(/Fix: .*build:native/);
      expect(r.fallback).not.toMatch(/\n/);
    });

    it('has no warning when a native candidate loads, when the reference comes first, or when no candidate was given', async () => {
      expect((await loadBackend({ env: '', candidates: [factory('good', () => g.__kvqTestBackend)] })).fallback).toBeUndefined();
      expect((await loadBackend({ env: '', candidates: ['reference', failing] })).fallback).toBeUndefined();
      expect((await loadBackend({ env: '', candidates: [] })).fallback).toBeUndefined();
    });

    it('warns when a preferred candidate is rejected and another one runs', async () => {
      const r = await loadBackend({ env: '', prefer: failing, candidates: [factory('good', () => g.__kvqTestBackend)] });
      expect(r.backend.name).toBe('fake-good');
      expect(r.fallback).toMatch(/^kvq: using the good backend instead of the requested cpu because cpu: createBackend\(\) failed: no usable native addon/);
    });

    it('require: an unsatisfiable backend is a BACKEND_UNAVAILABLE error with the reason, never a fallback', async () => {
      const err = await loadBackend({ env: '', require: 'cpu', candidates: [failing] }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(KernelError);
      expect(err).toMatchObject({ code: 'BACKEND_UNAVAILABLE', argument: 'backend' });
      expect((err as Error).message).toMatch(/^backend "cpu" was requested but cannot be used: createBackend\(\) failed: no usable native addon/);
      // An explicit requirement beats KVQ_BACKEND (the caller asked for it in code or on the command line).
      await expect(loadBackend({ env: 'reference', require: 'cpu', candidates: [failing] })).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
    });

    it("require and KVQ_BACKEND use the caller's candidate of that name; 'auto' and '' mean no requirement", async () => {
      const good = factory('cpu', () => g.__kvqTestBackend);
      expect((await loadBackend({ env: '', require: 'cpu', candidates: [good] })).backend.name).toBe('fake-good');
      expect((await loadBackend({ env: 'cpu', candidates: [good] })).backend.name).toBe('fake-good');
      await expect(loadBackend({ env: 'cpu', candidates: [failing] })).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE', argument: 'KVQ_BACKEND' });
      expect((await loadBackend({ env: '', require: 'reference', candidates: [good] })).backend.name).toBe('reference');
      const auto = await loadBackend({ env: '', require: 'auto', candidates: [failing] });
      expect(auto.backend.name).toBe('reference');
      expect(auto.fallback).toBeDefined();
    });
  });

  describe('KVQ_BACKEND override', () => {
    it('selects the named backend alone', async () => {
      const r = await loadBackend({ env: 'reference', candidates: ['@fake/good'], resolveFrom: [dir] });
      expect(r.backend.name).toBe('reference');
      const r2 = await loadBackend({ env: '@fake/good', resolveFrom: [dir] });
      expect(r2.backend.name).toBe('fake-good');
    });

    it('a name that is an Object.prototype key is treated as a module name, not a known backend', async () => {
      await expect(loadBackend({ env: 'toString', resolveFrom: [dir] })).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
    });

    it("'auto' and '' mean no override", async () => {
      for (const env of ['auto', '', '  ']) {
        expect((await loadBackend({ env, candidates: ['@fake/good'], resolveFrom: [dir] })).backend.name).toBe('fake-good');
      }
    });

    it('throws BACKEND_UNAVAILABLE with the reason when the named backend cannot load', async () => {
      const err = await loadBackend({ env: '@fake/nobinary', resolveFrom: [dir] }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(KernelError);
      expect(err).toMatchObject({ code: 'BACKEND_UNAVAILABLE', argument: 'KVQ_BACKEND' });
      expect((err as Error).message).toContain('no prebuilt binary for this platform');
      expect((err as Error).message).toContain('KVQ_BACKEND=@fake/nobinary');
      const err2 = await loadBackend({ env: 'cuda', resolveFrom: [dir] }).catch((e: unknown) => e);
      expect((err2 as Error).message).toMatch(CUDA_UNUSABLE);
    });

    it('reads process.env.KVQ_BACKEND when env is not given', async () => {
      const saved = process.env.KVQ_BACKEND;
      process.env.KVQ_BACKEND = '@fake/absent';
      try {
        await expect(loadBackend({ resolveFrom: [dir] })).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
      } finally {
        if (saved === undefined) delete process.env.KVQ_BACKEND;
        else process.env.KVQ_BACKEND = saved;
      }
    });
  });

  describe("probe: 'child'", () => {
    it('survives a binary that aborts the process on load', async () => {
      const r = await loadBackend({ env: '', probe: 'child', candidates: ['@fake/crash'], resolveFrom: [dir] });
      expect(r.backend.name).toBe('reference');
      expect(r.rejected[0]!.reason).toMatch(/^child-process probe crashed with SIGABRT/);
    });

    it('times out a hanging initializer', async () => {
      const r = await loadBackend({ env: '', probe: 'child', probeTimeoutMs: 1500, candidates: ['@fake/hang'], resolveFrom: [dir] });
      expect(r.rejected[0]!.reason).toBe('child-process probe timed out after 1500 ms');
    });

    it('reports a createBackend failure seen in the child', async () => {
      const r = await loadBackend({ env: '', probe: 'child', candidates: ['@fake/nobinary'], resolveFrom: [dir] });
      expect(r.rejected[0]!.reason).toMatch(/^child-process probe exited with code 2: no prebuilt binary/);
    });

    it('a healthy module passes the probe (the child builds its own backend) and then loads in-process', async () => {
      // In the child, globalThis.__kvqTestBackend is unset, so give the fake a self-contained backend there.
      fakePackage(
        '@fake/probed',
        [
          'const ops = ["linear","rmsNorm","add","siluAndMul","embedding","rope","softmax","reshapeAndCache","pagedAttention","amaxTensor","amaxPerHead","quantizeFp8","dequantizeFp8"];',
          'export function createBackend() {',
          '  if (globalThis.__kvqTestBackend) return { ...globalThis.__kvqTestBackend, name: "probed" };',
          '  const b = { name: "probed", info: { description: "", simd: "none", threads: 1 } };',
          '  for (const op of ops) b[op] = () => {};',
          '  b.linear = ({ x, weight, out }) => { out[0] = x[0] * weight.data[0] + x[1] * weight.data[1]; };',
          '  return b;',
          '}',
        ].join('\n'),
      );
      const r = await loadBackend({ env: '', probe: 'child', candidates: ['@fake/probed'], resolveFrom: [dir] });
      expect(r.rejected).toEqual([]);
      expect(r.backend.name).toBe('probed');
    });
  });
});
