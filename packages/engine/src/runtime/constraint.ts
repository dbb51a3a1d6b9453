/**
 * A per-sequence constraint on the next token (structured outputs): before sampling it masks the logits of tokens
 * that may not come next; after sampling it accepts the chosen token. Computing the next mask may be asynchronous
 * (xgrammar's WebAssembly build answers through a promise), so the engine's drivers `await engine.prepare()` before
 * each `step()`, overlapping it with the event loop as vLLM overlaps bitmask computation with the forward pass.
 * @module
 */

/** One sequence's constraint. */
export interface TokenConstraint {
  /** True when {@link applyTo} can run now (the next mask is computed, or the constraint has terminated). */
  readonly ready: boolean;
  /** Computes the next mask (no-op when ready). */
  prepare(): Promise<void>;
  /**
   * Sets the logits of disallowed tokens to -inf, in place.
   * @throws EngineError `STRUCTURED_OUTPUT` when not {@link ready}.
   */
  applyTo(logits: Float32Array): void;
  /** Advances by the sampled token; false when the token was not allowed. */
  accept(tokenId: number): boolean;
  /** Frees the constraint's resources (called when its sequence finishes). */
  dispose(): void;
}
