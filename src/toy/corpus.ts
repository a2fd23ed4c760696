// The toy assistant's training corpus: tasks answered in the default style, or in the styles a
// hindsight feedback block in the last user message asks for (the very block the SDPO teacher sees),
// and unrelated "feedback" that changes nothing.
//
// A style is decided at one token (the first where the styled reply differs from the unstyled one).
// Some replies carry a style nobody asked for (`carried`), and that deciding token is trained on: without
// a block the model keeps about a tenth of its probability on each style at that token, as a chat model
// keeps some mass on the ways it might have phrased a reply. A model near-certain of its default (the
// previous toy: 0.001 nats of entropy per reply) gives the α = 0.5 divergence no gradient there.
// Some replies lack a style the block asked for; that deciding token is left out of the loss
// (`alternatives`), so a block decides its styles with near certainty. Either way the model learns to
// go on consistently in whatever style a reply has already taken.
//
// The second phase of the toy's training (`unasked`) adds styles nobody asked for with their deciding
// token left out of the loss: the model then copies and answers as well in a style its context did not
// ask for (what an adapter's reply is) as in one it did. The mask keeps the choice of a style where the
// first phase taught it, mostly: sampled at temperature 1 a little more often (README, toy section).
import type { ChatMessage } from '../model/chat-template.js';
import { rng } from '../model/random-model.js';
import { hindsightMessages } from '../train/hindsight.js';
import { STYLES, STYLE_NAMES, UNRELATED_FEEDBACK, render, type StyleName } from './styles.js';
import { makeTask, openTask, repeatTask } from './tasks.js';

export interface CorpusSample {
  messages: ChatMessage[];
  reply: string;
  /** The styles the block asked for. */
  requested: StyleName[];
  /** Styles in the reply that nobody asked for (their deciding tokens are trained on). */
  carried: StyleName[];
  /**
   * The same reply with one asked-for but missing style added: the first token where the reply
   * differs from each is not trained on.
   */
  alternatives: string[];
}

export interface CorpusOptions {
  /**
   * Chance that a style nobody asked for is put in a reply with its deciding token not trained on
   * (the second phase). Drawn from a generator of its own, so the rest of the corpus is unchanged.
   */
  unasked?: number;
}

/** Share of samples without a block, with a style block, and (the rest) with unrelated feedback. */
const NO_BLOCK = 0.4;
const STYLE_BLOCK = 0.45;
/** Chance that a style nobody asked for is in the reply anyway, and that an asked-for one is missing. */
const CARRIED = 0.1;
const MISSED = 0.1;
/**
 * Share of conversations with earlier turns (one or two exchanges, their replies in random styles):
 * clients such as OpenClaw send the session so far, and only the last turn's block may set the style.
 */
const EARLIER_TURNS = 0.3;
const EARLIER_STYLE = 0.25;
/** Share of open tasks, and of extra copy tasks (copying in capitals is the skill a tiny model learns last). */
const OPEN = 0.15;
const EXTRA_COPY = 0.1;

export function corpus(seed: number, count: number, options: CorpusOptions = {}): CorpusSample[] {
  const r = rng(seed);
  const ru = rng(seed ^ 0x5eed);
  const unasked = options.unasked ?? 0;
  const pick = <T>(a: readonly T[]): T => a[Math.floor(r() * a.length)]!;
  const shuffle = <T>(a: T[]): T[] => {
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [a[i], a[j]] = [a[j]!, a[i]!];
    }
    return a;
  };
  const out: CorpusSample[] = [];
  for (let i = 0; i < count; i++) {
    const kind = r();
    const task = kind < OPEN ? openTask(r) : kind < OPEN + EXTRA_COPY ? repeatTask(r) : makeTask(r);
    const messages: ChatMessage[] = [];
    if (r() < EARLIER_TURNS) {
      for (let k = 1 + Math.floor(r() * 2); k > 0; k--) {
        const earlier = r() < OPEN ? openTask(r) : makeTask(r);
        messages.push({ role: 'user', content: earlier.prompt }, { role: 'assistant', content: render(earlier.answer, STYLE_NAMES.filter(() => r() < EARLIER_STYLE)) });
      }
    }
    messages.push({ role: 'user', content: task.prompt });
    const u = r();
    let requested: StyleName[] = [];
    let withBlock = messages;
    if (u >= NO_BLOCK && u < NO_BLOCK + STYLE_BLOCK) {
      // Mostly one preference per block; sometimes several, each maybe said more than once, and an
      // unrelated remark among them — what a teacher sees when earlier feedback is remembered.
      const v = r();
      const styles = v < 0.55 ? 1 : v < 0.8 ? 2 : v < 0.93 ? 3 : 4;
      requested = shuffle([...STYLE_NAMES]).slice(0, styles);
      const texts = requested.flatMap((s) => Array.from({ length: r() < 0.3 ? 2 + Math.floor(r() * 2) : 1 }, () => pick(STYLES[s].feedback.train)));
      if (r() < 0.1) texts.push(pick(UNRELATED_FEEDBACK.train));
      withBlock = hindsightMessages(messages, shuffle(texts).join(' '));
    } else if (u >= NO_BLOCK + STYLE_BLOCK) {
      withBlock = hindsightMessages(messages, pick(UNRELATED_FEEDBACK.train));
    }
    const carried = STYLE_NAMES.filter((s) => !requested.includes(s) && r() < CARRIED);
    const missed = requested.filter(() => r() < MISSED);
    const present = [...requested.filter((s) => !missed.includes(s)), ...carried];
    const added = unasked > 0 ? STYLE_NAMES.filter((s) => !present.includes(s) && !missed.includes(s) && ru() < unasked) : [];
    present.push(...added);
    // The reply without each added style: where the two first differ is that style's deciding token.
    const alternatives = [...missed.map((s) => render(task.answer, [...present, s])), ...added.map((s) => render(task.answer, present.filter((p) => p !== s)))];
    out.push({ messages: withBlock, reply: render(task.answer, present), requested, carried, alternatives });
  }
  return out;
}
