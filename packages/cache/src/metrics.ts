/**
 * Prefix-cache hit statistics over the most recent requests (vLLM `CachingMetrics`, window 1000 by default).
 * Counts are in tokens; one `record` per request admission.
 * @see docs/spec/vllm-fp8-kv-cache.md §6.5
 */
export class RecentHitRate {
  private readonly queries: Float64Array;
  private readonly hits: Float64Array;
  private next = 0;
  private filled = 0;
  private sumQueries = 0;
  private sumHits = 0;

  /** @param maxRecentRequests window size in requests (integer >= 1). */
  constructor(readonly maxRecentRequests: number) {
    this.queries = new Float64Array(maxRecentRequests);
    this.hits = new Float64Array(maxRecentRequests);
  }

  /** Record one request: `queries` tokens looked up, `hits` of them found. */
  record(queries: number, hits: number): void {
    const i = this.next;
    if (this.filled === this.maxRecentRequests) {
      this.sumQueries -= this.queries[i]!;
      this.sumHits -= this.hits[i]!;
    } else {
      this.filled++;
    }
    this.queries[i] = queries;
    this.hits[i] = hits;
    this.sumQueries += queries;
    this.sumHits += hits;
    this.next = (i + 1) % this.maxRecentRequests;
  }

  /** Requests currently in the window. */
  get numRequests(): number {
    return this.filled;
  }

  /** hits / queries over the window, or 0 when nothing was queried. */
  get hitRate(): number {
    return this.sumQueries > 0 ? this.sumHits / this.sumQueries : 0;
  }

  /** Empty the window. */
  reset(): void {
    this.next = 0;
    this.filled = 0;
    this.sumQueries = 0;
    this.sumHits = 0;
  }
}
