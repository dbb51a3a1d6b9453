/**
 * `kvq generate --backend cuda` end to end on the CUDA kernels without a GPU: @kvq/kernels-cuda's `createBackend` is
 * replaced by its simulator (`createSimBackend({ warp })`, warp 32 and 64: csrc/'s kernels run on the CPU), so the CLI's `cuda`
 * candidate, the loader's self-test and the whole forward pass run the GPU kernel code. Its greedy tokens of kvq-tiny
 * must equal the CPU backend's. Skipped, with the reason, when the simulator addon is not built (`build:gpu` of
 * @kvq/kernels-cuda), except in CI (`KVQ_REQUIRE_GPU_COMPILERS=1`), where that fails.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cpuAvailability } from '@kvq/kernels-cpu';
import { simAvailability } from '@kvq/kernels-cuda/testing';
import { captureOutput } from '@kvq/test-utils';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { main } from './main.js';

/** The warp width the mocked `createBackend` simulates (each test sets it). */
const state = vi.hoisted(() => ({ warp: 32 as 32 | 64 }));

vi.mock('@kvq/kernels-cuda', async () => {
  const { createSimBackend } = await import('@kvq/kernels-cuda/testing');
  return { createBackend: () => createSimBackend({ warp: state.warp }) };
});

// Both simulator builds are needed: the first one missing says why.
const sim = [simAvailability(32), simAvailability(64)].find((a) => !a.available) ?? simAvailability(32);
const cpu = cpuAvailability();
const required = process.env.KVQ_REQUIRE_GPU_COMPILERS === '1';
const why = !sim.available ? `the simulator addon is not built: ${sim.reason}` : !cpu.available ? `the native CPU addon is unavailable: ${cpu.reason}` : '';

const dir = mkdtempSync(join(tmpdir(), 'kvq-cli-sim-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the CLI in-process; the parsed JSON on stdout, and stderr. */
async function kvqJson<T>(argv: string[]): Promise<T & { err: string }> {
  const c = captureOutput();
  const status = await main(argv, c.io);
  expect(status, c.err()).toBe(0);
  return { ...(JSON.parse(c.out()) as T), err: c.err() };
}

const generate = (backend: string) =>
  kvqJson<{ backend: string; token_ids: number[] }>(['generate', '--backend', backend, '--json', '--temperature', '0', '--max-tokens', '16', '--ignore-eos', '--kv-cache-memory', '1MiB', 'And God said unto Moses,']);

describe.skipIf(why !== '' && !required)(`kvq generate --backend cuda on the CUDA simulator${why ? ` (skipped: ${why})` : ''}`, () => {
  it("gives the CPU backend's 16 greedy tokens of kvq-tiny, at warp 32 and warp 64", async () => {
    const want = await generate('cpu');
    expect(want.backend).toBe('cpu');
    for (const warp of [32, 64] as const) {
      state.warp = warp;
      const got = await generate('cuda');
      expect(got.backend).toBe(`cuda-sim-w${warp}`);
      expect(got.err).toBe('');
      expect(got.token_ids).toHaveLength(16);
      expect(got.token_ids, `warp ${warp}`).toEqual(want.token_ids);
    }
    state.warp = 32;
  }, 120_000);

  it("scores a text (kvq eval) to the CPU backend's log-likelihood", async () => {
    const text = join(dir, 'genesis.txt');
    writeFileSync(text, 'In the beginning God created the heaven and the earth. And the earth was without form, and void.\n');
    const argv = (backend: string) => ['eval', '--text', text, '--json', '--backend', backend, '--kv-cache-memory', '1MiB'];
    const want = await kvqJson<{ tokens: number; nll_sum: number }>(argv('cpu'));
    const got = await kvqJson<{ tokens: number; nll_sum: number }>(argv('cuda'));
    expect(got.tokens).toBe(want.tokens);
    expect(got.tokens).toBeGreaterThan(10);
    expect(Math.abs(got.nll_sum - want.nll_sum) / want.nll_sum).toBeLessThan(1e-4);
  }, 60_000);
});
