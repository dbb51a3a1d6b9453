/**
 * A load generator for a running kvq (or any OpenAI-compatible) server: `clients` concurrent workers that, until a
 * deadline, each send streaming completions and chat completions, drop some streams mid-way (client disconnects)
 * and send some bad requests. It measures, on the client side, time to first token (request sent → first chunk
 * with text) and inter-token latency (between successive text chunks of one stream), and counts every status.
 * Used by the soak test (`soak.slow.test.ts`) and the latency bench (`soak.bench.ts`).
 */

/** Options of {@link runSoak}. */
export interface SoakOptions {
  /** Concurrent clients. Default 64. */
  readonly clients?: number;
  /** How long the clients keep sending, ms (requests under way at the deadline finish). */
  readonly durationMs: number;
  /** Fraction of requests a client abandons after a few chunks (0..1). Default 0.1. */
  readonly disconnectRate?: number;
  /** Fraction of requests that are malformed and must get a 4xx (0..1). Default 0.1. */
  readonly badRequestRate?: number;
  /** Largest `max_tokens` of a request (each draws 4..this). Default 48. */
  readonly maxTokens?: number;
  /** Seed of the workload's choices (the same seed gives the same request mix). Default 1. */
  readonly seed?: number;
  /** Model name to send. Default `kvq-tiny`. */
  readonly model?: string;
  /** Called every `sampleEveryMs` while the load runs (e.g. to sample memory). */
  readonly onSample?: () => void;
  /** Interval of `onSample`, ms. Default 1000. */
  readonly sampleEveryMs?: number;
}

/** What {@link runSoak} saw. */
export interface SoakResult {
  /** Requests by kind: streams run to `[DONE]`, streams abandoned on purpose, bad requests sent. */
  readonly completed: number;
  readonly disconnected: number;
  readonly badRequests: number;
  /** Responses by HTTP status (streams count their 200). */
  readonly statuses: ReadonlyMap<number, number>;
  /** Problems: 5xx answers, error events in streams, streams without a finish reason or `[DONE]`, a bad request accepted. */
  readonly failures: readonly string[];
  /** Client-side TTFT samples, ms (one per stream that produced text). */
  readonly ttftMs: readonly number[];
  /** Client-side inter-chunk latency samples, ms. */
  readonly itlMs: readonly number[];
  /** Wall time of the run, ms. */
  readonly elapsedMs: number;
  /** Text chunks received over all streams. */
  readonly chunks: number;
}

/** The `q`-quantile (0..1) of `values` by nearest rank; NaN when empty. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank]!;
}

/** mulberry32: a small seeded PRNG in [0, 1). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PROMPTS = ['In the beginning God', 'And the LORD said unto Moses', 'A fortune:', 'Blessed are the meek', 'You will meet', 'The heavens declare', 'Love your enemies'];

/** Malformed requests; each must be answered with a 4xx. */
const BAD: readonly { path: string; body: string }[] = [
  { path: '/v1/completions', body: '{"prompt": "x",' },
  { path: '/v1/completions', body: JSON.stringify({ prompt: 'x', temperature: -1 }) },
  { path: '/v1/completions', body: JSON.stringify({ prompt: [999999] }) },
  { path: '/v1/completions', body: JSON.stringify({ model: 'no-such-model', prompt: 'x' }) },
  { path: '/v1/completions', body: JSON.stringify({ prompt: 'x', max_tokens: 100000 }) },
  { path: '/v1/chat/completions', body: JSON.stringify({ messages: [] }) },
  { path: '/v1/chat/completions', body: JSON.stringify({ messages: [{ role: 'user', content: [{ type: 'image_url' }] }], stream: true }) },
  { path: '/detokenize', body: JSON.stringify({ tokens: [-5] }) },
  { path: '/v1/nothing', body: '{}' },
];

/**
 * Runs the mixed load against `baseUrl` (e.g. `http://127.0.0.1:8000`) and returns what the clients saw. It
 * never throws for a server misbehaving: problems are listed in `failures`.
 */
export async function runSoak(baseUrl: string, options: SoakOptions): Promise<SoakResult> {
  const clients = options.clients ?? 64;
  const disconnectRate = options.disconnectRate ?? 0.1;
  const badRate = options.badRequestRate ?? 0.1;
  const maxTokens = options.maxTokens ?? 48;
  const model = options.model ?? 'kvq-tiny';
  const statuses = new Map<number, number>();
  const failures: string[] = [];
  const ttftMs: number[] = [];
  const itlMs: number[] = [];
  let completed = 0;
  let disconnected = 0;
  let badRequests = 0;
  let chunks = 0;
  const count = (status: number) => statuses.set(status, (statuses.get(status) ?? 0) + 1);
  const t0 = performance.now();
  const deadline = t0 + options.durationMs;
  const sampler = options.onSample ? setInterval(options.onSample, options.sampleEveryMs ?? 1000) : undefined;

  const stream = async (random: () => number, drop: boolean) => {
    const chat = random() < 0.5;
    const prompt = `${PROMPTS[Math.floor(random() * PROMPTS.length)]!} ${Math.floor(random() * 1e6)}`;
    const n = random() < 0.1 ? 2 : 1;
    const common = { model, max_tokens: 4 + Math.floor(random() * (maxTokens - 3)), temperature: random() < 0.3 ? 0 : 1, seed: Math.floor(random() * 1e9), n, stream: true, ignore_eos: random() < 0.5 };
    const body = chat ? { ...common, messages: [{ role: 'user', content: prompt }] } : { ...common, prompt };
    const controller = new AbortController();
    const dropAfter = drop ? 1 + Math.floor(random() * 6) : Infinity;
    const sent = performance.now();
    let res: Response;
    try {
      res = await fetch(`${baseUrl}${chat ? '/v1/chat/completions' : '/v1/completions'}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
    } catch (e) {
      failures.push(`fetch failed: ${(e as Error).message}`);
      return;
    }
    count(res.status);
    if (res.status !== 200) {
      failures.push(`stream answered ${res.status}: ${await res.text()}`);
      return;
    }
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let last: number | undefined;
    let seenText = 0;
    let done = false;
    const finished = new Set<number>();
    try {
      for (;;) {
        const { value, done: eof } = await reader.read();
        if (eof) break;
        buffer += decoder.decode(value, { stream: true });
        let at: number;
        while ((at = buffer.indexOf('\n\n')) >= 0) {
          const event = buffer.slice(0, at);
          buffer = buffer.slice(at + 2);
          if (!event.startsWith('data: ')) continue;
          const data = event.slice(6);
          if (data === '[DONE]') {
            done = true;
            continue;
          }
          const parsed = JSON.parse(data) as { error?: unknown; choices?: { index: number; text?: string; delta?: { content?: string }; finish_reason?: string | null }[] };
          if (parsed.error) failures.push(`error event: ${data}`);
          for (const c of parsed.choices ?? []) {
            if (c.finish_reason) finished.add(c.index);
            if (!(c.text ?? c.delta?.content)) continue;
            const now = performance.now();
            chunks++;
            if (last === undefined) ttftMs.push(now - sent);
            else itlMs.push(now - last);
            last = now;
            if (++seenText >= dropAfter) {
              controller.abort();
              disconnected++;
              return;
            }
          }
        }
      }
    } catch (e) {
      if (controller.signal.aborted) return;
      failures.push(`stream broke: ${(e as Error).message}`);
      return;
    }
    if (!done) failures.push('stream ended without [DONE]');
    else if (finished.size !== n) failures.push(`stream finished ${finished.size} of ${n} choices`);
    else completed++;
  };

  const bad = async (random: () => number) => {
    const b = BAD[Math.floor(random() * BAD.length)]!;
    badRequests++;
    try {
      const res = await fetch(`${baseUrl}${b.path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: b.body });
      count(res.status);
      const text = await res.text();
      if (res.status < 400 || res.status >= 500) failures.push(`bad request ${b.path} ${b.body} answered ${res.status}: ${text.slice(0, 200)}`);
    } catch (e) {
      failures.push(`fetch failed: ${(e as Error).message}`);
    }
  };

  const worker = async (w: number) => {
    const random = rng((options.seed ?? 1) * 7919 + w);
    while (performance.now() < deadline) {
      const r = random();
      if (r < badRate) await bad(random);
      else await stream(random, r < badRate + disconnectRate);
    }
  };
  try {
    await Promise.all(Array.from({ length: clients }, (_, w) => worker(w)));
  } finally {
    if (sampler) clearInterval(sampler);
  }
  for (const [status, k] of statuses) if (status >= 500) failures.push(`${k} responses with status ${status}`);
  return { completed, disconnected, badRequests, statuses, failures, ttftMs, itlMs, elapsedMs: performance.now() - t0, chunks };
}
