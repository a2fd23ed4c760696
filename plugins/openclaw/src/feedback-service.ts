// What /feedback does, independent of OpenClaw: pairs feedback with the last reply of the SAME
// conversation (by our completion id), keeps it in the durable buffer, sends full batches (or
// items that waited flushIntervalMs), and words the outcome for that conversation only. A
// permanently rejected item is dropped with a notice; a transient failure keeps everything.
import { createHash } from 'node:crypto';
import type { FeedbackBuffer, PendingItem, SubmittedBatch } from './buffer.js';
import { ServerError, type ClaasClient, type JobState } from './client.js';
import { mayTrain, type PluginSettings } from './settings.js';

export const MAX_FEEDBACK_CHARS = 4000;
/** Largest request the server takes (its MAX_BATCH). */
const MAX_REQUEST_ITEMS = 64;

export interface FeedbackCommand {
  /** The host's stable key of the conversation (OpenClaw's sessionKey). */
  conversation: string | undefined;
  sender: string | undefined;
  channel: string | undefined;
  text: string;
}

export interface ServiceOptions {
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** How often a waiting /feedback asks for its jobs. */
  pollMs?: number;
  log?: (line: string) => void;
}

type Note = { conversation: string; text: string };

const short = (id: string) => (id.length > 18 ? `${id.slice(0, 18)}…` : id);

/** One line for a finished batch. */
export function outcome(jobs: readonly JobState[]): string {
  const failed = jobs.filter((j) => j.status === 'failed');
  const promoted = jobs.filter((j) => j.status === 'done' && j.result?.promoted && typeof j.result.version === 'number');
  const rejected = jobs.filter((j) => j.status === 'done' && j.result && !j.result.promoted);
  const parts: string[] = [];
  if (promoted.length > 0) parts.push(`learned → v${Math.max(...promoted.map((j) => j.result!.version!))}`);
  if (rejected.length > 0) {
    const r = rejected[0]!.result!;
    parts.push(`not learned: the update (v${r.version}) was held back by the collapse guard${r.guard?.reason ? ` (${r.guard.reason})` : ''}; v${r.parent_version} stays`);
  }
  if (failed.length > 0) parts.push(`training failed: ${failed[0]!.error ?? 'no reason given'}`);
  return parts.join('; ') || 'training finished without a result';
}

export class FeedbackService {
  private chain: Promise<unknown> = Promise.resolve();
  /** After a transient failure the timer waits this long before sending again. */
  private retryAt = 0;
  private readonly now: () => number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly pollMs: number;
  private readonly log: (line: string) => void;

  constructor(
    private readonly settings: PluginSettings,
    private readonly buffer: FeedbackBuffer,
    private readonly client: ClaasClient,
    opts: ServiceOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.sleep = opts.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
    this.pollMs = opts.pollMs ?? 1000;
    this.log = opts.log ?? (() => {});
  }

  /** Runs one operation at a time: a timer flush never interleaves with a command's flush. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Remembers the conversation's latest reply from our server. */
  recordReply(conversation: string, completionId: string): void {
    this.buffer.setReply(conversation, completionId, this.now());
  }

  /** Handles "/feedback <text>" and returns the reply for that conversation. */
  command(c: FeedbackCommand): Promise<string> {
    if (!mayTrain(this.settings.allowlist, c.sender, c.channel)) {
      return Promise.resolve('Sorry, your feedback cannot be used to train this assistant: only senders on its training allowlist can. Nothing was recorded.');
    }
    const conversation = c.conversation;
    if (!conversation) return Promise.resolve('This conversation has no session key, so its replies cannot be identified; nothing was recorded.');
    const text = c.text.trim();
    if (text.length > MAX_FEEDBACK_CHARS) return Promise.resolve(`That feedback is ${text.length} characters; the limit is ${MAX_FEEDBACK_CHARS}. Nothing was recorded.`);
    return this.exclusive(async () => {
      await this.collect();
      const lines = this.buffer.takeNotices(conversation);
      if (text === '') {
        lines.push(`queued ${this.buffer.pending.length}/${this.settings.batchSize}. Usage: /feedback <what the last reply should have done differently>`);
        return lines.join('\n');
      }
      const completionId = this.buffer.lastReply(conversation);
      if (!completionId) {
        lines.push('There is no reply from the assistant in this conversation yet to give feedback on; nothing was recorded.');
        return lines.join('\n');
      }
      this.buffer.add({ conversation, completionId, feedback: text, sender: c.sender ?? '', at: this.now() });
      const n = this.buffer.pending.length;
      if (n < this.settings.batchSize) {
        lines.push(`queued ${n}/${this.settings.batchSize}`);
        return lines.join('\n');
      }
      lines.push(...(await this.flush(conversation)));
      return lines.join('\n');
    });
  }

  /** Timer work: sends items that waited long enough, and collects finished batches' results. */
  tick(): Promise<void> {
    return this.exclusive(async () => {
      const oldest = this.buffer.pending[0];
      if (oldest && this.now() - oldest.at >= this.settings.flushIntervalMs && this.now() >= this.retryAt) {
        for (const line of await this.flush(null)) this.log(line);
      }
      await this.collect();
    });
  }

  private key(items: readonly PendingItem[]): string {
    return `openclaw-${createHash('sha256').update(items.map((i) => i.id).join(',')).digest('hex').slice(0, 40)}`;
  }

  /**
   * Sends what is pending. Lines about `caller`'s conversation are returned; what concerns other
   * conversations becomes their notices. With a caller, waits up to replyWaitMs for the result.
   */
  private async flush(caller: string | null): Promise<string[]> {
    const items = this.buffer.pending.slice(0, MAX_REQUEST_ITEMS);
    if (items.length === 0) return [];
    const notes: Note[] = [];
    const sent: { item: PendingItem; jobId: string }[] = [];
    const kept = new Set<PendingItem>();
    let transient: ServerError | null = null;
    try {
      const ids = await this.client.submit(this.settings.adapter, items, this.key(items));
      items.forEach((item, i) => sent.push({ item, jobId: ids[i]! }));
    } catch (err) {
      if (!(err instanceof ServerError)) throw err;
      if (!err.permanent) {
        transient = err;
        items.forEach((i) => kept.add(i));
      } else if (items.length === 1) notes.push(this.dropNote(items[0]!, err));
      else {
        // One bad item rejects the whole request: send them one by one to find it.
        for (const item of items) {
          try {
            const [id] = await this.client.submit(this.settings.adapter, [item], this.key([item]));
            sent.push({ item, jobId: id! });
          } catch (e) {
            if (!(e instanceof ServerError)) throw e;
            if (e.permanent) notes.push(this.dropNote(item, e));
            else {
              transient = e;
              kept.add(item);
            }
          }
        }
      }
    }
    const batch: SubmittedBatch | null =
      sent.length > 0 ? { jobIds: sent.map((s) => s.jobId), conversations: [...new Set(sent.map((s) => s.item.conversation))], items: sent.length, at: this.now() } : null;
    for (const n of notes) this.log(`${n.conversation}: ${n.text}`);
    this.buffer.settle(items.filter((i) => !kept.has(i)), batch, notes);
    const lines = caller === null ? [] : this.buffer.takeNotices(caller);
    if (transient) {
      this.retryAt = this.now() + this.settings.flushIntervalMs;
      const line = `the server did not take the feedback now (${transient.message}); ${kept.size} item(s) kept and retried within ${Math.round(this.settings.flushIntervalMs / 1000)} s`;
      this.log(line);
      lines.push(line);
    }
    if (batch && caller !== null && batch.conversations.includes(caller)) {
      const result = await this.waitFor(batch, caller);
      lines.push(result ?? `sent ${batch.items} feedback item(s); training is still running and the result will show with your next /feedback`);
    }
    return lines;
  }

  private dropNote(item: PendingItem, err: ServerError): Note {
    return { conversation: item.conversation, text: `dropped your feedback on reply ${short(item.completionId)}: ${err.message}` };
  }

  /** Polls one batch until it finishes or replyWaitMs passes; returns the caller's line. */
  private async waitFor(batch: SubmittedBatch, caller: string): Promise<string | null> {
    const until = this.now() + this.settings.replyWaitMs;
    for (;;) {
      const line = await this.check(batch, caller);
      if (line !== null) return line;
      if (this.now() >= until) return null;
      await this.sleep(Math.min(this.pollMs, Math.max(1, until - this.now())));
    }
  }

  /** Asks for every unreported batch; finished ones become notices. */
  private async collect(): Promise<void> {
    for (const batch of [...this.buffer.submitted]) await this.check(batch, null);
  }

  /**
   * Looks at one batch: when all its jobs have finished, reports it (notices for every
   * conversation in it except `caller`, whose line is returned). Null while it runs.
   */
  private async check(batch: SubmittedBatch, caller: string | null): Promise<string | null> {
    let jobs: JobState[];
    try {
      jobs = await Promise.all(batch.jobIds.map((id) => this.client.job(id)));
    } catch (err) {
      if (err instanceof ServerError && err.status === 404) {
        const text = 'the result of earlier feedback is no longer known to the server';
        this.buffer.report(batch, batch.conversations.filter((c) => c !== caller).map((conversation) => ({ conversation, text })));
        return text;
      }
      if (err instanceof ServerError) return null;
      throw err;
    }
    if (jobs.some((j) => j.status === 'queued' || j.status === 'running')) return null;
    const text = outcome(jobs);
    this.log(`batch of ${batch.items}: ${text}`);
    this.buffer.report(batch, batch.conversations.filter((c) => c !== caller).map((conversation) => ({ conversation, text })));
    return text;
  }
}
