import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { captureOutput, type CapturedOutput } from '@kvq/test-utils';
import { describe, expect, it } from 'vitest';
import { KV_CACHE_DTYPES, parseKvCacheDtype, parseNumber, parseSize } from './args.js';
import { CliError } from './errors.js';
import { main } from './main.js';
import { COMMANDS } from './registry.js';

describe('kvq main', () => {
  it('prints help with every command and exits 0', async () => {
    const c = captureOutput();
    expect(await main([], c.io)).toBe(0);
    expect(c.out()).toMatch(/Commands:[\s\S]*fp8/);
  });
  it('every command has --help (exit 0, a Usage line, its own name)', async () => {
    expect(COMMANDS.map((c) => c.name)).toEqual(['generate', 'chat', 'serve', 'eval', 'calibrate', 'plan', 'convert', 'quantize', 'env', 'bench', 'fp8']);
    for (const c of COMMANDS) {
      const cap = captureOutput();
      expect(await main([c.name, '--help'], cap.io), c.name).toBe(0);
      expect(cap.out()).toMatch(new RegExp(`^Usage: kvq ${c.name}`));
      expect(cap.err()).toBe('');
    }
  });
  it('unknown command is a usage error (exit 2)', async () => {
    const c = captureOutput();
    expect(await main(['frobnicate'], c.io)).toBe(2);
    expect(c.err()).toMatch(/unknown command "frobnicate"/);
  });
  it('fp8 encodes with a scale, as JSON', async () => {
    const c = captureOutput();
    expect(await main(['fp8', '--format', 'e4m3fn', '--scale', '2', '--json', '896', '1000', 'nan'], c.io)).toBe(0);
    const r = JSON.parse(c.out()) as { results: { code: number; decoded: number | null }[] };
    expect(r.results.map((x) => x.code)).toEqual([0x7e, 0x7e, 0x7f]);
    expect(r.results[0]!.decoded).toBe(896);
  });
  it('--fp8-query reaches the engine: with an FP8 cache it generates, with auto it is a usage error', async () => {
    const ok = captureOutput();
    const argv = ['generate', '--backend', 'reference', '--kv-cache-memory', '2MiB', '--max-tokens', '2', '--temperature', '0', '--fp8-query'];
    expect(await main([...argv, '--kv-cache-dtype', 'fp8', '--calculate-kv-scales', 'Once upon a time'], ok.io)).toBe(0);
    const bad = captureOutput();
    expect(await main([...argv, 'Once upon a time'], bad.io)).toBe(2);
    expect(bad.err()).toMatch(/fp8Query needs an FP8 KV cache/);
  });
  it('--ggml-activations takes q8 or f32; anything else is a usage error', async () => {
    const argv = ['generate', '--backend', 'reference', '--kv-cache-memory', '2MiB', '--max-tokens', '2', '--temperature', '0'];
    const ok = captureOutput();
    expect(await main([...argv, '--ggml-activations', 'f32', 'Once upon a time'], ok.io)).toBe(0);
    const bad = captureOutput();
    expect(await main([...argv, '--ggml-activations', 'q4', 'Once upon a time'], bad.io)).toBe(2);
    expect(bad.err()).toMatch(/--ggml-activations must be q8 or f32, got "q4"/);
  });
  it('--int4-activations takes q16 or f32; anything else is a usage error', async () => {
    const argv = ['generate', '--backend', 'reference', '--kv-cache-memory', '2MiB', '--max-tokens', '2', '--temperature', '0'];
    const ok = captureOutput();
    expect(await main([...argv, '--int4-activations', 'f32', 'Once upon a time'], ok.io)).toBe(0);
    const bad = captureOutput();
    expect(await main([...argv, '--int4-activations', 'q8', 'Once upon a time'], bad.io)).toBe(2);
    expect(bad.err()).toMatch(/--int4-activations must be q16 or f32, got "q8"/);
  });
  it('--quantization-param-path reaches the engine: the file\'s scales are loaded, change the run, and a bad file fails naming it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvq-cli-scales-'));
    try {
      const write = (name: string, scales: number[]) => {
        const path = join(dir, name);
        const layers = Object.fromEntries(scales.map((s, l) => [String(l), s]));
        writeFileSync(path, JSON.stringify({ model_type: 'llama', kv_cache: { dtype: 'float8_e4m3fn', scaling_factor: { '0': layers } } }));
        return path;
      };
      const argv = ['generate', '--backend', 'reference', '--kv-cache-memory', '2MiB', '--max-tokens', '8', '--temperature', '0', '--kv-cache-dtype', 'fp8'];
      const plain = captureOutput();
      expect(await main([...argv, 'Once upon a time'], plain.io)).toBe(0);
      // Scales far below the K/V magnitudes saturate every FP8 code: greedy text must change if the file is used.
      const tiny = write('tiny.json', [1e-4, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4]);
      const used = captureOutput();
      expect(await main([...argv, '--quantization-param-path', tiny, 'Once upon a time'], used.io)).toBe(0);
      expect(used.err()).toContain(`kvq: loaded KV cache scaling factors from ${tiny} (6 layers)`);
      expect(used.out()).not.toBe(plain.out());
      const short = write('short.json', [0.02, 0.02]);
      const bad = captureOutput();
      expect(await main([...argv, '--quantization-param-path', short, 'Once upon a time'], bad.io)).toBe(1);
      expect(bad.err()).toContain(short);
      expect(bad.err()).toMatch(/has 2 layers, but the model has num_hidden_layers 6/);
      const empty = captureOutput();
      expect(await main([...argv, '--quantization-param-path', '', 'x'], empty.io)).toBe(2);
      expect(empty.err()).toMatch(/--quantization-param-path needs a file path/);
      // eval: the file's scales are the quantized run's (NLL changes against 1.0 scales); with --kv-scales none it is a usage error.
      const text = join(dir, 'docs.txt');
      writeFileSync(text, 'In the beginning God created the heaven and the earth.\n\nAnd the earth was without form, and void.\n');
      const evalArgv = ['eval', '--backend', 'reference', '--kv-cache-memory', '2MiB', '--kv-cache-dtype', 'fp8', '--text', text, '--json'];
      const unit = captureOutput();
      expect(await main([...evalArgv, '--kv-scales', 'none'], unit.io)).toBe(0);
      const scaled = captureOutput();
      expect(await main([...evalArgv, '--quantization-param-path', tiny], scaled.io)).toBe(0);
      const nll = (c: CapturedOutput) => (JSON.parse(c.out()) as { nll_mean: number }).nll_mean;
      expect(nll(scaled)).not.toBeCloseTo(nll(unit), 3);
      const conflict = captureOutput();
      expect(await main([...evalArgv, '--kv-scales', 'none', '--quantization-param-path', tiny], conflict.io)).toBe(2);
      expect(conflict.err()).toMatch(/cannot be combined with --kv-scales none/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('fp8 rejects bad input with exit 2', async () => {
    for (const argv of [['fp8'], ['fp8', 'abc'], ['fp8', '--scale', '0', '1'], ['fp8', '--format', 'e3m4', '1'], ['fp8', '--bogus']]) {
      const c = captureOutput();
      expect(await main(argv, c.io), argv.join(' ')).toBe(2);
      expect(c.err()).toMatch(/^kvq: /);
    }
  });
});

const bin = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'bin.js');
describe.skipIf(!existsSync(bin))('built kvq binary', () => {
  it('runs and exits with the documented codes', () => {
    expect(execFileSync(process.execPath, [bin, 'fp8', '1.5'], { encoding: 'utf8' })).toMatch(/e4m3fn\s+0x3c/);
    expect(spawnSync(process.execPath, [bin, 'nope']).status).toBe(2);
  });
});

describe('argument parsing', () => {
  it('parseSize accepts plain bytes, SI and binary units', () => {
    expect(parseSize('1048576', '--x')).toBe(1048576);
    expect(parseSize('512MiB', '--x')).toBe(512 * 2 ** 20);
    expect(parseSize('4GB', '--x')).toBe(4e9);
    expect(parseSize('1.5 GiB', '--x')).toBe(1.5 * 2 ** 30);
    expect(parseSize('64k', '--x')).toBe(65536);
    expect(parseSize('2kb', '--x')).toBe(2000);
    for (const bad of ['', 'abc', '-5MiB', '0', '12XB', '1e9']) {
      expect(() => parseSize(bad, '--kv-cache-memory'), bad).toThrow(CliError);
    }
    expect(() => parseSize('12XB', '--kv-cache-memory')).toThrow(/--kv-cache-memory "12XB" is not a size/);
  });
  it('parseNumber and parseKvCacheDtype name the flag and the rule', () => {
    expect(parseNumber('0.5', '--top-p', { min: 0, max: 1, minExclusive: true })).toBe(0.5);
    expect(parseNumber(undefined, '--top-p')).toBeUndefined();
    expect(() => parseNumber('0', '--top-p', { min: 0, max: 1, minExclusive: true })).toThrow(/--top-p must be a number > 0 <= 1, got "0"/);
    expect(() => parseNumber('1.5', '--max-tokens', { integer: true })).toThrow(/an integer/);
    expect(parseKvCacheDtype('fp8')).toBe('fp8');
    expect(parseKvCacheDtype(undefined)).toBe('auto');
    expect(() => parseKvCacheDtype('int8')).toThrow(/--kv-cache-dtype "int8" is not one of auto, fp8/);
    // every value --help lists is one the engine accepts (the help once listed fp8_e4m3fnuz, which it rejected)
    for (const d of KV_CACHE_DTYPES) expect(parseKvCacheDtype(d)).toBe(d);
  });
});

describe('kvq bench --peer', () => {
  it('finds the checkout runner above the CLI, nothing above an unrelated folder', async () => {
    const { findPeerRunner } = await import('./commands/bench/index.js');
    const here = dirname(fileURLToPath(import.meta.url));
    expect(findPeerRunner([here])).toBe(join(here, '..', '..', '..', 'packages', 'bench-peer', 'dist', 'run.js'));
    expect(findPeerRunner([tmpdir()])).toBeUndefined();
  });
  const runner = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'packages', 'bench-peer', 'dist', 'run.js');
  it.skipIf(!existsSync(runner))('hands its options to the peer benchmark (help: exit 0; a bad option: exit 2)', async () => {
    const ok = captureOutput();
    expect(await main(['bench', '--peer', '--help'], ok.io)).toBe(0);
    expect(ok.out()).toMatch(/Side-by-side speed and quality of kvq against llama\.cpp/);
    const bad = captureOutput();
    expect(await main(['bench', '--peer', '--frobnicate'], bad.io)).toBe(2);
    expect(bad.err()).toMatch(/unknown option "--frobnicate"/);
  });
});
