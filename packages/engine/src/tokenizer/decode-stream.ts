/** A UTF-8 character spans at most 4 bytes, so at most 4 byte tokens can be pending on one character. */
const MAX_PENDING_TOKENS = 4;

/**
 * Incremental detokenization. Each {@link DecodeStream.push} decodes a short window of recent ids and returns the
 * text that became final: output is held back while the window's text ends in U+FFFD (an incomplete UTF-8
 * sequence), and the window always keeps the previous token so that decoders which strip a leading space from the
 * first token (SentencePiece) do not eat real spaces. The concatenation of all returned strings and
 * {@link DecodeStream.flush} equals `decode(allIds)` for the tokenizers this engine supports.
 */
export class DecodeStream {
  private ids: number[] = [];
  /** Start of the decode window in `ids`. */
  private prefixOffset = 0;
  /** End of the text already returned, in `ids`. */
  private readOffset = 0;

  /** @param decode decodes a list of ids to text (the tokenizer's `decode` with fixed options). */
  constructor(private readonly decode: (ids: readonly number[]) => string) {}

  /** Add one token id; returns the newly completed text (possibly empty). */
  push(id: number): string {
    this.ids.push(id);
    const prefixText = this.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const text = this.decode(this.ids.slice(this.prefixOffset));
    const pending = this.ids.length - this.readOffset;
    if (text.length > prefixText.length && (!text.endsWith('\uFFFD') || pending >= MAX_PENDING_TOKENS)) {
      return this.advance(text, prefixText);
    }
    return '';
  }

  /** Return whatever is still held back (an incomplete character decodes as U+FFFD) and reset the window. */
  flush(): string {
    if (this.readOffset === this.ids.length) return '';
    const prefixText = this.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const text = this.decode(this.ids.slice(this.prefixOffset));
    return this.advance(text, prefixText);
  }

  private advance(text: string, prefixText: string): string {
    const out = text.startsWith(prefixText) ? text.slice(prefixText.length) : text.slice(Math.min(prefixText.length, text.length));
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    if (this.prefixOffset > 64) {
      this.ids = this.ids.slice(this.prefixOffset);
      this.readOffset -= this.prefixOffset;
      this.prefixOffset = 0;
    }
    return out;
  }
}
