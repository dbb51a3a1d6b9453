import { describe, expect, it } from 'vitest';

import { loadTokenizer } from '../load/load-model.js';
import { engineErrorOf, testData } from '../testing/fixtures.js';
import { ChatTemplate, selectChatTemplate } from './chat-template.js';

describe('kvq-tiny ChatML template', () => {
  it('renders a conversation and encodes it to the ChatML token ids', async () => {
    const { tokenizer, chatTemplate } = await loadTokenizer(testData.kvqTiny);
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Continue: In the beginning' },
      { role: 'assistant', content: 'God created the heaven.' },
      { role: 'user', content: 'And then?' },
    ];
    const text = chatTemplate!.render(messages, { addGenerationPrompt: true });
    expect(text).toBe(
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nContinue: In the beginning<|im_end|>\n' +
        '<|im_start|>assistant\nGod created the heaven.<|im_end|>\n<|im_start|>user\nAnd then?<|im_end|>\n<|im_start|>assistant\n',
    );
    expect(chatTemplate!.render(messages.slice(0, 1))).toBe('<|im_start|>system\nBe brief.<|im_end|>\n');
    const ids = tokenizer.encode(text, { addSpecialTokens: false });
    expect(ids.filter((id) => id === 2)).toHaveLength(5);
    expect(ids.filter((id) => id === 3)).toHaveLength(4);
    expect(ids.slice(ids.lastIndexOf(2) + 1)).toEqual(tokenizer.encode('assistant\n', { addSpecialTokens: false }));
    expect(tokenizer.decode(ids)).toBe(text);
  });
});

describe('ChatTemplate', () => {
  it('exposes special tokens, extra variables and raise_exception to the template', () => {
    const t = new ChatTemplate(
      "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tools here') }}{% endif %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}{% if flag %}!{% endif %}",
      { bos: '<s>' },
    );
    expect(t.render([{ role: 'user', content: 'x' }], { extra: { flag: true } })).toBe('<s>[user]x!');
    const e = engineErrorOf(() => t.render([{ role: 'tool', content: 'x' }]));
    expect(e.code).toBe('CHAT_TEMPLATE');
    expect(e.message).toContain('no tools here');
  });

  it('reports templates that do not parse and messages without a role', () => {
    expect(engineErrorOf(() => new ChatTemplate('{% for x in %}', {}, 'tokenizer_config.json')).code).toBe('CHAT_TEMPLATE');
    const t = new ChatTemplate('{{ messages | length }}');
    expect(engineErrorOf(() => t.render([{ content: 'x' } as never])).code).toBe('INVALID_ARGUMENT');
  });

  it('selects a named template from a list, as transformers does', () => {
    const list = [
      { name: 'default', template: 'A' },
      { name: 'tool_use', template: 'B' },
    ];
    expect(selectChatTemplate(list, 'f')).toBe('A');
    expect(selectChatTemplate(list, 'f', 'tool_use')).toBe('B');
    expect(selectChatTemplate(undefined, 'f')).toBeUndefined();
    expect(engineErrorOf(() => selectChatTemplate(42, 'f')).field).toBe('chat_template');
  });
});
