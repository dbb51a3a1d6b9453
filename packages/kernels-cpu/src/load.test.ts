import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { NATIVE_ABI as ADDON_ABI } from '@kvq/kernels/native';
import { addonCandidates, fixHint, tryLoadAddon } from './load.js';
import { currentTarget, platformPackage, PREBUILT_TRIPLES, targetTriple, type ProcessTarget } from './platform.js';

const linuxX64: ProcessTarget = { platform: 'linux', arch: 'x64', libc: 'glibc' };
const fakeRequire = (exports: unknown): NodeJS.Require => Object.assign(() => exports, { resolve: () => '' }) as never;

describe('platform detection', () => {
  it.each([
    [{ platform: 'linux', arch: 'x64', libc: 'glibc' }, '@kvq/kernels-cpu-linux-x64-gnu'],
    [{ platform: 'linux', arch: 'arm64', libc: 'glibc' }, '@kvq/kernels-cpu-linux-arm64-gnu'],
    [{ platform: 'linux', arch: 'x64', libc: 'musl' }, '@kvq/kernels-cpu-linux-x64-musl'],
    [{ platform: 'darwin', arch: 'arm64' }, '@kvq/kernels-cpu-darwin-arm64'],
    [{ platform: 'darwin', arch: 'x64' }, '@kvq/kernels-cpu-darwin-x64'],
    [{ platform: 'win32', arch: 'x64' }, '@kvq/kernels-cpu-win32-x64-gnu'],
  ] as [ProcessTarget, string][])('%o -> %s', (target, name) => {
    const pkg = platformPackage(target);
    expect(pkg).toEqual({ supported: true, triple: targetTriple(target), name });
  });

  it('covers every published triple exactly once', () => {
    expect(new Set(PREBUILT_TRIPLES).size).toBe(6);
  });

  it.each([
    [{ platform: 'freebsd', arch: 'x64' }, 'freebsd-x64'],
    [{ platform: 'linux', arch: 'arm64', libc: 'musl' }, 'linux-arm64-musl'],
    [{ platform: 'linux', arch: 'ia32', libc: 'glibc' }, 'linux-ia32-gnu'],
    [{ platform: 'win32', arch: 'arm64' }, 'win32-arm64-gnu'],
  ] as [ProcessTarget, string][])('%o is unsupported, and says so', (target, triple) => {
    const pkg = platformPackage(target);
    expect(pkg.supported).toBe(false);
    if (pkg.supported) return;
    expect(pkg.triple).toBe(triple);
    expect(pkg.reason).toContain(`no prebuilt binary is published for ${triple}`);
  });

  it('detects this process', () => {
    const t = currentTarget();
    expect(t.platform).toBe(process.platform);
    expect(t.arch).toBe(process.arch);
    if (process.platform === 'linux') {
      const glibc = (process.report.getReport() as { header: { glibcVersionRuntime?: string } }).header.glibcVersionRuntime;
      expect(t.libc).toBe(glibc === undefined ? 'musl' : 'glibc');
    } else {
      expect(t.libc).toBeUndefined();
    }
  });
});

describe('candidate list (cascade order)', () => {
  it('KVQ_CPU_ADDON, local Release and Debug builds, then the platform package of the target', () => {
    const resolved: string[] = [];
    const c = addonCandidates({
      env: { KVQ_CPU_ADDON: '/x/y.node' },
      target: { platform: 'linux', arch: 'arm64', libc: 'glibc' },
      resolvePackage: (name) => {
        resolved.push(name);
        return `/nm/${name}/package.json`;
      },
    });
    expect(c.map((x) => x.origin)).toEqual(['KVQ_CPU_ADDON', 'local build', 'local build', 'platform package']);
    expect(c[1]!.path).toMatch(/build[/\\]Release[/\\]kvq_cpu\.node$/);
    expect(c[2]!.path).toMatch(/build[/\\]Debug[/\\]kvq_cpu\.node$/);
    expect(resolved).toEqual(['@kvq/kernels-cpu-linux-arm64-gnu']);
    expect(c[3]).toEqual({ path: join('/nm/@kvq/kernels-cpu-linux-arm64-gnu', 'kvq_cpu.node'), origin: 'platform package' });
  });

  it('no KVQ_CPU_ADDON: starts with the local build', () => {
    expect(addonCandidates({ env: {}, target: linuxX64, resolvePackage: () => undefined })[0]!.origin).toBe('local build');
  });

  it('a platform package that is not installed is a candidate that fails with that reason', () => {
    const c = addonCandidates({ env: {}, target: { platform: 'linux', arch: 'x64', libc: 'musl' }, resolvePackage: () => undefined });
    expect(c.at(-1)).toEqual({
      path: '@kvq/kernels-cpu-linux-x64-musl/kvq_cpu.node',
      origin: 'platform package',
      unavailable: 'package @kvq/kernels-cpu-linux-x64-musl is not installed',
    });
  });

  it('an unsupported platform has no platform candidate', () => {
    const c = addonCandidates({ env: {}, target: { platform: 'freebsd', arch: 'x64' }, resolvePackage: () => '/never' });
    expect(c.map((x) => x.origin)).toEqual(['local build', 'local build']);
  });

  it('the real resolver finds this workspace\'s platform package for this process (linked by pnpm)', () => {
    const pkg = platformPackage();
    if (!pkg.supported) return expect(addonCandidates({ env: {} })).toHaveLength(2);
    const last = addonCandidates({ env: {} }).at(-1)!;
    expect(last.origin).toBe('platform package');
    expect(last.unavailable).toBeUndefined();
    expect(last.path).toMatch(new RegExp(`npm[/\\\\]${pkg.triple}[/\\\\]kvq_cpu\\.node$`));
  });
});

describe('loading through the cascade', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvq-cpu-load-'));
  const pkgDir = join(dir, 'node_modules', '@kvq', 'kernels-cpu-linux-x64-gnu');
  mkdirSync(pkgDir, { recursive: true });
  writeFileSync(join(pkgDir, 'package.json'), '{}');
  writeFileSync(join(pkgDir, 'kvq_cpu.node'), '');

  it('falls through missing local builds to the platform package', () => {
    const c = addonCandidates({ env: {}, target: linuxX64, resolvePackage: () => join(pkgDir, 'package.json') });
    const localMissing = c.map((x) => (x.origin === 'local build' ? { ...x, path: join(dir, 'absent', x.path.slice(-20)) } : x));
    const r = tryLoadAddon(localMissing, fakeRequire({ abi: ADDON_ABI }), linuxX64);
    expect(r.ok).toBe(true);
    if (r.ok) {
      expect(r.origin).toBe('platform package');
      expect(r.path).toBe(join(pkgDir, 'kvq_cpu.node'));
    }
  });

  it('prefers a local build over the platform package', () => {
    const local = join(dir, 'kvq_cpu.node');
    writeFileSync(local, '');
    const r = tryLoadAddon(
      [
        { path: local, origin: 'local build' },
        { path: join(pkgDir, 'kvq_cpu.node'), origin: 'platform package' },
      ],
      fakeRequire({ abi: ADDON_ABI }),
      linuxX64,
    );
    expect(r.ok && r.origin).toBe('local build');
  });

  it('collects every failure; the reason names the expected platform package and both fixes', () => {
    const target: ProcessTarget = { platform: 'linux', arch: 'arm64', libc: 'glibc' };
    const c = addonCandidates({ env: { KVQ_CPU_ADDON: join(dir, 'nope.node') }, target, resolvePackage: () => undefined });
    const r = tryLoadAddon(c.map((x) => (x.origin === 'local build' ? { ...x, path: join(dir, 'absent.node') } : x)), fakeRequire({}), target);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.tried.map((t) => [t.origin, t.error])).toEqual([
      ['KVQ_CPU_ADDON', 'not found'],
      ['local build', 'not found'],
      ['local build', 'not found'],
      ['platform package', 'package @kvq/kernels-cpu-linux-arm64-gnu is not installed'],
    ]);
    expect(r.reason).toContain('this platform (linux-arm64-gnu) expects the prebuilt package @kvq/kernels-cpu-linux-arm64-gnu');
    expect(r.reason).toContain('npm install @kvq/kernels-cpu-linux-arm64-gnu');
    expect(r.reason).toContain('build:native');
  });

  it('a platform package whose binary is foreign or stale is reported, not loaded', () => {
    const r = tryLoadAddon([{ path: join(pkgDir, 'kvq_cpu.node'), origin: 'platform package' }], fakeRequire({ abi: ADDON_ABI + 1 }), linuxX64);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.tried[0]!.error).toContain('stale or foreign build');
  });

  it('on an unsupported platform the reason says there is no prebuilt binary and how to build one', () => {
    expect(fixHint({ platform: 'freebsd', arch: 'x64' })).toMatch(/no prebuilt binary is published for freebsd-x64 .*build:native/);
  });
});
