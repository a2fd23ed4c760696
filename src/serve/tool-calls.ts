// Parses a Qwen3 reply into OpenAI message fields: the <think> block as reasoning, each well-formed
// <tool_call>{"name", "arguments"}</tool_call> block as a tool call, and what is left as content.
import { randomUUID } from 'node:crypto';

export interface ParsedToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

export interface ParsedReply {
  /** The text after the think block, less the recognised tool calls (then trimmed); '' when nothing is left. */
  content: string;
  /** The text of the think block, or null when the reply has none. */
  reasoning: string | null;
  toolCalls: ParsedToolCall[];
}

export interface ParseOptions {
  /** Makes the id of the i-th tool call; default "call_" + 24 random hex digits. */
  makeId?: (index: number) => string;
}

const THINK_OPEN = '<think>';
const THINK_CLOSE = '</think>';
const TOOL_CALL = /<tool_call>([\s\S]*?)<\/tool_call>/g;

/** The template writes "<think>\n" + reasoning + "\n</think>\n\n", so newlines at either end are framing. */
function trimNewlines(s: string): string {
  return s.replace(/^\n+|\n+$/g, '');
}

function randomCallId(): string {
  return `call_${randomUUID().replaceAll('-', '').slice(0, 24)}`;
}

/**
 * Splits off the reasoning. Qwen3 opens its reply with <think>; a template that pre-fills the opening tag leaves only
 * the closing one in the reply. A reply cut off inside the block has no answer yet, so all of it is reasoning.
 */
export function splitReasoning(text: string): { reasoning: string | null; content: string } {
  const start = text.trimStart();
  const close = text.indexOf(THINK_CLOSE);
  if (start.startsWith(THINK_OPEN)) {
    const body = start.slice(THINK_OPEN.length);
    const end = body.indexOf(THINK_CLOSE);
    if (end < 0) return { reasoning: trimNewlines(body), content: '' };
    return { reasoning: trimNewlines(body.slice(0, end)), content: body.slice(end + THINK_CLOSE.length).replace(/^\n+/, '') };
  }
  if (close >= 0 && !text.slice(0, close).includes(THINK_OPEN)) {
    return { reasoning: trimNewlines(text.slice(0, close)), content: text.slice(close + THINK_CLOSE.length).replace(/^\n+/, '') };
  }
  return { reasoning: null, content: text };
}

/** One block's JSON, if it is a call: an object with a string name and object (or absent) arguments. */
function readCall(inner: string): { name: string; arguments: string } | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(inner);
  } catch {
    return undefined;
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return undefined;
  const { name, arguments: args } = parsed as { name?: unknown; arguments?: unknown };
  if (typeof name !== 'string' || name === '') return undefined;
  if (args === undefined || args === null) return { name, arguments: '{}' };
  if (typeof args !== 'object' || Array.isArray(args)) return undefined;
  return { name, arguments: JSON.stringify(args) };
}

/** Pulls well-formed tool-call blocks out of `text`; malformed ones (bad JSON, no name) stay in the content. */
export function parseToolCalls(text: string, options: ParseOptions = {}): { content: string; toolCalls: ParsedToolCall[] } {
  const makeId = options.makeId ?? randomCallId;
  const toolCalls: ParsedToolCall[] = [];
  const content = text.replace(TOOL_CALL, (block: string, inner: string) => {
    const call = readCall(inner);
    if (call === undefined) return block;
    toolCalls.push({ id: makeId(toolCalls.length), type: 'function', function: call });
    return '';
  });
  // Qwen3 puts a newline between the text and each block; without calls the text is returned untouched.
  return { content: toolCalls.length > 0 ? content.trim() : content, toolCalls };
}

/** Reasoning first, then tool calls from the answer only: a call written while thinking is not made. */
export function parseAssistantReply(text: string, options: ParseOptions = {}): ParsedReply {
  const { reasoning, content: answer } = splitReasoning(text);
  const { content, toolCalls } = parseToolCalls(answer, options);
  return { content, reasoning, toolCalls };
}
