/**
 * GPT-2's reversible byte ↔ printable-character map used by byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM):
 * the printable bytes `!`..`~`, `¡`..`¬`, `®`..`ÿ` map to themselves, the other 68 bytes to U+0100.. in order.
 */
function buildTables(): { byteToChar: string[]; charToByte: Map<string, number> } {
  const byteToChar: string[] = new Array<string>(256);
  const charToByte = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    const ch = String.fromCodePoint(printable ? b : 256 + extra++);
    byteToChar[b] = ch;
    charToByte.set(ch, b);
  }
  return { byteToChar, charToByte };
}

const { byteToChar, charToByte } = buildTables();

const encoder = new TextEncoder();

/** Map the UTF-8 bytes of `text` to byte-level characters (one character per byte). */
export function bytesToByteLevel(text: string): string {
  const bytes = encoder.encode(text);
  let out = '';
  for (const b of bytes) out += byteToChar[b]!;
  return out;
}

/** The bytes of a byte-level string, or `undefined` when it contains a character outside the map. */
export function byteLevelToBytes(text: string): number[] | undefined {
  const out: number[] = [];
  for (const ch of text) {
    const b = charToByte.get(ch);
    if (b === undefined) return undefined;
    out.push(b);
  }
  return out;
}

/** The byte-level character of one byte. */
export function byteLevelChar(byte: number): string {
  return byteToChar[byte & 0xff]!;
}
