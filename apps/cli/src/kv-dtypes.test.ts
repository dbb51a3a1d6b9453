/**
 * `--kv-cache-dtype` with the write-time-scaled KV dtypes (docs/spec/kv-dtypes.md): listed in --help, accepted,
 * run on the reference backend, refused on the native CPU backend with a usage error that names the fix, and
 * shown by `kvq plan` with their bytes per token.
 */
import { KV_QUANT_DTYPES } from '@kvq/cache';
import { captureOutput } from '@kvq/test-utils';
import { describe, expect, it } from 'vitest';
import { KV_CACHE_DTYPES, KV_CACHE_QUANT_DTYPES, parseKvCacheDtype } from './args.js';
import { main } from './main.js';

describe('--kv-cache-dtype: the write-time-scaled dtypes', () => {
  it('are every dtype @kvq/cache defines, accepted by the parser and listed in --help with the backends that run them', async () => {
    expect([...KV_CACHE_QUANT_DTYPES].sort()).toEqual([...KV_QUANT_DTYPES].sort());
    for (const d of KV_QUANT_DTYPES) {
      expect(KV_CACHE_DTYPES).toContain(d);
      expect(parseKvCacheDtype(d)).toBe(d);
    }
    const help = captureOutput();
    expect(await main(['generate', '--help'], help.io)).toBe(0);
    for (const d of KV_QUANT_DTYPES) expect(help.out()).toContain(d);
    expect(help.out()).toMatch(/\(every backend; kvq plan shows\s+their bytes per token\)/);
  });

  it('generate runs with int8_per_token_head on the reference backend and reports the dtype and its bytes per token', async () => {
    const c = captureOutput();
    const argv = ['generate', '--backend', 'reference', '--kv-cache-memory', '2MiB', '--max-tokens', '4', '--temperature', '0', '--json'];
    expect(await main([...argv, '--kv-cache-dtype', 'int8_per_token_head', 'And God said'], c.io)).toBe(0);
    const out = JSON.parse(c.out()) as { token_ids: number[]; kv_cache_dtype: string; kv_cache_storage_dtype: string; kv_cache_bytes_per_token: number };
    expect(out.token_ids).toHaveLength(4);
    expect(out.kv_cache_dtype).toBe('int8_per_token_head');
    expect(out.kv_cache_storage_dtype).toBe('int8_per_token_head');
    expect(out.kv_cache_bytes_per_token).toBe(6 * 2 * 2 * (64 + 4));
  });

  it('on the CPU backend (native kernels for these dtypes) nvfp4 generates the reference backend\'s tokens', async () => {
    const run = async (backend: string) => {
      const c = captureOutput();
      const argv = ['generate', '--backend', backend, '--kv-cache-memory', '2MiB', '--max-tokens', '4', '--temperature', '0', '--json'];
      expect(await main([...argv, '--kv-cache-dtype', 'nvfp4', 'And God said'], c.io)).toBe(0);
      const out = JSON.parse(c.out()) as { token_ids: number[]; kv_cache_storage_dtype: string };
      expect(out.kv_cache_storage_dtype).toBe('nvfp4');
      return out.token_ids;
    };
    const cpu = await run('cpu');
    expect(cpu).toHaveLength(4);
    expect(cpu).toEqual(await run('reference'));
  });

  it('kvq plan lists them with their bytes per token and marks the chosen one', async () => {
    const c = captureOutput();
    expect(await main(['plan', '--kv-cache-memory', '64MiB', '--kv-cache-dtype', 'int4_g32', '--json'], c.io)).toBe(0);
    const rows = (JSON.parse(c.out()) as { rows: { kv_cache_dtype: string; bytes_per_token: number; chosen: boolean; scaled_when_written: boolean }[] }).rows;
    const byName = new Map(rows.map((r) => [r.kv_cache_dtype, r]));
    // kvq-tiny: 6 layers x K and V x 2 KV heads x (codes + scales) per head of 64 (docs/spec/kv-dtypes.md §3).
    const want = { fp8_per_token_head: 68, int8_per_token_head: 68, int4_per_token_head: 36, int4_g16: 48, int4_g32: 40, int4_g64: 36, nvfp4: 36 };
    for (const [d, perHead] of Object.entries(want)) {
      expect(byName.get(d)?.bytes_per_token, d).toBe(6 * 2 * 2 * perHead);
      expect(byName.get(d)?.scaled_when_written, d).toBe(true);
    }
    expect(rows.filter((r) => r.chosen).map((r) => r.kv_cache_dtype)).toEqual(['int4_g32']);
    expect(byName.get('fp8 / fp8_e4m3')?.bytes_per_token).toBe(6 * 2 * 2 * 64);
    const text = captureOutput();
    expect(await main(['plan', '--kv-cache-memory', '64MiB', '--kv-cache-dtype', 'int4_g32'], text.io)).toBe(0);
    expect(text.out()).toMatch(/^int4_g32 \*\s+int4_g32\s+960\s/m);
  });

  it('--kv-cache-value-dtype stores V in another dtype: generate (CPU = reference tokens), kvq plan\'s pair row, usage errors', async () => {
    const run = async (backend: string) => {
      const c = captureOutput();
      const argv = ['generate', '--backend', backend, '--kv-cache-memory', '2MiB', '--max-tokens', '4', '--temperature', '0', '--json'];
      expect(await main([...argv, '--kv-cache-dtype', 'int8_per_token_head', '--kv-cache-value-dtype', 'int4_g32_f16', 'And God said'], c.io), c.err()).toBe(0);
      const out = JSON.parse(c.out()) as { token_ids: number[]; kv_cache_bytes_per_token: number; kv_cache_value_dtype: string };
      // kvq-tiny: 6 layers x 2 KV heads x (K 64 + 4, V 32 + 4) bytes.
      expect(out.kv_cache_bytes_per_token).toBe(6 * 2 * (68 + 36));
      expect(out.kv_cache_value_dtype).toBe('int4_g32_f16');
      return out.token_ids;
    };
    const cpu = await run('cpu');
    expect(cpu).toHaveLength(4);
    expect(cpu).toEqual(await run('reference'));
    const c = captureOutput();
    expect(await main(['plan', '--kv-cache-memory', '64MiB', '--kv-cache-dtype', 'int8_per_token_head', '--kv-cache-value-dtype', 'int4_g32_f16', '--json'], c.io)).toBe(0);
    const rows = (JSON.parse(c.out()) as { rows: { kv_cache_dtype: string; storage_dtype: string; bytes_per_token: number; chosen: boolean }[] }).rows;
    const pair = rows.filter((r) => r.chosen);
    expect(pair).toEqual([expect.objectContaining({ kv_cache_dtype: 'K int8_per_token_head / V int4_g32_f16', storage_dtype: 'int8_per_token_head/int4_g32_f16', bytes_per_token: 6 * 2 * (68 + 36) })]);
    for (const [argv, message] of [
      [['plan', '--kv-cache-memory', '64MiB', '--kv-cache-value-dtype', 'int4_g32'], /--kv-cache-value-dtype needs --kv-cache-dtype/],
      [['generate', '--kv-cache-value-dtype', 'int3', 'x'], /--kv-cache-value-dtype "int3" is not one of/],
    ] as const) {
      const e = captureOutput();
      expect(await main([...argv], e.io)).toBe(2);
      expect(e.err()).toMatch(message);
    }
  });
});
