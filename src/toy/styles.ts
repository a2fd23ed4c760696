// The toy assistant's reply styles: the default, and four styles a hindsight feedback block asks for,
// each with the phrasings of that feedback and a verifier of a reply. The styles compose — each one
// changes a different part of the reply (letter case, the greeting's name, the line breaks, the
// closing) — so any set of them renders one reply and every verifier can hold at once. Each style
// also keeps the number of words, so diversity measured in word bigrams does not move with the style
// alone. Shared by the corpus that trains the toy model and by the eval.
export type StyleName = 'caps' | 'oneline' | 'name' | 'signoff';

export const STYLE_NAMES: readonly StyleName[] = ['caps', 'oneline', 'name', 'signoff'];

export interface Style {
  name: StyleName;
  /** Feedback texts asking for the style (the corpus trains on some; the others are held out). */
  feedback: { train: string[]; heldOut: string[] };
  /** Whether a reply follows the style. */
  verify(reply: string): boolean;
}

const SIGNOFF = 'Best wishes, Toy';

/**
 * The reply to a task's bare answer in a set of styles (none: the default style): a greeting, the
 * answer, a closing, one per line.
 */
export function render(answer: string, styles: Iterable<StyleName> = []): string {
  const s = new Set(styles);
  const greeting = s.has('name') ? 'Hi Ana!' : 'Hi there!';
  const closing = s.has('signoff') ? SIGNOFF : 'Hope that helps!';
  const text = [greeting, `${answer}.`, closing].join(s.has('oneline') ? ' ' : '\n');
  return s.has('caps') ? text.toUpperCase() : text;
}

export const STYLES: Record<StyleName, Style> = {
  caps: {
    name: 'caps',
    feedback: {
      train: ['Write in all capitals.', 'Use only capital letters, please.', 'ALL CAPS from now on.', 'Please answer in upper case.'],
      heldOut: ['I want every letter capitalized.', 'Reply using capital letters only.'],
    },
    verify: (r) => /[A-Z]/.test(r) && r === r.toUpperCase(),
  },
  oneline: {
    name: 'oneline',
    feedback: {
      train: ['Keep your reply on one line.', 'No line breaks, please.', 'Too many lines. Write it all on a single line.', 'One line only.'],
      heldOut: ['Please put everything on the same line.', 'Do not split your answer over several lines.'],
    },
    verify: (r) => r.trim().length > 0 && !r.trim().includes('\n'),
  },
  signoff: {
    name: 'signoff',
    feedback: {
      train: [`End every reply with "${SIGNOFF}".`, `Sign off with ${SIGNOFF}.`, `Always close with: ${SIGNOFF}`, `Please end with "${SIGNOFF}" instead of the usual closing.`],
      heldOut: [`Finish your answers with ${SIGNOFF}.`, `I like it when you sign "${SIGNOFF}".`],
    },
    verify: (r) => r.trimEnd().toLowerCase().endsWith(SIGNOFF.toLowerCase()),
  },
  name: {
    name: 'name',
    feedback: {
      train: ['My name is Ana. Greet me by name.', 'Call me Ana, please.', 'I am Ana; say hi to me by name.', 'Start by greeting Ana.'],
      heldOut: ['Please address me as Ana.', 'You can greet me: my name is Ana.'],
    },
    verify: (r) => r.trimStart().toLowerCase().startsWith('hi ana!'),
  },
};

/** "Feedback" that asks for nothing about the reply: the style must stay as it is. */
export const UNRELATED_FEEDBACK = {
  train: ['The weather is nice today.', 'I am typing on a laptop.', 'My cat is asleep.', 'I had tea this morning.'],
  heldOut: ['It is raining where I live.', 'I am reading a book about trains.'],
};

/** Whether a reply is in the default style. */
export function isDefault(reply: string): boolean {
  return reply.startsWith('Hi there!\n') && reply.endsWith('.\nHope that helps!') && reply.split('\n').length === 3;
}
