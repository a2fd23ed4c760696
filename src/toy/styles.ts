// The toy assistant's reply styles: the default, and the styles a hindsight feedback block asks for,
// each with the phrasings of that feedback and a verifier of a reply. Shared by the corpus that
// trains the toy model and by the eval that measures what feedback taught an adapter.
export type StyleName = 'caps' | 'brief' | 'signoff' | 'name';

export interface Style {
  name: StyleName;
  /** Feedback texts asking for the style (the corpus trains on some; the eval uses the others). */
  feedback: { train: string[]; heldOut: string[] };
  /** The reply in this style, given the task's bare answer. */
  render(answer: string): string;
  /** Whether a reply follows the style. */
  verify(reply: string): boolean;
}

/** The default reply: a short preamble, the answer, a closing line. */
export function defaultReply(answer: string): string {
  return `Sure! ${answer}. I hope this helps!`;
}

const SIGNOFF = 'Cheers, Toy';

export const STYLES: Record<StyleName, Style> = {
  caps: {
    name: 'caps',
    feedback: {
      train: ['Write in all capitals.', 'Use only capital letters, please.', 'ALL CAPS from now on.', 'Please answer in upper case.'],
      heldOut: ['I want every letter capitalized.', 'Reply using capital letters only.'],
    },
    render: (a) => defaultReply(a).toUpperCase(),
    verify: (r) => /[A-Z]/.test(r) && r === r.toUpperCase(),
  },
  brief: {
    name: 'brief',
    feedback: {
      train: ['Be briefer.', 'Just the answer, no extra words.', 'Too long. Only give the answer.', 'Skip the chit-chat.'],
      heldOut: ['Shorter, please: the answer alone.', 'No preamble and no closing line.'],
    },
    render: (a) => a,
    verify: (r) => r.trim().length > 0 && !/sure|hope|cheers|hi ana/i.test(r) && !r.includes('\n'),
  },
  signoff: {
    name: 'signoff',
    feedback: {
      train: [`End every reply with "${SIGNOFF}".`, `Sign off with ${SIGNOFF}.`, `Always close with: ${SIGNOFF}`, `Please add "${SIGNOFF}" at the end.`],
      heldOut: [`Finish your answers with the line ${SIGNOFF}.`, `I like it when you sign "${SIGNOFF}".`],
    },
    render: (a) => `${defaultReply(a)} ${SIGNOFF}`,
    verify: (r) => r.trimEnd().endsWith(SIGNOFF),
  },
  name: {
    name: 'name',
    feedback: {
      train: ['My name is Ana. Greet me by name.', 'Call me Ana, please.', 'I am Ana; say hi to me by name.', 'Start by greeting Ana.'],
      heldOut: ['Please address me as Ana.', 'You can greet me: my name is Ana.'],
    },
    render: (a) => `Hi Ana! ${a}. I hope this helps!`,
    verify: (r) => r.startsWith('Hi Ana!'),
  },
};

/** "Feedback" that asks for nothing about the reply: the default style must stay. */
export const UNRELATED_FEEDBACK = {
  train: ['The weather is nice today.', 'I am typing on a laptop.', 'My cat is asleep.', 'I had tea this morning.'],
  heldOut: ['It is raining where I live.', 'I am reading a book about trains.'],
};

/** Whether a reply is in the default style. */
export function isDefault(reply: string): boolean {
  return reply.startsWith('Sure! ') && reply.endsWith('. I hope this helps!');
}
