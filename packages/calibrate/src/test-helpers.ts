// Test-only helpers (not exported from the package).
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { convertToHf, logSoftmax, type LLM, type LoadedModel, type Tensor } from '@kvq/engine';
import { fixturePath } from '@kvq/fixtures';

/** Absolute path of stories260K.bin (llama2.c checkpoint, @kvq/fixtures). */
export const stories260KBin = fixturePath('models/stories260K/stories260K.bin');

/** A fresh temporary folder and its remover. */
export function tempDir(prefix = 'kvq-calibrate-'): { dir: string; remove: () => Promise<void> } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** Convert stories260K to a Hugging Face folder (f32, rotate-half Q/K) under `dir`. */
export async function stories260KHf(dir: string): Promise<string> {
  const out = join(dir, 'stories260K-hf');
  await convertToHf(stories260KBin, out);
  return out;
}

function scaledRows(t: Tensor, factorOfRow: (row: number) => number): Tensor {
  const [rows, cols] = t.shape as [number, number];
  if (!(t.data instanceof Float32Array)) throw new Error('test variants need f32 weights');
  const data = Float32Array.from(t.data);
  for (let r = 0; r < rows; r++) {
    const f = factorOfRow(r);
    for (let c = 0; c < cols; c++) data[r * cols + c]! *= f;
  }
  return { ...t, data };
}

function scaledCols(t: Tensor, factorOfCol: (col: number) => number): Tensor {
  const [rows, cols] = t.shape as [number, number];
  if (!(t.data instanceof Float32Array)) throw new Error('test variants need f32 weights');
  const data = Float32Array.from(t.data);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) data[r * cols + c]! *= factorOfCol(c);
  return { ...t, data };
}

/**
 * A function-preserving variant: KV head h's k_proj and v_proj rows × `kvFactor(h)`, and the matching query heads'
 * q_proj rows and o_proj columns ÷ the same factor. q·k and o·(softmax·v) are unchanged in exact arithmetic (and
 * bit for bit for power-of-two factors). Whole heads are scaled, so the rotate-half row order inside a head does
 * not matter.
 */
export function kvScaledVariant(model: LoadedModel, kvFactor: (kvHead: number) => number): LoadedModel {
  const { numHeads, numKvHeads, headDim } = model.config;
  const group = numHeads / numKvHeads;
  const kvHeadOfRow = (r: number) => Math.floor(r / headDim);
  const kvHeadOfQ = (r: number) => Math.floor(Math.floor(r / headDim) / group);
  return {
    ...model,
    weights: {
      ...model.weights,
      layers: model.weights.layers.map((l) => ({
        ...l,
        k: scaledRows(l.k, (r) => kvFactor(kvHeadOfRow(r))),
        v: scaledRows(l.v, (r) => kvFactor(kvHeadOfRow(r))),
        q: scaledRows(l.q, (r) => 1 / kvFactor(kvHeadOfQ(r))),
        o: scaledCols(l.o, (c) => 1 / kvFactor(kvHeadOfQ(c))),
      })),
    },
  };
}

/**
 * Mean KL(reference || candidate) over every predicted position of `docs` (nats), from each LLM's raw logits.
 */
export async function meanKl(reference: LLM, candidate: LLM, docs: readonly (readonly number[])[]): Promise<number> {
  const vocab = reference.model.config.vocabSize;
  let sum = 0;
  let n = 0;
  for (const doc of docs) {
    const ref: Float64Array[] = [];
    await reference.score(doc, (_p, logits, rows) => {
      for (let r = 0; r < rows; r++) ref.push(logSoftmax(logits.subarray(r * vocab, (r + 1) * vocab)));
    });
    let pos = 0;
    await candidate.score(doc, (_p, logits, rows) => {
      for (let r = 0; r < rows; r++, pos++) {
        if (pos >= doc.length - 1) continue;
        const q = logSoftmax(logits.subarray(r * vocab, (r + 1) * vocab));
        const p = ref[pos]!;
        let kl = 0;
        for (let i = 0; i < vocab; i++) kl += Math.exp(p[i]!) * (p[i]! - q[i]!);
        sum += kl;
        n++;
      }
    });
  }
  return sum / n;
}

/** Calibration sentences written for these tests (TinyStories-like, so stories260K has in-distribution text). */
export const CALIBRATION_TEXTS: readonly string[] = [
  'Once upon a time, there was a little girl named Mia. She loved to play in the garden with her cat.',
  'One day, a big brown dog came to the park. He wanted to find a friend to play with.',
  'Tom had a red ball. He threw it high in the sky and his sister laughed.',
  'The sun was warm and the birds were singing. Lily wanted to go outside and pick flowers.',
  'Max was a small bear who lived in the forest. Every morning he looked for honey in the trees.',
  'Sara and Ben made a big castle out of sand. Then a wave came and took it away.',
  'The old man gave the boy a shiny coin. The boy said thank you and ran home to show his mom.',
  'There was a fish in the pond who wanted to fly. He jumped and jumped, but he always fell back in the water.',
  'Anna found a lost kitten under a tree. She gave it some milk and the kitten purred.',
  'The little car drove down the hill very fast. It stopped next to a tall red house.',
  'Tim did not want to eat his carrots. His mom told him that carrots help him see in the dark.',
  'A kind bird helped the ant cross the river. The ant was very happy and said thank you.',
  'It was raining and Jack could not go outside. He built a fort with blankets and pillows.',
  'Emma had a doll with a blue dress. She took the doll everywhere she went.',
  'The frog sat on a big green leaf. He saw a fly and caught it with his long tongue.',
  'Lucy and her dad went to the store to buy some apples and bread for dinner.',
  'The dragon was sad because nobody wanted to play with him. Then a brave girl came to say hello.',
  'Ben lost his favorite toy. He looked under the bed and in the box, and at last he found it.',
  'The moon was bright and the stars were shining. Mia said good night to her teddy bear.',
  'A little duck wanted to swim with the big ducks. His mom showed him how to paddle his feet.',
];

/** Evaluation sentences (not used for calibration). */
export const EVALUATION_TEXTS: readonly string[] = [
  'Once upon a time, there was a boy named Sam. He liked to run and jump in the grass with his dog.',
  'The girl saw a pretty butterfly in the garden. She tried to catch it, but it flew away.',
  'One day, the cat climbed up a tall tree. It was scared and could not come down.',
  'Mom made a big cake for the party. Everyone sang a happy song and ate a piece.',
  'The boy and his friend played with a red ball in the park until the sun went down.',
  'Lily was sad because her balloon flew away. Her grandma gave her a new one and she smiled.',
];
