// Feedback jobs: a job and its items are written in one transaction before the API acknowledges
// them; status moves queued -> running -> done | failed. Trainers take work with claim(): a batch of
// one adapter's jobs under a lease (owner + expiry) they renew with heartbeat() while training and
// give up by finishing. A job whose trainer died (lease expired) is claimed again with the version
// its batch was assigned at its first claim, so the version it may already have written is found
// and never written twice, until its trainer has stopped during it MAX_ATTEMPTS times.
//
// Why leases in our own job rows rather than pg-boss or graphile-worker: both are Postgres-only,
// while SQLite must stay the default with the same queue semantics and the same tests; both keep
// their own job tables, which would duplicate the durable job rows that the API acknowledges, their
// idempotency keys, the pending bound and the job status API; and neither takes "the oldest job of
// an adapter plus its queued jobs with identical options" as one batch under one per-adapter lease.
// The claim itself is short (a few reads and updates), so claims, heartbeats and finishes run one
// after the other under one named transaction lock (sql.ts: a Postgres advisory lock, SQLite's
// write lock): two claimers can never take one job or two batches of one adapter, on either database.
import { randomUUID } from 'node:crypto';
import { DIALECT, placeholders, type SqlDatabase, type SqlRunner } from './sql.js';

/** Postgres channel on which job events are announced to every process sharing the queue. */
const JOBS_CHANNEL = 'claas_jobs';

/** What the queue announces: jobs of an adapter were queued, or jobs finished. */
export type JobEvent = { event: 'queued'; adapterId: string; urgent?: boolean } | { event: 'finished'; ids: string[] };

/** Starts of one job's update before a restart or lease expiry gives it up. */
export const MAX_ATTEMPTS = 5;

/** The worker that markRunning and finish stand for when none is named (the single-process server). */
export const LOCAL_WORKER = 'local';

const gaveUp = (how: string) => `the ${how} stopped during this update ${MAX_ATTEMPTS} times (killed or crashed); not tried again`;

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
  /** Starts of its update so far. */
  attempts: number;
  /** The version its batch writes, assigned at its first claim (null before). */
  version: number | null;
  /** The worker training it and until when (null: nobody, or held until a restart). */
  leaseOwner: string | null;
  leaseUntil: number | null;
}

export interface ClaimOptions {
  /** How long the lease lasts without a heartbeat. */
  leaseMs: number;
  /** Feedback items that make a batch (at least one job is taken, however many items it has). */
  maxItems: number;
  /** Only jobs with the same options as the oldest join its batch. */
  sameOptions: boolean;
  /** Only this adapter's jobs. */
  adapterId?: string;
}

/** Jobs of one adapter taken together under one lease; they write `version`. */
export interface ClaimedBatch {
  adapterId: string;
  version: number;
  jobs: JobRecord[];
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
  submit(jobs: readonly NewJob[], opts?: { idempotencyKey?: string; maxPending?: number; urgent?: boolean }): Promise<SubmitResult>;
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
  /** Whether other processes may claim from this queue (Postgres): then nobody else's lease is cut short at a start. */
  readonly shared: boolean;
  /**
   * After a restart: jobs that were running run again (keeping their assigned version), unless their
   * update was already started MAX_ATTEMPTS times (a job that kills the process must not block every
   * start). `onlyExpired`: only jobs whose lease expired or that were held without one, for a queue
   * other live trainers share; and those of `worker`, this process's name before it restarted.
   */
  requeueInterrupted(opts?: { onlyExpired?: boolean; worker?: string }): Promise<number>;
  /** Ids of queued jobs, and of running ones whose lease expired, oldest first; optionally of one adapter. */
  claimableIds(adapterId?: string): Promise<string[]>;
  /**
   * Takes the oldest claimable job of an adapter that no live lease holds, with that adapter's other
   * claimable jobs of its batch (a batch claimed before keeps its jobs and version; a new one takes
   * queued jobs with identical options up to maxItems), marks them running under `worker`'s lease,
   * counts an attempt and assigns the version they write (the adapter's highest + 1). Null: nothing.
   * Expired jobs already started MAX_ATTEMPTS times fail instead.
   */
  claim(worker: string, opts: ClaimOptions): Promise<ClaimedBatch | null>;
  /** Extends `worker`'s leases of these jobs; false when it no longer holds all of them. */
  heartbeat(worker: string, ids: readonly string[], leaseMs: number): Promise<boolean>;
  /** Marks jobs running under `worker` with no expiry (held until requeueInterrupted; tests and tools). */
  markRunning(ids: readonly string[], worker?: string): Promise<void>;
  /** Finishes the running jobs `worker` holds; returns how many (the others are left alone: their lease was lost). */
  finish(ids: readonly string[], status: 'done' | 'failed', result: Record<string, unknown> | null, error: string | null, worker?: string): Promise<number>;
  /**
   * Calls `onEvent` for jobs queued or finished by any process sharing the queue (announced when
   * their transaction commits); resolves to a function that stops it. Null where nobody else shares it.
   */
  watch(onEvent: (e: JobEvent) => void): Promise<(() => Promise<void>) | null>;
}

/** The transaction lock under which leases change hands. */
const LEASES = 'feedback job leases';

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
  attempts: number;
  version: number | null;
  lease_owner: string | null;
  lease_until: number | null;
}

interface CandidateRow {
  id: string;
  adapter_id: string;
  options_json: string;
  version: number | null;
  n: number;
}

interface ItemRow {
  completion_id: string | null;
  choice_index: number;
  messages_json: string | null;
  response_text: string | null;
  feedback: string;
}

// Jobs a claim may take: queued, or running under a lease that expired (their trainer died).
const CLAIMABLE = "(j.status = 'queued' OR (j.status = 'running' AND j.lease_until IS NOT NULL AND j.lease_until <= ?))";
// No job of the adapter is held by a live lease (a lease without expiry is held until a restart).
const ADAPTER_FREE = "NOT EXISTS (SELECT 1 FROM jobs h WHERE h.adapter_id = j.adapter_id AND h.status = 'running' AND (h.lease_until IS NULL OR h.lease_until > ?))";

export class SqlJobStore implements JobStore {
  private readonly order: string;
  readonly shared: boolean;

  constructor(private readonly db: SqlDatabase) {
    this.order = DIALECT[db.dialect].insertOrder;
    this.shared = db.dialect === 'postgres';
  }

  async submit(jobs: readonly NewJob[], opts: { idempotencyKey?: string; maxPending?: number; urgent?: boolean } = {}): Promise<SubmitResult> {
    const key = opts.idempotencyKey;
    const adding = new Map<string, number>();
    for (const job of jobs) adding.set(job.adapterId, (adding.get(job.adapterId) ?? 0) + 1);
    return this.db.transaction(async (tx) => {
      // Submissions to the same adapters run one after the other: the count below stays true until
      // this one commits, and a repeated key finds what the first stored. Sorted: no two wait on each other.
      // A key is locked before the adapters: a repeat naming other adapters must still find what the
      // first stored, not race it to the unique index.
      if (key) await tx.lock(`idempotency key ${key}`);
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
      // Urgent: a client waits for the update, so a trainer elsewhere runs the batch without waiting for it to fill.
      for (const adapterId of adding.keys()) await this.announce(tx, { event: 'queued', adapterId, ...(opts.urgent ? { urgent: true } : {}) });
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
      attempts: r.attempts,
      version: r.version ?? null,
      leaseOwner: r.lease_owner ?? null,
      leaseUntil: r.lease_until ?? null,
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

  requeueInterrupted(opts: { onlyExpired?: boolean; worker?: string } = {}): Promise<number> {
    return this.db.transaction(async (tx) => {
      await tx.lock(LEASES);
      const now = Date.now();
      const which = opts.onlyExpired ? "status = 'running' AND (lease_until IS NULL OR lease_until <= ? OR lease_owner = ?)" : "status = 'running'";
      const at = opts.onlyExpired ? [now, opts.worker ?? null] : [];
      await tx.run(`UPDATE jobs SET status = 'failed', finished_at = ?, error = ?, lease_owner = NULL, lease_until = NULL WHERE ${which} AND attempts >= ?`, [now, gaveUp('server'), ...at, MAX_ATTEMPTS]);
      return tx.run(`UPDATE jobs SET status = 'queued', started_at = NULL, lease_owner = NULL, lease_until = NULL WHERE ${which}`, at);
    });
  }

  async claimableIds(adapterId?: string): Promise<string[]> {
    const rows = await this.db.query<{ id: string }>(
      `SELECT j.id FROM jobs j WHERE ${CLAIMABLE}${adapterId === undefined ? '' : ' AND j.adapter_id = ?'} ORDER BY j.created_at, j.${this.order}`,
      adapterId === undefined ? [Date.now()] : [Date.now(), adapterId],
    );
    return rows.map((r) => r.id);
  }

  async claim(worker: string, opts: ClaimOptions): Promise<ClaimedBatch | null> {
    const claimed = await this.db.transaction(async (tx) => {
      await tx.lock(LEASES);
      const now = Date.now();
      // A job whose trainers kept dying fails here, as requeueInterrupted fails it at a restart.
      await tx.run("UPDATE jobs SET status = 'failed', finished_at = ?, error = ?, lease_owner = NULL, lease_until = NULL WHERE status = 'running' AND lease_until IS NOT NULL AND lease_until <= ? AND attempts >= ?", [
        now,
        gaveUp('trainer'),
        now,
        MAX_ATTEMPTS,
      ]);
      const only = opts.adapterId === undefined ? '' : ' AND j.adapter_id = ?';
      const [first] = await tx.query<{ adapter_id: string }>(`SELECT j.adapter_id FROM jobs j WHERE ${CLAIMABLE} AND ${ADAPTER_FREE}${only} ORDER BY j.created_at, j.${this.order} LIMIT 1`, [
        now,
        now,
        ...(opts.adapterId === undefined ? [] : [opts.adapterId]),
      ]);
      if (!first) return null;
      const adapterId = first.adapter_id;
      const candidates = await tx.query<CandidateRow>(
        `SELECT j.id, j.adapter_id, j.options_json, j.version, (SELECT COUNT(*) FROM feedback_items i WHERE i.job_id = j.id) AS n
           FROM jobs j WHERE ${CLAIMABLE} AND j.adapter_id = ? ORDER BY j.created_at, j.${this.order}`,
        [now, adapterId],
      );
      // A batch claimed before goes first: a new one must not be assigned the version it may yet write.
      const head = candidates.find((c) => c.version !== null) ?? candidates[0]!;
      let batch: CandidateRow[];
      if (head.version !== null) {
        // Claimed before: the same jobs again, so the version their batch may have written is theirs.
        batch = candidates.filter((c) => c.version === head.version);
      } else {
        batch = [];
        let items = 0;
        for (const c of candidates) {
          if (c.version !== null || (opts.sameOptions && c.options_json !== head.options_json)) continue;
          if (batch.length > 0 && items + Number(c.n) > opts.maxItems) break;
          batch.push(c);
          items += Number(c.n);
        }
      }
      let version = head.version;
      if (version === null) {
        const [row] = await tx.query<{ v: number | null }>('SELECT MAX(version) AS v FROM adapter_versions WHERE adapter_id = ?', [adapterId]);
        version = (row?.v ?? 0) + 1;
      }
      for (const c of batch) {
        await tx.run("UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1, lease_owner = ?, lease_until = ?, version = ? WHERE id = ?", [now, worker, now + opts.leaseMs, version, c.id]);
      }
      return { adapterId, version, ids: batch.map((c) => c.id) };
    });
    if (!claimed) return null;
    const jobs = await Promise.all(claimed.ids.map(async (id) => (await this.get(id))!));
    return { adapterId: claimed.adapterId, version: claimed.version, jobs };
  }

  heartbeat(worker: string, ids: readonly string[], leaseMs: number): Promise<boolean> {
    if (ids.length === 0) return Promise.resolve(true);
    return this.db.transaction(async (tx) => {
      await tx.lock(LEASES);
      // An expired lease nobody took yet is still this worker's: extending it loses nothing.
      const n = await tx.run(`UPDATE jobs SET lease_until = ? WHERE status = 'running' AND lease_owner = ? AND lease_until IS NOT NULL AND id IN (${placeholders(ids.length)})`, [Date.now() + leaseMs, worker, ...ids]);
      return n === ids.length;
    });
  }

  async markRunning(ids: readonly string[], worker: string = LOCAL_WORKER): Promise<void> {
    await this.db.transaction(async (tx) => {
      await tx.lock(LEASES);
      for (const id of ids) await tx.run("UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1, lease_owner = ?, lease_until = NULL WHERE id = ?", [Date.now(), worker, id]);
    });
  }

  finish(ids: readonly string[], status: 'done' | 'failed', result: Record<string, unknown> | null, error: string | null, worker: string = LOCAL_WORKER): Promise<number> {
    return this.db.transaction(async (tx) => {
      await tx.lock(LEASES);
      let n = 0;
      for (const id of ids) {
        n += await tx.run("UPDATE jobs SET status = ?, finished_at = ?, error = ?, result_json = ?, lease_owner = NULL, lease_until = NULL WHERE id = ? AND status = 'running' AND lease_owner = ?", [
          status,
          Date.now(),
          error,
          result ? JSON.stringify(result) : null,
          id,
          worker,
        ]);
      }
      if (n > 0) await this.announce(tx, { event: 'finished', ids: [...ids] });
      return n;
    });
  }

  /** Sent when the transaction commits (Postgres); a queue nobody else shares has nobody to tell. */
  private async announce(tx: SqlRunner, e: JobEvent): Promise<void> {
    if (tx.dialect === 'postgres') await tx.query('SELECT pg_notify(?, ?)', [JOBS_CHANNEL, JSON.stringify(e)]);
  }

  async watch(onEvent: (e: JobEvent) => void): Promise<(() => Promise<void>) | null> {
    if (!this.db.listen) return null;
    return this.db.listen(JOBS_CHANNEL, (payload) => onEvent(JSON.parse(payload) as JobEvent));
  }
}
