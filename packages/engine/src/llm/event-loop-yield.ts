/**
 * Yielding to the event loop between engine steps, at most every {@link YIELD_EVERY_MS}: `generate`, `stream` and
 * `score` step the engine in a loop and must let timers, I/O and aborts run, but an event-loop turn after every step
 * cost ~50-90 us in a process holding a model (measured 2026-12-06 on the 768x12 model: 1.5-2.5% of a 3.5 ms decode
 * step, against ~5 us in an idle process: the caches are cold after a forward pass).
 */

/** Longest run of engine steps without an event-loop turn, in milliseconds. */
const YIELD_EVERY_MS = 10;

/** Tracks when the loop last yielded; {@link EventLoopYield.maybe} yields when {@link YIELD_EVERY_MS} have passed. */
export class EventLoopYield {
  private last = performance.now();

  /** @param everyMs longest run without a turn, ms (default {@link YIELD_EVERY_MS}). */
  constructor(private readonly everyMs = YIELD_EVERY_MS) {}

  /** Resolves after an event-loop turn (setImmediate) when `everyMs` passed since the last one (or since construction), else at once. */
  async maybe(): Promise<void> {
    if (performance.now() - this.last < this.everyMs) return;
    await new Promise((r) => setImmediate(r));
    this.last = performance.now();
  }
}
