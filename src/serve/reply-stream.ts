// Streams a reply as OpenAI deltas that add up to what parseAssistantReply gives for the whole text:
// reasoning inside a leading <think> block, content after it, and (with tools) <tool_call> blocks
// held back and returned as tool calls at the end. Partial tags are never emitted.
import { parseAssistantReply, splitReasoning, type ParsedReply, type ParsedToolCall } from './tool-calls.js';

const THINK_OPEN = '<think>';
const THINK_CLOSE = '</think>';
const TOOL_OPEN = '<tool_call>';

/** Length of the longest suffix of s that is a proper prefix of tag. */
function partialTagSuffix(s: string, tag: string): number {
  for (let n = Math.min(tag.length - 1, s.length); n > 0; n--) {
    if (s.endsWith(tag.slice(0, n))) return n;
  }
  return 0;
}

/** The whole reply's fields; tool calls are only looked for when the request offered tools. */
export function parseReply(text: string, tools: boolean): ParsedReply {
  return tools ? parseAssistantReply(text) : { ...splitReasoning(text), toolCalls: [] };
}

interface View {
  reasoning: string;
  content: string;
}

export interface ReplyDelta {
  reasoning?: string;
  content?: string;
  toolCalls?: ParsedToolCall[];
}

export class ReplyStream {
  private text = '';
  private sent: View = { reasoning: '', content: '' };

  constructor(private readonly tools: boolean) {}

  /** What can safely be shown of a reply that is still growing. */
  private view(): View {
    const t = this.text;
    const lead = t.trimStart();
    let reasoning = '';
    let answer = t;
    if (lead.length < THINK_OPEN.length && THINK_OPEN.startsWith(lead)) return { reasoning: '', content: '' };
    if (lead.startsWith(THINK_OPEN)) {
      const body = lead.slice(THINK_OPEN.length);
      const end = body.indexOf(THINK_CLOSE);
      if (end < 0) {
        const open = body.slice(0, body.length - partialTagSuffix(body, THINK_CLOSE));
        return { reasoning: open.replace(/^\n+/, '').replace(/\n+$/, ''), content: '' };
      }
      reasoning = body.slice(0, end).replace(/^\n+|\n+$/g, '');
      answer = body.slice(end + THINK_CLOSE.length).replace(/^\n+/, '');
    }
    if (this.tools) {
      const at = answer.indexOf(TOOL_OPEN);
      answer = at >= 0 ? answer.slice(0, at) : answer.slice(0, answer.length - partialTagSuffix(answer, TOOL_OPEN));
      answer = answer.replace(/\s+$/, ''); // trailing space may precede a tool call, which trims it
    }
    return { reasoning, content: answer };
  }

  private diff(next: View): ReplyDelta {
    const d: ReplyDelta = {};
    if (next.reasoning.startsWith(this.sent.reasoning) && next.reasoning.length > this.sent.reasoning.length) {
      d.reasoning = next.reasoning.slice(this.sent.reasoning.length);
      this.sent.reasoning = next.reasoning;
    }
    if (next.content.startsWith(this.sent.content) && next.content.length > this.sent.content.length) {
      d.content = next.content.slice(this.sent.content.length);
      this.sent.content = next.content;
    }
    return d;
  }

  /** Adds text; returns what became safe to show. */
  push(delta: string): ReplyDelta {
    this.text += delta;
    return this.diff(this.view());
  }

  /** The reply is complete: the rest, and the tool calls. */
  end(): ReplyDelta {
    const parsed = parseReply(this.text, this.tools);
    const d = this.diff({ reasoning: parsed.reasoning ?? '', content: parsed.content });
    if (parsed.toolCalls.length > 0) d.toolCalls = parsed.toolCalls;
    return d;
  }
}
