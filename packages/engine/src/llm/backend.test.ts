import { createReferenceBackend, isKernelError, type BackendCandidate, type KernelBackend } from '@kvq/kernels';
import { modelTinyPath } from '@kvq/model-tiny';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { BACKEND_FALLBACK_WARNING, gpuBackendCandidate, selectBackend, type BackendWarning } from './backend.js';
import { LLM } from './llm.js';

// The CPU addon package as it behaves on a machine without a usable binary: createBackend throws with the reason.
vi.mock('@kvq/kernels-cpu', () => ({
  createBackend: () => {
    throw new Error('no usable native addon [/nowhere/kvq_cpu.node (not found)]. Fix: npm install @kvq/kernels-cpu-test-triple');
  },
}));

const failing: BackendCandidate = {
  name: 'cpu',
  load: () => ({
    createBackend: () => {
      throw new Error('no usable native addon [/x/kvq_cpu.node (wrong ELF class)]');
    },
  }),
};

/** A GPU package as on a machine without a GPU: it imports, but its createBackend throws with the reason. */
const noGpu = (name: string): BackendCandidate => ({
  name,
  load: () => ({
    createBackend: () => {
      throw new Error(`@kvq/kernels-${name} is unavailable: no usable device: cudaErrorNoDevice (no ${name} device is installed)`);
    },
  }),
});

/** A working native backend named 'cpu' (the reference kernels under another name, so the self-test runs on it). */
function workingCpu(): { candidate: BackendCandidate; backend: KernelBackend } {
  const ref = createReferenceBackend();
  const backend = new Proxy(ref, { get: (t, k) => (k === 'name' ? 'cpu' : Reflect.get(t, k, t)) });
  return { candidate: { name: 'cpu', load: () => ({ createBackend: () => backend }) }, backend };
}

/** Warnings Node receives through process.emitWarning while `fn` runs (they are dispatched on a later tick). */
async function nodeWarnings(fn: () => Promise<unknown>): Promise<Error[]> {
  const seen: Error[] = [];
  const listener = (w: Error) => seen.push(w);
  process.on('warning', listener);
  try {
    await fn();
    await new Promise((r) => setImmediate(r));
  } finally {
    process.off('warning', listener);
  }
  return seen.filter((w) => (w as Error & { code?: string }).code === BACKEND_FALLBACK_WARNING);
}

afterEach(() => {
  vi.unstubAllEnvs();
});

describe('selectBackend', () => {
  it('warns exactly once through onWarning, with the reason, when only the reference backend is available', async () => {
    const got: BackendWarning[] = [];
    const r = await selectBackend({ env: '', candidates: [failing], onWarning: (w) => got.push(w) });
    expect(r.backend.name).toBe('reference');
    expect(got).toHaveLength(1);
    expect(got[0]!.code).toBe('KVQ_BACKEND_FALLBACK');
    expect(got[0]!.backend).toBe('reference');
    expect(got[0]!.message).toMatch(/reference backend .*because cpu: createBackend\(\) failed: no usable native addon \[\/x\/kvq_cpu\.node \(wrong ELF class\)\]/);
    expect(got[0]!.rejected.map((x) => x.name)).toEqual(['cpu']);
  });

  it('by default emits one Node warning (code KVQ_BACKEND_FALLBACK) per process for the same fallback', async () => {
    const reason = `unique reason ${Math.random()}`;
    const once = { name: 'cpu', load: () => ({ createBackend: () => { throw new Error(reason); } }) };
    const first = await nodeWarnings(() => selectBackend({ env: '', candidates: [once] }));
    expect(first).toHaveLength(1);
    expect(first[0]!.name).toBe('KvqWarning');
    expect(first[0]!.message).toMatch(/^kvq: using the pure-TypeScript reference backend .*unique reason/);
    // The same fallback again (another LLM in the same process): no second warning.
    const again = await nodeWarnings(() => selectBackend({ env: '', candidates: [once] }));
    expect(again).toHaveLength(0);
  });

  it('gives no warning when the reference backend is chosen on purpose, or a backend object is passed', async () => {
    const got: BackendWarning[] = [];
    expect((await selectBackend({ backend: 'reference', candidates: [failing], onWarning: (w) => got.push(w) })).backend.name).toBe('reference');
    expect((await selectBackend({ env: 'reference', candidates: [failing], onWarning: (w) => got.push(w) })).backend.name).toBe('reference');
    const ref = (await selectBackend({ backend: 'reference' })).backend;
    expect((await selectBackend({ backend: ref, onWarning: (w) => got.push(w) })).backend).toBe(ref);
    expect(got).toEqual([]);
  });

  it("an explicit backend ('cpu') or KVQ_BACKEND=cpu that cannot load is BACKEND_UNAVAILABLE with the reason, never a fallback", async () => {
    const got: BackendWarning[] = [];
    const err = await selectBackend({ backend: 'cpu', env: '', candidates: [failing], onWarning: (w) => got.push(w) }).catch((e: unknown) => e);
    expect(isKernelError(err, 'BACKEND_UNAVAILABLE')).toBe(true);
    expect((err as Error).message).toMatch(/^backend "cpu" was requested but cannot be used: .*wrong ELF class/);
    const envErr = await selectBackend({ env: 'cpu', candidates: [failing] }).catch((e: unknown) => e);
    expect(envErr).toMatchObject({ code: 'BACKEND_UNAVAILABLE', argument: 'KVQ_BACKEND' });
    expect(got).toEqual([]);
  });
});

describe('selectBackend with GPU candidates first (what the apps pass: cuda, rocm, then cpu)', () => {
  it("'auto' skips a GPU candidate that cannot load without any warning, records why, and runs on cpu", async () => {
    const got: BackendWarning[] = [];
    const cpu = workingCpu();
    const nodeSeen = await nodeWarnings(async () => {
      const r = await selectBackend({ env: '', candidates: [noGpu('cuda'), noGpu('rocm'), cpu.candidate], onWarning: (w) => got.push(w) });
      expect(r.backend).toBe(cpu.backend);
      expect(r.backend.name).toBe('cpu');
      expect(r.fallback).toBeUndefined();
      expect(r.rejected.map((x) => x.name)).toEqual(['cuda', 'rocm']);
      expect(r.rejected[0]!.reason).toMatch(/^createBackend\(\) failed: @kvq\/kernels-cuda is unavailable: no usable device/);
    });
    expect(got).toEqual([]);
    expect(nodeSeen).toEqual([]);
  });

  it('when nothing native loads, the one fallback warning lists every rejected candidate, GPUs included', async () => {
    const got: BackendWarning[] = [];
    const r = await selectBackend({ env: '', candidates: [noGpu('cuda'), noGpu('rocm'), failing], onWarning: (w) => got.push(w) });
    expect(r.backend.name).toBe('reference');
    expect(got).toHaveLength(1);
    expect(got[0]!.rejected.map((x) => x.name)).toEqual(['cuda', 'rocm', 'cpu']);
    expect(got[0]!.message).toMatch(/because cuda: .*cudaErrorNoDevice.*; rocm: .*; cpu: .*wrong ELF class/);
  });

  it("backend 'cuda' with a cuda candidate that cannot load is BACKEND_UNAVAILABLE naming cuda and the reason", async () => {
    const got: BackendWarning[] = [];
    const cpu = workingCpu();
    const err = await selectBackend({ backend: 'cuda', env: '', candidates: [noGpu('cuda'), cpu.candidate], onWarning: (w) => got.push(w) }).catch((e: unknown) => e);
    expect(isKernelError(err, 'BACKEND_UNAVAILABLE')).toBe(true);
    expect(err).toMatchObject({ argument: 'backend' });
    expect((err as Error).message).toMatch(/^backend "cuda" was requested but cannot be used: createBackend\(\) failed: @kvq\/kernels-cuda is unavailable: no usable device: cudaErrorNoDevice/);
    expect(got).toEqual([]);
  });
});

describe('LLM.create backend choice (the CPU addon package mocked as unavailable)', () => {
  it('backendCandidates reach the backend choice: auto skips the failing GPU silently and runs on the working one', async () => {
    vi.stubEnv('KVQ_BACKEND', '');
    const got: BackendWarning[] = [];
    const cpu = workingCpu();
    const llm = await LLM.create({ model: modelTinyPath, kvCacheMemory: 1 << 20, backendCandidates: [noGpu('cuda'), cpu.candidate], onWarning: (w) => got.push(w) });
    try {
      expect(llm.backend).toBe(cpu.backend);
      expect(got).toEqual([]);
    } finally {
      llm.dispose();
    }
  });

  it("backend: 'cuda' with backendCandidates throws BACKEND_UNAVAILABLE with the GPU package's reason", async () => {
    await expect(
      LLM.create({ model: modelTinyPath, kvCacheMemory: 1 << 20, backend: 'cuda', backendCandidates: [noGpu('cuda'), workingCpu().candidate] }),
    ).rejects.toMatchObject({
      code: 'BACKEND_UNAVAILABLE',
      message: expect.stringMatching(/^backend "cuda" was requested but cannot be used: .*cudaErrorNoDevice/),
    });
  });

  it("'auto' falls back to the reference backend and says so once, with the package's reason", async () => {
    vi.stubEnv('KVQ_BACKEND', '');
    const got: BackendWarning[] = [];
    const llm = await LLM.create({ model: modelTinyPath, kvCacheMemory: 1 << 20, onWarning: (w) => got.push(w) });
    try {
      expect(llm.backend.name).toBe('reference');
      expect(got).toHaveLength(1);
      expect(got[0]!.message).toContain('no usable native addon [/nowhere/kvq_cpu.node (not found)]. Fix: npm install @kvq/kernels-cpu-test-triple');
    } finally {
      llm.dispose();
    }
  });

  it("backend: 'cpu' throws BACKEND_UNAVAILABLE instead of falling back", async () => {
    await expect(LLM.create({ model: modelTinyPath, kvCacheMemory: 1 << 20, backend: 'cpu' })).rejects.toMatchObject({
      code: 'BACKEND_UNAVAILABLE',
      message: expect.stringMatching(/^backend "cpu" was requested but cannot be used: createBackend\(\) failed: no usable native addon/),
    });
  });
});

describe('deviceResident', () => {
  it('is validated before anything loads, and the reference backend (no device memory) keeps host activations', async () => {
    await expect(LLM.create({ model: modelTinyPath, backend: 'reference', deviceResident: 'yes' as never })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      field: 'deviceResident',
    });
    const llm = await LLM.create({ model: modelTinyPath, backend: 'reference', kvCacheMemory: 1 << 20 });
    try {
      expect(llm.engine.forwardPass.memory).toBeUndefined();
      expect(llm.engine.forwardPass.kvMemory).toBeUndefined();
    } finally {
      llm.dispose();
    }
  });
});

describe('gpuBackendCandidate (the apps\' optional GPU packages)', () => {
  it('creates the backend with resident weights, options passed through and able to override', async () => {
    const seen: unknown[] = [];
    const c = gpuBackendCandidate('cuda', '@kvq/kernels-cuda', async () => ({ createBackend: (o: unknown) => (seen.push(o), { made: true }) }), '@kvq/cli');
    expect(typeof c === 'object' && c.name).toBe('cuda');
    const mod = (await (c as { load: () => Promise<{ createBackend: (o?: Record<string, unknown>) => unknown }> }).load());
    expect(mod.createBackend({ device: 1 })).toEqual({ made: true });
    expect(mod.createBackend({ residentWeights: false })).toEqual({ made: true });
    expect(seen).toEqual([{ residentWeights: true, device: 1 }, { residentWeights: false }]);
  });

  it('a package that is not installed is "not installed", naming the app that lists it; other import errors pass through', async () => {
    const missing = Object.assign(new Error("Cannot find package '@kvq/kernels-rocm' imported from /app"), { code: 'ERR_MODULE_NOT_FOUND' });
    const c = gpuBackendCandidate('rocm', '@kvq/kernels-rocm', () => Promise.reject(missing), '@kvq/server') as { load: () => Promise<unknown> };
    await expect(c.load()).rejects.toThrow('not installed (@kvq/kernels-rocm, an optional dependency of @kvq/server: install it to use rocm)');
    const broken = new Error('addon crashed');
    const d = gpuBackendCandidate('cuda', '@kvq/kernels-cuda', () => Promise.reject(broken), '@kvq/cli') as { load: () => Promise<unknown> };
    await expect(d.load()).rejects.toBe(broken);
  });
});
