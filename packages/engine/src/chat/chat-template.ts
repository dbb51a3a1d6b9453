import { Template } from '@huggingface/jinja';

import { EngineError, describeValue } from '../errors.js';

/** One chat message. `content` is usually a string; templates may accept richer shapes. */
export interface ChatMessage {
  readonly role: string;
  readonly content: unknown;
  readonly [key: string]: unknown;
}

/** Options of {@link ChatTemplate.render}. */
export interface ChatRenderOptions {
  /** Append the prompt that opens the assistant's turn. Default false (as in transformers). */
  addGenerationPrompt?: boolean;
  /** Tool definitions, passed to the template as `tools`. */
  tools?: readonly unknown[];
  /** Extra template variables (e.g. `enable_thinking`); they override the built-in ones. */
  extra?: Readonly<Record<string, unknown>>;
}

/**
 * A Hugging Face chat template (Jinja), rendered with `@huggingface/jinja`. The template sees `messages`,
 * `add_generation_prompt`, `bos_token`, `eos_token`, `unk_token`, `pad_token`, `tools` and the helpers that
 * library provides (`raise_exception`, `strftime_now`, `tojson`).
 * NOTE: the rendered text already contains the template's special tokens; encode it with
 * `addSpecialTokens: false` (as transformers' `apply_chat_template` does), or BOS may appear twice.
 */
export class ChatTemplate {
  private readonly template: Template;

  /**
   * @param source the Jinja source (tokenizer_config.json `chat_template`, `chat_template.jinja`, or GGUF
   *   `tokenizer.chat_template`).
   * @param specialTokens token strings exposed to the template.
   * @throws EngineError `CHAT_TEMPLATE` when the template does not parse.
   */
  constructor(
    readonly source: string,
    readonly specialTokens: Readonly<{ bos?: string; eos?: string; unk?: string; pad?: string }> = {},
    readonly file = 'chat_template',
  ) {
    try {
      this.template = new Template(source);
    } catch (cause) {
      throw new EngineError('CHAT_TEMPLATE', `${file}: chat template does not parse (${(cause as Error).message})`, { file, cause });
    }
  }

  /**
   * Render a conversation to prompt text.
   * @throws EngineError `INVALID_ARGUMENT` for messages without a string role; `CHAT_TEMPLATE` when rendering fails
   *   (including the template's own `raise_exception`).
   */
  render(messages: readonly ChatMessage[], options: ChatRenderOptions = {}): string {
    messages.forEach((m, i) => {
      if (typeof m !== 'object' || m === null || typeof m.role !== 'string') {
        throw new EngineError('INVALID_ARGUMENT', `messages[${i}] must be an object with a string role, got ${describeValue(m)}`, {
          field: `messages[${i}]`,
        });
      }
    });
    const context: Record<string, unknown> = {
      messages: messages.map((m) => ({ ...m })),
      add_generation_prompt: options.addGenerationPrompt ?? false,
      bos_token: this.specialTokens.bos ?? '',
      eos_token: this.specialTokens.eos ?? '',
      unk_token: this.specialTokens.unk ?? '',
      pad_token: this.specialTokens.pad ?? '',
      ...(options.tools ? { tools: options.tools } : {}),
      ...options.extra,
    };
    try {
      return this.template.render(context);
    } catch (cause) {
      throw new EngineError('CHAT_TEMPLATE', `${this.file}: chat template failed to render (${(cause as Error).message})`, {
        file: this.file,
        cause,
      });
    }
  }
}

/**
 * The template source from `tokenizer_config.json`'s `chat_template`: a string, or a list of `{name, template}`
 * from which `name` (default `"default"`) is taken.
 * @returns undefined when there is no template.
 * @throws EngineError `CHAT_TEMPLATE` for a malformed value or a missing named template.
 */
export function selectChatTemplate(value: unknown, file: string, name = 'default'): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const entry = value.find((t) => typeof t === 'object' && t !== null && (t as { name?: unknown }).name === name);
    const template = (entry as { template?: unknown } | undefined)?.template;
    if (typeof template === 'string') return template;
    throw new EngineError('CHAT_TEMPLATE', `${file}: chat_template has no template named ${JSON.stringify(name)}`, { file, field: 'chat_template' });
  }
  throw new EngineError('CHAT_TEMPLATE', `${file}: chat_template must be a string or a list of {name, template}, got ${describeValue(value)}`, {
    file,
    field: 'chat_template',
  });
}
