/**
 * Test helper: the GGML test vectors of `@kvq/fixtures` (`quant/ggml-vectors.{json,bin}`, made by llama.cpp's
 * gguf-py numpy code; see tooling/fixtures/PROVENANCE.md).
 * @module
 */
import { readFileSync } from 'node:fs';
import { fixturePath } from '@kvq/fixtures';
import type { GgmlWeightDtype } from '../contract.js';

/** One section of the vectors: `input` and `output` byte ranges of the .bin file. */
export interface VectorSection {
  readonly type: GgmlWeightDtype;
  /** `dequantize`: input = blocks, output = float32 values; `quantize`: input = float32 values, output = blocks. */
  readonly kind: 'dequantize' | 'quantize';
  readonly blocks: number;
  readonly input: { readonly offset: number; readonly bytes: number };
  readonly output: { readonly offset: number; readonly bytes: number };
}

/** The vectors' index and raw bytes. */
export function loadVectors(): { sections: VectorSection[]; bin: Uint8Array } {
  const index = JSON.parse(readFileSync(fixturePath('quant/ggml-vectors.json'), 'utf8')) as { sections: VectorSection[] };
  const file = readFileSync(fixturePath('quant/ggml-vectors.bin'));
  const bin = new Uint8Array(file.byteLength);
  bin.set(file);
  return { sections: index.sections, bin };
}

/** A copy of a byte range of `bin` in a fresh (aligned) buffer. */
export function slice(bin: Uint8Array, r: { readonly offset: number; readonly bytes: number }): ArrayBuffer {
  return bin.slice(r.offset, r.offset + r.bytes).buffer;
}
