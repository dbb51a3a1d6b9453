import type { RequestOutput, TokenLogprobs, Tokenizer } from '@kvq/engine';

/**
 * Turns the growing text of one completion into safe streaming deltas: while unfinished, it holds back the last
 * `holdBack` characters (a stop string may still be forming there and would be removed), a trailing U+FFFD (an
 * incomplete UTF-8 character the next token completes) and a lone high surrogate.
 */
export class DeltaText {
  private sent = 0;

  /** @param holdBack characters to keep back while unfinished: (longest stop string length − 1), or 0 */
  constructor(private readonly holdBack: number) {}

  /** Characters emitted so far. */
  get emitted(): number {
    return this.sent;
  }

  /** The next delta for the completion's full current `text`. */
  next(text: string, finished: boolean): string {
    let end = text.length;
    if (!finished) {
      end = Math.max(this.sent, end - this.holdBack);
      while (end > this.sent && text.charCodeAt(end - 1) === 0xfffd) end--;
      if (end > this.sent) {
        const c = text.charCodeAt(end - 1);
        if (c >= 0xd800 && c <= 0xdbff) end--;
      }
    }
    if (end < this.sent) return '';
    const delta = text.slice(this.sent, end);
    this.sent = end;
    return delta;
  }
}

/** The display text of one token (special tokens included), as OpenAI's `logprobs.tokens`. */
export function tokenText(tokenizer: Tokenizer, id: number): string {
  return tokenizer.decode([id], { skipSpecialTokens: false });
}

/** `/v1/completions` logprobs object for a run of generated tokens. */
export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[];
  text_offset: number[];
}

/**
 * Completions-style logprobs for `entries`, text offsets starting at `offset`. `top_logprobs[i]` maps the token
 * text of the `logprobs` most likely tokens, plus the sampled one, to their logprobs (first id wins when two ids
 * share a text).
 */
export function completionLogprobs(tokenizer: Tokenizer, entries: readonly TokenLogprobs[], offset: number): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  let at = offset;
  for (const e of entries) {
    const t = tokenText(tokenizer, e.tokenId);
    out.tokens.push(t);
    out.token_logprobs.push(e.logprob);
    const top: Record<string, number> = {};
    for (const x of e.top) top[tokenText(tokenizer, x.tokenId)] ??= x.logprob;
    // OpenAI and vLLM always include the sampled token, so a position has up to `logprobs` + 1 entries.
    top[t] ??= e.logprob;
    out.top_logprobs.push(top);
    out.text_offset.push(at);
    at += t.length;
  }
  return out;
}

/** One entry of chat logprobs (`choices[].logprobs.content[]`). */
export interface ChatLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * OpenAI's `bytes` of a token: the UTF-8 of its text, except for a token that holds only part of a multi-byte
 * character (its raw bytes are not valid UTF-8 on their own, and its text shows U+FFFD): then the raw bytes
 * (`Tokenizer.tokenBytes`), so that the bytes of consecutive tokens join into the generated text's UTF-8.
 */
function tokenBytesOf(tokenizer: Tokenizer, id: number, text: string): number[] {
  if (text.includes('\uFFFD')) {
    const raw = tokenizer.tokenBytes(id);
    try {
      strictUtf8.decode(raw);
    } catch {
      return [...raw];
    }
  }
  return [...Buffer.from(text, 'utf8')];
}

/** Chat-style logprobs for `entries`; `topN` alternatives per token (0 = none). */
export function chatLogprobs(tokenizer: Tokenizer, entries: readonly TokenLogprobs[], topN: number): ChatLogprob[] {
  return entries.map((e) => {
    const token = tokenText(tokenizer, e.tokenId);
    return {
      token,
      logprob: e.logprob,
      bytes: tokenBytesOf(tokenizer, e.tokenId, token),
      top_logprobs: e.top.slice(0, topN).map((x) => {
        const t = tokenText(tokenizer, x.tokenId);
        return { token: t, logprob: x.logprob, bytes: tokenBytesOf(tokenizer, x.tokenId, t) };
      }),
    };
  });
}

/** One prompt position of vLLM's `prompt_logprobs`: token id (as a JSON key) to its logprob, vocabulary rank and text. */
type PromptLogprobsEntry = Record<string, { logprob: number; rank: number; decoded_token: string | null }>;

/**
 * vLLM's `prompt_logprobs` (`list[dict[int, Logprob] | None]`): per prompt position `null` (the first, which has no
 * context) or `{ "<token id>": { logprob, rank, decoded_token } }` for the prompt token and its top alternatives.
 * `-Infinity` becomes -9999.0, as vLLM's `clamp_prompt_logprobs` does (JSON has no infinity).
 * Returned on each `/v1/completions` choice and at the top level of a `/v1/chat/completions` response.
 */
export function promptLogprobsJson(entries: RequestOutput['promptTokenLogprobs']): (PromptLogprobsEntry | null)[] {
  return (entries ?? []).map((e) => {
    if (!e) return null;
    const out: PromptLogprobsEntry = {};
    for (const x of [e, ...e.top]) {
      out[String(x.tokenId)] ??= { logprob: x.logprob === -Infinity ? -9999 : x.logprob, rank: x.rank, decoded_token: x.decodedToken ?? null };
    }
    return out;
  });
}
