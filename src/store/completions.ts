// Completion records: what was asked, the exact prompt and sampled token ids with their
// log-probabilities, and which adapter version answered. Feedback names a record by its id.
import type { SqlDatabase } from './sql.js';

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

export interface CompletionStore {
  /** Stores the whole record in one transaction (called before the reply is returned). */
  save(record: CompletionRecord): Promise<void>;
  get(id: string): Promise<CompletionRecord | undefined>;
  /**
   * The newest stored chat reply of `adapter` (among its latest records) whose text is `response` and
   * whose last user message was `prompt`, asked under `tenant` (any tenant when null): feedback given
   * as text then trains on the exact sampled ids and log-probs.
   */
  findReply(adapter: string, prompt: string, response: string, tenant: string | null): Promise<{ completionId: string; choiceIndex: number } | null>;
  /** Deletes one record (and its choices); false when there was none. */
  delete(id: string): Promise<boolean>;
  /** Deletes every record asked for under a tenant's keys; returns how many. */
  deleteByTenant(tenant: string): Promise<number>;
  /** Deletes records created before `time` (ms); returns how many. */
  deleteOlderThan(time: number): Promise<number>;
}

const i32 = (a: readonly number[]) => Buffer.from(Int32Array.from(a).buffer);
const f32 = (a: readonly number[]) => Buffer.from(Float32Array.from(a).buffer);
const fromI32 = (b: Buffer) => Array.from(new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)));
const fromF32 = (b: Buffer) => Array.from(new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)));

/** How many of an adapter's newest records a text lookup searches. */
const REPLY_SEARCH = 1000;

interface CompletionRow {
  id: string;
  created_at: number;
  model: string;
  adapter: string | null;
  adapter_version: string | null;
  tenant: string | null;
  request_json: string;
  prompt_ids: Buffer;
  enable_thinking: number;
}

interface ChoiceRow {
  idx: number;
  output_ids: Buffer;
  output_logprobs: Buffer;
  text: string;
  finish_reason: string;
}

export class SqlCompletionStore implements CompletionStore {
  constructor(private readonly db: SqlDatabase) {}

  async save(r: CompletionRecord): Promise<void> {
    await this.db.transaction(async (tx) => {
      await tx.run(
        `INSERT INTO completions (id, created_at, model, adapter, adapter_version, tenant, request_json, prompt_ids, enable_thinking)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        [r.id, r.createdAt, r.model, r.adapter, r.adapterVersion, r.tenant, JSON.stringify(r.request), i32(r.promptIds), r.enableThinking ? 1 : 0],
      );
      const now = Date.now();
      for (const c of r.choices) {
        await tx.run(
          `INSERT INTO completion_choices (completion_id, idx, output_ids, output_logprobs, text, finish_reason, finished_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)`,
          [r.id, c.index, i32(c.outputIds), f32(c.outputLogprobs), c.text, c.finishReason, now],
        );
      }
    });
  }

  async get(id: string): Promise<CompletionRecord | undefined> {
    const [row] = await this.db.query<CompletionRow>('SELECT * FROM completions WHERE id = ?', [id]);
    if (!row) return undefined;
    const choices = (await this.db.query<ChoiceRow>('SELECT * FROM completion_choices WHERE completion_id = ? ORDER BY idx', [id])).map((c) => ({
      index: c.idx,
      outputIds: fromI32(c.output_ids),
      outputLogprobs: fromF32(c.output_logprobs),
      text: c.text,
      finishReason: c.finish_reason,
    }));
    return {
      id: row.id,
      createdAt: row.created_at,
      model: row.model,
      adapter: row.adapter ?? null,
      adapterVersion: row.adapter_version ?? null,
      tenant: row.tenant ?? null,
      request: JSON.parse(row.request_json),
      promptIds: fromI32(row.prompt_ids),
      enableThinking: row.enable_thinking === 1,
      choices,
    };
  }

  async findReply(adapter: string, prompt: string, response: string, tenant: string | null): Promise<{ completionId: string; choiceIndex: number } | null> {
    const rows = await this.db.query<{ id: string; tenant: string | null; request_json: string; idx: number }>(
      `SELECT c.id, c.tenant, c.request_json, ch.idx FROM completion_choices ch JOIN completions c ON c.id = ch.completion_id
       WHERE c.id IN (SELECT id FROM completions WHERE adapter = ? ORDER BY created_at DESC LIMIT ${REPLY_SEARCH}) AND ch.text = ?
       ORDER BY c.created_at DESC`,
      [adapter, response],
    );
    for (const row of rows) {
      if (tenant !== null && row.tenant !== tenant) continue;
      const messages = (JSON.parse(row.request_json) as { messages?: { role?: string; content?: unknown }[] }).messages;
      const lastUser = messages?.filter((m) => m.role === 'user').at(-1);
      if (lastUser?.content === prompt) return { completionId: row.id, choiceIndex: row.idx };
    }
    return null;
  }

  async delete(id: string): Promise<boolean> {
    return (await this.db.run('DELETE FROM completions WHERE id = ?', [id])) > 0;
  }

  deleteByTenant(tenant: string): Promise<number> {
    return this.db.run('DELETE FROM completions WHERE tenant = ?', [tenant]);
  }

  deleteOlderThan(time: number): Promise<number> {
    return this.db.run('DELETE FROM completions WHERE created_at < ?', [time]);
  }
}
