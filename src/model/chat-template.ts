// The chat template of a Hugging Face model folder (chat_template.jinja, or chat_template in tokenizer_config.json)
// rendered with @huggingface/jinja from OpenAI-shaped messages, the way HF transformers' apply_chat_template does.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { ConfigError, InputError } from '../errors.js';
import { readJsonObject, specialTokenText } from './tokenizer.js';

export type ChatRole = 'system' | 'user' | 'assistant' | 'tool';

export interface TextPart {
  type: 'text';
  text: string;
}

export interface ChatToolCall {
  id?: string;
  type?: 'function';
  /** `arguments` is a JSON string (OpenAI) or an already parsed object. */
  function: { name: string; arguments: string | Record<string, unknown> };
}

export interface ChatMessage {
  role: ChatRole;
  content?: string | TextPart[] | null;
  name?: string;
  tool_calls?: ChatToolCall[];
  tool_call_id?: string;
  reasoning_content?: string | null;
}

export interface ToolDefinition {
  type: 'function';
  function: { name: string; description?: string; parameters?: Record<string, unknown>; [key: string]: unknown };
}

export interface RenderOptions {
  tools?: ToolDefinition[];
  /** End with the opening of an assistant turn, for generation. Default false, as in HF. */
  addGenerationPrompt?: boolean;
  /** Qwen3's switch; left undefined in the template unless given, which Qwen3 reads as thinking on. */
  enableThinking?: boolean;
  /** Any other template variable, passed under its own (snake_case) name. */
  [variable: string]: unknown;
}

const ROLES: readonly string[] = ['system', 'user', 'assistant', 'tool'];

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** OpenAI content: a string, or text parts joined with newlines (as vLLM does); only assistants may omit it. */
function flattenContent(content: unknown, where: string, optional: boolean): string {
  if (typeof content === 'string') return content;
  if (content === null || content === undefined) {
    if (optional) return '';
    throw new InputError(`${where}: content is required`);
  }
  if (!Array.isArray(content)) throw new InputError(`${where}: content must be a string or an array of text parts`);
  return content
    .map((part: unknown, j) => {
      if (!isObject(part) || part.type !== 'text' || typeof part.text !== 'string') {
        const kind = isObject(part) && typeof part.type === 'string' ? `a "${part.type}" part` : 'not a {type: "text", text} part';
        throw new InputError(`${where}: content[${j}] is ${kind}; only text parts are supported`);
      }
      return part.text;
    })
    .join('\n');
}

/** Templates index into `function.arguments`, so a JSON string becomes an object (what HF transformers expects). */
function normalizeToolCall(call: unknown, where: string): Record<string, unknown> {
  if (!isObject(call) || !isObject(call.function)) throw new InputError(`${where}: must be {type: "function", function: {name, arguments}}`);
  const fn = call.function;
  if (typeof fn.name !== 'string' || fn.name === '') throw new InputError(`${where}: function.name must be a non-empty string`);
  let args: unknown = fn.arguments ?? {};
  if (typeof args === 'string') {
    try {
      args = args.trim() === '' ? {} : JSON.parse(args);
    } catch (e) {
      // The parser's message quotes the text; the error (and so the log) must not carry a prompt.
      const at = /position (\d+)/.exec((e as Error).message)?.[1];
      throw new InputError(`${where}: function.arguments is not valid JSON${at === undefined ? '' : ` (at character ${at})`}`);
    }
  }
  if (!isObject(args)) throw new InputError(`${where}: function.arguments must be a JSON object`);
  const out: Record<string, unknown> = { type: 'function', function: { name: fn.name, arguments: args } };
  if (typeof call.id === 'string') out.id = call.id;
  return out;
}

/** Checks one OpenAI-shaped message and reduces it to what templates read. */
export function normalizeMessage(message: unknown, index: number): Record<string, unknown> {
  const where = `messages[${index}]`;
  if (!isObject(message)) throw new InputError(`${where} must be an object with a role and content`);
  const role = message.role;
  if (typeof role !== 'string' || !ROLES.includes(role)) {
    throw new InputError(`${where}: unknown role ${JSON.stringify(role)} (expected one of ${ROLES.join(', ')})`);
  }
  const out: Record<string, unknown> = { role, content: flattenContent(message.content, where, role === 'assistant') };
  if (typeof message.name === 'string') out.name = message.name;
  if (role === 'assistant') {
    if (message.tool_calls !== undefined && message.tool_calls !== null) {
      if (!Array.isArray(message.tool_calls)) throw new InputError(`${where}: tool_calls must be an array`);
      if (message.tool_calls.length > 0) {
        out.tool_calls = message.tool_calls.map((c: unknown, j) => normalizeToolCall(c, `${where}.tool_calls[${j}]`));
      }
    }
    const reasoning = message.reasoning_content;
    if (reasoning !== undefined && reasoning !== null) {
      if (typeof reasoning !== 'string') throw new InputError(`${where}: reasoning_content must be a string`);
      out.reasoning_content = reasoning;
    }
  } else if (message.tool_calls !== undefined && message.tool_calls !== null) {
    throw new InputError(`${where}: only assistant messages may carry tool_calls`);
  }
  if (role === 'tool' && typeof message.tool_call_id === 'string') out.tool_call_id = message.tool_call_id;
  return out;
}

function checkTools(tools: unknown): ToolDefinition[] | undefined {
  if (tools === undefined || tools === null) return undefined;
  if (!Array.isArray(tools)) throw new InputError('tools must be an array');
  tools.forEach((tool: unknown, i) => {
    if (!isObject(tool) || tool.type !== 'function' || !isObject(tool.function) || typeof tool.function.name !== 'string') {
      throw new InputError(`tools[${i}] must be {type: "function", function: {name, description?, parameters?}}`);
    }
  });
  return tools as ToolDefinition[];
}

function compile(source: string, origin: string): Template {
  try {
    return new Template(source);
  } catch (e) {
    throw new ConfigError(`${origin}: chat template does not parse: ${(e as Error).message}`);
  }
}

export class ChatTemplate {
  private readonly compiled = new Map<string, Template>();

  /**
   * `templates` maps names to template sources; "default" is used, and "tool_use" instead when tools are given and
   * it exists (HF's rule for named templates). `specialTokens` are exposed to the template (bos_token, eos_token, …).
   */
  constructor(
    readonly templates: Readonly<Record<string, string>>,
    readonly specialTokens: Readonly<Record<string, string>> = {},
    private readonly origin = 'chat template',
  ) {
    if (Object.keys(templates).length === 0) throw new ConfigError(`${origin}: no chat template`);
    for (const [name, source] of Object.entries(templates)) this.compiled.set(name, compile(source, `${origin} (${name})`));
  }

  /** Reads chat_template.jinja if present (it takes precedence, as in HF), else tokenizer_config.json's chat_template. */
  static fromDir(modelDir: string): ChatTemplate {
    const configPath = join(modelDir, 'tokenizer_config.json');
    const config = readJsonObject(configPath, false) ?? {};
    const tokens: Record<string, string> = {};
    for (const key of ['bos_token', 'eos_token', 'pad_token', 'unk_token']) {
      const text = specialTokenText(config[key]);
      if (text !== undefined) tokens[key] = text;
    }
    const jinjaPath = join(modelDir, 'chat_template.jinja');
    if (existsSync(jinjaPath)) return new ChatTemplate({ default: readFileSync(jinjaPath, 'utf8') }, tokens, jinjaPath);
    const raw = config.chat_template;
    if (raw === undefined || raw === null) throw new ConfigError(`${modelDir}: no chat_template.jinja and no chat_template in tokenizer_config.json`);
    if (typeof raw === 'string') return new ChatTemplate({ default: raw }, tokens, configPath);
    if (!Array.isArray(raw)) throw new ConfigError(`${configPath}: chat_template must be a string or a list of {name, template}`);
    const named: Record<string, string> = {};
    raw.forEach((entry: unknown, i) => {
      if (!isObject(entry) || typeof entry.name !== 'string' || typeof entry.template !== 'string') {
        throw new ConfigError(`${configPath}: chat_template[${i}] must be {name: string, template: string}`);
      }
      named[entry.name] = entry.template;
    });
    return new ChatTemplate(named, tokens, configPath);
  }

  /** The template a call uses: "tool_use" when tools are given and it exists, else "default", else the only one. */
  private pick(withTools: boolean): Template {
    if (withTools && this.compiled.has('tool_use')) return this.compiled.get('tool_use')!;
    if (this.compiled.has('default')) return this.compiled.get('default')!;
    if (this.compiled.size === 1) return [...this.compiled.values()][0]!;
    throw new ConfigError(`${this.origin}: several chat templates (${[...this.compiled.keys()].join(', ')}) and none named "default"`);
  }

  render(messages: readonly ChatMessage[], options: RenderOptions = {}): string {
    if (!Array.isArray(messages) || messages.length === 0) throw new InputError('messages must be a non-empty array');
    const normalized = messages.map((m: unknown, i) => normalizeMessage(m, i));
    const { tools, addGenerationPrompt, enableThinking, ...extra } = options;
    const toolList = checkTools(tools);
    const variables: Record<string, unknown> = {
      ...this.specialTokens,
      ...extra,
      messages: normalized,
      add_generation_prompt: addGenerationPrompt ?? false,
    };
    // Absent rather than null: templates test `tools` for truth and `enable_thinking is defined`.
    if (toolList !== undefined) variables.tools = toolList;
    if (enableThinking !== undefined) variables.enable_thinking = enableThinking;
    const template = this.pick(toolList !== undefined && toolList.length > 0);
    try {
      return template.render(variables);
    } catch (e) {
      // The template parsed when loaded, so a failure here is about these messages (raise_exception, or a shape the
      // template cannot handle): the caller's to fix.
      throw new InputError(`${this.origin}: chat template failed to render the messages: ${(e as Error).message}`);
    }
  }
}
