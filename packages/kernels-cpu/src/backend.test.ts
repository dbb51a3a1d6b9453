import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEVICE_ARRAY, describeLoad, isKernelError, KERNEL_OPS, loadBackend, selfTest } from '@kvq/kernels';
import { afterEach, describe, expect, it } from 'vitest';
import { NATIVE_ABI as ADDON_ABI } from '@kvq/kernels/native';
import { backendName, cpuAvailability, createBackend } from './backend.js';
import { addonCandidates, tryLoadAddon } from './load.js';

const avail = cpuAvailability();

describe('loading the addon never throws', () => {
  it('reports every path tried and why, with how to fix it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvq-cpu-'));
    const corrupt = join(dir, 'corrupt.node');
    writeFileSync(corrupt, 'not an ELF file');
    const r = tryLoadAddon([join(dir, 'missing.node'), corrupt]);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.tried.map((t) => t.error)[0]).toBe('not found');
    expect(r.tried[1]!.path).toBe(corrupt);
    expect(r.tried[1]!.error.length).toBeGreaterThan(0);
    expect(r.reason).toContain('build:native');
  });

  it('rejects a module with the wrong ABI (a stale build)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvq-cpu-'));
    const fake = join(dir, 'stale.node');
    writeFileSync(fake, '');
    const r = tryLoadAddon([fake], Object.assign(() => ({ abi: ADDON_ABI + 1 }), { resolve: () => fake }) as never);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.tried[0]!.error).toContain('stale');
  });

  it('honours KVQ_CPU_ADDON first', () => {
    expect(addonCandidates({ env: { KVQ_CPU_ADDON: '/x/y.node' } })[0]).toEqual({ path: '/x/y.node', origin: 'KVQ_CPU_ADDON' });
    expect(addonCandidates({ env: {} })[0]!.path).toMatch(/build[/\\]Release[/\\]kvq_cpu\.node$/);
  });
});

describe.skipIf(!avail.available)('createBackend', () => {
  const saved = { ...process.env };
  afterEach(() => {
    for (const k of ['KVQ_CPU_ISA', 'KVQ_CPU_THREADS', 'KVQ_CPU_SPIN_US']) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  });

  it('implements device memory in host memory: ops use its arrays in place; other backends\' arrays are refused', () => {
    const cpu = createBackend({ threads: 1 });
    try {
      const m = cpu.memory;
      expect(m.onHost).toBe(true);
      const ha = Float32Array.from([1, -2, 3, -4]);
      const a = m.alloc('f32', 4);
      const out = m.alloc('f32', 4);
      m.write(a, ha);
      cpu.siluAndMul({ gate: a, up: a, out, length: 4 });
      const got = new Float32Array(4);
      m.read(out, got);
      const want = new Float32Array(4);
      cpu.siluAndMul({ gate: ha, up: ha, out: want, length: 4 });
      expect([...got]).toEqual([...want]);
      expect(m.hostView(out)).toBeInstanceOf(Float32Array); // no copy: the array is host memory
      const foreign = { [DEVICE_ARRAY]: true, kind: 'f32', length: 4, backend: 'cuda' } as const;
      const codeOf = (f: () => unknown) => {
        try {
          f();
        } catch (e) {
          return isKernelError(e) ? `${e.code}: ${e.message}` : String(e);
        }
        return 'no throw';
      };
      expect(codeOf(() => cpu.add({ a: foreign, b: ha, out: want, length: 4 }))).toMatch(/^WRONG_ARRAY_TYPE: .*device array of backend 'cuda'/);
      m.free(a);
      expect(codeOf(() => cpu.add({ a, b: ha, out: want, length: 4 }))).toMatch(/^INVALID_ARGUMENT: .*freed/);
      expect(codeOf(() => m.write(out, new Int32Array(4)))).toMatch(/^WRONG_ARRAY_TYPE/);
      expect(codeOf(() => m.read(out, new Float32Array(2), 3))).toMatch(/^OUT_OF_RANGE/);
    } finally {
      cpu.dispose?.();
    }
  });

  it('implements every op of the contract and describes itself', () => {
    const b = createBackend({ threads: 3 });
    try {
      expect(b.name).toBe(backendName);
      for (const op of KERNEL_OPS) expect(typeof b[op], op).toBe('function');
      expect(b.threads).toBe(3);
      expect(b.info.threads).toBe(3);
      expect(['amx', 'avx512', 'avx2', 'neon', 'neon-dotprod', 'none']).toContain(b.info.simd);
      expect(b.info.description).toContain('native CPU');
      expect(b.info.version).toMatch(/^\d+\.\d+\.\d+/);
      selfTest(b);
    } finally {
      b.dispose();
    }
  });

  it('defaults to the best ISA and the CPUs available; KVQ_CPU_ISA and KVQ_CPU_THREADS override', () => {
    const b = createBackend();
    expect(b.isa).toBe(avail.available ? avail.cpu.isas[0] : '');
    expect(b.threads).toBe(avail.available ? avail.cpu.cpus : 0);
    b.dispose();
    process.env.KVQ_CPU_ISA = 'scalar';
    process.env.KVQ_CPU_THREADS = '1';
    const s = createBackend();
    expect(s.isa).toBe('scalar');
    expect(s.info.simd).toBe('none');
    expect(s.threads).toBe(1);
    s.dispose();
  });

  it('rejects bad options with typed errors naming the option', () => {
    expect(() => createBackend({ isa: 'sse9' as never })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', argument: 'isa' }));
    expect(() => createBackend({ threads: 0 })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', argument: 'threads' }));
    expect(() => createBackend({ spinMicros: -1 })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', argument: 'spinMicros' }));
    process.env.KVQ_CPU_THREADS = 'many';
    expect(() => createBackend()).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', argument: 'KVQ_CPU_THREADS' }));
  });

  it('an ISA this CPU lacks is BACKEND_UNAVAILABLE, not a crash', () => {
    const missing = (['amx', 'avx512', 'avx2'] as const).find((i) => avail.available && !avail.cpu.isas.includes(i));
    if (missing === undefined) {
      // Every ISA is usable here; the native constructor is still asked for nonsense.
      expect(() => createBackend({ isa: 'avx1024' as never })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
      return;
    }
    expect(() => createBackend({ isa: missing })).toThrow(expect.objectContaining({ code: 'BACKEND_UNAVAILABLE' }));
  });

  it('the other architecture\'s ISAs are BACKEND_UNAVAILABLE and never listed', () => {
    if (!avail.available) return;
    const foreign = process.arch === 'arm64' ? (['amx', 'avx512', 'avx2'] as const) : (['neon', 'neon-dotprod'] as const);
    for (const isa of foreign) {
      expect(avail.cpu.isas).not.toContain(isa);
      expect(() => createBackend({ isa })).toThrow(expect.objectContaining({ code: 'BACKEND_UNAVAILABLE' }));
    }
    // The dot-product extension is an arm64 feature: never reported on x86-64.
    if (process.arch !== 'arm64') expect(avail.cpu.features.dotprod).toBe(false);
  });

  it('after dispose every op throws BACKEND_UNAVAILABLE; dispose is idempotent', () => {
    const b = createBackend();
    b.dispose();
    b.dispose();
    expect(b.threads).toBe(0);
    let err: unknown;
    try {
      b.add({ a: new Float32Array(2), b: new Float32Array(2), out: new Float32Array(2), length: 2 });
    } catch (e) {
      err = e;
    }
    expect(isKernelError(err, 'BACKEND_UNAVAILABLE')).toBe(true);
  });

  it('many threads on few cores and spin 0 still give the single-thread result', () => {
    const one = createBackend({ threads: 1 });
    const many = createBackend({ threads: 8, spinMicros: 0 });
    try {
      const rows = 9;
      const cols = 300;
      const x = new Float32Array(rows * 64).map((_, i) => Math.cos(i));
      const weight = { dtype: 'f32' as const, data: new Float32Array(cols * 64).map((_, i) => Math.sin(i * 0.7)), rows: cols, cols: 64 };
      const a = new Float32Array(rows * cols);
      const b = new Float32Array(rows * cols);
      for (let rep = 0; rep < 20; rep++) {
        one.linear({ x, weight, out: a, rows });
        many.linear({ x, weight, out: b, rows });
        expect(Array.from(b)).toEqual(Array.from(a));
      }
      many.setSpinMicros(200);
      many.linear({ x, weight, out: b, rows });
      expect(Array.from(b)).toEqual(Array.from(a));
    } finally {
      one.dispose();
      many.dispose();
    }
  });
});

describe.skipIf(!avail.available)('@kvq/kernels loader', () => {
  it('loads this package as the cpu backend and passes its self-test', async () => {
    const loaded = await loadBackend({ env: '', candidates: [{ name: 'cpu', load: () => import('./index.js') }] });
    try {
      expect(loaded.backend.name).toBe('cpu');
      expect(describeLoad(loaded)).toContain('cpu');
    } finally {
      loaded.backend.dispose?.();
    }
  });
});
