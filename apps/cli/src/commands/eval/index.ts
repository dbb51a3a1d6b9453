import { readFile, writeFile } from 'node:fs/promises';
import { isFp8Dtype, resolveKvCacheDtype } from '@kvq/cache';
import { calculateKvScalesObserver, LLM, logSoftmax, type AttentionObserver, type LoadedModel } from '@kvq/engine';
import { dequantizeScaled, quantizeScaled, type Fp8Format } from '@kvq/fp8';
import { engineOptions, MODEL_HELP, MODEL_OPTIONS, parseCommand, parseNumber } from '../../args.js';
import { CliError } from '../../errors.js';
import { asCliError, loadWithProgress, resolveModel, warnTo } from '../../model.js';
import { ProgressBar } from '../../progress.js';
import type { CliIo } from '../../registry.js';
import { layerErrorSvg } from './plot.js';

const HELP = `Usage: kvq eval --text FILE [options]

Perplexity of a text file under the model with the chosen KV cache, and how far the quantized cache moves the
model's predictions from an 'auto' (unquantized) run of the same model: mean KL(auto || quantized) and top-1
agreement over every scored position. Documents are separated by blank lines and scored independently: BOS is
prepended and every following token is scored. Documents longer than --max-model-len are scored in windows
(each window starts with the last token of the previous one).

${MODEL_HELP}

Eval options:
  --text FILE               the evaluation text (required)
  --kv-scales S             from-checkpoint (default) | none (all scales 1.0) | calculate (first-pass amax, vLLM's
                            calculate_kv_scales; same as --calculate-kv-scales)
  --max-docs N              score only the first N documents
  --plot FILE.svg           write a bar chart of per-layer K/V FP8 quantization error (relative RMS) to FILE.svg
  --json                    print JSON: tokens, nll_sum, nll_mean, perplexity, kl_mean, top1_agreement, ...
  -h, --help                show this help
`;

interface LayerError {
  kErr: number;
  kSig: number;
  vErr: number;
  vSig: number;
}

/** `kvq eval`: perplexity, KL divergence and top-1 agreement against an unquantized run. */
export async function run(argv: string[], io: CliIo): Promise<void> {
  const { values, positionals } = parseCommand(argv, {
    ...MODEL_OPTIONS,
    text: { type: 'string' },
    'kv-scales': { type: 'string' },
    'max-docs': { type: 'string' },
    plot: { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    io.stdout.write(HELP);
    return;
  }
  if (positionals.length > 0) throw new CliError('USAGE', `unexpected argument ${JSON.stringify(positionals[0])}; the text is given with --text FILE`);
  if (!values.text) throw new CliError('USAGE', 'kvq eval needs --text FILE');
  const scalesMode = values['kv-scales'] ?? (values['calculate-kv-scales'] ? 'calculate' : 'from-checkpoint');
  if (!['from-checkpoint', 'none', 'calculate'].includes(scalesMode)) {
    throw new CliError('USAGE', `--kv-scales must be from-checkpoint, none or calculate, got ${JSON.stringify(scalesMode)}`);
  }
  const maxDocs = parseNumber(values['max-docs'], '--max-docs', { integer: true, min: 1 });
  const options = engineOptions(values);
  if (options.quantizationParamPath !== undefined && scalesMode !== 'from-checkpoint') {
    throw new CliError('USAGE', `--quantization-param-path gives the KV scales; it cannot be combined with --kv-scales ${scalesMode}`);
  }
  let text: string;
  try {
    text = await readFile(values.text, 'utf8');
  } catch (error) {
    throw new CliError('RUNTIME', `--text ${values.text}: cannot read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, { cause: error });
  }
  let docs = text.split(/\n\s*\n/).filter((d) => d.trim().length > 0);
  if (maxDocs !== undefined) docs = docs.slice(0, maxDocs);
  if (docs.length === 0) throw new CliError('RUNTIME', `--text ${values.text} has no documents (non-blank text separated by blank lines)`);

  const choice = await resolveModel(values.model, io);
  let loaded: LoadedModel;
  try {
    loaded = await loadWithProgress(choice, io, { kvCacheDtype: options.kvCacheDtype, ...(values.tokenizer ? { tokenizerPath: values.tokenizer } : {}) });
  } catch (error) {
    throw asCliError(error);
  }
  const modelDtype = loaded.config.torchDtype === 'float32' ? 'f32' : loaded.config.torchDtype === 'float16' ? 'f16' : 'bf16';
  const storage = resolveKvCacheDtype(options.kvCacheDtype, modelDtype);
  const fp8 = isFp8Dtype(storage);
  if (values.plot && !fp8) throw new CliError('USAGE', '--plot shows FP8 quantization error; use it with an FP8 --kv-cache-dtype');
  const quantModel: LoadedModel = scalesMode === 'none' ? { ...loaded, kvScales: undefined } : loaded;
  const common = {
    ...(options.maxModelLen !== undefined ? { maxModelLen: options.maxModelLen } : {}),
    ...(options.kvCacheMemory !== undefined ? { kvCacheMemory: options.kvCacheMemory } : {}),
    ...(options.blockSize !== undefined ? { blockSize: options.blockSize } : {}),
    ...(options.backend !== undefined ? { backend: options.backend } : {}),
    backendCandidates: options.backendCandidates,
    ...(options.ggmlActivations !== undefined ? { ggmlActivations: options.ggmlActivations } : {}),
    enablePrefixCaching: false,
    maxNumSeqs: 16,
    onWarning: warnTo(io),
  };
  let q: LLM;
  let a: LLM | undefined;
  try {
    q = await LLM.create({
      ...common,
      model: quantModel,
      kvCacheDtype: options.kvCacheDtype,
      ...(options.kvCacheValueDtype !== undefined ? { kvCacheValueDtype: options.kvCacheValueDtype } : {}),
      ...(options.kvCacheRotation !== undefined ? { kvCacheRotation: options.kvCacheRotation } : {}),
      ...(options.kvCacheDtypeSkipLayers !== undefined ? { kvCacheDtypeSkipLayers: options.kvCacheDtypeSkipLayers } : {}),
      ...(options.kvCacheKeepSink !== undefined ? { kvCacheKeepSink: options.kvCacheKeepSink } : {}),
      ...(options.kvCacheKeepRecent !== undefined ? { kvCacheKeepRecent: options.kvCacheKeepRecent } : {}),
      ...(options.quantizationParamPath !== undefined ? { quantizationParamPath: options.quantizationParamPath } : {}),
    });
    const rotated = q.kvCacheRotation !== 'none';
    const valueStorage = options.kvCacheValueDtype !== undefined ? resolveKvCacheDtype(options.kvCacheValueDtype, modelDtype) : storage;
    const autoStorage = resolveKvCacheDtype('auto', modelDtype);
    a = storage === autoStorage && valueStorage === autoStorage && !rotated ? undefined : await LLM.create({ ...common, model: loaded, kvCacheDtype: 'auto', backend: q.backend });
  } catch (error) {
    throw asCliError(error);
  }
  try {
    // Observers on the quantized run: calculate_kv_scales (first pass) and the per-layer error statistics.
    const layers: LayerError[] = Array.from({ length: loaded.config.numLayers }, () => ({ kErr: 0, kSig: 0, vErr: 0, vSig: 0 }));
    const calc = scalesMode === 'calculate' && fp8 ? calculateKvScalesObserver(q.backend, q.engine.storage) : undefined;
    if (calc || values.plot) {
      const st = q.engine.storage;
      const observer: AttentionObserver = (layer, t) => {
        if (calc && !calc.done()) calc.observer(layer, t);
        if (!values.plot) return;
        const cache = st.layer(layer);
        const n = t.numTokens * st.numKvHeads * st.headSize;
        const acc = layers[layer]!;
        const measure = (x: Float32Array, scales: Float32Array): [number, number] => {
          const layout = scales.length === 1 ? ({ granularity: 'tensor' } as const) : ({ granularity: 'head', numHeads: st.numKvHeads, headSize: st.headSize } as const);
          const src = x.subarray(0, n);
          const back = dequantizeScaled(quantizeScaled(src, scales, layout, storage as Fp8Format), scales, layout, storage as Fp8Format);
          let err = 0;
          let sig = 0;
          for (let i = 0; i < n; i++) {
            const d = src[i]! - back[i]!;
            err += d * d;
            sig += src[i]! * src[i]!;
          }
          return [err, sig];
        };
        const [ke, ks] = measure(t.key, cache.kScale);
        const [ve, vs] = measure(t.value, cache.vScale);
        acc.kErr += ke;
        acc.kSig += ks;
        acc.vErr += ve;
        acc.vSig += vs;
      };
      q.engine.setAttentionObserver(observer);
    }

    const maxLen = q.engine.maxModelLen;
    const windows: number[][] = [];
    for (const doc of docs) {
      const ids = loaded.tokenizer.encode(doc);
      if (ids.length < 2) continue;
      for (let start = 0; start < ids.length - 1; start += maxLen - 1) windows.push(ids.slice(start, start + maxLen));
    }
    const result = scoreWindows(q, a, windows, new ProgressBar(io.stderr, 'eval', (d, t) => `${d}/${t} tokens`));
    const perplexity = Math.exp(result.nllSum / result.tokens);
    const telemetry = q.kvTelemetry();
    const sum = (pick: (t: { written: number; saturated: number; flushed: number }) => number) => (telemetry ?? []).reduce((n, l) => n + pick(l.k) + pick(l.v), 0);
    const out = {
      model: choice.name,
      text: values.text,
      documents: docs.length,
      windows: windows.length,
      kv_cache_dtype: options.kvCacheDtype,
      ...(options.kvCacheValueDtype !== undefined ? { kv_cache_value_dtype: options.kvCacheValueDtype } : {}),
      kv_cache_storage_dtype: q.kvDtype,
      kv_cache_rotation: q.kvCacheRotation,
      ...(q.kvCacheKeep ? { kv_cache_keep: { sink_tokens: q.kvCacheKeep.sinkTokens, recent_tokens: q.kvCacheKeep.recentTokens, layers: q.kvCacheKeep.layers, bytes: q.kvCacheKeep.bytes } } : {}),
      kv_scales: fp8 ? scalesMode : 'n/a',
      kv_cache_bytes_per_token: q.kvBytesPerToken,
      tokens: result.tokens,
      nll_sum: result.nllSum,
      nll_mean: result.nllSum / result.tokens,
      perplexity,
      kl_mean: result.klSum / result.tokens,
      top1_agreement: result.agree / result.tokens,
      ...(telemetry
        ? {
            kv_telemetry: {
              written: sum((t) => t.written),
              saturated: sum((t) => t.saturated),
              flushed: sum((t) => t.flushed),
              layers: telemetry.map((l) => ({ layer: l.layer, dtype: l.dtype, k: l.k, v: l.v })),
            },
          }
        : {}),
      reference: a
        ? { kv_cache_dtype: 'auto', kv_cache_storage_dtype: a.kvDtype, nll_mean: result.refNllSum / result.tokens, perplexity: Math.exp(result.refNllSum / result.tokens) }
        : { kv_cache_dtype: 'auto', note: 'this run is the unquantized reference (KL 0, agreement 1 by definition)' },
      ...(values.plot
        ? {
            layer_error: layers.map((l, i) => ({ layer: i, k_rel_rms: Math.sqrt(l.kErr / Math.max(l.kSig, 1e-30)), v_rel_rms: Math.sqrt(l.vErr / Math.max(l.vSig, 1e-30)) })),
            plot: values.plot,
          }
        : {}),
    };
    if (values.plot) {
      await writeFile(values.plot, layerErrorSvg(out.layer_error!, `${choice.name}: ${q.kvDtype} KV cache, scales ${scalesMode}`));
    }
    if (values.json) {
      io.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
      return;
    }
    const f = (x: number, d = 4) => x.toFixed(d);
    const lines = [
      `model ${choice.name}, KV cache ${options.kvCacheDtype} (${q.kvDtype}${options.kvCacheValueDtype !== undefined ? `; V ${options.kvCacheValueDtype}` : ''}, ${q.kvBytesPerToken} B/token)${q.kvCacheRotation === 'none' ? '' : `, rotation ${q.kvCacheRotation}`}${q.kvCacheKeep ? `, kept in ${a?.kvDtype ?? 'the model dtype'}: sink ${q.kvCacheKeep.sinkTokens} + recent ${q.kvCacheKeep.recentTokens} tokens` : ''}${fp8 ? `, scales ${scalesMode}` : ''}`,
      `${docs.length} documents, ${result.tokens} scored tokens`,
      `nll_mean ${f(out.nll_mean)}  perplexity ${f(perplexity, 3)}`,
    ];
    if (a) {
      lines.push(`auto (${a.kvDtype}): nll_mean ${f(out.reference.nll_mean as number)}  perplexity ${f(out.reference.perplexity as number, 3)}`);
      lines.push(`KL(auto || ${q.kvDtype}) mean ${out.kl_mean.toExponential(3)} nats/token  top-1 agreement ${(out.top1_agreement * 100).toFixed(2)}%`);
    }
    if (telemetry) {
      const w = Math.max(1, sum((t) => t.written));
      const pct = (n: number) => `${n} (${((100 * n) / w).toFixed(4)}%)`;
      lines.push(`KV cache writes: ${sum((t) => t.written)} values, saturated ${pct(sum((t) => t.saturated))}, flushed to zero ${pct(sum((t) => t.flushed))}`);
    }
    if (values.plot) lines.push(`per-layer quantization error plot: ${values.plot}`);
    io.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    q.dispose();
  }
}

interface ScoreTotals {
  tokens: number;
  nllSum: number;
  refNllSum: number;
  klSum: number;
  agree: number;
}

/**
 * Scores every window on the quantized engine `q` and (when given) the reference engine `a` in lock step, pairing
 * the logits rows of each position to accumulate KL(a || q) and top-1 agreement without holding whole documents.
 */
function scoreWindows(q: LLM, a: LLM | undefined, windows: readonly number[][], bar: ProgressBar): ScoreTotals {
  const totals: ScoreTotals = { tokens: 0, nllSum: 0, refNllSum: 0, klSum: 0, agree: 0 };
  const vocab = q.model.config.vocabSize;
  const pending = { q: new Map<string, Float32Array>(), a: new Map<string, Float32Array>() };
  const totalTokens = windows.reduce((s, w) => s + w.length - 1, 0);
  const pair = (key: string) => {
    const rq = pending.q.get(key);
    const ra = pending.a.get(key);
    if (!rq || !ra) return;
    pending.q.delete(key);
    pending.a.delete(key);
    const lq = logSoftmax(rq);
    const la = logSoftmax(ra);
    let kl = 0;
    let bq = 0;
    let ba = 0;
    for (let i = 0; i < vocab; i++) {
      const p = Math.exp(la[i]!);
      if (p > 0) kl += p * (la[i]! - lq[i]!);
      if (lq[i]! > lq[bq]!) bq = i;
      if (la[i]! > la[ba]!) ba = i;
    }
    totals.klSum += Math.max(0, kl);
    if (bq === ba) totals.agree++;
  };
  const collector = (side: 'q' | 'a', w: number, length: number) => (first: number, logits: Float32Array, rows: number) => {
    if (!a) return;
    for (let r = 0; r < rows; r++) {
      const pos = first + r;
      if (pos + 1 >= length) continue; // the last position predicts past the window: not scored
      const key = `${w}:${pos}`;
      pending[side].set(key, logits.slice(r * vocab, (r + 1) * vocab));
      pair(key);
    }
  };
  const batch = 16;
  let scored = 0;
  for (let start = 0; start < windows.length; start += batch) {
    const ids: string[] = [];
    windows.slice(start, start + batch).forEach((tokens, j) => {
      const w = start + j;
      const id = `eval-${w}`;
      ids.push(id);
      q.engine.addRequest(id, tokens, {}, { scoreOnly: true, ...(a ? { onPromptLogits: collector('q', w, tokens.length) } : {}) });
      a?.engine.addRequest(id, tokens, {}, { scoreOnly: true, onPromptLogits: collector('a', w, tokens.length) });
    });
    const sum = (lps: readonly (number | undefined)[] | undefined) => {
      let s = 0;
      let n = 0;
      for (const lp of lps ?? []) if (lp !== undefined) (s -= lp), n++;
      return [s, n] as const;
    };
    while (q.engine.hasUnfinishedRequests() || a?.engine.hasUnfinishedRequests()) {
      if (a?.engine.hasUnfinishedRequests()) {
        for (const out of a.engine.step()) if (out.finished) totals.refNllSum += sum(out.promptLogprobs)[0];
      }
      if (q.engine.hasUnfinishedRequests()) {
        for (const out of q.engine.step()) {
          if (!out.finished) continue;
          const [s, n] = sum(out.promptLogprobs);
          totals.nllSum += s;
          totals.tokens += n;
          scored += n;
          bar.update(scored, totalTokens);
        }
      }
    }
  }
  bar.done();
  if (!a) totals.agree = totals.tokens;
  else if (pending.q.size || pending.a.size) throw new CliError('RUNTIME', `internal: ${pending.q.size + pending.a.size} logits rows were left unpaired`);
  return totals;
}
