import { createInterface } from 'node:readline';
import type { ChatMessage } from '@kvq/engine';
import { DeltaText, samplingDefaults } from '@kvq/server';
import { MODEL_HELP, MODEL_OPTIONS, parseCommand, SAMPLING_HELP, SAMPLING_OPTIONS, samplingOptions } from '../../args.js';
import { CliError } from '../../errors.js';
import { asCliError, openModel } from '../../model.js';
import type { CliIo } from '../../registry.js';
import { generateOne } from '../../run.js';

const HELP = `Usage: kvq chat [options]

An interactive chat in the terminal with the model's chat template; replies stream as they are generated.
Each line you type is one user message. With piped input, every line is answered in turn (one reply per
line on stdout, nothing else). Commands: /reset (forget the conversation), /exit.

${MODEL_HELP}

${SAMPLING_HELP}
  (--max-tokens default: 256 per reply, within the context)

Chat options:
  --system TEXT             system message
  -h, --help                show this help
`;

/** `kvq chat`: a REPL over the chat template. */
export async function run(argv: string[], io: CliIo): Promise<void> {
  const { values, positionals } = parseCommand(argv, {
    ...MODEL_OPTIONS,
    ...SAMPLING_OPTIONS,
    system: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    io.stdout.write(HELP);
    return;
  }
  if (positionals.length > 0) throw new CliError('USAGE', `kvq chat takes no positional arguments (got ${JSON.stringify(positionals[0])}); type messages after it starts`);
  let ctx;
  try {
    ctx = await openModel(values, io, { maxNumSeqs: 1 });
  } catch (error) {
    throw asCliError(error);
  }
  const { llm, model } = ctx;
  try {
    const template = model.chatTemplate;
    if (!template) throw new CliError('RUNTIME', `the model ${ctx.choice.name} has no chat template; use kvq generate`);
    const params = samplingOptions(values, samplingDefaults(model.generationConfig), 256);
    const maxTokens = params.maxTokens ?? 256;
    const holdBack = Math.max(0, ...(params.stop as string[] | undefined ?? []).map((s) => s.length - 1));
    const stdin = io.stdin ?? process.stdin;
    const interactive = stdin.isTTY === true && io.stdout.isTTY === true;
    const system: ChatMessage[] = values.system !== undefined ? [{ role: 'system', content: values.system }] : [];
    let history: ChatMessage[] = [];
    const rl = createInterface({ input: stdin, ...(interactive ? { output: process.stdout, terminal: true } : { terminal: false }) });
    if (interactive) {
      io.stdout.write(`kvq chat with ${ctx.choice.name} (KV cache ${llm.kvDtype}, ${llm.kvBytesPerToken} B/token). /reset, /exit\n`);
      rl.setPrompt('> ');
      rl.prompt();
    }
    for await (const raw of rl) {
      const line = raw.trim();
      if (line === '/exit' || line === '/quit') break;
      if (line === '/reset') {
        history = [];
        if (interactive) rl.prompt();
        continue;
      }
      if (line === '') {
        if (interactive) rl.prompt();
        continue;
      }
      history.push({ role: 'user', content: line });
      // Drop the oldest turns until the prompt leaves room for a reply.
      let ids: number[];
      for (;;) {
        ids = model.tokenizer.encode(template.render([...system, ...history], { addGenerationPrompt: true }), { addSpecialTokens: false });
        if (ids.length + Math.min(maxTokens, 16) <= llm.engine.maxModelLen || history.length <= 1) break;
        history = history.slice(2);
      }
      const room = llm.engine.maxModelLen - ids.length;
      if (room < 1) {
        io.stderr.write(`kvq: that message alone (${ids.length} tokens) fills the model's context (${llm.engine.maxModelLen}); try a shorter one\n`);
        history.pop();
        if (interactive) rl.prompt();
        continue;
      }
      const delta = new DeltaText(holdBack);
      const out = await generateOne(llm, ids, { ...params, maxTokens: Math.min(maxTokens, room) }, (o) => {
        const c = o.outputs[0]!;
        io.stdout.write(delta.next(c.text, c.finishReason !== undefined));
      });
      io.stdout.write('\n');
      history.push({ role: 'assistant', content: out.outputs[0]!.text });
      if (interactive) rl.prompt();
    }
    rl.close();
  } finally {
    llm.dispose();
  }
}
