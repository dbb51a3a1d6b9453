import type { ServerContext } from '../context.js';
import { ServerError } from '../errors.js';
import type { ChatMessageIn } from '../openai/protocol.js';

/**
 * The prompt token ids of a chat: text content (or text parts, joined) rendered with the model's chat template,
 * tokenized without adding special tokens (the template writes them) unless `addSpecialTokens`. Shared by chat
 * completions and /tokenize.
 * @throws ServerError `INVALID_REQUEST` when the model has no chat template or a part is not text
 */
export function renderChatPrompt(ctx: ServerContext, messagesIn: readonly ChatMessageIn[], addGenerationPrompt: boolean, addSpecialTokens = false): number[] {
  const template = ctx.llm.model.chatTemplate;
  if (!template) throw new ServerError('INVALID_REQUEST', `the model ${ctx.names[0]} has no chat template; use /v1/completions`, { param: 'messages' });
  const messages = messagesIn.map((m, i) => {
    let content: string;
    if (typeof m.content === 'string') content = m.content;
    else if (m.content === null || m.content === undefined) content = '';
    else {
      content = m.content
        .map((part, j) => {
          if (part.type !== 'text' || typeof part.text !== 'string') {
            throw new ServerError('INVALID_REQUEST', `messages[${i}].content[${j}]: only text parts are supported, got type ${JSON.stringify(part.type)}`, { param: `messages[${i}].content` });
          }
          return part.text;
        })
        .join('');
    }
    return { role: m.role, content, ...(m.name ? { name: m.name } : {}) };
  });
  const text = template.render(messages, { addGenerationPrompt });
  return ctx.tokenizer.encode(text, { addSpecialTokens });
}
