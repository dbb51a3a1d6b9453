import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fixturePath } from '@kvq/fixtures';
import { afterAll, describe, expect, it } from 'vitest';

/**
 * The real `kvq` binary (dist/bin.js, built by turbo's `@kvq/cli#test` → `build` dependency) on the embedded
 * kvq-tiny and on the test models of @kvq/fixtures, checked against the independent reference outputs and for exit codes.
 */
const bin = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'bin.js');
const built = existsSync(bin);
if (!built) console.warn('[kvq tests] skipping the kvq binary tests: apps/cli/dist/bin.js is absent (run `pnpm --filter @kvq/cli... build`, or `pnpm test` via turbo)');

const tmp = mkdtempSync(join(tmpdir(), 'kvq-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function kvq(args: string[], options: { input?: string; env?: NodeJS.ProcessEnv } = {}): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [bin, ...args], {
    encoding: 'utf8',
    input: options.input ?? '',
    env: { ...process.env, ...options.env },
    timeout: 120_000,
  });
}

function json<T>(r: SpawnSyncReturns<string>): T {
  expect(r.stderr, r.stderr).not.toMatch(/^kvq: (?!warning)/m);
  expect(r.status).toBe(0);
  return JSON.parse(r.stdout) as T;
}

interface GenerateJson {
  text: string;
  token_ids: number[];
  prompt_token_ids: number[];
  finish_reason: string;
  kv_cache_dtype: string;
  kv_cache_storage_dtype: string;
  kv_cache_bytes_per_token: number;
}

const refTiny = fixturePath('reference/kvq-tiny.json');
const refStories = fixturePath('reference/stories260K.json');
const evalText = fixturePath('eval/kjv-fortunes-public.txt');
const storiesBin = fixturePath('models/stories260K/stories260K.bin');
const storiesGguf = fixturePath('models/stories260K/stories260K.gguf');

describe.skipIf(!built)('kvq binary', { timeout: 240_000 }, () => {
  it('exit codes: 0 ok, 2 usage errors, 1 runtime errors with one line (stack only with --verbose)', () => {
    for (const args of [['generate'], ['generate', '--kv-cache-dtype', 'fp9', 'x'], ['plan'], ['plan', '--kv-cache-memory', '12XB'], ['eval'], ['convert', '--from', 'onnx', 'x', '--out', 'y'], ['generate', '--bogus', 'x'], ['serve', '--port', '70000'], ['serve', '--kv-store', 'http://127.0.0.1:6379/0'], ['serve', '--kv-store', 'redis://h:1/db'], ['serve', '--kv-offload-memory', '12XB'], ['nope']]) {
      const r = kvq(args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/^kvq: .+\n$/);
    }
    const missing = kvq(['generate', '--model', join(tmp, 'no-such-model'), 'x']);
    expect(missing.status).toBe(1);
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);
    expect(missing.stderr).toMatch(/no-such-model/);
    const verbose = kvq(['generate', '--verbose', '--model', join(tmp, 'no-such-model'), 'x']);
    expect(verbose.status).toBe(1);
    expect(verbose.stderr).toMatch(/\n\s+at /);
  });

  it('generate --json (embedded kvq-tiny, greedy) reproduces the reference tokens; fp8 halves bytes per token', () => {
    const ref = JSON.parse(readFileSync(refTiny, 'utf8')) as { greedy: { prompt: string; prompt_token_ids: number[]; token_ids: number[] }[] };
    const texts: string[] = [];
    for (const g of ref.greedy.slice(0, 2)) {
      const out = json<GenerateJson>(kvq(['generate', '--json', '--temperature', '0', '--max-tokens', '24', g.prompt]));
      texts.push(out.text);
      expect(out.prompt_token_ids).toEqual(g.prompt_token_ids);
      expect(out.token_ids).toEqual(g.token_ids.slice(0, 24));
      expect(out.finish_reason).toBe('length');
      expect(out.kv_cache_storage_dtype).toBe('bf16');
      expect(out.kv_cache_bytes_per_token).toBe(3072);
    }
    const fp8 = json<GenerateJson>(kvq(['generate', '--json', '--kv-cache-dtype', 'fp8', '--temperature', '0', '--max-tokens', '8', ref.greedy[0]!.prompt]));
    expect(fp8.kv_cache_dtype).toBe('fp8');
    expect(fp8.kv_cache_storage_dtype).toBe('e4m3fn');
    expect(fp8.kv_cache_bytes_per_token).toBe(1536);
    expect(fp8.token_ids).toHaveLength(8);
    // Plain output: the continuation text and a newline.
    const plain = kvq(['generate', '--temperature', '0', '--max-tokens', '24', ref.greedy[0]!.prompt]);
    expect(plain.status).toBe(0);
    expect(plain.stdout).toBe(`${texts[0]}\n`);
    // Seeded sampling reproduces.
    const a = json<GenerateJson>(kvq(['generate', '--json', '--seed', '3', '--max-tokens', '12', 'A fortune:']));
    const b = json<GenerateJson>(kvq(['generate', '--json', '--seed', '3', '--max-tokens', '12', 'A fortune:']));
    expect(b.token_ids).toEqual(a.token_ids);
  });

  it('generate on stories260K (.bin and .gguf) and its kvq convert output match the reference', () => {
    const ref = JSON.parse(readFileSync(refStories, 'utf8')) as { greedy: { prompt: string; prompt_token_ids: number[]; token_ids: number[] }[] };
    const g = ref.greedy.find((x) => x.prompt === 'Once upon a time')!;
    const expected = g.token_ids.slice(g.prompt_token_ids.length, g.prompt_token_ids.length + 40);
    const converted = join(tmp, 'stories-hf');
    const conv = kvq(['convert', '--from', 'llama2c', storiesBin, '--out', converted]);
    expect(conv.status, conv.stderr).toBe(0);
    expect(kvq(['convert', '--from', 'gguf', storiesBin, '--out', join(tmp, 'x')]).status).toBe(2); // wrong --from
    for (const model of [storiesBin, storiesGguf, converted]) {
      const out = json<GenerateJson>(kvq(['generate', '--json', '--model', model, '--temperature', '0', '--max-tokens', '40', 'Once upon a time']));
      expect(out.prompt_token_ids, model).toEqual(g.prompt_token_ids);
      expect(out.token_ids, model).toEqual(expected);
    }
  });

  it('eval reproduces the reference NLL (auto) and FP8 KL divergence on the first 30 documents', () => {
    const ref = JSON.parse(readFileSync(refTiny, 'utf8')) as { nll_eval_public_first30: { tokens: number; results: Record<string, { nll_mean: number; kl_mean: number }> } };
    const r30 = ref.nll_eval_public_first30;
    const auto = json<{ tokens: number; nll_sum: number; nll_mean: number; perplexity: number; kl_mean: number; top1_agreement: number }>(
      kvq(['eval', '--text', evalText, '--max-docs', '30', '--json']),
    );
    expect(auto.tokens).toBe(r30.tokens);
    expect(Math.abs(auto.nll_mean - r30.results.auto!.nll_mean)).toBeLessThan(1e-3);
    expect(auto.perplexity).toBeCloseTo(Math.exp(auto.nll_sum / auto.tokens), 9);
    expect(auto.kl_mean).toBe(0);
    const svg = join(tmp, 'layers.svg');
    const fp8 = json<{ tokens: number; nll_mean: number; kl_mean: number; top1_agreement: number; reference: { nll_mean: number }; layer_error: { k_rel_rms: number; v_rel_rms: number }[] }>(
      kvq(['eval', '--text', evalText, '--max-docs', '30', '--kv-cache-dtype', 'fp8', '--kv-scales', 'none', '--plot', svg, '--json']),
    );
    expect(fp8.tokens).toBe(r30.tokens);
    expect(Math.abs(fp8.nll_mean - r30.results.e4m3_scale1!.nll_mean)).toBeLessThan(1e-3);
    expect(Math.abs(fp8.reference.nll_mean - r30.results.auto!.nll_mean)).toBeLessThan(1e-3);
    // KL(auto || e4m3, scale 1): reference 3.26e-4 nats/token.
    expect(fp8.kl_mean / r30.results.e4m3_scale1!.kl_mean).toBeGreaterThan(0.8);
    expect(fp8.kl_mean / r30.results.e4m3_scale1!.kl_mean).toBeLessThan(1.25);
    expect(fp8.top1_agreement).toBeGreaterThan(0.95);
    expect(fp8.top1_agreement).toBeLessThan(1);
    expect(fp8.layer_error).toHaveLength(6);
    for (const l of fp8.layer_error) {
      // e4m3 has 3 mantissa bits: relative RMS rounding error is a few percent, never zero.
      expect(l.k_rel_rms).toBeGreaterThan(0.005);
      expect(l.k_rel_rms).toBeLessThan(0.1);
      expect(l.v_rel_rms).toBeGreaterThan(0.005);
    }
    const plot = readFileSync(svg, 'utf8');
    expect(plot.startsWith('<svg')).toBe(true);
    expect(plot.match(/<rect [^>]*><title>layer \d K/g)).toHaveLength(6);
    // e5m2 (2 mantissa bits) moves predictions more than e4m3.
    const e5 = json<{ kl_mean: number }>(kvq(['eval', '--text', evalText, '--max-docs', '10', '--kv-cache-dtype', 'fp8_e5m2', '--json']));
    const e4 = json<{ kl_mean: number }>(kvq(['eval', '--text', evalText, '--max-docs', '10', '--kv-cache-dtype', 'fp8_e4m3', '--json']));
    expect(e5.kl_mean).toBeGreaterThan(e4.kl_mean);
  });

  it('calibrate writes a checkpoint whose scales the FP8 cache then uses', () => {
    const out = join(tmp, 'calibrated');
    const cal = json<{ out: string; scale_tensors: string[]; report: { layers: { k: { scale: number } }[] } }>(
      kvq(['calibrate', '--method', 'random', '--max-seq-len', '32', '--out', out, '--json']),
    );
    expect(cal.out).toBe(out);
    expect(cal.scale_tensors).toHaveLength(12); // k and v for 6 layers
    expect(cal.report.layers).toHaveLength(6);
    for (const l of cal.report.layers) expect(l.k.scale).toBeGreaterThan(0);
    expect(kvq(['calibrate', '--out', out]).status).toBe(1); // exists, no --overwrite
    expect(kvq(['calibrate', '--method', 'dataset', '--out', join(tmp, 'c2')]).status).toBe(2);
    const g = json<GenerateJson>(kvq(['generate', '--model', out, '--kv-cache-dtype', 'fp8', '--json', '--temperature', '0', '--max-tokens', '8', 'In the beginning God']));
    expect(g.kv_cache_storage_dtype).toBe('e4m3fn');
    expect(g.token_ids).toHaveLength(8);
  });

  it('plan --json: every dtype side by side, FP8 holds twice the bf16 tokens', () => {
    const plan = json<{ rows: { kv_cache_dtype: string; storage_dtype: string; bytes_per_token: number; blocks: number; tokens: number; max_concurrency: number; chosen: boolean; auto: boolean }[]; context_length: number }>(
      kvq(['plan', '--kv-cache-memory', '64MiB', '--kv-cache-dtype', 'fp8', '--json']),
    );
    const by = Object.fromEntries(plan.rows.map((r) => [r.storage_dtype, r]));
    expect(by.bf16!.bytes_per_token).toBe(3072);
    expect(by.bf16!.auto).toBe(true);
    expect(by.e4m3fn!.bytes_per_token).toBe(1536);
    expect(by.e4m3fn!.chosen).toBe(true);
    expect(by.f32!.bytes_per_token).toBe(6144);
    expect(Math.abs(by.e4m3fn!.tokens - 2 * by.bf16!.tokens)).toBeLessThanOrEqual(16);
    // 64 MiB / (16 tokens x 3072 B) = 1365 blocks.
    expect(by.bf16!.blocks).toBe(Math.floor((64 * 1024 * 1024) / (16 * 3072)));
    expect(by.bf16!.max_concurrency).toBeCloseTo(by.bf16!.blocks / (plan.context_length / 16), 9);
    const sizes = [kvq(['plan', '--kv-cache-memory', '4GB', '--json']), kvq(['plan', '--kv-cache-memory', '1048576', '--json'])].map((r) => json<{ kv_cache_memory: number }>(r).kv_cache_memory);
    expect(sizes).toEqual([4e9, 1048576]);
  });

  it('chat answers each piped line with the chat template (same reply as generate --chat)', () => {
    const r = kvq(['chat', '--temperature', '0', '--max-tokens', '20'], { input: 'Tell me a fortune\nWho made the heavens?\n' });
    expect(r.status, r.stderr).toBe(0);
    const single = json<GenerateJson>(kvq(['generate', '--chat', '--json', '--temperature', '0', '--max-tokens', '20', 'Tell me a fortune']));
    expect(r.stdout.startsWith(`${single.text}\n`)).toBe(true);
    expect(r.stdout.length).toBeGreaterThan(single.text.length + 2); // a second reply followed
    expect(kvq(['chat', '--temperature', '0'], { input: '/exit\nnever answered\n' }).stdout).toBe('');
  });

  it('env reports versions and the chosen backend with reasons for the rejected ones', () => {
    const env = json<{ node: string; backend: { chosen: string; rejected: { name: string; reason: string }[] }; cpu: { logical_cores: number }; packages: Record<string, string> }>(kvq(['env', '--json']));
    expect(env.node).toBe(process.version);
    expect(['cpu', 'reference']).toContain(env.backend.chosen);
    // GPU backends are absent or unusable here: each rejection says why.
    expect(env.backend.rejected.length).toBeGreaterThan(0);
    for (const r of env.backend.rejected) expect(r.reason.length).toBeGreaterThan(5);
    expect(env.packages['@kvq/engine']).toMatch(/^\d+\.\d+\.\d+/);
    expect(kvq(['env', '--json'], { env: { HF_TOKEN: 'hf_secret_value' } }).stdout).not.toMatch(/hf_secret_value/);
    // The CPU backend's ISA override is part of the report, and shows in the chosen backend's vector ISA.
    const forced = json<{ environment: Record<string, string | null>; backend: { chosen: string; info: { simd: string } } }>(
      kvq(['env', '--json'], { env: { KVQ_CPU_ISA: 'scalar' } }),
    );
    expect(forced.environment.KVQ_CPU_ISA).toBe('scalar');
    if (forced.backend.chosen === 'cpu') expect(forced.backend.info.simd).toBe('none');
  });

  it('serve: answers on the printed URL and stops cleanly on SIGTERM', async () => {
    const child = spawn(process.execPath, [bin, 'serve', '--port', '0', '--served-model-name', 'tiny', '--kv-cache-memory', '8MiB', '--kv-offload-memory', '16MiB'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no URL printed: ${out}`)), 30_000);
      child.stdout.on('data', () => {
        const m = /on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
    });
    const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };
    expect(models.data[0]!.id).toBe('tiny');
    const r = (await (await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'tiny', prompt: 'Hi', max_tokens: 4 }) })).json()) as { usage: { completion_tokens: number } };
    expect(r.usage.completion_tokens).toBe(4);
    expect(out).toMatch(/KV tiers host/);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/^kvq:kv_tier_hits_total\{model_name="tiny",tier="host"\} 0$/m);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it('bench measures 1 and 2 streams through the server', () => {
    const r = json<{ results: { concurrency: number; generatedTokens: number; tokensPerSecond: number; speedup: number }[] }>(
      kvq(['bench', '--concurrency', '1,2', '--max-tokens', '8', '--repeat', '1', '--json']),
    );
    expect(r.results.map((x) => [x.concurrency, x.generatedTokens])).toEqual([[1, 8], [2, 16]]);
    expect(r.results[0]!.speedup).toBe(1);
    for (const x of r.results) expect(x.tokensPerSecond).toBeGreaterThan(0);
  });
});
