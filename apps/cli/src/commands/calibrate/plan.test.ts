/**
 * `kvq calibrate --plan`: measures a per-layer KV dtype plan on a dataset, writes it into the checkpoint next to the
 * FP8 scales, and `kvq generate` on that checkpoint runs with it (bytes per token of the plan) when the KV dtype is
 * auto; plan flags without --plan, or --plan without its budget or dataset, are usage errors.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { captureOutput } from '@kvq/test-utils';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../../main.js';

const dir = mkdtempSync(join(tmpdir(), 'kvq-cli-plan-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const dataset = join(dir, 'texts.jsonl');
writeFileSync(
  dataset,
  [
    'In the beginning God created the heaven and the earth. And the earth was without form, and void.',
    'And God said, Let there be light: and there was light. And God saw the light, that it was good.',
    'And the evening and the morning were the first day.',
  ]
    .map((text) => JSON.stringify({ text }))
    .join('\n'),
);

describe('kvq calibrate --plan', () => {
  it('writes the plan into the checkpoint, and kvq generate runs that checkpoint with it', async () => {
    const out = join(dir, 'planned');
    const c = captureOutput();
    const argv = ['calibrate', '--dataset', dataset, '--num-samples', '3', '--max-seq-len', '64', '--out', out, '--json'];
    const plan = ['--plan', '--kv-bytes-per-token', '1536', '--plan-dtypes', 'int8_per_token_head,int4_per_token_head', '--plan-samples', '3', '--backend', 'reference'];
    expect(await main([...argv, ...plan], c.io), c.err()).toBe(0);
    const json = JSON.parse(c.out()) as { files: string[]; kv_cache_plan: { layer_dtypes: string[]; kv_bytes_per_token: number; measured_kl: number; measurements: unknown[] } };
    const file = join(out, 'kvq_kv_cache_plan.json');
    expect(json.files).toContain(file);
    const written = JSON.parse(readFileSync(file, 'utf8')) as { format: string; layer_dtypes: string[]; kv_bytes_per_token: number };
    expect(written.format).toBe('kvq-kv-cache-plan/1');
    expect(written.layer_dtypes).toEqual(json.kv_cache_plan.layer_dtypes);
    expect(written.layer_dtypes).toHaveLength(6);
    expect(written.kv_bytes_per_token).toBeLessThanOrEqual(1536);
    // Each layer's K and V x 2 candidates, then each candidate on every layer.
    expect(json.kv_cache_plan.measurements).toHaveLength(6 * 2 * 2 + 2);
    expect(new Set((json.kv_cache_plan.measurements as { pool: string }[]).map((m) => m.pool))).toEqual(new Set(['k', 'v', 'kv']));
    expect(json.kv_cache_plan.measured_kl).toBeGreaterThan(0);
    const g = captureOutput();
    expect(await main(['generate', '-m', out, '--backend', 'reference', '--max-tokens', '2', '--temperature', '0', '--json', 'And God said'], g.io), g.err()).toBe(0);
    expect((JSON.parse(g.out()) as { kv_cache_bytes_per_token: number }).kv_cache_bytes_per_token).toBe(written.kv_bytes_per_token);
    // --plan-same-kv: one dtype per layer (no layer_value_dtypes), K and V measured together.
    const same = captureOutput();
    expect(await main([...argv, '--dry-run', ...plan, '--plan-same-kv'], same.io), same.err()).toBe(0);
    const sameJson = JSON.parse(same.out()) as { kv_cache_plan: { layer_value_dtypes?: string[]; measurements: { pool: string }[] } };
    expect(sameJson.kv_cache_plan.layer_value_dtypes).toBeUndefined();
    expect(sameJson.kv_cache_plan.measurements).toHaveLength(6 * 2 + 2);
    expect(sameJson.kv_cache_plan.measurements.every((m) => m.pool === 'kv')).toBe(true);
  }, 300_000);

  it('plan flags without --plan, --plan without a budget or a dataset are usage errors (exit 2)', async () => {
    const cases: [string[], RegExp][] = [
      [['calibrate', '--dry-run', '--kv-bytes-per-token', '100'], /--kv-bytes-per-token is a --plan option; add --plan/],
      [['calibrate', '--dry-run', '--plan', '--dataset', dataset], /--plan needs --kv-bytes-per-token/],
      [['calibrate', '--dry-run', '--plan', '--kv-bytes-per-token', '100'], /--plan measures on text: it needs --dataset/],
      [['calibrate', '--dry-run', '--plan', '--dataset', dataset, '--kv-bytes-per-token', '0'], /--kv-bytes-per-token must be a number > 0/],
      [['calibrate', '--dry-run', '--plan', '--dataset', dataset, '--kv-bytes-per-token', '900', '--plan-dtypes', 'int3'], /--plan-dtypes: "int3" is not a KV cache dtype \(one of auto, fp8/],
    ];
    for (const [argv, message] of cases) {
      const c = captureOutput();
      expect(await main(argv, c.io), argv.join(' ')).toBe(2);
      expect(c.err()).toMatch(message);
    }
  });
});
