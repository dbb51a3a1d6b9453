import { DeltaText, samplingDefaults } from '@kvq/server';
import { MODEL_HELP, MODEL_OPTIONS, parseCommand, SAMPLING_HELP, SAMPLING_OPTIONS, samplingOptions } from '../../args.js';
import { CliError } from '../../errors.js';
import { asCliError, openModel } from '../../model.js';
import type { CliIo } from '../../registry.js';
import { generateOne, readAll } from '../../run.js';

const HELP = `Usage: kvq generate [options] PROMPT

Continues PROMPT with the model and prints the continuation (streamed when stdout is a terminal).
PROMPT '-' reads the prompt from stdin.

${MODEL_HELP}

${SAMPLING_HELP}
  (--max-tokens default 64)

Output options:
  --chat                    wrap PROMPT as a user message in the model's chat template
  --system TEXT             system message for --chat
  --json                    print one JSON object: text, token_ids, prompt_token_ids, finish_reason, KV cache
                            dtype and bytes per token, timing
  -h, --help                show this help

Example:
  kvq generate "In the beginning God" --kv-cache-dtype fp8 --temperature 0
`;

/** `kvq generate`: one prompt, one continuation. */
export async function run(argv: string[], io: CliIo): Promise<void> {
  const { values, positionals } = parseCommand(argv, {
    ...MODEL_OPTIONS,
    ...SAMPLING_OPTIONS,
    chat: { type: 'boolean' },
    system: { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    io.stdout.write(HELP);
    return;
  }
  const stdin = io.stdin ?? process.stdin;
  let prompt: string;
  if (positionals.length === 1 && positionals[0] === '-') prompt = await readAll(stdin);
  else if (positionals.length > 0) prompt = positionals.join(' ');
  else throw new CliError('USAGE', "kvq generate: give a PROMPT (or '-' to read stdin); see kvq generate --help");
  if (values.system !== undefined && !values.chat) throw new CliError('USAGE', '--system needs --chat');

  let ctx;
  try {
    ctx = await openModel(values, io, { maxNumSeqs: 1 });
  } catch (error) {
    throw asCliError(error);
  }
  const { llm, model } = ctx;
  try {
    let promptIds: number[];
    if (values.chat) {
      if (!model.chatTemplate) throw new CliError('RUNTIME', `the model ${ctx.choice.name} has no chat template; drop --chat`);
      const messages = [...(values.system !== undefined ? [{ role: 'system', content: values.system }] : []), { role: 'user', content: prompt }];
      promptIds = model.tokenizer.encode(model.chatTemplate.render(messages, { addGenerationPrompt: true }), { addSpecialTokens: false });
    } else {
      promptIds = model.tokenizer.encode(prompt);
    }
    const params = samplingOptions(values, samplingDefaults(model.generationConfig), 64);
    const room = llm.engine.maxModelLen - promptIds.length;
    if (room < 1) throw new CliError('RUNTIME', `the prompt has ${promptIds.length} tokens; the model's context is ${llm.engine.maxModelLen}`);
    params.maxTokens = Math.min(params.maxTokens ?? 64, room);

    const stream = !values.json && io.stdout.isTTY === true;
    const holdBack = Math.max(0, ...(params.stop as string[] | undefined ?? []).map((s) => s.length - 1));
    const delta = new DeltaText(holdBack);
    const t0 = performance.now();
    let firstToken: number | undefined;
    const out = await generateOne(llm, promptIds, params, (o) => {
      const c = o.outputs[0]!;
      if (firstToken === undefined && c.tokenIds.length > 0) firstToken = performance.now();
      if (stream) io.stdout.write(delta.next(c.text, c.finishReason !== undefined));
    });
    const seconds = (performance.now() - t0) / 1000;
    const c = out.outputs[0]!;
    if (values.json) {
      io.stdout.write(
        `${JSON.stringify(
          {
            model: ctx.choice.name,
            prompt,
            text: c.text,
            token_ids: c.tokenIds,
            prompt_token_ids: out.promptTokenIds,
            finish_reason: c.finishReason ?? null,
            stop_reason: c.stopReason ?? null,
            kv_cache_dtype: ctx.kvCacheDtype,
            kv_cache_storage_dtype: llm.kvDtype,
            ...(ctx.options.kvCacheValueDtype !== undefined ? { kv_cache_value_dtype: ctx.options.kvCacheValueDtype } : {}),
            kv_cache_bytes_per_token: llm.kvBytesPerToken,
            backend: llm.backend.name,
            sampling: params,
            timing: {
              seconds,
              time_to_first_token: firstToken === undefined ? null : (firstToken - t0) / 1000,
              tokens_per_second: c.tokenIds.length / seconds,
            },
          },
          null,
          2,
        )}\n`,
      );
    } else if (stream) {
      io.stdout.write('\n');
    } else {
      io.stdout.write(`${c.text}\n`);
    }
  } finally {
    llm.dispose();
  }
}
