import type { AddRequestOptions, LLMEngine, RequestOutput, SamplingParams } from '@kvq/engine';

/** Receives a request's progress from the {@link EngineLoop}. */
export interface RequestListener {
  /** Called after every engine step in which the request progressed; `output.finished` marks the last call. */
  onOutput(output: RequestOutput): void;
  /** Called once if the engine failed while the request was in flight (the request is aborted). */
  onError(error: unknown): void;
}

/** Sees every {@link RequestOutput} the loop hands out or produces by aborting (for latency metrics). */
export interface OutputObserver {
  /** Called before the request's listener; a throwing observer is ignored. */
  observe(output: RequestOutput): void;
}

/**
 * The one loop that drives an {@link LLMEngine} for many concurrent clients (continuous batching): while any
 * request is pending it calls `engine.step()` and hands each `RequestOutput` to its request's listener, yielding
 * to the event loop between steps so that sockets are read and written. Requests join and leave between steps.
 */
export class EngineLoop {
  readonly engine: LLMEngine;
  private readonly listeners = new Map<string, RequestListener>();
  private running = false;
  private idleWaiters: (() => void)[] = [];
  /** Lifetime counters for /metrics. */
  readonly counters = { finished: { stop: 0, length: 0, abort: 0 } as Record<string, number>, errors: 0 };
  /** Optional observer of every output (the server's histograms); set once after construction. */
  observer: OutputObserver | undefined;

  constructor(engine: LLMEngine) {
    this.engine = engine;
  }

  /** Requests submitted and not yet finished. */
  get size(): number {
    return this.listeners.size;
  }

  /**
   * Queues a request and starts the loop if it is idle.
   * @throws EngineError `INVALID_ARGUMENT` from `engine.addRequest` (bad prompt or sampling values), synchronously.
   */
  submit(requestId: string, promptTokenIds: readonly number[], params: SamplingParams, listener: RequestListener, options: AddRequestOptions = {}): void {
    this.engine.addRequest(requestId, promptTokenIds, params, options);
    this.listeners.set(requestId, listener);
    this.kick();
  }

  /**
   * Aborts a request (its KV blocks are freed at once) and forgets its listener; no further callbacks happen.
   * @returns true when the request was still in flight
   */
  abort(requestId: string): boolean {
    const had = this.listeners.delete(requestId);
    const out = this.engine.abortRequest(requestId);
    if (out) {
      this.counters.finished.abort = (this.counters.finished.abort ?? 0) + 1;
      this.notify(out);
    }
    this.settleIdle();
    return had || out !== undefined;
  }

  /** Aborts every request in flight, telling each listener through `onOutput` with finish reason `abort`. */
  abortAll(): void {
    for (const [id, listener] of [...this.listeners]) {
      this.listeners.delete(id);
      const out = this.engine.abortRequest(id);
      if (out) {
        this.counters.finished.abort = (this.counters.finished.abort ?? 0) + 1;
        this.notify(out);
        safe(() => listener.onOutput(out));
      }
    }
    this.settleIdle();
  }

  /** Resolves when no request is in flight (at once if none is). */
  idle(): Promise<void> {
    if (this.listeners.size === 0 && !this.engine.hasUnfinishedRequests()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    setImmediate(() => this.loop());
  }

  private loop(): void {
    if (!this.engine.hasUnfinishedRequests()) {
      this.running = false;
      this.settleIdle();
      return;
    }
    // Structured outputs: the grammar masks for the next step are computed asynchronously first.
    if (this.engine.needsPrepare) {
      this.engine.prepare().then(
        () => this.step(),
        (error: unknown) => {
          this.fail(error);
          this.running = false;
          this.settleIdle();
        },
      );
      return;
    }
    this.step();
  }

  /** One engine step and the delivery of its outputs; schedules the next iteration. */
  private step(): void {
    // A request with constraints may have been submitted while the masks were being computed.
    if (this.engine.needsPrepare) return this.loop();
    let outputs: RequestOutput[];
    try {
      outputs = this.engine.step();
    } catch (error) {
      this.fail(error);
      this.running = false;
      this.settleIdle();
      return;
    }
    for (const out of outputs) {
      const listener = this.listeners.get(out.requestId);
      if (out.finished) {
        this.listeners.delete(out.requestId);
        for (const o of out.outputs) if (o.finishReason) this.counters.finished[o.finishReason] = (this.counters.finished[o.finishReason] ?? 0) + 1;
      }
      this.notify(out);
      if (listener) safe(() => listener.onOutput(out));
    }
    setImmediate(() => this.loop());
  }

  /** A step threw: every in-flight request is aborted and told (the engine stays usable for new requests). */
  private fail(error: unknown): void {
    this.counters.errors++;
    for (const [id, listener] of [...this.listeners]) {
      this.listeners.delete(id);
      const out = this.engine.abortRequest(id);
      if (out) this.notify(out);
      safe(() => listener.onError(error));
    }
  }

  private notify(out: RequestOutput): void {
    const observer = this.observer;
    if (observer) safe(() => observer.observe(out));
  }

  private settleIdle(): void {
    if (this.listeners.size > 0 || this.engine.hasUnfinishedRequests()) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}

function safe(f: () => void): void {
  try {
    f();
  } catch {
    // A listener's failure (e.g. writing to a closed socket) must not stop the loop for everyone else.
  }
}
