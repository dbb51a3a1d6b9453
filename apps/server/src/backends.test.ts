import { afterEach, describe, expect, it, vi } from 'vitest';
import { SERVER_BACKEND_CANDIDATES } from './backends.js';
import { createServer } from './server.js';

// A "GPU" that works: the reference kernels under the name 'cuda' (so the loader's self-test runs on it).
vi.mock('@kvq/kernels-cuda', async () => {
  const { createReferenceBackend: make } = await import('@kvq/kernels');
  return { createBackend: () => new Proxy(make(), { get: (t, k) => (k === 'name' ? 'cuda' : Reflect.get(t, k, t)) }) };
});
// ROCm as on a machine without an AMD GPU.
vi.mock('@kvq/kernels-rocm', () => ({
  createBackend: () => {
    throw new Error('@kvq/kernels-rocm is unavailable: no AMD GPU driver on this machine (/dev/kfd does not exist)');
  },
}));

afterEach(() => {
  vi.unstubAllEnvs();
});

describe("the server's backend candidates", () => {
  it('are cuda, rocm, then cpu (the engine appends reference)', () => {
    expect(SERVER_BACKEND_CANDIDATES.map((c) => (typeof c === 'string' ? c : c.name))).toEqual(['cuda', 'rocm', 'cpu']);
  });

  it("createServer's own LLM tries cuda first in auto, and backend 'rocm' is BACKEND_UNAVAILABLE with the reason", async () => {
    vi.stubEnv('KVQ_BACKEND', '');
    const warnings: string[] = [];
    const server = await createServer({ port: 0, kvCacheMemory: 1 << 20, onWarning: (w) => warnings.push(w.message) });
    try {
      expect(server.llm.backend.name).toBe('cuda');
      expect(warnings).toEqual([]);
    } finally {
      await server.close({ graceMs: 0 });
    }
    await expect(createServer({ port: 0, kvCacheMemory: 1 << 20, backend: 'rocm' })).rejects.toMatchObject({
      code: 'BACKEND_UNAVAILABLE',
      message: expect.stringMatching(/^backend "rocm" was requested but cannot be used: createBackend\(\) failed: .*\/dev\/kfd does not exist/),
    });
  });
});
