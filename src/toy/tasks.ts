// Small tasks for the toy assistant: with checkable answers (repeat, count, opposites, members of a
// category, addition, the next number), and open ones whose answer is a random pick (a few random
// words), where a healthy model keeps its variety. Drawn from a seeded generator, so a corpus or a
// probe set is the same on every run.
import { rng } from '../model/random-model.js';

export interface Task {
  kind: string;
  prompt: string;
  answer: string;
}


/** The words copy tasks (repeat, count) are made of. */
export const WORDS = ['apple', 'river', 'stone', 'cloud', 'green', 'table', 'music', 'light', 'chair', 'bread', 'water', 'paper', 'horse', 'tiger', 'glass', 'house', 'plant', 'smile', 'train', 'ocean', 'pencil', 'garden', 'window', 'sugar', 'winter', 'summer', 'forest', 'rocket', 'violin', 'candle'];
const OPPOSITES: [string, string][] = [
  ['hot', 'cold'], ['big', 'small'], ['up', 'down'], ['fast', 'slow'], ['happy', 'sad'], ['day', 'night'], ['open', 'closed'], ['light', 'dark'], ['early', 'late'], ['full', 'empty'],
  ['old', 'new'], ['high', 'low'], ['hard', 'soft'], ['wet', 'dry'], ['loud', 'quiet'], ['near', 'far'], ['rich', 'poor'], ['thick', 'thin'], ['strong', 'weak'], ['long', 'short'],
];
const CATEGORIES: Record<string, string[]> = {
  colours: ['red', 'green', 'blue'],
  animals: ['cat', 'dog', 'horse'],
  fruits: ['apple', 'pear', 'plum'],
  planets: ['Mars', 'Venus', 'Earth'],
  days: ['Monday', 'Tuesday', 'Friday'],
  seasons: ['spring', 'summer', 'autumn'],
};

type Maker = (r: () => number) => Task;
const pick = <T>(r: () => number, a: readonly T[]): T => a[Math.floor(r() * a.length)]!;

/** A copy task: one to three words to say back. */
export const repeatTask: Maker = (r) => {
  const ws = Array.from({ length: 1 + Math.floor(r() * 3) }, () => pick(r, WORDS));
  return { kind: 'repeat', prompt: `Repeat after me: ${ws.join(' ')}`, answer: ws.join(' ') };
};

const MAKERS: Maker[] = [
  repeatTask,
  (r) => {
    const ws = Array.from({ length: 1 + Math.floor(r() * 5) }, () => pick(r, WORDS));
    return { kind: 'count', prompt: `How many words are in "${ws.join(' ')}"?`, answer: String(ws.length) };
  },
  (r) => {
    const [a, b] = pick(r, OPPOSITES);
    return r() < 0.5 ? { kind: 'opposite', prompt: `What is the opposite of ${a}?`, answer: b } : { kind: 'opposite', prompt: `What is the opposite of ${b}?`, answer: a };
  },
  (r) => {
    const name = pick(r, Object.keys(CATEGORIES));
    return { kind: 'category', prompt: `Name three ${name}.`, answer: CATEGORIES[name]!.join(', ') };
  },
  (r) => {
    const a = Math.floor(r() * 10);
    const b = Math.floor(r() * 10);
    return { kind: 'add', prompt: `What is ${a} plus ${b}?`, answer: String(a + b) };
  },
  (r) => {
    const n = Math.floor(r() * 50);
    return { kind: 'next', prompt: `What number comes after ${n}?`, answer: String(n + 1) };
  },
];

export function makeTask(r: () => number): Task {
  return pick(r, MAKERS)(r);
}

/** The words an open task picks from: few enough that every choice fits in a top-20 of log-probs. */
export const RANDOM_WORDS = ['apple', 'river', 'stone', 'cloud', 'table', 'music', 'chair', 'bread', 'horse', 'tiger', 'ocean', 'garden'];
const COUNT_WORDS = ['one', 'two', 'three', 'four'];
type Phrasing = (n: string) => string;
/** Open prompts the eval measures variety on; the corpus has these and the training ones below. */
const OPEN_PROBE_PHRASINGS: Phrasing[] = [(n) => `Say ${n} random words.`, (n) => `Give me ${n} random words.`];
/** Open prompts the eval may give feedback on (never measured). */
const OPEN_TRAIN_PHRASINGS: Phrasing[] = [(n) => `Pick ${n} random words.`];

/** An open task: its answer is one of many equally good ones, drawn here. */
export function openTask(r: () => number, phrasings: Phrasing[] = [...OPEN_PROBE_PHRASINGS, ...OPEN_TRAIN_PHRASINGS]): Task {
  const n = 1 + Math.floor(r() * COUNT_WORDS.length);
  const prompt = pick(r, phrasings)(COUNT_WORDS[n - 1]!).replace('one random words', 'one random word');
  return { kind: 'open', prompt, answer: Array.from({ length: n }, () => pick(r, RANDOM_WORDS)).join(' ') };
}

/**
 * `count` open prompts for measuring (`probe`) or for feedback (`train`); the two share no prompt.
 * Prompts repeat: each is sampled for a different reply.
 */
export function openSet(seed: number, count: number, use: 'probe' | 'train'): Task[] {
  const r = rng(seed);
  return Array.from({ length: count }, () => openTask(r, use === 'probe' ? OPEN_PROBE_PHRASINGS : OPEN_TRAIN_PHRASINGS));
}

/** `count` tasks with distinct prompts, drawn from `seed`, none of whose prompts is in `exclude`. */
export function taskSet(seed: number, count: number, exclude: ReadonlySet<string> = new Set()): Task[] {
  const r = rng(seed);
  const seen = new Set(exclude);
  const out: Task[] = [];
  for (let tries = 0; out.length < count && tries < count * 100; tries++) {
    const t = makeTask(r);
    if (seen.has(t.prompt)) continue;
    seen.add(t.prompt);
    out.push(t);
  }
  return out;
}

/** Whether a reply gives the task's answer (case-insensitively, in whatever style). */
export function answered(task: Task, reply: string): boolean {
  return reply.toLowerCase().includes(task.answer.toLowerCase());
}
