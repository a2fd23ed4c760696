// What a user would notice about an adapter, measured on held-out probes: does it follow a style
// (a verifier per style), how much more likely is a compliant reply than the default one, does it
// still solve the tasks, and is its language still varied (distinct bigrams).
import { STYLES, defaultReply, isDefault, type StyleName } from '../toy/styles.js';
import { answered, type Task } from '../toy/tasks.js';
import type { EvalClient } from './client.js';

export interface Measurement {
  /** Fraction of probe replies following each style. */
  adherence: Record<StyleName, number>;
  /** Fraction in the default style. */
  defaultRate: number;
  /** Fraction of probe replies that contain the task's answer. */
  accuracy: number;
  /** Distinct word bigrams over all bigrams of the replies. */
  distinct2: number;
  /** Mean per-token entropy of the replies (nats, over each position's top 20). */
  entropy: number;
  /** Mean log-prob margin (compliant minus default reply) for the style being learned, if asked. */
  margin: number | null;
  replies: string[];
}

export function distinct2(texts: string[]): number {
  const all: string[] = [];
  for (const t of texts) {
    const w = t.toLowerCase().split(/\s+/).filter(Boolean);
    for (let i = 0; i + 1 < w.length; i++) all.push(`${w[i]} ${w[i + 1]}`);
  }
  return all.length === 0 ? 0 : new Set(all).size / all.length;
}

export async function measure(client: EvalClient, model: string, probes: Task[], marginStyle: StyleName | null, marginProbes = 4): Promise<Measurement> {
  const replies: string[] = [];
  let entropy = 0;
  for (const p of probes) {
    const r = await client.chat(model, p.prompt);
    replies.push(r.text);
    entropy += r.entropy / probes.length;
  }
  const adherence = Object.fromEntries((Object.keys(STYLES) as StyleName[]).map((s) => [s, replies.filter((r) => STYLES[s].verify(r)).length / replies.length])) as Record<StyleName, number>;
  let margin: number | null = null;
  if (marginStyle) {
    let sum = 0;
    const some = probes.slice(0, marginProbes);
    for (const p of some) {
      const [styled, plain] = await client.replyLogprobs(model, p.prompt, [STYLES[marginStyle].render(p.answer), defaultReply(p.answer)]);
      sum += styled! - plain!;
    }
    margin = sum / some.length;
  }
  return {
    adherence,
    defaultRate: replies.filter(isDefault).length / replies.length,
    accuracy: probes.filter((p, i) => answered(p, replies[i]!)).length / probes.length,
    distinct2: distinct2(replies),
    entropy,
    margin,
    replies,
  };
}
