import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer, measureThroughput, type ThroughputResult } from '@kvq/server';
import { MODEL_HELP, MODEL_OPTIONS, parseCommand, parseNumber } from '../../args.js';
import { CliError } from '../../errors.js';
import { asCliError, openModel } from '../../model.js';
import type { CliIo } from '../../registry.js';

const HELP = `Usage: kvq bench [options]

Serving throughput: starts the OpenAI-compatible server on a loopback port and measures the aggregate generation
rate (tokens/s) of 1, 4 and 16 concurrent streaming requests (greedy, EOS ignored, so every stream generates
--max-tokens tokens), then reports each level's speed-up over the single stream (continuous batching reads each
weight once per step for the whole batch; the target is >= 4x at 16 streams on the CPU backend).

${MODEL_HELP}

With --peer: the side-by-side benchmark against llama.cpp (node-llama-cpp 3.21.1) on identical GGUF models,
written to docs/benchmarks.md (a kvq source checkout only: the private @kvq/bench-peer package runs it; the options
after --peer are its own, see \`kvq bench --peer --help\`).

Bench options:
  --peer [OPTIONS]          run the llama.cpp side-by-side benchmark instead
  --concurrency LIST        comma-separated levels (default 1,4,16)
  --max-tokens N            tokens per stream (default 128)
  --repeat N                runs per level; the best is kept (default 2)
  --json                    print JSON
  -h, --help                show this help
`;

/** The bench-peer runner of the kvq checkout this CLI runs from (or the current directory's), if any. */
export function findPeerRunner(from: readonly string[] = [dirname(fileURLToPath(import.meta.url)), process.cwd()]): string | undefined {
  for (const start of from) {
    let dir = resolve(start);
    for (;;) {
      const pkg = join(dir, 'packages', 'bench-peer', 'package.json');
      if (existsSync(pkg)) return join(dir, 'packages', 'bench-peer', 'dist', 'run.js');
      const up = dirname(dir);
      if (up === dir) break;
      dir = up;
    }
  }
  return undefined;
}

async function runPeer(argv: string[], io: CliIo): Promise<void> {
  const runner = findPeerRunner();
  if (!runner) {
    throw new CliError(
      'USAGE',
      'kvq bench --peer runs from a kvq source checkout (packages/bench-peer was not found above this CLI or the current directory): ' +
        'git clone the kvq repository, then `pnpm install && pnpm build:native && pnpm kvq bench --peer`',
    );
  }
  if (!existsSync(runner)) throw new CliError('USAGE', `${runner} is not built: run \`pnpm --filter @kvq/bench-peer... build\` (or \`pnpm kvq bench --peer\`, which builds it)`);
  const code = await new Promise<number>((done, fail) => {
    const child = spawn(process.execPath, [runner, ...argv], { stdio: ['inherit', 'pipe', 'pipe'] });
    child.stdout.on('data', (d: Buffer) => io.stdout.write(d.toString()));
    child.stderr.on('data', (d: Buffer) => io.stderr.write(d.toString()));
    child.on('error', fail);
    child.on('close', (c, signal) => done(c ?? (signal ? 1 : 0)));
  });
  if (code === 2) throw new CliError('USAGE', 'kvq bench --peer: invalid arguments (see above)');
  if (code !== 0) throw new CliError('RUNTIME', `kvq bench --peer: the benchmark exited with status ${code}`);
}

/** `kvq bench`: the serving throughput benchmark, or with `--peer` the llama.cpp side-by-side benchmark. */
export async function run(argv: string[], io: CliIo): Promise<void> {
  const peerAt = argv.indexOf('--peer');
  if (peerAt >= 0) {
    await runPeer([...argv.slice(0, peerAt), ...argv.slice(peerAt + 1)], io);
    return;
  }
  const { values, positionals } = parseCommand(argv, {
    ...MODEL_OPTIONS,
    concurrency: { type: 'string' },
    'max-tokens': { type: 'string' },
    repeat: { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    io.stdout.write(HELP);
    return;
  }
  if (positionals.length > 0) throw new CliError('USAGE', `unexpected argument ${JSON.stringify(positionals[0])}`);
  const levels = (values.concurrency ?? '1,4,16').split(',').map((x) => parseNumber(x.trim(), '--concurrency', { integer: true, min: 1, max: 256 })!);
  const maxTokens = parseNumber(values['max-tokens'], '--max-tokens', { integer: true, min: 1 }) ?? 128;
  const repeat = parseNumber(values.repeat, '--repeat', { integer: true, min: 1 }) ?? 2;
  const maxSeqs = Math.max(...levels);
  let ctx;
  try {
    ctx = await openModel(values, io, { maxNumSeqs: Math.max(maxSeqs, 1) });
  } catch (error) {
    throw asCliError(error);
  }
  const { llm } = ctx;
  if (maxTokens + 16 > llm.engine.maxModelLen) throw new CliError('USAGE', `--max-tokens ${maxTokens} leaves no room for the prompt in the model's context (${llm.engine.maxModelLen})`);
  const server = await createServer({ llm, port: 0, host: '127.0.0.1', kvCacheDtype: ctx.kvCacheDtype, servedModelName: 'bench', maxQueuedRequests: maxSeqs * 2 });
  const results: ThroughputResult[] = [];
  try {
    const url = await server.listen();
    await measureThroughput(url, { concurrency: 2, maxTokens: 8, model: 'bench' }); // warm-up
    for (const c of levels) {
      let best: ThroughputResult | undefined;
      for (let r = 0; r < repeat; r++) {
        const res = await measureThroughput(url, { concurrency: c, maxTokens, model: 'bench' });
        if (res.generatedTokens !== c * maxTokens) throw new CliError('RUNTIME', `bench: expected ${c * maxTokens} tokens at concurrency ${c}, got ${res.generatedTokens}`);
        if (!best || res.tokensPerSecond > best.tokensPerSecond) best = res;
      }
      results.push(best!);
      if (!values.json) io.stderr.write(`kvq bench: ${c} stream${c === 1 ? '' : 's'}: ${best!.tokensPerSecond.toFixed(1)} tok/s\n`);
    }
  } finally {
    await server.close({ graceMs: 0 });
    llm.dispose();
  }
  const base = results.find((r) => r.concurrency === 1) ?? results[0]!;
  const rows = results.map((r) => ({ ...r, speedup: r.tokensPerSecond / base.tokensPerSecond }));
  if (values.json) {
    io.stdout.write(`${JSON.stringify({ model: ctx.choice.name, backend: llm.backend.name, backend_info: llm.backend.info, kv_cache_dtype: ctx.kvCacheDtype, max_tokens: maxTokens, results: rows }, null, 2)}\n`);
    return;
  }
  const lines = [
    `${ctx.choice.name}, backend ${llm.backend.name} (${llm.backend.info.simd}, ${llm.backend.info.threads} threads), KV cache ${llm.kvDtype}, ${maxTokens} tokens per stream`,
    'streams  tok/s      speed-up  mean TTFT',
    ...rows.map((r) => `${String(r.concurrency).padStart(7)}  ${r.tokensPerSecond.toFixed(1).padStart(9)}  ${r.speedup.toFixed(2).padStart(7)}x  ${r.meanTimeToFirstTokenMs.toFixed(0).padStart(6)} ms`),
  ];
  io.stdout.write(`${lines.join('\n')}\n`);
}
