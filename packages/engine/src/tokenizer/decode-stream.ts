/** A UTF-8 character spans at most 4 bytes, so at most 4 byte tokens can be pending on one character. */
const MAX_PENDING_TOKENS = 4;
/** Most ids a one-id decode cache holds (a 262k vocabulary's pieces would take ~10 MB). */
const SINGLE_CACHE_MAX = 65536;

/**
 * Incremental detokenization. Each {@link DecodeStream.push} decodes a short window of recent ids and returns the
 * text that became final: output is held back while the window's text ends in U+FFFD (an incomplete UTF-8
 * sequence), and the window always keeps the previous token so that decoders which strip a leading space from the
 * first token (SentencePiece) do not eat real spaces. The concatenation of all returned strings and
 * {@link DecodeStream.flush} equals `decode(allIds)` for the tokenizers this engine supports. With an `appended`
 * function (`Tokenizer.appendedText`), a token after a fully returned one usually needs no decoding at all.
 */
export class DecodeStream {
  private ids: number[] = [];
  /** Start of the decode window in `ids`. */
  private prefixOffset = 0;
  /** End of the text already returned, in `ids`. */
  private readOffset = 0;

  /**
   * @param decode decodes a list of ids to text (the tokenizer's `decode` with fixed options).
   * @param single optional cache of one-id decodes, shared by the streams of one `decode` (same tokenizer, same
   *   options): the window before the newest token is usually that one previous token, so each push decodes once
   *   instead of twice. Filled up to {@link SINGLE_CACHE_MAX} ids.
   * @param appended optional `(prev, id) => decode([prev, id]) minus decode([prev])` when that depends on `id` alone
   *   and is final (non-empty, not ending in U+FFFD), else undefined (`Tokenizer.appendedText`, with the same
   *   tokenizer and options as `decode`): when the window is just the previous token and nothing is held back, its
   *   text is what `push` would return after decoding the window, and the window moves the same way.
   */
  constructor(
    private readonly decode: (ids: readonly number[]) => string,
    private readonly single?: Map<number, string>,
    private readonly appended?: (prev: number, id: number) => string | undefined,
  ) {}

  /** Add one token id; returns the newly completed text (possibly empty). */
  push(id: number): string {
    if (this.appended !== undefined && this.readOffset === this.ids.length && this.readOffset - this.prefixOffset === 1) {
      const text = this.appended(this.ids[this.prefixOffset]!, id);
      if (text !== undefined) {
        this.ids.push(id);
        this.markRead();
        return text;
      }
    }
    this.ids.push(id);
    const prefixText = this.prefixText();
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
    const prefixText = this.prefixText();
    const text = this.decode(this.ids.slice(this.prefixOffset));
    return this.advance(text, prefixText);
  }

  /** The text of the window before the unread ids (through the one-id cache when it is one id). */
  private prefixText(): string {
    if (this.readOffset - this.prefixOffset !== 1 || !this.single) return this.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const id = this.ids[this.prefixOffset]!;
    let text = this.single.get(id);
    if (text === undefined) {
      text = this.decode([id]);
      if (this.single.size < SINGLE_CACHE_MAX) this.single.set(id, text);
    }
    return text;
  }

  private advance(text: string, prefixText: string): string {
    const out = text.startsWith(prefixText) ? text.slice(prefixText.length) : text.slice(Math.min(prefixText.length, text.length));
    this.markRead();
    return out;
  }

  /** Every id is returned: the next window starts at the previously unread ones. */
  private markRead(): void {
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    if (this.prefixOffset > 64) {
      this.ids = this.ids.slice(this.prefixOffset);
      this.readOffset -= this.prefixOffset;
      this.prefixOffset = 0;
    }
  }
}
