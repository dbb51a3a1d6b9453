import type { LLM, RequestOutput, SamplingParams } from '@kvq/engine';
import { EngineLoop, Generation } from '@kvq/server';

let counter = 0;
const loops = new WeakMap<LLM, EngineLoop>();

/** The engine loop of an LLM (one per engine, as the server has). */
function loopOf(llm: LLM): EngineLoop {
  let loop = loops.get(llm);
  if (!loop) {
    loop = new EngineLoop(llm.engine);
    loops.set(llm, loop);
  }
  return loop;
}

/**
 * Generates for one prompt through the engine loop, reporting every step's output; resolves with the final one.
 * @throws EngineError for invalid prompts or parameters
 */
export async function generateOne(llm: LLM, promptTokenIds: readonly number[], params: SamplingParams, onOutput?: (out: RequestOutput) => void): Promise<RequestOutput> {
  const gen = new Generation(loopOf(llm), `cli-${counter++}`, [promptTokenIds], params, (_i, out) => onOutput?.(out));
  const [out] = await gen.done;
  return out!;
}

/** Reads all of a stream as UTF-8 text. */
export async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(typeof c === 'string' ? Buffer.from(c) : (c as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}
