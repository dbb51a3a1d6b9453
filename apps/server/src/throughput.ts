/** One concurrency level of {@link measureThroughput}. */
export interface ThroughputResult {
  /** Streams run at once. */
  readonly concurrency: number;
  /** Generated tokens over all streams (from each stream's `usage`). */
  readonly generatedTokens: number;
  /** Wall time from the first request to the last `[DONE]`, seconds. */
  readonly seconds: number;
  /** Aggregate generation rate: `generatedTokens / seconds`. */
  readonly tokensPerSecond: number;
  /** Mean time to the first content chunk, milliseconds. */
  readonly meanTimeToFirstTokenMs: number;
}

/** Options of {@link measureThroughput}. */
export interface ThroughputOptions {
  /** Concurrent streams. */
  readonly concurrency: number;
  /** Tokens each stream generates (EOS ignored, so every stream generates exactly this many). */
  readonly maxTokens: number;
  /** Model name to send. */
  readonly model: string;
  /** Prompts, used round-robin (each stream gets a distinct suffix so prefix caching does not skip work). */
  readonly prompts?: readonly string[];
  /** Bearer key, when the server needs one. */
  readonly apiKey?: string;
}

const DEFAULT_PROMPTS = ['In the beginning God', 'And the LORD said unto Moses', 'A fortune:', 'Blessed are the meek', 'You will meet', 'The heavens declare'];

/**
 * Aggregate streaming throughput of a running OpenAI-compatible server: `concurrency` `/v1/completions` streams at
 * once, each generating `maxTokens` tokens (greedy, `ignore_eos`), counted from the streams' usage chunks.
 * @param baseUrl e.g. `http://127.0.0.1:8000`
 */
export async function measureThroughput(baseUrl: string, options: ThroughputOptions): Promise<ThroughputResult> {
  const prompts = options.prompts ?? DEFAULT_PROMPTS;
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {}) };
  const t0 = performance.now();
  const one = async (i: number) => {
    const res = await fetch(`${baseUrl}/v1/completions`, {
      method: 'POST',
      headers,
      body: JSON.stringify({
        model: options.model,
        prompt: `${prompts[i % prompts.length]!} (${i})`,
        max_tokens: options.maxTokens,
        temperature: 0,
        ignore_eos: true,
        stream: true,
        stream_options: { include_usage: true },
      }),
    });
    if (!res.ok || !res.body) throw new Error(`stream ${i}: HTTP ${res.status} ${await res.text()}`);
    const decoder = new TextDecoder();
    let buffer = '';
    let first: number | undefined;
    let tokens = 0;
    let done = false;
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      let at: number;
      while ((at = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, at);
        buffer = buffer.slice(at + 2);
        const data = event.replace(/^data: /, '');
        if (data === '[DONE]') {
          done = true;
          continue;
        }
        const json = JSON.parse(data) as { choices?: { text?: string }[]; usage?: { completion_tokens: number } | null; error?: { message: string } };
        if (json.error) throw new Error(`stream ${i}: ${json.error.message}`);
        if (first === undefined && json.choices?.[0]?.text) first = performance.now();
        if (json.usage) tokens = json.usage.completion_tokens;
      }
    }
    if (!done) throw new Error(`stream ${i}: ended without [DONE]`);
    return { tokens, ttft: (first ?? performance.now()) - t0 };
  };
  const results = await Promise.all(Array.from({ length: options.concurrency }, (_, i) => one(i)));
  const seconds = (performance.now() - t0) / 1000;
  const generatedTokens = results.reduce((a, r) => a + r.tokens, 0);
  return {
    concurrency: options.concurrency,
    generatedTokens,
    seconds,
    tokensPerSecond: generatedTokens / seconds,
    meanTimeToFirstTokenMs: results.reduce((a, r) => a + r.ttft, 0) / results.length,
  };
}
