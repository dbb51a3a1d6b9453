/**
 * Tool calling (OpenAI `tools` / `tool_choice`, vLLM's tool parsers): the formats models write tool calls in, a
 * parser for whole outputs and one for streams, and the structured-output specs that enforce `tool_choice:
 * "required"` and a named tool (vLLM's JSON schemas for them).
 *
 * Formats (facts from vLLM's `tool_parsers`, recorded in docs/spec/tool-calling.md):
 * - `hermes` (Hermes 2/3, Qwen2.5, Qwen3): each call is `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`;
 *   text before the first tag is the message content.
 * - `llama3_json` (Llama 3.1 / 3.2 / 3.3 JSON tool calling): the output is one JSON object `{"name": ...,
 *   "parameters": {...}}` (or `"arguments"`), optionally after `<|python_tag|>`, several separated by `;`.
 * @module
 */
import { EngineError } from '../errors.js';
import type { StructuredOutputsParams } from '../structured/structured.js';

/** An OpenAI function tool. */
export interface ToolDefinition {
  readonly type: 'function';
  readonly function: { readonly name: string; readonly description?: string; readonly parameters?: Readonly<Record<string, unknown>> };
}

/** `tool_choice`: `auto` (the model decides), `none`, `required` (at least one call), or one named function. */
export type ToolChoice = 'auto' | 'none' | 'required' | { readonly type: 'function'; readonly function: { readonly name: string } };

/** The tool-call syntaxes kvq parses. */
export type ToolCallFormat = 'hermes' | 'llama3_json';

/** One parsed call: the function's name and its arguments as JSON text (as OpenAI sends `arguments`). */
export interface ParsedToolCall {
  readonly name: string;
  readonly arguments: string;
}

/** A whole output split into message content and tool calls. */
export interface ParsedOutput {
  readonly content: string;
  readonly toolCalls: readonly ParsedToolCall[];
}

/**
 * The format a chat template asks its model to write tool calls in, or undefined when it has no tool support
 * (`<tool_call>` in the template: hermes; `<|python_tag|>` or Llama 3's "parameters" JSON prompt: llama3_json).
 */
export function toolCallFormatOf(templateSource: string): ToolCallFormat | undefined {
  if (templateSource.includes('<tool_call>')) return 'hermes';
  if (templateSource.includes('<|python_tag|>') || /"parameters"\s*:/.test(templateSource) || templateSource.includes('ipython')) return 'llama3_json';
  return undefined;
}

/**
 * Checks a request's tools and choice.
 * @throws EngineError `INVALID_ARGUMENT` naming the field (bad tool shape, duplicate name, a named choice that is not
 *   among the tools, `required` without tools).
 */
export function checkTools(tools: unknown, choice: unknown = 'auto'): { tools: ToolDefinition[]; choice: ToolChoice } {
  const bad = (field: string, why: string): never => {
    throw new EngineError('INVALID_ARGUMENT', `${field} ${why}`, { field });
  };
  const list = tools === undefined || tools === null ? [] : tools;
  if (!Array.isArray(list)) bad('tools', 'must be an array of {type: "function", function: {name, parameters}}');
  const names = new Set<string>();
  (list as unknown[]).forEach((t, i) => {
    const f = (t as { function?: { name?: unknown; parameters?: unknown } } | null)?.function;
    if ((t as { type?: unknown } | null)?.type !== 'function' || !f || typeof f.name !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(f.name)) {
      bad(`tools[${i}]`, 'must be {type: "function", function: {name (letters, digits, _ . -), parameters?}}');
    }
    if (f!.parameters !== undefined && (typeof f!.parameters !== 'object' || f!.parameters === null)) bad(`tools[${i}].function.parameters`, 'must be a JSON schema object');
    if (names.has(f!.name as string)) bad(`tools[${i}].function.name`, `${JSON.stringify(f!.name)} is defined twice`);
    names.add(f!.name as string);
  });
  const c = choice ?? 'auto';
  if (c === 'auto' || c === 'none') return { tools: list as ToolDefinition[], choice: c };
  if (c === 'required') {
    if (names.size === 0) bad('tool_choice', '"required" needs at least one tool');
    return { tools: list as ToolDefinition[], choice: c };
  }
  const name = (c as { type?: unknown; function?: { name?: unknown } })?.function?.name;
  if ((c as { type?: unknown }).type !== 'function' || typeof name !== 'string') bad('tool_choice', 'must be "auto", "none", "required" or {type: "function", function: {name}}');
  if (!names.has(name as string)) bad('tool_choice', `names the function ${JSON.stringify(name)}, which is not in tools`);
  return { tools: list as ToolDefinition[], choice: c as ToolChoice };
}

const EMPTY_OBJECT_SCHEMA = { type: 'object', properties: {} };

/**
 * The structured-output spec that enforces a `tool_choice` (vLLM's `_get_json_schema_from_tool`): `required` → a
 * JSON array (at least one item) of `{name, parameters}` objects, each item one of the tools; a named function → its
 * parameters schema (the output is the arguments object itself); `auto` / `none` → none.
 */
export function toolChoiceConstraint(tools: readonly ToolDefinition[], choice: ToolChoice): StructuredOutputsParams | undefined {
  if (choice === 'auto' || choice === 'none') return undefined;
  if (choice === 'required') {
    const items = tools.map((t) => ({
      properties: { name: { type: 'string', enum: [t.function.name] }, parameters: t.function.parameters ?? EMPTY_OBJECT_SCHEMA },
      required: ['name', 'parameters'],
    }));
    return { json: { type: 'array', minItems: 1, items: { type: 'object', anyOf: items } } };
  }
  const tool = tools.find((t) => t.function.name === choice.function.name)!;
  return { json: tool.function.parameters ?? EMPTY_OBJECT_SCHEMA };
}

/**
 * The calls of an output generated under a `required` or named `tool_choice` (see {@link toolChoiceConstraint}).
 * @throws EngineError `INVALID_ARGUMENT` when the text is not what the constraint produces (e.g. cut by max_tokens).
 */
export function forcedToolCalls(text: string, choice: ToolChoice): ParsedToolCall[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new EngineError('INVALID_ARGUMENT', `the forced tool call is not complete JSON (raise max_tokens?): ${JSON.stringify(text.slice(0, 200))}`, { field: 'tool_choice' });
  }
  if (choice !== 'required' && typeof choice === 'object') return [{ name: choice.function.name, arguments: JSON.stringify(value) }];
  return (value as { name: string; parameters: unknown }[]).map((c) => ({ name: c.name, arguments: JSON.stringify(c.parameters ?? {}) }));
}

/** A JSON value starting at `text[start]` (which is `{` or `[`): its end index (exclusive), or -1 if unterminated. */
function jsonEnd(text: string, start: number): number {
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const ch = text[i]!;
    if (inString) {
      if (ch === '\\') i++;
      else if (ch === '"') inString = false;
    } else if (ch === '"') inString = true;
    else if (ch === '{' || ch === '[') depth++;
    else if (ch === '}' || ch === ']') {
      depth--;
      if (depth === 0) return i + 1;
    }
  }
  return -1;
}

/** `{name, arguments|parameters}` JSON to a call, or undefined when it is not one. */
function callOf(json: string): ParsedToolCall | undefined {
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch {
    return undefined;
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const o = v as { name?: unknown; arguments?: unknown; parameters?: unknown };
  if (typeof o.name !== 'string') return undefined;
  const args = o.arguments ?? o.parameters ?? {};
  return { name: o.name, arguments: typeof args === 'string' ? args : JSON.stringify(args) };
}

/**
 * Splits a whole output into content and tool calls. Text that only looks like a call (bad JSON, no name) stays
 * content, as vLLM's parsers do.
 */
export function parseToolCalls(text: string, format: ToolCallFormat): ParsedOutput {
  if (format === 'hermes') {
    const calls: ParsedToolCall[] = [];
    const re = /<tool_call>([\s\S]*?)(?:<\/tool_call>|$)/g;
    const first = text.indexOf('<tool_call>');
    if (first < 0) return { content: text, toolCalls: [] };
    for (const m of text.matchAll(re)) {
      const call = callOf(m[1]!.trim());
      if (!call) return { content: text, toolCalls: [] };
      calls.push(call);
    }
    return { content: text.slice(0, first).trimEnd(), toolCalls: calls };
  }
  const body = text.trimStart().replace(/^<\|python_tag\|>/, '').trimStart();
  if (!body.startsWith('{')) return { content: text, toolCalls: [] };
  const calls: ParsedToolCall[] = [];
  let i = 0;
  while (i < body.length) {
    const end = jsonEnd(body, i);
    if (end < 0) return { content: text, toolCalls: [] };
    const call = callOf(body.slice(i, end));
    if (!call) return { content: text, toolCalls: [] };
    calls.push(call);
    const rest = body.slice(end).match(/^\s*;?\s*/)![0].length;
    i = end + rest;
    if (i < body.length && body[i] !== '{') return { content: text, toolCalls: [] };
  }
  return { content: '', toolCalls: calls };
}

/** What a stream chunk adds: content text and/or completed tool calls (with their 0-based index). */
export interface ToolStreamDelta {
  readonly content: string;
  readonly toolCalls: readonly (ParsedToolCall & { readonly index: number })[];
}

/**
 * Parses a streamed output as it grows: content is passed through until text that may start a tool call appears;
 * from then on text is held back and each call is emitted once it is complete (name and the whole arguments JSON in
 * one delta, which OpenAI clients accept: `arguments` may arrive in any number of pieces). `finish()` releases what
 * is still held (as content when it never became a valid call).
 */
export class ToolCallStreamParser {
  private text = '';
  private sentContent = 0;
  private emitted = 0;

  constructor(private readonly format: ToolCallFormat) {}

  /** Feeds the next text delta. */
  push(delta: string): ToolStreamDelta {
    this.text += delta;
    return this.advance(false);
  }

  /** The end of the output: whatever is held becomes calls or content. */
  finish(): ToolStreamDelta {
    return this.advance(true);
  }

  private advance(final: boolean): ToolStreamDelta {
    const start = this.callStart();
    if (start < 0) {
      // No call started: release content, keeping back a tail that could be the beginning of a tag.
      const hold = final ? 0 : this.possiblePrefixLength();
      return { content: this.takeContent(this.text.length - hold), toolCalls: [] };
    }
    const content = this.takeContent(start);
    const parsed = parseToolCalls(this.text.slice(start), this.format);
    const complete = final ? parsed.toolCalls : this.completeCalls(start);
    if (final && parsed.toolCalls.length === 0) return { content: content + this.takeContent(this.text.length), toolCalls: [] };
    const fresh = complete.slice(this.emitted).map((c, k) => ({ ...c, index: this.emitted + k }));
    this.emitted = complete.length;
    return { content, toolCalls: fresh };
  }

  /** Calls whose text is complete so far (the last one may still be growing). */
  private completeCalls(start: number): readonly ParsedToolCall[] {
    const body = this.text.slice(start);
    if (this.format === 'hermes') {
      const closed = body.lastIndexOf('</tool_call>');
      return closed < 0 ? [] : parseToolCalls(body.slice(0, closed + '</tool_call>'.length), 'hermes').toolCalls;
    }
    const out: ParsedToolCall[] = [];
    const b = body.replace(/^<\|python_tag\|>/, '').trimStart();
    let i = 0;
    for (;;) {
      if (b[i] !== '{') break;
      const end = jsonEnd(b, i);
      if (end < 0) break;
      const call = callOf(b.slice(i, end));
      if (!call) break;
      out.push(call);
      i = end + b.slice(end).match(/^\s*;?\s*/)![0].length;
    }
    return out;
  }

  /** Where a tool call starts in the text, or -1. */
  private callStart(): number {
    if (this.format === 'hermes') return this.text.indexOf('<tool_call>');
    const lead = this.text.match(/^\s*/)![0].length;
    const rest = this.text.slice(lead);
    return rest.startsWith('<|python_tag|>') || rest.startsWith('{') ? lead : -1;
  }

  /** Length of the text's tail that could still grow into the start of a call. */
  private possiblePrefixLength(): number {
    if (this.format === 'llama3_json') return this.text.trim().length === 0 || '<|python_tag|>'.startsWith(this.text.trim()) ? this.text.length - this.sentContent : 0;
    const tag = '<tool_call>';
    for (let n = Math.min(tag.length - 1, this.text.length); n > 0; n--) if (tag.startsWith(this.text.slice(-n))) return n;
    return 0;
  }

  private takeContent(until: number): string {
    if (until <= this.sentContent) return '';
    const s = this.text.slice(this.sentContent, until);
    this.sentContent = until;
    return s;
  }
}
