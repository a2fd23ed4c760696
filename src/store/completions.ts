// Completion records: what was asked, the exact prompt and sampled token ids with their
// log-probabilities, and which adapter version answered. Feedback names a record by its id.
import { inTransaction, prepare, type Db } from './db.js';

export interface CompletionChoiceRecord {
  index: number;
  outputIds: number[];
  outputLogprobs: number[];
  text: string;
  finishReason: string;
}

export interface CompletionRecord {
  id: string;
  createdAt: number;
  model: string;
  adapter: string | null;
  adapterVersion: string | null;
  /** The tenant of the API key that asked (null without keys). */
  tenant: string | null;
  /** The request as received (messages, tools, sampling parameters). */
  request: unknown;
  promptIds: number[];
  enableThinking: boolean;
  choices: CompletionChoiceRecord[];
}

const i32 = (a: readonly number[]) => Buffer.from(Int32Array.from(a).buffer);
const f32 = (a: readonly number[]) => Buffer.from(Float32Array.from(a).buffer);
const fromI32 = (b: Buffer) => Array.from(new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)));
const fromF32 = (b: Buffer) => Array.from(new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)));

/** How many of an adapter's newest records a text lookup searches. */
const REPLY_SEARCH = 1000;

export class CompletionStore {
  private readonly insertCompletion;
  private readonly insertChoice;
  private readonly selectCompletion;
  private readonly selectChoices;

  constructor(readonly db: Db) {
    this.insertCompletion = prepare(
      db,
      `INSERT INTO completions (id, created_at, model, adapter, adapter_version, tenant, request_json, prompt_ids, enable_thinking)
       VALUES (@id, @createdAt, @model, @adapter, @adapterVersion, @tenant, @request, @promptIds, @enableThinking)`,
    );
    this.insertChoice = prepare(
      db,
      `INSERT INTO completion_choices (completion_id, idx, output_ids, output_logprobs, text, finish_reason, finished_at)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    );
    this.selectCompletion = prepare(db, 'SELECT * FROM completions WHERE id = ?');
    this.selectChoices = prepare(db, 'SELECT * FROM completion_choices WHERE completion_id = ? ORDER BY idx');
    this.deleteOne = prepare(db, 'DELETE FROM completions WHERE id = ?');
    this.deleteTenant = prepare(db, 'DELETE FROM completions WHERE tenant = ?');
    this.deleteBefore = prepare(db, 'DELETE FROM completions WHERE created_at < ?');
    this.selectReply = prepare(
      db,
      `SELECT c.id, c.tenant, c.request_json, ch.idx FROM completion_choices ch JOIN completions c ON c.id = ch.completion_id
       WHERE c.id IN (SELECT id FROM completions WHERE adapter = ? ORDER BY created_at DESC LIMIT ${REPLY_SEARCH}) AND ch.text = ?
       ORDER BY c.created_at DESC`,
    );
  }

  private readonly selectReply;

  /**
   * The newest stored chat reply of `adapter` (among its latest records) whose text is `response` and
   * whose last user message was `prompt`, asked under `tenant` (any tenant when null): feedback given
   * as text then trains on the exact sampled ids and log-probs.
   */
  findReply(adapter: string, prompt: string, response: string, tenant: string | null): { completionId: string; choiceIndex: number } | null {
    for (const row of this.selectReply.all(adapter, response) as { id: string; tenant: string | null; request_json: string; idx: number }[]) {
      if (tenant !== null && row.tenant !== tenant) continue;
      const messages = (JSON.parse(row.request_json) as { messages?: { role?: string; content?: unknown }[] }).messages;
      const lastUser = messages?.filter((m) => m.role === 'user').at(-1);
      if (lastUser?.content === prompt) return { completionId: row.id, choiceIndex: row.idx };
    }
    return null;
  }

  private readonly deleteOne;
  private readonly deleteTenant;
  private readonly deleteBefore;

  /** Deletes one record (and its choices); false when there was none. */
  delete(id: string): boolean {
    return this.deleteOne.run(id).changes > 0;
  }

  /** Deletes every record asked for under a tenant's keys; returns how many. */
  deleteByTenant(tenant: string): number {
    return this.deleteTenant.run(tenant).changes;
  }

  /** Deletes records created before `time` (ms); returns how many. */
  deleteOlderThan(time: number): number {
    return this.deleteBefore.run(time).changes;
  }

  close(): void {
    this.db.close();
  }

  /** Stores the whole record in one transaction (called before the reply is returned). */
  save(r: CompletionRecord): void {
    inTransaction(this.db, () => {
      this.insertCompletion.run({
        id: r.id,
        createdAt: r.createdAt,
        model: r.model,
        adapter: r.adapter,
        adapterVersion: r.adapterVersion,
        tenant: r.tenant,
        request: JSON.stringify(r.request),
        promptIds: i32(r.promptIds),
        enableThinking: r.enableThinking ? 1 : 0,
      });
      const now = Date.now();
      for (const c of r.choices) this.insertChoice.run(r.id, c.index, i32(c.outputIds), f32(c.outputLogprobs), c.text, c.finishReason, now);
    });
  }

  get(id: string): CompletionRecord | undefined {
    const row = this.selectCompletion.get(id) as Record<string, unknown> | undefined;
    if (!row) return undefined;
    const choices = (this.selectChoices.all(id) as Record<string, unknown>[]).map((c) => ({
      index: c.idx as number,
      outputIds: fromI32(c.output_ids as Buffer),
      outputLogprobs: fromF32(c.output_logprobs as Buffer),
      text: c.text as string,
      finishReason: c.finish_reason as string,
    }));
    return {
      id: row.id as string,
      createdAt: row.created_at as number,
      model: row.model as string,
      adapter: (row.adapter as string | null) ?? null,
      adapterVersion: (row.adapter_version as string | null) ?? null,
      tenant: (row.tenant as string | null) ?? null,
      request: JSON.parse(row.request_json as string),
      promptIds: fromI32(row.prompt_ids as Buffer),
      enableThinking: row.enable_thinking === 1,
      choices,
    };
  }
}
