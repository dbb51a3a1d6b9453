import type { ServerContext } from '../context.js';
import { ServerError } from '../errors.js';
import type { ChatMessageIn } from '../openai/protocol.js';

/**
 * The prompt token ids of a chat: text content (or text parts, joined) rendered with the model's chat template,
 * tokenized without adding special tokens (the template writes them) unless `addSpecialTokens`. Shared by chat
 * completions and /tokenize.
 * @throws ServerError `INVALID_REQUEST` when the model has no chat template or a part is not text
 */
export function renderChatPrompt(
  ctx: ServerContext,
  messagesIn: readonly ChatMessageIn[],
  addGenerationPrompt: boolean,
  addSpecialTokens = false,
  tools?: readonly unknown[],
): number[] {
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
    return {
      role: m.role,
      content,
      ...(m.name ? { name: m.name } : {}),
      ...(m.tool_call_id ? { tool_call_id: m.tool_call_id } : {}),
      ...(m.tool_calls ? { tool_calls: m.tool_calls.map((c, j) => ({ ...c, function: { name: c.function?.name, arguments: toolArguments(c.function?.arguments, i, j) } })) } : {}),
    };
  });
  const text = template.render(messages, { addGenerationPrompt, ...(tools && tools.length > 0 ? { tools } : {}) });
  return ctx.tokenizer.encode(text, { addSpecialTokens });
}

/**
 * An assistant message's tool-call arguments as the chat template expects them: an object (OpenAI sends a JSON
 * string; Hugging Face templates write `arguments | tojson`), as vLLM does before rendering.
 * @throws ServerError `INVALID_REQUEST` when the string is not JSON
 */
function toolArguments(args: unknown, message: number, call: number): unknown {
  if (typeof args !== 'string') return args ?? {};
  try {
    return JSON.parse(args) as unknown;
  } catch {
    throw new ServerError('INVALID_REQUEST', `messages[${message}].tool_calls[${call}].function.arguments is not valid JSON`, { param: `messages[${message}].tool_calls` });
  }
}
