import type { AddRequestOptions, RequestOutput, SamplingParams } from '@kvq/engine';
import type { EngineLoop } from './engine-loop.js';

/**
 * The engine requests behind one HTTP request: one per prompt (each with `n` completions), submitted to the
 * shared {@link EngineLoop}. `onOutput` sees every progress event; `done` settles when all prompts finished.
 */
export class Generation {
  readonly ids: string[];
  readonly done: Promise<RequestOutput[]>;
  private readonly finals: (RequestOutput | undefined)[];
  private remaining: number;
  private settled = false;
  private resolveDone!: (outputs: RequestOutput[]) => void;
  private rejectDone!: (error: unknown) => void;

  /**
   * Submits every prompt. On a synchronous submit failure (invalid prompt or parameters) the prompts already
   * submitted are aborted and the error is thrown.
   */
  constructor(
    private readonly loop: EngineLoop,
    baseId: string,
    prompts: readonly (readonly number[])[],
    params: SamplingParams,
    onOutput: (promptIndex: number, output: RequestOutput) => void,
    /** Engine options per prompt (e.g. its structured-output constraints). */
    options: readonly AddRequestOptions[] = [],
  ) {
    this.ids = prompts.map((_, i) => (prompts.length === 1 ? baseId : `${baseId}-${i}`));
    this.finals = prompts.map(() => undefined);
    this.remaining = prompts.length;
    this.done = new Promise((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    this.done.catch(() => undefined); // observed by the caller; never an unhandled rejection
    const submitted: string[] = [];
    try {
      prompts.forEach((tokens, i) => {
        const id = this.ids[i]!;
        loop.submit(id, tokens, params, {
          onOutput: (out) => {
            if (this.settled) return;
            onOutput(i, out);
            if (out.finished) {
              this.finals[i] = out;
              if (--this.remaining === 0) {
                this.settled = true;
                this.resolveDone(this.finals as RequestOutput[]);
              }
            }
          },
          onError: (error) => this.fail(error),
        }, options[i] ?? {});
        submitted.push(id);
      });
    } catch (error) {
      this.settled = true;
      for (const id of submitted) loop.abort(id);
      throw error;
    }
  }

  /** Aborts every unfinished prompt (client gone, or shutdown); `done` rejects with `reason`. */
  abort(reason: unknown): void {
    if (this.settled) return;
    for (const id of this.ids) this.loop.abort(id);
    this.fail(reason);
  }

  /** True once every prompt finished (or the generation failed / was aborted). */
  get isSettled(): boolean {
    return this.settled;
  }

  private fail(error: unknown): void {
    if (this.settled) return;
    this.settled = true;
    for (const id of this.ids) this.loop.abort(id);
    this.rejectDone(error);
  }
}
