import type { RequestOutput } from '../runtime/engine.js';

/** One item of `LLM.stream`: what a completion added since its previous item. */
export interface StreamDelta {
  index: number;
  /** Text added since the completion's previous item. */
  text: string;
  tokenIds: readonly number[];
  /** The completion ended: this is its last item. */
  finished: boolean;
  /** The request's whole state after the step. */
  output: RequestOutput;
}

/**
 * The items `LLM.stream` yields for one request, from each step's outputs: one per completion that has new tokens
 * or text, or just finished. A plain method, so the stream's generator body stays a few statements a token (a
 * suspended generator resumes in the interpreter until V8 compiles it: on the 768x12 model the generator's own
 * statements were ~10% of a streamed token's time outside the forward pass in a fresh process, 2026-12-07).
 */
export class StreamDeltas {
  /** Per completion index: text length and token count sent, and whether its last item went out. */
  private readonly sent: { chars: number; tokens: number; done: boolean }[] = [];
  /** The request finished (its final output was taken). */
  finished = false;

  constructor(private readonly requestId: string) {}

  /** The items of one step's outputs (those of other requests are ignored). */
  take(outputs: readonly RequestOutput[]): StreamDelta[] {
    const items: StreamDelta[] = [];
    for (let i = 0; i < outputs.length; i++) {
      const out = outputs[i]!;
      if (out.requestId !== this.requestId) continue;
      this.finished = out.finished;
      for (let j = 0; j < out.outputs.length; j++) {
        const o = out.outputs[j]!;
        const st = (this.sent[o.index] ??= { chars: 0, tokens: 0, done: false });
        const done = o.finishReason !== undefined;
        if (st.done || (o.tokenIds.length === st.tokens && o.text.length === st.chars && !done)) continue;
        items.push({ index: o.index, text: o.text.slice(st.chars), tokenIds: o.tokenIds, finished: done, output: out });
        st.chars = o.text.length;
        st.tokens = o.tokenIds.length;
        st.done = done;
      }
    }
    return items;
  }
}
