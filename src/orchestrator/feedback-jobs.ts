// Feedback jobs in SQLite: a job and its items are written in one transaction before the API
// acknowledges them; status moves queued -> running -> done | failed; on start, running jobs go back
// to queued (the version they may have written is found by job id, so nothing is trained twice),
// until the server has stopped during one MAX_ATTEMPTS times.
import { randomUUID } from 'node:crypto';
import { inTransaction, prepare, type Db, type Statement } from '../store/db.js';

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

export class FeedbackJobs {
  private readonly q: Record<string, Statement>;

  constructor(private readonly db: Db) {
    this.q = {
      insertJob: prepare(db, 'INSERT INTO jobs (id, adapter_id, status, created_at, idempotency_key, options_json) VALUES (?, ?, ?, ?, ?, ?)'),
      insertItem: prepare(db, 'INSERT INTO feedback_items (job_id, completion_id, choice_index, messages_json, response_text, feedback, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)'),
      job: prepare(db, 'SELECT * FROM jobs WHERE id = ?'),
      byKey: prepare(db, 'SELECT id FROM jobs WHERE idempotency_key = ?').pluck(),
      items: prepare(db, 'SELECT * FROM feedback_items WHERE job_id = ? ORDER BY id'),
      queued: prepare(db, "SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_at, rowid").pluck(),
      giveUp: prepare(db, "UPDATE jobs SET status = 'failed', finished_at = ?, error = ? WHERE status = 'running' AND attempts >= ?"),
      requeue: prepare(db, "UPDATE jobs SET status = 'queued', started_at = NULL WHERE status = 'running'"),
      start: prepare(db, "UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1 WHERE id = ?"),
      finish: prepare(db, 'UPDATE jobs SET status = ?, finished_at = ?, error = ?, result_json = ? WHERE id = ?'),
      count: prepare(db, "SELECT COUNT(*) FROM jobs WHERE adapter_id = ? AND status IN ('queued', 'running')").pluck(),
      learned: prepare(
        db,
        `SELECT i.feedback FROM feedback_items i JOIN jobs j ON j.id = i.job_id
           WHERE j.adapter_id = ? AND j.status = 'done' AND json_extract(j.result_json, '$.promoted') = 1
           ORDER BY j.finished_at DESC, j.rowid DESC, i.id DESC LIMIT ?`,
      ).pluck(),
      // Only finished jobs lose their items: queued work is never dropped.
      purge: prepare(
        db,
        `DELETE FROM feedback_items WHERE job_id IN (
           SELECT id FROM jobs WHERE status IN ('done', 'failed') AND finished_at < @before
             AND (@tenant IS NULL OR substr(adapter_id, 1, length(@tenant) + 1) = @tenant || '/'))`,
      ),
    };
  }

  /**
   * Up to `limit` distinct feedback texts of the adapter's served updates, oldest first, leaving out
   * those in `except` (said again now).
   */
  learnedFeedback(adapterId: string, limit: number, except: readonly string[] = []): string[] {
    const out: string[] = [];
    for (const text of this.q.learned!.all(adapterId, limit * 8 + except.length) as string[]) {
      if (out.length === limit) break;
      if (!out.includes(text) && !except.includes(text)) out.push(text);
    }
    return out.reverse();
  }

  /** Stores jobs durably; with an idempotency key, a repeated request returns the jobs stored before. */
  submit(jobs: { adapterId: string; options: TrainingOptions; items: FeedbackItem[] }[], idempotencyKey?: string): { ids: string[]; repeated: boolean } {
    return inTransaction(this.db, () => {
      if (idempotencyKey) {
        const existing = jobs.map((_, i) => this.q.byKey!.get(`${idempotencyKey}#${i}`) as string | undefined);
        if (existing[0]) return { ids: existing.filter((x): x is string => !!x), repeated: true };
      }
      const now = Date.now();
      const ids = jobs.map((job, i) => {
        const id = `job-${randomUUID()}`;
        this.q.insertJob!.run(id, job.adapterId, 'queued', now, idempotencyKey ? `${idempotencyKey}#${i}` : null, JSON.stringify(job.options));
        for (const it of job.items) {
          this.q.insertItem!.run(id, it.completionId, it.choiceIndex, it.messages ? JSON.stringify(it.messages) : null, it.responseText, it.feedback, now);
        }
        return id;
      });
      return { ids, repeated: false };
    });
  }

  get(id: string): JobRecord | undefined {
    const r = this.q.job!.get(id) as Record<string, unknown> | undefined;
    if (!r) return undefined;
    const items = (this.q.items!.all(id) as Record<string, unknown>[]).map((it) => ({
      completionId: (it.completion_id as string | null) ?? null,
      choiceIndex: it.choice_index as number,
      messages: it.messages_json ? (JSON.parse(it.messages_json as string) as unknown[]) : null,
      responseText: (it.response_text as string | null) ?? null,
      feedback: it.feedback as string,
    }));
    return {
      id,
      adapterId: r.adapter_id as string,
      status: r.status as JobStatus,
      createdAt: r.created_at as number,
      startedAt: (r.started_at as number | null) ?? null,
      finishedAt: (r.finished_at as number | null) ?? null,
      options: JSON.parse(r.options_json as string) as TrainingOptions,
      error: (r.error as string | null) ?? null,
      result: r.result_json ? (JSON.parse(r.result_json as string) as Record<string, unknown>) : null,
      items,
    };
  }

  queuedIds(): string[] {
    return this.q.queued!.all() as string[];
  }

  /** Deletes the feedback text (items) of jobs finished before `before`, optionally of one tenant's adapters. */
  purgeFeedback(opts: { before: number; tenant?: string | null }): number {
    return this.q.purge!.run({ before: opts.before, tenant: opts.tenant ?? null }).changes;
  }

  /** Whether a request with this idempotency key was stored already. */
  knownKey(key: string): boolean {
    return this.q.byKey!.get(`${key}#0`) !== undefined;
  }

  pending(adapterId: string): number {
    return this.q.count!.get(adapterId) as number;
  }

  /**
   * After a restart: jobs that were running run again, unless the server already stopped during
   * their update MAX_ATTEMPTS times (a job that kills the process must not block every start).
   */
  requeueInterrupted(): number {
    return inTransaction(this.db, () => {
      this.q.giveUp!.run(Date.now(), `the server stopped during this update ${MAX_ATTEMPTS} times (killed or crashed); not tried again`, MAX_ATTEMPTS);
      return this.q.requeue!.run().changes;
    });
  }

  markRunning(ids: string[]): void {
    inTransaction(this.db, () => ids.forEach((id) => this.q.start!.run(Date.now(), id)));
  }

  finish(ids: string[], status: 'done' | 'failed', result: Record<string, unknown> | null, error: string | null): void {
    inTransaction(this.db, () => ids.forEach((id) => this.q.finish!.run(status, Date.now(), error, result ? JSON.stringify(result) : null, id)));
  }
}
