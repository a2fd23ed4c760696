// Continuous batching for the embedded engine: generations advance in rounds of batched engine calls.
// New requests are prefilled in chunks, in the same call that decodes one token for each running
// request, and a call takes at most one chunk of prompt tokens in all, so a long prompt does not stall
// the others. Requests on different adapters go in separate calls. Rounds are fair between tenants:
// each tenant gets one call per round, its adapters taking turns, so a tenant with many adapters or
// long prompts slows its own replies, not another tenant's.
import type { Adapter, DecodeEntry, Engine, SampledToken, Sequence } from '../engine/engine.js';
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
  /** Per tenant, whose adapter's turn it is. */
  private readonly turns = new Map<string, number>();
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

  private finish(a: Active, reason: FinishReason): void {
    this.active.delete(a);
    a.resolve({ tokens: a.tokens, finishReason: reason, promptTokens: a.req.promptIds.length });
  }

  private async loop(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.active.size > 0) {
        for (const a of [...this.active]) {
          if (a.req.signal?.aborted) this.finish(a, 'abort');
        }
        const tenants = new Map<string, Map<Adapter | null, Active[]>>();
        for (const a of this.active) {
          const tenant = a.req.tenant ?? '';
          const groups = tenants.get(tenant) ?? new Map<Adapter | null, Active[]>();
          tenants.set(tenant, groups);
          const g = groups.get(a.req.adapter) ?? [];
          if (g.length < this.maxBatch) g.push(a);
          groups.set(a.req.adapter, g);
        }
        for (const t of this.turns.keys()) if (!tenants.has(t)) this.turns.delete(t);
        for (const [tenant, groups] of tenants) {
          const turn = this.turns.get(tenant) ?? 0;
          this.turns.set(tenant, turn + 1);
          const [adapter, group] = [...groups][turn % groups.size]!;
          await this.round(adapter, group);
        }
      }
    } finally {
      this.running = false;
    }
  }

  private async round(adapter: Adapter | null, all: Active[]): Promise<void> {
    // Every decoding sequence, and prefilling ones while the call's prompt budget lasts.
    let budget = this.prefillChunk;
    const group: Active[] = [];
    const entries: DecodeEntry[] = [];
    for (const a of all) {
      let ids: number[];
      if (a.pending.length === 0) ids = [a.tokens.at(-1)!.id];
      else if (budget > 0) {
        ids = a.pending.splice(0, budget);
        budget -= ids.length;
      } else continue;
      group.push(a);
      entries.push({ sequence: a.seq, ids, sampling: a.req.sampling });
    }
    let results: SampledToken[];
    try {
      results = await this.engine.decode(entries, adapter);
    } catch (err) {
      for (const a of group) {
        this.active.delete(a);
        a.reject(err);
      }
      return;
    }
    this.stats.rounds++;
    this.stats.batchedSequences += group.length;
    group.forEach((a, i) => {
      if (!this.active.has(a) || a.pending.length > 0) return; // still prefilling: the sample is not used
      const t = results[i]!;
      a.tokens.push(t);
      this.stats.generatedTokens++;
      let keepGoing = true;
      try {
        keepGoing = a.req.onToken?.(t, a.tokens.length - 1) !== false;
      } catch (err) {
        this.active.delete(a);
        a.reject(err);
        return;
      }
      if (a.req.stopTokenIds.includes(t.id) || !keepGoing) this.finish(a, 'stop');
      else if (a.tokens.length >= a.req.maxTokens) this.finish(a, 'length');
    });
  }
}
