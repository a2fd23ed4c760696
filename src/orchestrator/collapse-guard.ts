// The collapse guard: before a new version is served, probe prompts from the served model's own domain
// (the model's training profile names them) tell learning from collapse. Two checks:
// - the update's size: mean KL(candidate ‖ version it replaces) per token, on the replaced version's
//   greedy replies to the probes. Learning a style moves a few deciding tokens of a reply; an update
//   that garbles replies moves every token. The bound is per update, so styles learned one after
//   another each pass, however far together they take the adapter from the base model.
// - degeneration: the candidate's own greedy replies to the probes. A reply that loops (the same
//   n-gram three or more times in a row where the replaced version's reply does not) or never ends
//   (runs to the token limit where the replaced version's reply ended) is collapse whatever its KL.
// KL to the base model and token entropy are measured too, and reported, not bounded.
import type { Adapter, Engine } from '../engine/engine.js';
import type { ChatTemplate } from '../model/chat-template.js';
import type { Tokenizer } from '../model/tokenizer.js';

export interface GuardConfig {
  enabled: boolean;
  probes: string[];
  /** Longest greedy reply generated per probe. */
  probeTokens: number;
  /** Bound on one update's mean KL(candidate ‖ replaced version) per token on the probes (nats). */
  maxUpdateKl: number;
}

export const DEFAULT_GUARD: GuardConfig = {
  enabled: true,
  probes: ['What is the capital of France?', 'Write one sentence about the sea.', 'List three colours.', 'How are you today?'],
  probeTokens: 32,
  // A model's profile may set its own (guard_max_update_kl). On the toy (docs/learning.md) single
  // updates of its profile moved up to 0.36 nats per token, one that garbled the replies 0.70-0.76.
  maxUpdateKl: 1.0,
};

export interface GuardVerdict {
  passed: boolean;
  /** Mean KL(candidate ‖ replaced version) per token on the probes. */
  updateKl: number;
  /** Mean KL(candidate ‖ base model) per token on the probes (reported, not bounded). */
  klToBase: number;
  /** Mean token entropy of the candidate on the probes (reported, not bounded). */
  entropy: number;
  /** Probes whose candidate reply loops or never ends while the replaced version's does not. */
  degenerate: { probe: string; reply: string; why: string }[];
  reason: string | null;
}

/** log Σ exp(row) over one row of logits. */
function logSumExp(row: Float32Array): number {
  let m = -Infinity;
  for (let v = 0; v < row.length; v++) if (row[v]! > m) m = row[v]!;
  let s = 0;
  for (let v = 0; v < row.length; v++) s += Math.exp(row[v]! - m);
  return m + Math.log(s);
}

/** The first id of the highest logit among the first `limit` (greedy decoding's choice). */
function argmax(row: Float32Array, limit: number): number {
  let best = 0;
  for (let v = 1; v < limit; v++) if (row[v]! > row[best]!) best = v;
  return best;
}

/** The longest run of one n-gram (n ≤ 4) repeated back to back in `ids`, in repetitions. */
export function longestRepeat(ids: readonly number[]): number {
  let best = 1;
  for (let n = 1; n <= 4; n++) {
    for (let i = 0; i + 2 * n <= ids.length; i++) {
      let reps = 1;
      while (i + (reps + 1) * n <= ids.length && ids.slice(i + reps * n, i + (reps + 1) * n).every((x, k) => x === ids[i + k])) reps++;
      best = Math.max(best, reps);
    }
  }
  return best;
}

/** Three back-to-back repeats of an n-gram make a loop. */
const LOOP_REPEATS = 3;

interface Reply {
  ids: number[];
  start: number;
  ended: boolean;
}

/** Logits kept for the next checks, at most this many bytes in all (a large vocabulary's take megabytes per reply). */
const KEPT_LOGITS_BYTES = 64 * 2 ** 20;

/** An adapter's logits on its own reply to one probe: the rows from the reply's first position on. */
interface KeptRows {
  ids: number[];
  from: number;
  rows: Float32Array;
}

export class CollapseGuard {
  private prompts?: number[][];
  /** Each checked version's greedy probe replies: a promoted candidate's are the next check's "before". */
  private readonly replies = new WeakMap<Adapter, Reply[]>();
  /**
   * A checked candidate's logits on its own probe replies, where they are the replies it replaced (most
   * updates leave most replies as they were): the next check's "replaced" side, without a forward pass.
   */
  private readonly ownLogits = new WeakMap<Adapter, { bytes: number; probes: Map<number, KeptRows> }>();
  private keptBytes = 0;
  /** Gives back the bytes of an adapter that is dropped without being replaced or refused. */
  private readonly release = new FinalizationRegistry<number>((bytes) => (this.keptBytes -= bytes));
  private baseReplies?: Reply[];
  /** The base model's logits on a probe reply (the replaced version's replies seldom change). */
  private readonly baseLogits = new Map<string, Float32Array>();
  private cachedBytes = 0;

  constructor(
    private readonly engine: Engine,
    private readonly template: ChatTemplate,
    private readonly tokenizer: Tokenizer,
    readonly config: GuardConfig,
    private readonly stopIds: number[],
  ) {}

  private promptIds(): number[][] {
    this.prompts ??= this.config.probes.map((probe) =>
      this.tokenizer.encode(this.template.render([{ role: 'user', content: probe }], { addGenerationPrompt: true, enableThinking: false }), { addSpecialTokens: false }),
    );
    return this.prompts;
  }

  private get vocabLimit(): number {
    return Math.min(this.tokenizer.vocabSize, this.engine.config.vocabSize);
  }

  /** Greedy replies to every probe under an adapter (null: the base model), as the guard saw them. */
  async probeReplies(adapter: Adapter | null): Promise<readonly Reply[]> {
    const known = adapter ? this.replies.get(adapter) : this.baseReplies;
    if (known) return known;
    const out = await this.decodeGreedy(adapter, this.promptIds().map((p) => ({ ids: [...p], start: p.length, ended: false })));
    if (adapter) this.replies.set(adapter, out);
    else this.baseReplies = out;
    return out;
  }

  /** Continues unfinished replies greedily, decoded as one batch, until each ends or reaches the token limit. */
  private async decodeGreedy(adapter: Adapter | null, out: Reply[]): Promise<Reply[]> {
    const greedy = { temperature: 0, topP: 1, topK: 0, topLogprobs: 0, vocabLimit: this.vocabLimit };
    const open = out.flatMap((r, i) => (r.ended || r.ids.length - r.start >= this.config.probeTokens ? [] : [i]));
    const seqs = new Map(open.map((i) => [i, this.engine.createSequence(0)]));
    let pending = open.map((i) => ({ i, ids: out[i]!.ids as ArrayLike<number> }));
    while (pending.length > 0) {
      const tokens = await this.engine.decode(pending.map((p) => ({ sequence: seqs.get(p.i)!, ids: p.ids, sampling: greedy })), adapter, { lane: 'background' });
      const next: typeof pending = [];
      for (const [k, p] of pending.entries()) {
        const r = out[p.i]!;
        const id = tokens[k]!.id;
        r.ids.push(id);
        r.ended = this.stopIds.includes(id);
        if (!r.ended && r.ids.length - r.start < this.config.probeTokens) next.push({ i: p.i, ids: [id] });
      }
      pending = next;
    }
    return out;
  }

  private async baseLogitsOf(ids: number[]): Promise<Float32Array> {
    const key = ids.join(',');
    let out = this.baseLogits.get(key);
    if (!out) {
      out = await this.engine.logits(ids, null);
      // Kept up to 64 MiB, oldest out first (a large vocabulary's logits take megabytes per reply).
      this.cachedBytes += out.byteLength;
      this.baseLogits.set(key, out);
      for (const [k, v] of this.baseLogits) {
        if (this.cachedBytes <= 64 * 2 ** 20) break;
        this.baseLogits.delete(k);
        this.cachedBytes -= v.byteLength;
      }
    }
    return out;
  }

  /** Row reader of the replaced version's logits on its own reply to probe i: kept from its check, else a forward pass. */
  private async replacedRows(replaced: Adapter | null, i: number, ids: number[]): Promise<(row: number) => Float32Array> {
    const V = this.engine.config.vocabSize;
    const kept = replaced && this.ownLogits.get(replaced)?.probes.get(i);
    if (kept && kept.ids.length === ids.length && kept.ids.every((x, k) => x === ids[k])) return (row) => kept.rows.subarray((row - kept.from) * V, (row - kept.from + 1) * V);
    const all = replaced ? await this.engine.logits(ids, replaced) : await this.baseLogitsOf(ids);
    return (row) => all.subarray(row * V, (row + 1) * V);
  }

  private keep(candidate: Adapter, i: number, kept: KeptRows): void {
    if (this.keptBytes + kept.rows.byteLength > KEPT_LOGITS_BYTES) return;
    let entry = this.ownLogits.get(candidate);
    if (!entry) this.ownLogits.set(candidate, (entry = { bytes: 0, probes: new Map() }));
    entry.probes.set(i, kept);
    entry.bytes += kept.rows.byteLength;
    this.keptBytes += kept.rows.byteLength;
    this.release.unregister(candidate);
    this.release.register(candidate, entry.bytes, candidate);
  }

  /** Drops what was kept for a version no check will replace again. */
  private drop(adapter: Adapter): void {
    const entry = this.ownLogits.get(adapter);
    if (!entry) return;
    this.keptBytes -= entry.bytes;
    this.ownLogits.delete(adapter);
    this.release.unregister(adapter);
  }

  /** Whether `candidate` may replace `replaced` (the version served now; null: the base model). */
  async check(candidate: Adapter, replaced: Adapter | null): Promise<GuardVerdict> {
    // Checked even with the guard off: a NaN or infinite weight never serves.
    const bad = candidate.firstNonFinite();
    if (bad) return { passed: false, updateKl: NaN, klToBase: NaN, entropy: NaN, degenerate: [], reason: `the adapter has a non-finite weight (${bad.value} at index ${bad.index} of ${bad.of})` };
    if (!this.config.enabled) return { passed: true, updateKl: NaN, klToBase: NaN, entropy: NaN, degenerate: [], reason: null };
    const V = this.engine.config.vocabSize;
    const limit = this.vocabLimit;
    let updateKl = 0, klToBase = 0, entropy = 0, n = 0;
    const beforeAll = await this.probeReplies(replaced);
    // The candidate's greedy replies, drafted by the replaced version's: the scoring pass below shows
    // how far the candidate would choose the same tokens, and only the rest is decoded.
    const afterAll: Reply[] = [];
    for (const [i, before] of beforeAll.entries()) {
      // Scored on the replaced version's reply: what the user saw until now.
      const c = await this.engine.logits(before.ids, candidate);
      const r = await this.replacedRows(replaced, i, before.ids);
      const base = replaced ? await this.baseLogitsOf(before.ids) : null;
      let agreed = true;
      const after: Reply = { ids: before.ids.slice(0, before.start), start: before.start, ended: false };
      for (let row = before.start - 1; row < before.ids.length - 1; row++) {
        const rc = c.subarray(row * V, (row + 1) * V), rr = r(row), rb = base ? base.subarray(row * V, (row + 1) * V) : rr;
        const zc = logSumExp(rc), zr = logSumExp(rr), zb = rb === rr ? zr : logSumExp(rb);
        for (let v = 0; v < V; v++) {
          const lc = rc[v]! - zc;
          const p = Math.exp(lc);
          updateKl += p * (lc - (rr[v]! - zr));
          klToBase += p * (lc - (rb[v]! - zb));
          entropy -= p * lc;
        }
        n++;
        if (agreed) {
          const id = argmax(rc, limit);
          after.ids.push(id);
          after.ended = this.stopIds.includes(id);
          agreed = id === before.ids[row + 1];
        }
      }
      // Every token agreed: the candidate's reply is the replaced one, and c its logits on it.
      if (agreed) this.keep(candidate, i, { ids: after.ids, from: before.start - 1, rows: c.slice((before.start - 1) * V, (before.ids.length - 1) * V) });
      afterAll.push(after);
    }
    await this.decodeGreedy(candidate, afterAll);
    this.replies.set(candidate, afterAll);
    updateKl /= n;
    klToBase /= n;
    entropy /= n;
    const degenerate: GuardVerdict['degenerate'] = [];
    for (const [i, before] of beforeAll.entries()) {
      const after = afterAll[i]!;
      const text = this.tokenizer.decode(after.ids.slice(after.start));
      const repeats = longestRepeat(after.ids.slice(after.start));
      if (repeats >= LOOP_REPEATS && repeats > longestRepeat(before.ids.slice(before.start))) degenerate.push({ probe: this.config.probes[i]!, reply: text, why: `repeats a phrase ${repeats} times` });
      else if (before.ended && !after.ended) degenerate.push({ probe: this.config.probes[i]!, reply: text, why: `no end within ${this.config.probeTokens} tokens` });
    }
    const reasons = [];
    if (![updateKl, klToBase, entropy].every(Number.isFinite)) reasons.push(`non-finite measures on the probes (update KL ${updateKl}, KL to base ${klToBase}, entropy ${entropy})`);
    if (updateKl > this.config.maxUpdateKl) reasons.push(`update KL to the replaced version ${updateKl.toFixed(3)} > ${this.config.maxUpdateKl} nats/token on the probes`);
    if (degenerate.length > 0) reasons.push(`degenerate replies on ${degenerate.length} of ${this.config.probes.length} probes (${degenerate.map((d) => `${JSON.stringify(d.probe)}: ${d.why}`).join('; ')})`);
    const passed = reasons.length === 0;
    // Only the version that serves after this check can be replaced next.
    if (passed && replaced) this.drop(replaced);
    if (!passed) this.drop(candidate);
    return { passed, updateKl, klToBase, entropy, degenerate, reason: passed ? null : reasons.join('; ') };
  }
}
