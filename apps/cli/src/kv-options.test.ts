/**
 * `--kv-cache-rotation`: listed in --help, validated (usage error, exit 2), reported by `kvq eval --json`, and with a
 * 4-bit cache it lowers eval's KL against the unquantized run; eval's JSON carries the FP8 telemetry. `--kv-cache-dtype-skip-layers`: parsed (commas and
 * repeats), sizes the cache per layer, and bad entries are usage errors.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { captureOutput } from '@kvq/test-utils';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from './main.js';

const dir = mkdtempSync(join(tmpdir(), 'kvq-cli-rotation-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const text = join(dir, 'text.txt');
writeFileSync(
  text,
  'In the beginning God created the heaven and the earth. And the earth was without form, and void.\n\nAnd God said, Let there be light: and there was light. And God saw the light, that it was good.\n',
);

interface EvalJson {
  kv_cache_rotation: string;
  kl_mean: number;
  tokens: number;
  kv_telemetry: { written: number; saturated: number; flushed: number; layers: { layer: number; dtype: string; k: { written: number } }[] };
}

async function evalJson(extra: string[]): Promise<EvalJson> {
  const c = captureOutput();
  const code = await main(['eval', '--text', text, '--backend', 'reference', '--kv-cache-memory', '2MiB', '--kv-cache-dtype', 'int4_per_token_head', '--json', ...extra], c.io);
  expect(code, c.err()).toBe(0);
  return JSON.parse(c.out()) as EvalJson;
}

describe('--kv-cache-rotation', () => {
  it('is in --help, and a bad value is a usage error naming the flag, the value and the choices', async () => {
    const help = captureOutput();
    expect(await main(['generate', '--help'], help.io)).toBe(0);
    expect(help.out()).toMatch(/--kv-cache-rotation R\s+none \| hadamard/);
    const c = captureOutput();
    expect(await main(['generate', '--kv-cache-rotation', 'givens', '--max-tokens', '1', 'x'], c.io)).toBe(2);
    expect(c.err()).toContain('--kv-cache-rotation must be one of none, hadamard, got "givens"');
    expect(c.out()).toBe('');
  });

  it('kvq eval reports it, and hadamard lowers the KL of int4_per_token_head against the unquantized cache', async () => {
    const plain = await evalJson([]);
    const rotated = await evalJson(['--kv-cache-rotation', 'hadamard']);
    expect(plain.kv_cache_rotation).toBe('none');
    expect(rotated.kv_cache_rotation).toBe('hadamard');
    expect(rotated.tokens).toBe(plain.tokens);
    expect(rotated.kl_mean).toBeGreaterThan(0);
    expect(rotated.kl_mean, `rotated ${rotated.kl_mean} vs plain ${plain.kl_mean}`).toBeLessThan(plain.kl_mean);
    // FP8 telemetry in the report: every layer's K and V writes (2 KV heads x 64 per token), no saturation with scales
    // from each head's amax, and some values flushed to zero by 4 bits.
    const t = plain.kv_telemetry;
    expect(t.layers.map((l) => l.dtype)).toEqual(new Array(6).fill('int4_per_token_head'));
    expect(t.written).toBe(t.layers.reduce((n, l) => n + 2 * l.k.written, 0));
    expect(t.layers[0]!.k.written % 128).toBe(0);
    expect(t.saturated).toBe(0);
    expect(t.flushed).toBeGreaterThan(0);
  }, 120_000);
});

describe('--kv-cache-dtype-skip-layers', () => {
  const argv = ['generate', '--backend', 'reference', '--kv-cache-memory', '2MiB', '--max-tokens', '2', '--temperature', '0', '--json', '--kv-cache-dtype', 'fp8'];
  it('keeps the listed layers in the model dtype: bytes per token of 2 bf16 + 4 e4m3 kvq-tiny layers', async () => {
    const c = captureOutput();
    expect(await main([...argv, '--kv-cache-dtype-skip-layers', '0', '--kv-cache-dtype-skip-layers', '5', 'And God said'], c.io), c.err()).toBe(0);
    const out = JSON.parse(c.out()) as { kv_cache_bytes_per_token: number; token_ids: number[] };
    // kvq-tiny: 2 KV heads x 64 per layer, K and V: bf16 512 B, e4m3 256 B per token.
    expect(out.kv_cache_bytes_per_token).toBe(2 * 512 + 4 * 256);
    expect(out.token_ids).toHaveLength(2);
    const same = captureOutput();
    expect(await main([...argv, '--kv-cache-dtype-skip-layers', '0,5', 'And God said'], same.io)).toBe(0);
    expect((JSON.parse(same.out()) as { kv_cache_bytes_per_token: number }).kv_cache_bytes_per_token).toBe(2 * 512 + 4 * 256);
  });

  it('a bad entry is a usage error (exit 2): not an index, or a layer the model does not have', async () => {
    const c = captureOutput();
    expect(await main([...argv, '--kv-cache-dtype-skip-layers', '0,first', 'x'], c.io)).toBe(2);
    expect(c.err()).toContain('--kv-cache-dtype-skip-layers takes layer indices and sliding_window, got "first"');
    const d = captureOutput();
    expect(await main([...argv, '--kv-cache-dtype-skip-layers', '9', 'x'], d.io)).toBe(2);
    expect(d.err()).toMatch(/kvCacheDtypeSkipLayers \[0\] = 9 is not a layer index in \[0, 6\)/);
    expect(d.out()).toBe('');
  });
});

describe('--kv-cache-keep-sink / --kv-cache-keep-recent', () => {
  interface KeepJson extends EvalJson {
    kv_cache_keep?: { sink_tokens: number; recent_tokens: number; layers: number[]; bytes: number };
  }
  it('kvq eval reports them, and a sink plus a tail lowers the KL of int4_per_token_head', async () => {
    const plain = (await evalJson([])) as KeepJson;
    const kept = (await evalJson(['--kv-cache-keep-sink', '4', '--kv-cache-keep-recent', '16'])) as KeepJson;
    expect(plain.kv_cache_keep).toBeUndefined();
    expect(kept.kv_cache_keep).toMatchObject({ sink_tokens: 16, recent_tokens: 16, layers: [0, 1, 2, 3, 4, 5] });
    expect(kept.tokens).toBe(plain.tokens);
    expect(kept.kl_mean, `kept ${kept.kl_mean} vs plain ${plain.kl_mean}`).toBeLessThan(plain.kl_mean);
  }, 120_000);

  it('are in --help; a negative or non-integer value, or a float cache, is a usage error (exit 2)', async () => {
    const help = captureOutput();
    expect(await main(['generate', '--help'], help.io)).toBe(0);
    expect(help.out()).toMatch(/--kv-cache-keep-sink N/);
    expect(help.out()).toMatch(/--kv-cache-keep-recent N/);
    const argv = ['generate', '--backend', 'reference', '--kv-cache-memory', '2MiB', '--max-tokens', '1'];
    const a = captureOutput();
    expect(await main([...argv, '--kv-cache-keep-sink', '-1', 'x'], a.io)).toBe(2);
    expect(a.err()).toContain('--kv-cache-keep-sink');
    const b = captureOutput();
    expect(await main([...argv, '--kv-cache-keep-recent', '2.5', 'x'], b.io)).toBe(2);
    expect(b.err()).toContain('--kv-cache-keep-recent');
    const c = captureOutput();
    expect(await main([...argv, '--kv-cache-keep-recent', '8', 'x'], c.io)).toBe(2);
    expect(c.err()).toMatch(/no full-attention layer of this model has a quantized cache/);
  });
});
