import { argmax, logSoftmax } from '../sampling/sampler.js';
import type { LLM } from '../llm/llm.js';

/** Quality of one KV-cache configuration on a set of documents, against a reference configuration. */
export interface KvQualityResult {
  /** Scored tokens (every token after each document's first). */
  readonly tokens: number;
  readonly documents: number;
  /** Sum and mean negative log-likelihood (nats). */
  readonly nllSum: number;
  readonly nllMean: number;
  readonly perplexity: number;
  /** Mean KL(reference || candidate) over scored positions (nats); 0 when candidate is the reference. */
  readonly klMean: number;
  /** Fraction of positions where both predict the same most likely token. */
  readonly top1Agreement: number;
}

/**
 * Splits an evaluation text into documents at blank lines (trimmed, empty ones dropped).
 */
export function splitDocuments(text: string): string[] {
  return text
    .split(/\r?\n\s*\r?\n/)
    .map((d) => d.trim())
    .filter((d) => d.length > 0);
}

/**
 * Scores `documents` (token ids, BOS included) with `candidate` and compares every next-token distribution with
 * `reference`'s (e.g. the same model with KV `auto`): perplexity, mean KL divergence and top-1 agreement.
 * Pass the same LLM twice to get the reference's own perplexity (KL 0, agreement 1).
 */
export async function evaluateKvQuality(
  reference: LLM,
  candidate: LLM,
  documents: readonly (readonly number[])[],
  onProgress?: (done: number, total: number) => void,
): Promise<KvQualityResult> {
  let nllSum = 0;
  let klSum = 0;
  let agree = 0;
  let tokens = 0;
  for (let d = 0; d < documents.length; d++) {
    const doc = documents[d]!;
    const vocab = reference.model.config.vocabSize;
    const refRows: Float64Array[] = [];
    await reference.score(doc, (_first, logits, rows) => {
      for (let r = 0; r < rows; r++) refRows.push(logSoftmax(logits.subarray(r * vocab, (r + 1) * vocab)));
    });
    let pos = 0;
    const result = await candidate.score(doc, (_first, logits, rows) => {
      for (let r = 0; r < rows; r++, pos++) {
        if (pos >= doc.length - 1) continue; // the last position predicts nothing we score
        const q = logSoftmax(logits.subarray(r * vocab, (r + 1) * vocab));
        const p = refRows[pos]!;
        let kl = 0;
        for (let i = 0; i < vocab; i++) {
          const pi = Math.exp(p[i]!);
          if (pi > 0) kl += pi * (p[i]! - q[i]!);
        }
        klSum += kl;
        if (argmax(p) === argmax(q)) agree++;
      }
    });
    nllSum += result.nllSum;
    tokens += result.count;
    onProgress?.(d + 1, documents.length);
  }
  const nllMean = tokens ? nllSum / tokens : 0;
  return {
    tokens,
    documents: documents.length,
    nllSum,
    nllMean,
    perplexity: Math.exp(nllMean),
    klMean: tokens ? klSum / tokens : 0,
    top1Agreement: tokens ? agree / tokens : 1,
  };
}
