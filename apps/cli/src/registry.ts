/** Output streams a command writes to (injectable for tests). */
export interface CliIo {
  readonly stdout: { write(text: string): unknown; isTTY?: boolean };
  readonly stderr: { write(text: string): unknown; isTTY?: boolean };
  /** Input for interactive commands (`kvq chat`, `kvq generate -`). Default `process.stdin`. */
  readonly stdin?: NodeJS.ReadableStream & { isTTY?: boolean };
}

/** A command module: parses its own arguments and runs. */
export interface CommandModule {
  run(argv: string[], io: CliIo): Promise<void>;
}

/** One row of the command table; modules are imported lazily so `kvq --help` loads nothing heavy. */
export interface CommandEntry {
  readonly name: string;
  readonly summary: string;
  readonly load: () => Promise<CommandModule>;
}

/** Every command the CLI knows, in help order. */
export const COMMANDS: readonly CommandEntry[] = [
  { name: 'generate', summary: 'Continue a prompt (streams to a terminal; --json for machine output)', load: () => import('./commands/generate/index.js') },
  { name: 'chat', summary: "Interactive chat with the model's chat template", load: () => import('./commands/chat/index.js') },
  { name: 'serve', summary: 'OpenAI-compatible HTTP server with continuous batching (vllm serve flags)', load: () => import('./commands/serve/index.js') },
  { name: 'eval', summary: 'Perplexity, KL divergence and top-1 agreement of a KV cache dtype on a text', load: () => import('./commands/eval/index.js') },
  { name: 'calibrate', summary: 'Calibrate FP8 KV-cache scales and write a checkpoint vLLM and kvq load', load: () => import('./commands/calibrate/index.js') },
  { name: 'plan', summary: 'KV-cache capacity of a memory budget for every dtype side by side', load: () => import('./commands/plan/index.js') },
  { name: 'convert', summary: 'Convert llama2.c / GGUF to a Hugging Face folder, or a Hugging Face folder to GGUF (--outtype)', load: () => import('./commands/convert/index.js') },
  { name: 'quantize', summary: 'Quantize weights to FP8 / W4A16 / W8A8 compressed-tensors or Q8_0..Q6_K GGUF', load: () => import('./commands/quantize/index.js') },
  { name: 'env', summary: 'Versions, CPU features and kernel backends (for bug reports)', load: () => import('./commands/env/index.js') },
  { name: 'bench', summary: 'Serving throughput at 1, 4 and 16 concurrent streams', load: () => import('./commands/bench/index.js') },
  { name: 'fp8', summary: 'Encode numbers to FP8 in every format and show the round trip', load: () => import('./commands/fp8/index.js') },
];
