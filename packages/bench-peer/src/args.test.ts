import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { parsePeerBenchmarkArgs } from './args.js';
import { runPeerBenchmark } from './benchmark.js';
import { BenchPeerError } from './errors.js';
import { importPeer, isPeerInstalled, PEER_VERSION, peerInstallArgs, prebuiltPackage } from './peer/install.js';
import { peerKvUnsupported } from './peer/runner.js';

describe('command line', () => {
  it('parses every option', () => {
    expect(
      parsePeerBenchmarkArgs(['--repeats', '5', '--contexts', '256,1024', '--decode-tokens', '16', '--threads', '2', '--models', 'stories260K,llama-768x12-f16', '--tinyllama', '--realtime', 'off', '--no-quality', '--max-eval-tokens', '512', '--out', 'x', '--peer-dir', 'p']),
    ).toEqual({ repeats: 5, contexts: [256, 1024], decodeTokens: 16, threads: 2, models: ['stories260K', 'llama-768x12-f16'], tinyllama: true, realtime: 'off', quality: false, maxEvalTokens: 512, outDir: 'x', peerDir: 'p' });
    expect(parsePeerBenchmarkArgs(['--no-write', '--no-speed'])).toEqual({ outDir: null, speed: false });
    expect(parsePeerBenchmarkArgs(['--kvq-kv', 'fp8_e4m3', '--peer-kv', 'f16,q8_0', '--cross-engine', 'q8_0,q4_k_m', '--cross-engine-positions', '4096'])).toEqual({
      kvqKv: ['fp8_e4m3'],
      peerKv: ['f16', 'q8_0'],
      crossEngine: ['q8_0', 'q4_k_m'],
      crossEnginePositions: 4096,
    });
    expect(parsePeerBenchmarkArgs(['--cross-engine', 'all'])).toEqual({ crossEngine: ['q8_0', 'q4_0', 'q4_k_m', 'q5_k_m', 'q6_k'] });
  });

  it('bad KV types and schemes are INVALID_ARGUMENT errors naming the field', async () => {
    for (const [options, field] of [
      [{ kvqKv: ['fp9'] }, 'kvqKv[0]'],
      [{ peerKv: ['f16', 'q3'] }, 'peerKv[1]'],
      [{ crossEngine: ['q2_k'] }, 'crossEngine[0]'],
      [{ crossEngine: ['q8_0'], crossEnginePositions: 3 }, 'crossEnginePositions'],
    ] as const) {
      await expect(runPeerBenchmark({ ...(options as object), installPeer: false, peerDir: '/nonexistent', outDir: null })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field });
    }
  });

  it('--quick sets short defaults but keeps explicit options', () => {
    expect(parsePeerBenchmarkArgs(['--repeats', '2', '--quick'])).toMatchObject({ contexts: [128, 256], decodeTokens: 8, repeats: 2 });
  });

  it('rejects unknown options and bad values with INVALID_ARGUMENT naming them', () => {
    const code = (argv: string[]) => {
      try {
        parsePeerBenchmarkArgs(argv);
      } catch (e) {
        return `${(e as BenchPeerError).code}: ${(e as BenchPeerError).message}`;
      }
      return 'no error';
    };
    expect(code(['--fast'])).toBe('INVALID_ARGUMENT: unknown option "--fast" (see --help)');
    expect(code(['--repeats'])).toBe('INVALID_ARGUMENT: --repeats needs a value');
    expect(code(['--repeats', 'two'])).toBe('INVALID_ARGUMENT: --repeats: "two" is not an integer');
    expect(code(['--contexts', '512,x'])).toBe('INVALID_ARGUMENT: --contexts: "x" is not an integer');
  });

  it('runPeerBenchmark validates its options before doing anything', async () => {
    await expect(runPeerBenchmark({ repeats: 0 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'repeats' });
    await expect(runPeerBenchmark({ contexts: [] })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'contexts' });
    await expect(runPeerBenchmark({ models: ['gpt-5' as never] })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', field: 'models[0]' });
    await expect(runPeerBenchmark({ realtime: 'always' as never })).rejects.toThrow(/realtime must be one of auto, chrt, off/);
  });
});

describe('peer install', () => {
  it('installs the exact version and only this platform’s prebuilt binary, with no install scripts and no save', () => {
    const args = peerInstallArgs('/x');
    expect(args).toContain(`node-llama-cpp@${PEER_VERSION}`);
    expect(args).toEqual(expect.arrayContaining(['install', '--no-save', '--no-package-lock', '--ignore-scripts', '--omit=optional', '--prefix', '/x']));
    expect(prebuiltPackage('linux', 'x64')).toBe('@node-llama-cpp/linux-x64');
    expect(prebuiltPackage('aix', 'ppc64')).toBeUndefined();
  });

  it('an empty folder is not an install: importPeer says how to install', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kvq-peer-empty-'));
    try {
      expect(isPeerInstalled(dir)).toBe(false);
      await expect(importPeer(dir)).rejects.toMatchObject({ code: 'PEER_NOT_INSTALLED' });
      await expect(importPeer(dir)).rejects.toThrow(/peer:install/);
      await expect(runPeerBenchmark({ peerDir: dir, installPeer: false, outDir: null })).rejects.toMatchObject({ code: 'PEER_NOT_INSTALLED' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('peerKvUnsupported: quantized V needs flash attention, blocks need head_dim % 32', () => {
    expect(peerKvUnsupported('q8_0', false, 64)).toMatch(/flash attention/);
    expect(peerKvUnsupported('q4_0', true, 8)).toMatch(/head_dim 8/);
    expect(peerKvUnsupported('q8_0', true, 64)).toBeUndefined();
    expect(peerKvUnsupported('f16', false, 8)).toBeUndefined();
  });
});
