// Continuous batching for the embedded engine: generations advance in rounds, one batched engine call
// each. New requests are prefilled in chunks, in the same call that decodes one token for each running
// request, and a call takes at most one chunk of prompt tokens in all, so a long prompt does not stall
// the others. Requests on different adapters share the call (the engine runs the base model once over
// every row and each adapter's LoRA branch over its rows), so a thousand users on a thousand adapters
// cost about what they cost on one. Rounds are fair between tenants: the call's rows and its prompt
// budget are dealt to tenants in turn, starting with a different tenant each round, so a tenant with
// many requests or long prompts slows its own replies, not another tenant's.
import type { DecodeEntry, Engine, SampledToken, Sequence } from '../engine/engine.js';
import { InputError } from '../errors.js';
import type { FinishReason, GenerationRequest, GenerationResult, GenerationStats, TokenGenerator } from './token-generator.js';

export type { GenerationRequest, GenerationResult } from './token-generator.js';

interface Active {
  req: GenerationRequest;
  seq: Sequence;
  /** Prompt tokens not yet in the cache. */
  pending: number[];
  tokens: SampledToken[];
  resolve: (r: GenerationResult) => void;
  reject: (e: unknown) => void;
}

export interface SchedulerOptions {
  /** Prompt tokens per engine call, over all the sequences it prefills. */
  prefillChunk?: number;
  /** Most sequences advanced in one engine call. */
  maxBatch?: number;
}

export class Scheduler implements TokenGenerator {
  readonly kind = 'embedded';

  /** Embedded serving never pauses: version N serves while N+1 trains. */
  async ready(): Promise<void> {}
  private readonly active = new Set<Active>();
  private running = false;
  private readonly prefillChunk: number;
  private readonly maxBatch: number;
  /** Rounds run and tokens produced, for /metrics. */
  readonly stats: GenerationStats = { rounds: 0, generatedTokens: 0, promptTokens: 0, batchedSequences: 0 };

  constructor(private readonly engine: Engine, options: SchedulerOptions = {}) {
    this.prefillChunk = options.prefillChunk ?? 512;
    this.maxBatch = options.maxBatch ?? 64;
  }

  /** Generations in progress. */
  get size(): number {
    return this.active.size;
  }

  generate(req: GenerationRequest): Promise<GenerationResult> {
    if (req.promptIds.length === 0) return Promise.reject(new InputError('the prompt is empty'));
    if (!Number.isInteger(req.maxTokens) || req.maxTokens < 1) return Promise.reject(new InputError('maxTokens must be a positive integer'));
    return new Promise<GenerationResult>((resolve, reject) => {
      const a: Active = { req, seq: this.engine.createSequence(req.seed), pending: [...req.promptIds], tokens: [], resolve, reject };
      this.active.add(a);
      this.stats.promptTokens += req.promptIds.length;
      void this.loop();
    });
  }

  // A finished generation's KV cache is freed at once, not when the collector gets to it.
  private finish(a: Active, reason: FinishReason): void {
    this.active.delete(a);
    a.seq.dispose();
    a.resolve({ tokens: a.tokens, finishReason: reason, promptTokens: a.req.promptIds.length });
  }

  private fail(a: Active, err: unknown): void {
    if (!this.active.delete(a)) return;
    a.seq.dispose();
    a.reject(err);
  }

  private async loop(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.active.size > 0) {
        for (const a of [...this.active]) {
          if (a.req.signal?.aborted) this.finish(a, 'abort');
        }
        if (this.active.size > 0) await this.round(this.pick());
      }
    } finally {
      this.running = false;
    }
  }

  /**
   * The rows of the next call: each tenant's requests oldest first, tenants dealt in turn from a
   * starting tenant that moves every round, at most maxBatch rows; then the prompt budget, a fair
   * share per tenant that is prefilling and what is left over in the same order.
   */
  private pick(): { a: Active; ids: number[] }[] {
    const byTenant = new Map<string, Active[]>();
    for (const a of this.active) {
      const t = a.req.tenant ?? '';
      const list = byTenant.get(t) ?? [];
      list.push(a);
      byTenant.set(t, list);
    }
    const lists = [...byTenant.values()];
    const start = this.stats.rounds % lists.length;
    const turns = [...lists.slice(start), ...lists.slice(0, start)];
    const chosen: Active[] = [];
    for (let i = 0; chosen.length < this.maxBatch && turns.some((l) => i < l.length); i++) {
      for (const l of turns) if (i < l.length && chosen.length < this.maxBatch) chosen.push(l[i]!);
    }
    const prefilling = new Set(chosen.filter((a) => a.pending.length > 0).map((a) => a.req.tenant ?? ''));
    const share = prefilling.size > 0 ? Math.max(1, Math.floor(this.prefillChunk / prefilling.size)) : 0;
    let budget = this.prefillChunk;
    const taken = new Map<Active, number>();
    const tenantUsed = new Map<string, number>();
    for (const pass of [0, 1]) {
      for (const a of chosen) {
        if (a.pending.length === 0 || budget === 0) continue;
        const t = a.req.tenant ?? '';
        const have = taken.get(a) ?? 0;
        const room = pass === 0 ? share - (tenantUsed.get(t) ?? 0) : budget;
        const n = Math.min(a.pending.length - have, room, budget);
        if (n <= 0) continue;
        taken.set(a, have + n);
        tenantUsed.set(t, (tenantUsed.get(t) ?? 0) + n);
        budget -= n;
      }
    }
    const rows: { a: Active; ids: number[] }[] = [];
    for (const a of chosen) {
      if (a.pending.length === 0) rows.push({ a, ids: [a.tokens.at(-1)!.id] });
      else if (taken.has(a)) rows.push({ a, ids: a.pending.splice(0, taken.get(a)!) });
    }
    return rows;
  }

  private async round(rows: { a: Active; ids: number[] }[]): Promise<void> {
    const entries: DecodeEntry[] = rows.map(({ a, ids }) => ({ sequence: a.seq, adapter: a.req.adapter, ids, sampling: a.req.sampling }));
    let results: SampledToken[];
    try {
      results = await this.engine.decode(entries);
    } catch (err) {
      for (const { a } of rows) this.fail(a, err);
      return;
    }
    this.stats.rounds++;
    this.stats.batchedSequences += rows.length;
    rows.forEach(({ a }, i) => {
      if (!this.active.has(a) || a.pending.length > 0) return; // still prefilling: the sample is not used
      const t = results[i]!;
      a.tokens.push(t);
      this.stats.generatedTokens++;
      let keepGoing = true;
      try {
        keepGoing = a.req.onToken?.(t, a.tokens.length - 1) !== false;
      } catch (err) {
        this.fail(a, err);
        return;
      }
      if (a.req.stopTokenIds.includes(t.id) || !keepGoing) this.finish(a, 'stop');
      else if (a.tokens.length >= a.req.maxTokens) this.finish(a, 'length');
    });
  }
}
