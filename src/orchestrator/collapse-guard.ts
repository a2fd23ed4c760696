// The collapse guard: before a new version is served, a fixed set of probe prompts measures how far it
// has moved from the base model (mean KL(adapter || base) per token) and how peaked it has become
// (mean token entropy), on the base model's own greedy continuation of each probe. A version that
// crosses a bound is kept for inspection but not promoted.
import type { Adapter, Engine } from '../engine/engine.js';
import type { ChatTemplate } from '../model/chat-template.js';
import type { Tokenizer } from '../model/tokenizer.js';

export interface GuardConfig {
  enabled: boolean;
  probes: string[];
  /** Tokens of base-model continuation scored per probe. */
  probeTokens: number;
  maxKlToBase: number;
  minEntropy: number;
}

export const DEFAULT_GUARD: GuardConfig = {
  enabled: true,
  probes: ['What is the capital of France?', 'Write one sentence about the sea.', 'List three colours.', 'How are you today?'],
  probeTokens: 16,
  // A learned style moves every token of a reply (all capitals on the toy model: about 1.5-1.7 nats
  // per token on these probes), so the bound sits above that; entropy catches the collapse to one reply.
  maxKlToBase: 3.0,
  minEntropy: 0.05,
};

export interface GuardVerdict {
  passed: boolean;
  klToBase: number;
  entropy: number;
  reason: string | null;
}

function logSoftmax(row: Float32Array): Float64Array {
  let m = -Infinity;
  for (const x of row) m = Math.max(m, x);
  let s = 0;
  for (const x of row) s += Math.exp(x - m);
  const lse = m + Math.log(s);
  return Float64Array.from(row, (x) => x - lse);
}

export class CollapseGuard {
  private sequences?: { ids: number[]; start: number }[];

  constructor(
    private readonly engine: Engine,
    private readonly template: ChatTemplate,
    private readonly tokenizer: Tokenizer,
    readonly config: GuardConfig,
    private readonly stopIds: number[],
  ) {}

  /** Probe prompts with the base model's greedy continuations, computed once. */
  private async probeSequences(): Promise<{ ids: number[]; start: number }[]> {
    if (this.sequences) return this.sequences;
    const greedy = { temperature: 0, topP: 1, topK: 0, topLogprobs: 0, vocabLimit: Math.min(this.tokenizer.vocabSize, this.engine.config.vocabSize) };
    const out = [];
    for (const probe of this.config.probes) {
      const prompt = this.tokenizer.encode(this.template.render([{ role: 'user', content: probe }], { addGenerationPrompt: true, enableThinking: false }), { addSpecialTokens: false });
      const seq = this.engine.createSequence(0);
      let t = (await this.engine.decode([{ sequence: seq, ids: prompt, sampling: greedy }]))[0]!;
      const ids = [...prompt, t.id];
      while (ids.length - prompt.length < this.config.probeTokens && !this.stopIds.includes(t.id)) {
        t = (await this.engine.decode([{ sequence: seq, ids: [t.id], sampling: greedy }]))[0]!;
        ids.push(t.id);
      }
      out.push({ ids, start: prompt.length });
    }
    this.sequences = out;
    return out;
  }

  async check(adapter: Adapter): Promise<GuardVerdict> {
    if (!this.config.enabled) return { passed: true, klToBase: NaN, entropy: NaN, reason: null };
    const V = this.engine.config.vocabSize;
    let kl = 0, entropy = 0, n = 0;
    for (const { ids, start } of await this.probeSequences()) {
      const a = await this.engine.logits(ids, adapter);
      const b = await this.engine.logits(ids, null);
      for (let row = start - 1; row < ids.length - 1; row++) {
        const la = logSoftmax(a.subarray(row * V, (row + 1) * V));
        const lb = logSoftmax(b.subarray(row * V, (row + 1) * V));
        for (let v = 0; v < V; v++) {
          const p = Math.exp(la[v]!);
          kl += p * (la[v]! - lb[v]!);
          entropy -= p * la[v]!;
        }
        n++;
      }
    }
    kl /= n;
    entropy /= n;
    const reasons = [];
    if (kl > this.config.maxKlToBase) reasons.push(`KL to base ${kl.toFixed(4)} > ${this.config.maxKlToBase}`);
    if (entropy < this.config.minEntropy) reasons.push(`token entropy ${entropy.toFixed(4)} < ${this.config.minEntropy}`);
    return { passed: reasons.length === 0, klToBase: kl, entropy, reason: reasons.length ? reasons.join('; ') : null };
  }
}
