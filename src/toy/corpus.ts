// The toy assistant's training corpus: tasks answered in the default style, or in the style a
// hindsight feedback block in the last user message asks for (the very block the SDPO teacher sees),
// and unrelated "feedback" that changes nothing.
import type { ChatMessage } from '../model/chat-template.js';
import { hindsightMessages } from '../train/hindsight.js';
import { STYLES, UNRELATED_FEEDBACK, defaultReply, type StyleName } from './styles.js';
import { rng } from '../model/random-model.js';
import { makeTask } from './tasks.js';

export interface CorpusSample {
  messages: ChatMessage[];
  reply: string;
  style: StyleName | 'default';
}

export function corpus(seed: number, count: number): CorpusSample[] {
  const r = rng(seed);
  const names = Object.keys(STYLES) as StyleName[];
  const out: CorpusSample[] = [];
  for (let i = 0; i < count; i++) {
    const task = makeTask(r);
    const messages: ChatMessage[] = [{ role: 'user', content: task.prompt }];
    const u = r();
    if (u < 0.4) {
      out.push({ messages, reply: defaultReply(task.answer), style: 'default' });
    } else if (u < 0.85) {
      const style = STYLES[names[Math.floor(r() * names.length)]!];
      const fb = style.feedback.train[Math.floor(r() * style.feedback.train.length)]!;
      // Now and then the reply under a block is the default one: the model then also knows how a
      // default reply goes on in that context, so as a teacher it scores an unstyled attempt sensibly
      // (the right answer, the usual ending) and the style shows where the reply could first differ.
      const reply = r() < 0.15 ? defaultReply(task.answer) : style.render(task.answer);
      out.push({ messages: hindsightMessages(messages, fb), reply, style: style.name });
    } else {
      const fb = UNRELATED_FEEDBACK.train[Math.floor(r() * UNRELATED_FEEDBACK.train.length)]!;
      out.push({ messages: hindsightMessages(messages, fb), reply: defaultReply(task.answer), style: 'default' });
    }
  }
  return out;
}
