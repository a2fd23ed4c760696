// What a user would notice about an adapter, measured on held-out probes: does it follow a style
// (a verifier per style, greedy replies to task probes), how much more likely is a compliant reply
// than the default one, does it still solve the tasks, and is it still varied where variety is right
// (sampled replies to open prompts — "say three random words": entropy and distinct word bigrams).
// Open prompts are sampled twice: at the model's own sampling settings (its generation_config: what a
// user gets), which decide whether a style holds in sampled replies, and at temperature 1, the model's
// whole distribution, for its variety and for a stricter look at the style.
import { STYLES, STYLE_NAMES, isDefault, render, type StyleName } from '../toy/styles.js';
import { answered, type Task } from '../toy/tasks.js';
import type { EvalClient } from './client.js';

export interface Measurement {
  /** Fraction of task-probe replies (greedy) following each style. */
  adherence: Record<StyleName, number>;
  /** Fraction of open-prompt replies sampled at the served settings following each style. */
  sampledAdherence: Record<StyleName, number>;
  /** The same at temperature 1 (no top-k or top-p). */
  sampledAdherenceT1: Record<StyleName, number>;
  /** Fraction in the default style. */
  defaultRate: number;
  /** Fraction of task-probe replies that contain the task's answer. */
  accuracy: number;
  /** Distinct word bigrams over all bigrams of the sampled open-prompt replies (case-insensitive). */
  distinct2: number;
  /** Mean entropy (nats) of a sampled open-prompt reply. */
  entropy: number;
  /** Mean log-prob margin (compliant minus default reply) for the style being learned, if asked. */
  margin: number | null;
  replies: string[];
  /** Open-prompt replies sampled at the served settings. */
  servedReplies: string[];
  /** Open-prompt replies sampled at temperature 1. */
  openReplies: string[];
}

export function distinct2(texts: string[]): number {
  const all: string[] = [];
  for (const t of texts) {
    const w = t.toLowerCase().split(/\s+/).filter(Boolean);
    for (let i = 0; i + 1 < w.length; i++) all.push(`${w[i]} ${w[i + 1]}`);
  }
  return all.length === 0 ? 0 : new Set(all).size / all.length;
}

/** Sampling seed of the i-th open probe: the same for every model measured, so their samples pair up. */
const openSeed = (i: number) => 9000 + i;
const servedSeed = (i: number) => 7000 + i;

export async function measure(client: EvalClient, model: string, probes: Task[], open: Task[], marginStyle: StyleName | null, marginProbes = 4): Promise<Measurement> {
  const replies: string[] = [];
  for (const p of probes) replies.push((await client.chat(model, p.prompt)).text);
  const openReplies: string[] = [];
  let entropy = 0;
  for (const [i, p] of open.entries()) {
    const r = await client.chat(model, p.prompt, { temperature: 1, seed: openSeed(i) });
    openReplies.push(r.text);
    entropy += r.entropy / open.length;
  }
  const servedReplies: string[] = [];
  for (const [i, p] of open.entries()) servedReplies.push((await client.chat(model, p.prompt, { temperature: 'served', seed: servedSeed(i) })).text);
  const rate = (texts: string[]) => Object.fromEntries(STYLE_NAMES.map((s) => [s, texts.filter((r) => STYLES[s].verify(r)).length / Math.max(1, texts.length)])) as Record<StyleName, number>;
  let margin: number | null = null;
  if (marginStyle) {
    let sum = 0;
    const some = probes.slice(0, marginProbes);
    for (const p of some) {
      const [styled, plain] = await client.replyLogprobs(model, p.prompt, [render(p.answer, [marginStyle]), render(p.answer)]);
      sum += styled! - plain!;
    }
    margin = sum / some.length;
  }
  return {
    adherence: rate(replies),
    sampledAdherence: rate(servedReplies),
    sampledAdherenceT1: rate(openReplies),
    defaultRate: replies.filter(isDefault).length / replies.length,
    accuracy: probes.filter((p, i) => answered(p, replies[i]!)).length / probes.length,
    distinct2: distinct2(openReplies),
    entropy,
    margin,
    replies,
    servedReplies,
    openReplies,
  };
}
