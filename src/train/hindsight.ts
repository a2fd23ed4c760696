// The teacher's context (docs/learning.md): the whole conversation, with a hindsight block — the user's
// feedback on the earlier attempt — appended to the last user message. Everything after that message
// (the assistant marker the response is scored after) must stay byte-identical to the student's.
import { InputError } from '../errors.js';
import type { ChatMessage, ChatTemplate } from '../model/chat-template.js';
import type { Tokenizer } from '../model/tokenizer.js';

export const HINDSIGHT_HEADER = '[HINDSIGHT CONTEXT]';
export const HINDSIGHT_SENTENCE =
  "What follows is the user's feedback on an earlier attempt at answering this request; the answer should take it into account.";

function textOf(content: ChatMessage['content']): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((p) => (p as { text?: string }).text ?? '').join('\n');
  return '';
}

/** The conversation with the hindsight block in its last user message. */
export function hindsightMessages(messages: readonly ChatMessage[], feedback: string, previousAttempt?: string): ChatMessage[] {
  const last = messages.map((m) => m.role).lastIndexOf('user');
  if (last < 0) throw new InputError('the conversation has no user message to attach feedback to');
  const block = [`\n\n${HINDSIGHT_HEADER}`, HINDSIGHT_SENTENCE];
  if (previousAttempt !== undefined) block.push(`Earlier attempt:\n${previousAttempt}`);
  block.push(feedback);
  return messages.map((m, i) => (i === last ? { ...m, content: textOf(m.content) + block.join('\n') } : m));
}

/** The feedback text the teacher sees: remembered earlier feedback (oldest first), then this one. */
export function teacherFeedback(memory: readonly string[], feedback: string): string {
  return [...memory, feedback].join(' ');
}

export interface TeacherPrompt {
  studentText: string;
  teacherText: string;
  teacherIds: number[];
}

type TeacherOptions = { tools?: unknown[]; enableThinking: boolean; previousAttempt?: string };

/** Renders both contexts and checks that they end with the same assistant prefix. */
export function teacherTexts(template: ChatTemplate, messages: readonly ChatMessage[], feedback: string, options: TeacherOptions): Omit<TeacherPrompt, 'teacherIds'> {
  const render = (m: readonly ChatMessage[]) => template.render(m, { tools: options.tools as never, addGenerationPrompt: true, enableThinking: options.enableThinking });
  const studentText = render(messages);
  const teacherMsgs = hindsightMessages(messages, feedback, options.previousAttempt);
  const teacherText = render(teacherMsgs);
  // What follows the last user message (end of turn, assistant marker), found with a placeholder in
  // its place: a template may render the message's text other than as given (the toy's drops a
  // client's envelope around it).
  const lastUser = messages.map((m) => m.role).lastIndexOf('user');
  const marker = '\u0001last user message\u0001';
  const probe = render(messages.map((m, i) => (i === lastUser ? { ...m, content: marker } : m)));
  const at = probe.lastIndexOf(marker);
  const tail = at < 0 ? null : probe.slice(at + marker.length);
  if (tail === null || !studentText.endsWith(tail) || !teacherText.endsWith(tail) || teacherText.length <= studentText.length) {
    throw new InputError('the chat template does not keep the assistant prefix identical for the teacher context');
  }
  return { studentText, teacherText };
}

/** Both contexts, and the teacher's token ids. */
export function teacherPrompt(template: ChatTemplate, tokenizer: Tokenizer, messages: readonly ChatMessage[], feedback: string, options: TeacherOptions): TeacherPrompt {
  const texts = teacherTexts(template, messages, feedback, options);
  return { ...texts, teacherIds: tokenizer.encode(texts.teacherText, { addSpecialTokens: false }) };
}
