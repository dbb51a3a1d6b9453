import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { NATIVE_ABI as ADDON_ABI } from '@kvq/kernels/native';
import { addonCandidates, CUDA_SPEC, NVIDIA_DRIVER_NODES, nvidiaDriverAbsent, probeAddon, probeInChild, tryLoadAddon, type GpuVendorSpec } from './load.js';

const dir = mkdtempSync(join(tmpdir(), 'kvq-cuda-load-'));

/** A stand-in "addon" (a CommonJS file; `require` loads it like a .node) with the given body. */
function fakeAddon(name: string, body: string): string {
  const p = join(dir, `${name}.cjs`);
  writeFileSync(p, body);
  return p;
}

const probeOk = (ok: boolean, reason?: string): string =>
  JSON.stringify({ ok, reason, vendor: 'cuda', targets: 'sm_90', runtimeVersion: 13000, driverVersion: ok ? 13000 : 0, deviceCount: ok ? 1 : 0, devices: [] });

describe('loading the addon in-process never throws', () => {
  it('reports every path tried and why, with how to build it', () => {
    const corrupt = join(dir, 'corrupt.node');
    writeFileSync(corrupt, 'not an ELF file');
    const r = tryLoadAddon([join(dir, 'missing.node'), corrupt]);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.tried[0]!.error).toBe('not found');
    expect(r.tried[1]!.path).toBe(corrupt);
    expect(r.tried[1]!.error.length).toBeGreaterThan(0);
    expect(r.reason).toContain('build:gpu');
  });

  it('rejects a stale ABI and a binary of another vendor', () => {
    const stale = fakeAddon('stale', `module.exports = { abi: ${ADDON_ABI + 1}, vendor: 'cuda' };`);
    const hip = fakeAddon('hip', `module.exports = { abi: ${ADDON_ABI}, vendor: 'hip' };`);
    const r = tryLoadAddon([stale, hip]);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.tried[0]!.error).toContain('stale');
    expect(r.tried[1]!.error).toContain('built for hip');
  });

  it('accepts the first good candidate', () => {
    const good = fakeAddon('good', `module.exports = { abi: ${ADDON_ABI}, vendor: 'cuda', probe() {} };`);
    const r = tryLoadAddon([join(dir, 'nope.node'), good]);
    expect(r.ok && r.path).toBe(good);
  });

  it('honours the spec environment variable first', () => {
    expect(addonCandidates(CUDA_SPEC, { KVQ_CUDA_ADDON: '/x/y.node' })[0]).toBe('/x/y.node');
    expect(addonCandidates(CUDA_SPEC, {})[0]).toMatch(/build[/\\]Release[/\\]kvq_cuda\.node$/);
  });
});

describe('probing in a child process', () => {
  it('a binary that crashes on load is reported, and this process survives', () => {
    const crash = fakeAddon('crash', `process.kill(process.pid, 'SIGSEGV');`);
    const r = probeInChild(crash);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(/crashed with SIGSEGV/);
  });

  it('a hanging probe times out', () => {
    const hang = fakeAddon('hang', `const t = Date.now() + 60000; while (Date.now() < t) {}`);
    const r = probeInChild(hang, CUDA_SPEC, 1500);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(/timed out after 1500 ms/);
  });

  it('a throwing initializer is reported with its message', () => {
    const throws = fakeAddon('throws', `throw new Error('libcudart.so.13: cannot open shared object file');`);
    const r = probeInChild(throws);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toContain('libcudart.so.13');
  });

  it('"no device" from the runtime becomes the reason', () => {
    const none = fakeAddon('none', `module.exports = { abi: ${ADDON_ABI}, vendor: 'cuda', probe: () => (${probeOk(false, 'no usable CUDA device: no driver is installed')}) };`);
    const r = probeInChild(none);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.reason).toBe('no usable CUDA device: no driver is installed');
      expect(r.probe?.deviceCount).toBe(0);
    }
  });

  it('a device that is there is reported ok', () => {
    const one = fakeAddon('one', `module.exports = { abi: ${ADDON_ABI}, vendor: 'cuda', probe: () => (${probeOk(true)}) };`);
    const r = probeInChild(one);
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.probe.deviceCount).toBe(1);
  });

  it('ABI and vendor are checked before the probe is trusted', () => {
    const stale = fakeAddon('stale2', `module.exports = { abi: 999, vendor: 'cuda', probe: () => (${probeOk(true)}) };`);
    const hip = fakeAddon('hip2', `module.exports = { abi: ${ADDON_ABI}, vendor: 'hip', probe: () => (${probeOk(true)}) };`);
    const a = probeInChild(stale);
    const b = probeInChild(hip);
    expect(!a.ok && a.reason).toContain('stale');
    expect(!b.ok && b.reason).toContain('built for hip');
  });

  it('a spec whose driver is certainly absent is rejected without starting the child probe', () => {
    // Probing this addon would crash the child (SIGSEGV): the reason shows whether the probe ran.
    const segv = fakeAddon('segv-unprobed', `process.kill(process.pid, 'SIGSEGV');`);
    const base = { ...CUDA_SPEC, addonEnv: 'KVQ_TEST_NO_SUCH_VAR', defaultPaths: () => [segv] };
    const skipped = probeAddon({ ...base, name: 'cuda-nodriver', driverAbsent: () => 'no NVIDIA driver (test)' });
    expect(skipped).toEqual({ ok: false, path: segv, reason: 'no NVIDIA driver (test)' });
    const probed = probeAddon({ ...base, name: 'cuda-maybedriver', driverAbsent: () => undefined });
    expect(!probed.ok && probed.reason).toMatch(/crashed with SIGSEGV/);
    // KVQ_GPU_PROBE=always overrides the driver check (driver nodes in unusual places): the child probe runs.
    process.env.KVQ_GPU_PROBE = 'always';
    try {
      const forced = probeAddon({ ...base, name: 'cuda-forced', driverAbsent: () => 'no NVIDIA driver (test)' });
      expect(!forced.ok && forced.reason).toMatch(/crashed with SIGSEGV/);
    } finally {
      delete process.env.KVQ_GPU_PROBE;
    }
  });

  it('the NVIDIA driver check: absent on Linux only when none of its device nodes exists', () => {
    expect(nvidiaDriverAbsent('linux', () => false)).toMatch(/^no NVIDIA driver on this machine \(none of \/dev\/nvidiactl, .*\/dev\/dxg exists\)/);
    for (const node of NVIDIA_DRIVER_NODES) expect(nvidiaDriverAbsent('linux', (p) => p === node), node).toBeUndefined();
    expect(nvidiaDriverAbsent('win32', () => false)).toBeUndefined();
    expect(CUDA_SPEC.driverAbsent?.()).toBe(nvidiaDriverAbsent());
  });

  it('with no addon at all the reason says how to build it', () => {
    const spec: GpuVendorSpec = { ...CUDA_SPEC, name: 'cuda-missing', addonEnv: 'KVQ_TEST_NO_SUCH_VAR', defaultPaths: () => [join(dir, 'absent.node')] };
    const r = probeAddon(spec);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(/not found.*build:gpu/);
  });
});
