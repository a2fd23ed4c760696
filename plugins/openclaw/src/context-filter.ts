// Which transcript messages the model must not see: the user's own `/feedback …` turns. OpenClaw
// keeps a plugin command's text in the conversation and sends it to the model on later turns, so
// without this filter the served model reads "Please answer in upper case." in context. Its replies
// then follow the instruction in that conversation only, and the update learns less (teacher and
// student already agree there), so a new conversation shows less of what was learned. The message
// stays in the session's history; only the model's context leaves it out.

/** The shape of a transcript message this check reads (OpenClaw's AgentMessage, loosely). */
export interface TranscriptMessage {
  role?: unknown;
  content?: unknown;
}

// As OpenClaw's plugin-command matcher reads a message: trimmed, `/ name` allowed, name in any case.
const COMMAND = /^\/\s*feedback(?:\s|$)/i;

/** The text of a user message, whether its content is a string or a list of parts. */
function text(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content
    .map((part: unknown) => (part !== null && typeof part === 'object' && (part as { type?: unknown }).type === 'text' ? String((part as { text?: unknown }).text ?? '') : ''))
    .join('');
}

/** True for a user turn that is a /feedback command (with or without its text). */
export function isFeedbackTurn(message: TranscriptMessage): boolean {
  return message.role === 'user' && COMMAND.test(text(message.content).trim());
}
