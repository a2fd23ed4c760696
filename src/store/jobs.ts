// Feedback jobs: a job and its items are written in one transaction before the API acknowledges
// them; status moves queued -> running -> done | failed; on start, running jobs go back to queued
// (the version they may have written is found by job id, so nothing is trained twice), until the
// server has stopped during one MAX_ATTEMPTS times.
import { randomUUID } from 'node:crypto';
import { DIALECT, placeholders, type SqlDatabase } from './sql.js';

/** Starts of one job's update before a restart gives it up. */
export const MAX_ATTEMPTS = 5;

export type JobStatus = 'queued' | 'running' | 'done' | 'failed';

export interface FeedbackItem {
  completionId: string | null;
  choiceIndex: number;
  /** Raw conversation and reply, when no completion id is given. */
  messages: unknown[] | null;
  responseText: string | null;
  feedback: string;
}

export interface TrainingOptions {
  learningRate?: number;
  alpha?: number;
  topK?: number;
  teacher?: 'base' | 'current' | 'ema' | 'remote';
  steps?: number;
  /** Weight of the k3 KL-to-base term. */
  beta?: number;
  /** Tail bucket for the teacher's mass outside the top-K (else renormalize). */
  tail?: boolean;
  /** Sampled-token divergence instead of the top-K distribution. */
  sampledToken?: boolean;
  /** Cap of the importance weight (the original CLaaS's `is_clip`). */
  isClip?: number;
  /** Gradient-norm clip (the original CLaaS's `max_grad_norm`). */
  maxGradNorm?: number;
  /**
   * How many earlier feedback texts of this adapter (the most recent distinct ones whose update was
   * served) the teacher also sees, before this feedback: without them, a teacher conditioned on the
   * newest preference alone pulls the student away from what it learned before.
   */
  memory?: number;
}

export interface JobRecord {
  id: string;
  adapterId: string;
  status: JobStatus;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  options: TrainingOptions;
  error: string | null;
  result: Record<string, unknown> | null;
  items: FeedbackItem[];
}

export interface NewJob {
  adapterId: string;
  options: TrainingOptions;
  items: FeedbackItem[];
}

/** What a submission did: stored the jobs (or found them stored under its key), or refused them. */
export type SubmitResult = { ids: string[]; repeated: boolean; refused?: undefined } | { refused: { adapterId: string; pending: number } };

export interface JobStore {
  /**
   * Stores jobs durably, in one transaction. With an idempotency key, a repeated request returns the
   * jobs stored before. With `maxPending`, an adapter that would have more queued or running jobs is
   * refused, nothing stored (checked in the same transaction as the write).
   */
  submit(jobs: readonly NewJob[], opts?: { idempotencyKey?: string; maxPending?: number }): Promise<SubmitResult>;
  get(id: string): Promise<JobRecord | undefined>;
  /** Queued jobs, oldest first. */
  queuedIds(): Promise<string[]>;
  /** The newest `limit` jobs, newest first. */
  recentIds(limit: number): Promise<string[]>;
  /** Queued or running jobs of an adapter. */
  pending(adapterId: string): Promise<number>;
  /**
   * Up to `limit` distinct feedback texts of the adapter's served updates, oldest first, leaving out
   * those in `except` (said again now).
   */
  learnedFeedback(adapterId: string, limit: number, except?: readonly string[]): Promise<string[]>;
  /** Deletes the feedback text (items) of jobs finished before `before`, optionally of one tenant's adapters. */
  purgeFeedback(opts: { before: number; tenant?: string | null }): Promise<number>;
  /**
   * After a restart: jobs that were running run again, unless the server already stopped during
   * their update MAX_ATTEMPTS times (a job that kills the process must not block every start).
   */
  requeueInterrupted(): Promise<number>;
  markRunning(ids: readonly string[]): Promise<void>;
  finish(ids: readonly string[], status: 'done' | 'failed', result: Record<string, unknown> | null, error: string | null): Promise<void>;
}

interface JobRow {
  id: string;
  adapter_id: string;
  status: JobStatus;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  options_json: string;
  error: string | null;
  result_json: string | null;
}

interface ItemRow {
  completion_id: string | null;
  choice_index: number;
  messages_json: string | null;
  response_text: string | null;
  feedback: string;
}

export class SqlJobStore implements JobStore {
  private readonly order: string;

  constructor(private readonly db: SqlDatabase) {
    this.order = DIALECT[db.dialect].insertOrder;
  }

  async submit(jobs: readonly NewJob[], opts: { idempotencyKey?: string; maxPending?: number } = {}): Promise<SubmitResult> {
    const key = opts.idempotencyKey;
    const adding = new Map<string, number>();
    for (const job of jobs) adding.set(job.adapterId, (adding.get(job.adapterId) ?? 0) + 1);
    return this.db.transaction(async (tx) => {
      // Submissions to the same adapters run one after the other: the count below stays true until
      // this one commits, and a repeated key finds what the first stored. Sorted: no two wait on each other.
      for (const adapterId of [...adding.keys()].sort()) await tx.lock(`jobs of ${adapterId}`);
      if (key) {
        const keys = jobs.map((_, i) => `${key}#${i}`);
        const stored = await tx.query<{ id: string; idempotency_key: string }>(`SELECT id, idempotency_key FROM jobs WHERE idempotency_key IN (${placeholders(keys.length)})`, keys);
        if (stored.length > 0) return { ids: keys.flatMap((k) => stored.filter((r) => r.idempotency_key === k).map((r) => r.id)), repeated: true };
      }
      if (opts.maxPending !== undefined) {
        for (const [adapterId, n] of adding) {
          const [row] = await tx.query<{ n: number }>("SELECT COUNT(*) AS n FROM jobs WHERE adapter_id = ? AND status IN ('queued', 'running')", [adapterId]);
          const pending = row?.n ?? 0;
          if (pending + n > opts.maxPending) return { refused: { adapterId, pending } };
        }
      }
      const now = Date.now();
      const ids: string[] = [];
      for (const [i, job] of jobs.entries()) {
        const id = `job-${randomUUID()}`;
        await tx.run('INSERT INTO jobs (id, adapter_id, status, created_at, idempotency_key, options_json) VALUES (?, ?, ?, ?, ?, ?)', [id, job.adapterId, 'queued', now, key ? `${key}#${i}` : null, JSON.stringify(job.options)]);
        for (const it of job.items) {
          await tx.run('INSERT INTO feedback_items (job_id, completion_id, choice_index, messages_json, response_text, feedback, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)', [
            id,
            it.completionId,
            it.choiceIndex,
            it.messages ? JSON.stringify(it.messages) : null,
            it.responseText,
            it.feedback,
            now,
          ]);
        }
        ids.push(id);
      }
      return { ids, repeated: false };
    });
  }

  async get(id: string): Promise<JobRecord | undefined> {
    const [r] = await this.db.query<JobRow>('SELECT * FROM jobs WHERE id = ?', [id]);
    if (!r) return undefined;
    const items = (await this.db.query<ItemRow>('SELECT * FROM feedback_items WHERE job_id = ? ORDER BY id', [id])).map((it) => ({
      completionId: it.completion_id ?? null,
      choiceIndex: it.choice_index,
      messages: it.messages_json ? (JSON.parse(it.messages_json) as unknown[]) : null,
      responseText: it.response_text ?? null,
      feedback: it.feedback,
    }));
    return {
      id,
      adapterId: r.adapter_id,
      status: r.status,
      createdAt: r.created_at,
      startedAt: r.started_at ?? null,
      finishedAt: r.finished_at ?? null,
      options: JSON.parse(r.options_json) as TrainingOptions,
      error: r.error ?? null,
      result: r.result_json ? (JSON.parse(r.result_json) as Record<string, unknown>) : null,
      items,
    };
  }

  async queuedIds(): Promise<string[]> {
    return (await this.db.query<{ id: string }>(`SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_at, ${this.order}`)).map((r) => r.id);
  }

  async recentIds(limit: number): Promise<string[]> {
    return (await this.db.query<{ id: string }>(`SELECT id FROM jobs ORDER BY created_at DESC, ${this.order} DESC LIMIT ?`, [limit])).map((r) => r.id);
  }

  async pending(adapterId: string): Promise<number> {
    const [row] = await this.db.query<{ n: number }>("SELECT COUNT(*) AS n FROM jobs WHERE adapter_id = ? AND status IN ('queued', 'running')", [adapterId]);
    return row?.n ?? 0;
  }

  async learnedFeedback(adapterId: string, limit: number, except: readonly string[] = []): Promise<string[]> {
    const rows = await this.db.query<{ feedback: string }>(
      `SELECT i.feedback FROM feedback_items i JOIN jobs j ON j.id = i.job_id
         WHERE j.adapter_id = ? AND j.status = 'done' AND ${DIALECT[this.db.dialect].jsonIsTrue('j.result_json', 'promoted')}
         ORDER BY j.finished_at DESC, j.${this.order} DESC, i.id DESC LIMIT ?`,
      [adapterId, limit * 8 + except.length],
    );
    const out: string[] = [];
    for (const { feedback } of rows) {
      if (out.length === limit) break;
      if (!out.includes(feedback) && !except.includes(feedback)) out.push(feedback);
    }
    return out.reverse();
  }

  purgeFeedback(opts: { before: number; tenant?: string | null }): Promise<number> {
    // Only finished jobs lose their items: queued work is never dropped.
    const finished = "SELECT id FROM jobs WHERE status IN ('done', 'failed') AND finished_at < ?";
    if (opts.tenant === undefined || opts.tenant === null) return this.db.run(`DELETE FROM feedback_items WHERE job_id IN (${finished})`, [opts.before]);
    const prefix = `${opts.tenant}/`;
    return this.db.run(`DELETE FROM feedback_items WHERE job_id IN (${finished} AND substr(adapter_id, 1, ?) = ?)`, [opts.before, prefix.length, prefix]);
  }

  requeueInterrupted(): Promise<number> {
    return this.db.transaction(async (tx) => {
      await tx.run("UPDATE jobs SET status = 'failed', finished_at = ?, error = ? WHERE status = 'running' AND attempts >= ?", [
        Date.now(),
        `the server stopped during this update ${MAX_ATTEMPTS} times (killed or crashed); not tried again`,
        MAX_ATTEMPTS,
      ]);
      return tx.run("UPDATE jobs SET status = 'queued', started_at = NULL WHERE status = 'running'");
    });
  }

  async markRunning(ids: readonly string[]): Promise<void> {
    await this.db.transaction(async (tx) => {
      for (const id of ids) await tx.run("UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1 WHERE id = ?", [Date.now(), id]);
    });
  }

  async finish(ids: readonly string[], status: 'done' | 'failed', result: Record<string, unknown> | null, error: string | null): Promise<void> {
    await this.db.transaction(async (tx) => {
      for (const id of ids) await tx.run('UPDATE jobs SET status = ?, finished_at = ?, error = ?, result_json = ? WHERE id = ?', [status, Date.now(), error, result ? JSON.stringify(result) : null, id]);
    });
  }
}
