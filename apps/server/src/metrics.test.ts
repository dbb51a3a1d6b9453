import type { RequestOutput } from '@kvq/engine';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buckets125, ITL_BUCKETS, REQUEST_LATENCY_BUCKETS, TTFT_BUCKETS } from './metrics.js';
import { createServer, type KvqServer } from './server.js';

/** A synthetic engine output: `tokens[i]` tokens so far in sequence i; times in seconds. */
function output(id: string, tokens: number[], t: { arrival: number; scheduled?: number; first?: number; finished?: number }, prompt = 5): RequestOutput {
  return {
    requestId: id,
    promptTokenIds: Array.from({ length: prompt }, (_, i) => i + 1),
    finished: t.finished !== undefined,
    metrics: { arrivalTime: t.arrival, firstScheduledTime: t.scheduled, firstTokenTime: t.first, finishedTime: t.finished, numCachedTokens: 0, numPreemptions: 0 },
    outputs: tokens.map((n, index) => ({
      index,
      text: '',
      tokenIds: Array.from({ length: n }, () => 7),
      logprobs: undefined,
      cumulativeLogprob: undefined,
      finishReason: t.finished !== undefined ? 'length' : undefined,
      stopReason: undefined,
    })),
  };
}

/** A series' value; a histogram has no series before its first observation, so `missing` (0) stands in then. */
function sample(text: string, series: string, missing?: number): number {
  const line = text.split('\n').find((l) => l.startsWith(series));
  if (!line) {
    if (missing !== undefined) return missing;
    throw new Error(`no ${series}`);
  }
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('ServerMetrics histograms', () => {
  let server: KvqServer;
  beforeAll(async () => {
    server = await createServer({ port: 0, kvCacheMemory: 4 << 20 });
  });
  afterAll(async () => {
    await server.close({ graceMs: 0 });
  });

  it("bucket edges are vLLM's (1-2-5 token buckets up to max_model_len)", () => {
    expect(buckets125(512)).toEqual([1, 2, 5, 10, 20, 50, 100, 200, 500]);
    expect(buckets125(1000)).toEqual([1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]);
    expect(buckets125(0)).toEqual([]);
    expect(TTFT_BUCKETS).toHaveLength(22);
    expect(ITL_BUCKETS).toHaveLength(19);
    expect(REQUEST_LATENCY_BUCKETS).toHaveLength(21);
  });

  it('observes TTFT once per request, ITL per sequence step after its first token, e2e/queue/token counts on finish', async () => {
    const m = server.metrics;
    const label = '{model_name="kvq-tiny"}';
    const before = await m.render();
    const base = (name: string) => sample(before, `${name}${label}`, 0);
    // Request a: n = 2; arrives at 100, scheduled at 100.25, first token at 100.5, finishes at 103.
    m.observe(output('a', [0, 0], { arrival: 100, scheduled: 100.25 }));
    m.observe(output('a', [1, 1], { arrival: 100, scheduled: 100.25, first: 100.5 }));
    m.observe(output('a', [2, 2], { arrival: 100, scheduled: 100.25, first: 100.5 }));
    m.observe(output('a', [3, 2], { arrival: 100, scheduled: 100.25, first: 100.5 })); // only sequence 0 advanced
    expect(m.trackedRequests).toBe(1);
    m.observe(output('a', [4, 3], { arrival: 100, scheduled: 100.25, first: 100.5, finished: 103 }));
    // Request b: aborted while waiting (never scheduled, no token).
    m.observe(output('b', [0], { arrival: 200, finished: 200.75 }, 9));
    expect(m.trackedRequests).toBe(0);
    const after = await m.render();
    const delta = (name: string) => sample(after, `${name}${label}`) - base(name);
    expect(delta('vllm:time_to_first_token_seconds_count')).toBe(1);
    expect(delta('vllm:time_to_first_token_seconds_sum')).toBeCloseTo(0.5, 9);
    // Sequence 0: tokens 1→2→3→4 (3 gaps); sequence 1: 1→2→3 (2 gaps).
    expect(delta('vllm:inter_token_latency_seconds_count')).toBe(5);
    expect(delta('vllm:e2e_request_latency_seconds_count')).toBe(2);
    expect(delta('vllm:e2e_request_latency_seconds_sum')).toBeCloseTo(3 + 0.75, 9);
    expect(delta('vllm:request_queue_time_seconds_count')).toBe(1); // b was never scheduled
    expect(delta('vllm:request_queue_time_seconds_sum')).toBeCloseTo(0.25, 9);
    expect(delta('vllm:request_prompt_tokens_sum')).toBe(5 + 9);
    expect(delta('vllm:request_generation_tokens_sum')).toBe(4 + 3);
    // 0.5 s TTFT falls in the le="0.5" bucket and not in le="0.25".
    expect(sample(after, 'vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="kvq-tiny"}') - sample(before, 'vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="kvq-tiny"}', 0)).toBe(1);
    expect(sample(after, 'vllm:time_to_first_token_seconds_bucket{le="0.25",model_name="kvq-tiny"}') - sample(before, 'vllm:time_to_first_token_seconds_bucket{le="0.25",model_name="kvq-tiny"}', 0)).toBe(0);
    // Generation tokens 7 fall in le="10" but not le="5".
    expect(sample(after, 'vllm:request_generation_tokens_bucket{le="10",model_name="kvq-tiny"}') - sample(before, 'vllm:request_generation_tokens_bucket{le="10",model_name="kvq-tiny"}', 0)).toBe(2);
    expect(sample(after, 'vllm:request_generation_tokens_bucket{le="5",model_name="kvq-tiny"}') - sample(before, 'vllm:request_generation_tokens_bucket{le="5",model_name="kvq-tiny"}', 0)).toBe(1);
  });
});
