import type { ModelSpeedReport, PeerBenchmarkReport, SpeedSummary } from '../benchmark.js';
import { bestPeer } from '../benchmark.js';
import { PEER_VERSION } from '../peer/install.js';
import type { QualityResult } from '../protocol.js';
import { CROSS_ENGINE_TARGETS, type CrossEngineModelResult } from '../quantized.js';

/** Markers of the hand-written section that survives regeneration. */
export const NOTES_START = '<!-- notes:start (kept when the report is regenerated) -->';
export const NOTES_END = '<!-- notes:end -->';

const fx = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const ratio = (x: number) => (Number.isFinite(x) ? `${x.toFixed(2)}x` : 'n/a');
const mib = (b: number) => (b / 2 ** 20).toFixed(0);

function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

function speedTable(r: ModelSpeedReport): string {
  const ctx = r.contexts;
  const head = ['configuration', `prompt ${ctx[0]} tok/s`, 'TTFT ms', ...ctx.map((c) => `decode @${c} tok/s`), ...ctx.slice(1).map((c) => `prefill ${c} ms`), 'peak RSS MiB', 'KV bytes/token'];
  const rows = r.summaries.map((s) => [
    s.config.side === 'kvq' ? `**${s.label}**` : s.label,
    fx(s.promptTokensPerSecond, 0),
    fx(s.ttftMs, 0),
    ...ctx.map((c) => fx(s.decodeTokensPerSecond[c] ?? Number.NaN)),
    ...ctx.slice(1).map((c) => fx(s.prefillMs[c] ?? Number.NaN, 0)),
    mib(s.peakRssBytes),
    String(Math.round(s.kvBytesPerToken)),
  ]);
  return table(head, rows);
}

function ratioTable(r: ModelSpeedReport): string {
  const ctx = r.contexts;
  const s = r.summaries;
  const dec = (c: number) => (x: SpeedSummary) => x.decodeTokensPerSecond[c] ?? Number.NaN;
  const pp = (x: SpeedSummary) => x.promptTokensPerSecond;
  const rows: string[][] = [];
  for (const ours of s.filter((x) => x.config.side === 'kvq')) {
    const cells = [`**${ours.label}**`];
    const against = (pick: (c: number) => SpeedSummary | undefined, metric: (c: number) => (x: SpeedSummary) => number) =>
      ctx.map((c) => {
        const p = pick(c);
        return p ? `${ratio(metric(c)(ours) / metric(c)(p))}` : 'n/a';
      });
    cells.push(...against((c) => bestPeer(s, dec(c)), dec));
    cells.push(...against((c) => bestPeer(s, dec(c), (k) => k.kv === 'f16'), dec));
    cells.push(...against((c) => bestPeer(s, dec(c), (k) => k.kv === 'q8_0'), dec));
    const f16pp = bestPeer(s, pp, (k) => k.kv === 'f16');
    const bestPp = bestPeer(s, pp);
    cells.push(f16pp ? ratio(pp(ours) / pp(f16pp)) : 'n/a', bestPp ? ratio(pp(ours) / pp(bestPp)) : 'n/a');
    rows.push(cells);
  }
  const head = [
    'kvq configuration',
    ...ctx.map((c) => `decode @${c} / llama.cpp best`),
    ...ctx.map((c) => `decode @${c} / f16 (best FA)`),
    ...ctx.map((c) => `decode @${c} / q8_0`),
    'prompt / f16 (best FA)',
    'prompt / llama.cpp best',
  ];
  const best = ctx.map((c) => {
    const b = bestPeer(s, dec(c));
    return `@${c}: ${b ? `${b.label} (${fx(dec(c)(b))} tok/s)` : 'n/a'}`;
  });
  const bestPp = bestPeer(s, pp);
  return `${table(head, rows)}\n\nllama.cpp's best decode configuration: ${best.join('; ')}. Best prompt processing: ${bestPp ? `${bestPp.label} (${fx(pp(bestPp), 0)} tok/s)` : 'n/a'}.`;
}

function qualityTable(q: QualityResult): string {
  return table(
    ['KV cache', 'KV bytes/token', 'NLL/token (nats)', 'perplexity', `KL vs ${q.reference} (nats)`, 'top-1 agreement'],
    q.rows.map((r) => [r.label, String(Math.round(r.kvBytesPerToken)), r.nllMean.toFixed(5), r.perplexity.toFixed(3), r.klMean === 0 ? '0 (reference)' : r.klMean.toExponential(2), `${(r.top1Agreement * 100).toFixed(2)}%`]),
  );
}

function crossEngineSection(results: readonly CrossEngineModelResult[]): string {
  const { klMax, top1Min } = CROSS_ENGINE_TARGETS;
  const types = (t: Readonly<Record<string, number>> | undefined) =>
    t
      ? Object.entries(t)
          .map(([k, n]) => `${n} ${k}`)
          .join(', ')
      : 'n/a';
  const rows: string[][] = [];
  for (const r of results) {
    for (const row of r.kvq) {
      const met = row.klMean <= klMax && row.top1Agreement >= top1Min;
      rows.push([
        r.scheme.toUpperCase(),
        r.model.name,
        `${row.label}${row.kvDtype && row.kvDtype !== row.config.kv ? ` (${row.kvDtype})` : ''}`,
        String(r.positions),
        row.klMean.toExponential(2),
        `${(row.top1Agreement * 100).toFixed(2)}%`,
        row.maxDisagreementGap !== undefined ? row.maxDisagreementGap.toFixed(4) : 'n/a',
        row.nllMean.toFixed(4),
        r.llamaCpp.nllMean.toFixed(4),
        met ? 'yes' : '**no**',
      ]);
    }
  }
  const files = results.map((r) => [r.model.name, `${(r.model.fileBytes / 2 ** 20).toFixed(1)} MiB`, types(r.model.tensorTypes), r.model.origin]);
  return [
    `The same quantized GGUF file is scored by llama.cpp (f32 KV, flash attention off) and by kvq, position by position: KL(llama.cpp || kvq) in nats, top-1 agreement with llama.cpp, and each engine's NLL of the actual next token. Targets: KL <= ${klMax}, top-1 >= ${top1Min * 100}%. kvq-tiny is scored on its evaluation text (at most 512 tokens per document); the random 768x12 model on seeded random token documents of 256 positions.`,
    '',
    table(['type (file)', 'model', 'kvq KV cache', 'positions', 'KL(llama.cpp ‖ kvq)', 'top-1', 'largest llama.cpp top-1/top-2 gap where top-1 differs (nats)', 'NLL kvq', 'NLL llama.cpp', 'met'], rows),
    '',
    'Files (the type mix is llama.cpp\'s for that file type, as `kvq quantize` writes it):',
    '',
    table(['file', 'size', 'tensors by type', 'made by'], files),
    '',
    "**The engines do not do the same arithmetic on the same weights.** llama.cpp's CPU backend quantizes the activations of every Q8_0/Q4_0/K-quant matrix product to 8 bits (ggml's `vec_dot_type`: Q8_0 blocks of 32 for Q8_0/Q4_0/Q5_x, Q8_K blocks of 256 for the K-quants) and multiplies integer blocks; kvq keeps float32 activations and multiplies them by the stored blocks unpacked to their exact values (float32 accumulation). Part of the KL above is therefore llama.cpp's activation rounding, not a kvq error; with a `float32` KV cache on both sides the KV cache plays no part (kvq `auto` on a quantized file stores bf16 K/V, which adds its own small rounding; `fp8_e4m3` is kvq's FP8 cache with scale 1.0).",
  ].join('\n');
}

/** The kvq KV types of the speed tables, as markdown code spans (the default set when no speed was run). */
function kvqKvList(report: PeerBenchmarkReport): string {
  const kinds = [...new Set(report.speed.flatMap((r) => r.summaries.filter((x) => x.config.side === 'kvq').map((x) => String(x.config.kv))))];
  return (kinds.length ? kinds : ['auto', 'fp8_e4m3', 'fp8_e5m2']).map((k) => `\`${k}\``).join(', ');
}

function observedScheduling(report: PeerBenchmarkReport): string {
  const seen = new Set(report.speed.flatMap((r) => r.summaries.map((s) => s.scheduling)));
  return seen.size ? [...seen].join(', ') : 'n/a';
}

/**
 * docs/benchmarks.md from a report: machine, versions, method, how to rerun, speed tables with ratios, targets,
 * quality, greedy parity and the chart. `notes` (the hand-written section of the previous file) is kept.
 */
export function benchmarkMarkdown(report: PeerBenchmarkReport, files: { json: string; svg: string }, notes?: string): string {
  const md: string[] = [];
  const m = report.machine;
  md.push('# kvq vs llama.cpp: side-by-side benchmarks and KV-cache quality', '');
  md.push(
    `Generated by \`@kvq/bench-peer\` (\`kvq bench --peer\`) on ${report.date.slice(0, 10)}. Both engines run in Node on the same CPU, in the same run, on the same GGUF files, ${report.settings.threads} threads each. Every number is a median of ${report.settings.repeats} runs; each run of each configuration is its own child process. Raw results: [${files.json}](${files.json}).`,
    '',
  );
  md.push('## Machine and versions', '');
  md.push(
    table(
      ['', ''],
      [
        ['CPU', `${m.cpu} (${m.logicalCpus} logical CPUs; ${m.cpuFeatures})`],
        ['memory', `${m.memoryGiB} GiB`],
        ['OS', String(m.os)],
        ['Node', String(m.node)],
        ['load average (1/5/15 min) at start / end', `${m.loadAverageAtStart} / ${m.loadAverageAtEnd ?? 'n/a'}`],
        ...Object.entries(report.versions).map(([k, v]) => [k, v]),
        ['scheduling of measured processes', String(report.settings.scheduling)],
      ],
    ),
    '',
  );
  md.push('## How it is measured', '');
  md.push(
    [
      `- **Same weights.** kvq loads the very GGUF file llama.cpp loads (\`LLM.create({ model: ggufPath })\`). Random-weight shapes are written by this package's GGUF writer (seeded, with a synthetic 32000-token SentencePiece vocabulary); stories260K is llama.cpp's own conversion; kvq-tiny is converted from its Hugging Face bf16 checkpoint to GGUF BF16 bit for bit. The writer test proves kvq reads back every tensor bit for bit.`,
      `- **llama.cpp** through node-llama-cpp ${PEER_VERSION} (its prebuilt linux-x64 CPU binary, no GPU, no source build), \`threads: ${report.settings.threads}\`, batch ${report.settings.prefillChunk}, KV types via \`experimentalKvCacheKeyType\`/\`experimentalKvCacheValueType\`, every type with flash attention off and on where llama.cpp allows it (a quantized V cache needs flash attention; q8_0/q4_0 need head_dim divisible by 32). Ratios are taken against llama.cpp's best configuration for each metric, and against f16 and q8_0 specifically.`,
      `- **kvq** with its native CPU backend (\`KVQ_CPU_THREADS=${report.settings.threads}\`), KV ${kvqKvList(report)} (FP8 at scale 1.0 for speed; \`auto\` is the model dtype), prefill in ${report.settings.prefillChunk}-token chunks like llama.cpp's batch, prefix caching off.`,
      `- **Protocol** per child: load, warm up (32-token prompt, 4 tokens), then for each context length L in ${(report.settings.contexts as number[]).join(', ')}: a fresh sequence, a seeded random prompt of L tokens (same ids on both sides), and ${report.settings.decodeTokens} greedy tokens. *Prefill time* = submit to first token (prefill + first sample); *prompt tok/s* = L / prefill time at L = ${(report.settings.contexts as number[])[0]} (so TTFT and prompt processing are the same measurement, warm); *decode tok/s* = ${Number(report.settings.decodeTokens) - 1} / time from the first to the last token. Longer contexts are built by prefilling that many prompt tokens (reported separately as *prefill ms*). *Peak RSS* is the child's \`maxRSS\` (weights, KV cache, runtime). *KV bytes/token* is K+V over all layers: kvq's own accounting; llama.cpp's from ggml's block sizes (q8_0 = 34 bytes per 32, q4_0 = 18 per 32).`,
      `- **Fairness on a small shared machine.** llama.cpp's threads meet at spin barriers, so its 2-thread decode collapses (to ~1 tok/s) when anything else competes for the 2 cores. Every measured child of both engines therefore runs under ${report.settings.scheduling} (observed inside the children: ${observedScheduling(report)}); configurations alternate between engines, and the order is reversed on every other round.`,
      ...(report.quality ? [`- **Quality** on kvq-tiny (GGUF BF16, 512-token context), text tooling/fixtures/data/eval/kjv-fortunes-public.txt split at blank lines: every fourth document calibrates kvq's per-head e4m3 scales (\`@kvq/calibrate\`, dataset method, static min-max, \`attn_head\`), the others are scored (up to ${report.settings.maxEvalTokens} positions). Each engine is compared with its own f32-KV run on the same tokens: NLL/perplexity of the actual next token, KL(f32 run || configuration), top-1 agreement. kvq's distributions come from its logits (\`llm.score\`), llama.cpp's from node-llama-cpp's full next-token probabilities (\`controlledEvaluate\`, temperature 1, no top-k/top-p/min-p). llama.cpp's reference is f32 KV with flash attention **off**: its CPU flash attention computes in f16, so with it on an f32 cache gives exactly the f16 cache's distributions (checked: identical probabilities); its flash-attention rows (which its quantized V caches need) carry that rounding too, as they do for its users.`] : []),
    ].join('\n'),
    '',
  );
  md.push('## How to rerun', '');
  md.push(
    [
      '```sh',
      'pnpm install && pnpm build:native',
      'pnpm kvq bench --peer                 # or: pnpm --filter @kvq/bench-peer bench:peer',
      'pnpm --filter @kvq/bench-peer bench:peer -- --repeats 3 --tinyllama   # add the TinyLlama-1.1B shape (slow)',
      'pnpm --filter @kvq/bench-peer bench:peer -- --quick                   # harness check: short contexts, 1 round',
      '# quantized weights: cross-engine KL/top-1 per type, then decode speed on the Q8_0 and Q4_K_M files',
      'pnpm --filter @kvq/bench-peer bench:peer -- --no-speed --no-quality --cross-engine all --out /tmp/q1',
      'pnpm --filter @kvq/bench-peer bench:peer -- --no-quality --models llama-768x12-q8_0,llama-768x12-q4_k_m --kvq-kv fp8_e4m3 --peer-kv f16,q8_0 --repeats 2 --out /tmp/q2',
      'node packages/bench-peer/dist/run.js --render docs/benchmarks/peer-results.json,/tmp/q1/benchmarks/peer-results.json,/tmp/q2/benchmarks/peer-results.json',
      '```',
      '',
      `The first run installs node-llama-cpp@${PEER_VERSION} with npm into \`~/.cache/kvq/peer/\` (\`KVQ_PEER_DIR\` overrides; never into the workspace, the lockfile or the default install/test path; no install scripts run). Run as root (or with CAP_SYS_NICE) so the measured processes get \`chrt -r 1\`, or on an otherwise idle machine with \`--realtime off\`. Generated models are cached in \`$TMPDIR/kvq-bench-peer\`.`,
    ].join('\n'),
    '',
  );
  if (report.targets.length > 0) {
    md.push('## Targets', '');
    md.push(table(['target', 'model', 'measured', 'met'], report.targets.map((t) => [t.target, t.model, t.measured, t.met ? 'yes' : '**no**'])), '');
  }
  if (report.speed.length > 0) {
    md.push('## Speed', '');
    md.push(`![decode tokens/s vs context length](${files.svg})`, '');
    for (const r of report.speed) {
      md.push(`### ${r.model.name}`, '', `${r.model.origin}; ${r.model.weightType} weights, ${(r.model.fileBytes / 2 ** 20).toFixed(1)} MiB file; head_dim ${r.model.dims.headDim}.`, '');
      md.push(speedTable(r), '');
      md.push('Ratios (kvq / llama.cpp, medians; > 1 means kvq is faster):', '');
      md.push(ratioTable(r), '');
      if (r.skipped.length > 0) md.push(`Not run: ${r.skipped.map((x) => `${x.label} (${x.reason})`).join('; ')}.`, '');
    }
  }
  if (report.quality) {
    const q = report.quality;
    md.push('## Quality (kvq-tiny)', '');
    md.push(`${q.model.origin}. ${q.documents} scored documents (${q.kvq.positions} positions), ${q.calibrationDocuments} calibration documents. Calibration: ${q.kvq.calibration}.`, '');
    md.push('**kvq**', '', qualityTable(q.kvq), '', '**llama.cpp**', '', qualityTable(q.llamaCpp), '');
    md.push(
      `Cross-engine check (same model?): KL(kvq f32 || llama.cpp f32) = ${q.crossEngine.klMean.toExponential(2)} nats, top-1 agreement ${(q.crossEngine.top1Agreement * 100).toFixed(2)}% over ${q.crossEngine.positions} positions. The engines differ in arithmetic (llama.cpp's BF16 matrix products round activations to bf16; kvq multiplies float32 activations by the bf16 weights), which is why each KV type is judged against its own engine's f32 run.`,
      '',
    );
  }
  if (report.crossEngine?.length) {
    md.push('## Quantized weights: same file, both engines', '');
    md.push(crossEngineSection(report.crossEngine), '');
  }
  if (report.greedy) {
    const g = report.greedy;
    md.push('## Greedy parity (stories260K, from BOS)', '');
    md.push(`kvq \`auto\` (f32 KV) and llama.cpp f32 KV agree on the first **${g.identicalPrefix} of ${g.compared}** greedy tokens.`, '');
    md.push('```text', `kvq:       ${g.kvq.text.replace(/\n/g, ' ')}`, `llama.cpp: ${g.llamaCpp.text.replace(/\n/g, ' ')}`, '```', '');
  }
  if (report.failures?.length) md.push('## Failed steps', '', ...report.failures.map((f) => `- ${f.replace(/\n/g, ' ')}`), '');
  md.push('## Notes', '', NOTES_START, notes?.trim() ? notes.trim() : '_Analysis of this run goes here; the section between the markers is kept when the report is regenerated._', NOTES_END, '');
  return md.join('\n');
}

/** The hand-written notes between the markers of an existing benchmarks.md, if any. */
export function extractNotes(markdown: string): string | undefined {
  const a = markdown.indexOf(NOTES_START);
  const b = markdown.indexOf(NOTES_END);
  if (a < 0 || b < a) return undefined;
  return markdown.slice(a + NOTES_START.length, b).trim();
}
