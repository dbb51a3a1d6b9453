/**
 * Yielding to the event loop between engine steps, at most every {@link YIELD_EVERY_MS}: `generate`, `stream` and
 * `score` step the engine in a loop and must let timers, I/O and aborts run, but an event-loop turn after every step
 * cost ~50-90 us in a process holding a model (measured 2026-12-06 on the 768x12 model: 1.5-2.5% of a 3.5 ms decode
 * step, against ~5 us in an idle process: the caches are cold after a forward pass).
 */

/** Longest run of engine steps without an event-loop turn, in milliseconds. */
const YIELD_EVERY_MS = 10;

/**
 * Tracks when the loop last yielded. A loop calls `if (turn.due()) await turn.yield();` after each step: no promise
 * and no await at all between the turns (an `await` of a resolved promise per step still cost a microtask job and, in
 * a stream, a resumption of the generator).
 */
export class EventLoopYield {
  private last = performance.now();

  /** @param everyMs longest run without a turn, ms (default {@link YIELD_EVERY_MS}). */
  constructor(private readonly everyMs = YIELD_EVERY_MS) {}

  /** Whether `everyMs` passed since the last turn (or since construction). */
  due(): boolean {
    return performance.now() - this.last >= this.everyMs;
  }

  /** Resolves after an event-loop turn (setImmediate), and starts a new interval. */
  async yield(): Promise<void> {
    await new Promise((r) => setImmediate(r));
    this.last = performance.now();
  }
}
