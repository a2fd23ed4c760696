// The durable state of the plugin, one JSON file replaced atomically (temp file, fsync, rename):
// each conversation's last reply (our completion id), feedback waiting to be sent, batches sent but
// not yet reported, and per-conversation notices (results to show in that conversation only).
// The file is the source of truth: every operation reads it first, so several instances of the
// plugin in one gateway (OpenClaw may register a plugin more than once) see one state.
import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

export interface PendingItem {
  id: string;
  conversation: string;
  completionId: string;
  feedback: string;
  sender: string;
  at: number;
}

export interface SubmittedBatch {
  jobIds: string[];
  /** Conversations with an item in the batch (each gets the outcome). */
  conversations: string[];
  items: number;
  at: number;
}

interface State {
  format: 1;
  replies: Record<string, { completionId: string; at: number }>;
  pending: PendingItem[];
  submitted: SubmittedBatch[];
  notices: Record<string, string[]>;
}

/** Conversations remembered (the least recently answered are forgotten first). */
const MAX_CONVERSATIONS = 5000;
const MAX_NOTICES = 20;

const sameJobs = (a: SubmittedBatch, b: SubmittedBatch) => a.jobIds.length === b.jobIds.length && a.jobIds.every((id, i) => id === b.jobIds[i]);

const empty = (): State => ({ format: 1, replies: {}, pending: [], submitted: [], notices: {} });

function parse(text: string): State {
  const s = JSON.parse(text) as Partial<State>;
  if (s.format !== 1 || typeof s.replies !== 'object' || !Array.isArray(s.pending) || !Array.isArray(s.submitted) || typeof s.notices !== 'object') {
    throw new Error('not a buffer file of format 1');
  }
  return s as State;
}

export class FeedbackBuffer {
  private constructor(
    readonly file: string,
    private state: State,
  ) {}

  /**
   * Opens the file (or starts empty when there is none). An unreadable file is kept aside as
   * <file>.corrupt-<time> rather than overwritten, and `recovered` says so.
   */
  static open(file: string): { buffer: FeedbackBuffer; recovered: string | null } {
    if (!existsSync(file)) return { buffer: new FeedbackBuffer(file, empty()), recovered: null };
    try {
      return { buffer: new FeedbackBuffer(file, parse(readFileSync(file, 'utf8'))), recovered: null };
    } catch (err) {
      const aside = `${file}.corrupt-${Date.now()}`;
      renameSync(file, aside);
      return { buffer: new FeedbackBuffer(file, empty()), recovered: `${file} could not be read (${(err as Error).message}); kept as ${aside}` };
    }
  }

  /** Takes the file's current state (written by this or another instance). */
  private load(): State {
    try {
      this.state = parse(readFileSync(this.file, 'utf8'));
    } catch (err) {
      // Missing: nothing was saved yet. Unreadable after open: keep the state in memory.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return this.state;
    }
    return this.state;
  }

  private save(): void {
    mkdirSync(dirname(this.file), { recursive: true });
    const tmp = `${this.file}.${process.pid}.${randomUUID()}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify(this.state));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.file);
  }

  setReply(conversation: string, completionId: string, at: number): void {
    this.load();
    delete this.state.replies[conversation];
    this.state.replies[conversation] = { completionId, at };
    const names = Object.keys(this.state.replies);
    for (const old of names.slice(0, Math.max(0, names.length - MAX_CONVERSATIONS))) delete this.state.replies[old];
    this.save();
  }

  lastReply(conversation: string): string | undefined {
    this.load();
    return this.state.replies[conversation]?.completionId;
  }

  add(item: Omit<PendingItem, 'id'>): PendingItem {
    this.load();
    const full = { id: randomUUID(), ...item };
    this.state.pending.push(full);
    this.save();
    return full;
  }

  get pending(): readonly PendingItem[] {
    this.load();
    return this.state.pending;
  }

  get submitted(): readonly SubmittedBatch[] {
    this.load();
    return this.state.submitted;
  }

  /** Removes items (sent or dropped) and records what was sent, in one write. */
  settle(removed: readonly PendingItem[], sent: SubmittedBatch | null, notes: readonly { conversation: string; text: string }[] = []): void {
    this.load();
    const gone = new Set(removed.map((i) => i.id));
    this.state.pending = this.state.pending.filter((i) => !gone.has(i.id));
    // Another instance may have sent the same items (same idempotency key, same job ids) already.
    if (sent && !this.state.submitted.some((b) => sameJobs(b, sent))) this.state.submitted.push(sent);
    for (const n of notes) this.pushNotice(n.conversation, n.text);
    this.save();
  }

  /**
   * Replaces a reported batch by the notices it produced; false (and no notices) when it was
   * reported already, by another instance.
   */
  report(batch: SubmittedBatch, notes: readonly { conversation: string; text: string }[]): boolean {
    this.load();
    if (!this.state.submitted.some((b) => sameJobs(b, batch))) return false;
    this.state.submitted = this.state.submitted.filter((b) => !sameJobs(b, batch));
    for (const n of notes) this.pushNotice(n.conversation, n.text);
    this.save();
    return true;
  }

  private pushNotice(conversation: string, text: string): void {
    const list = (this.state.notices[conversation] ??= []);
    list.push(text);
    if (list.length > MAX_NOTICES) list.splice(0, list.length - MAX_NOTICES);
  }

  /** The conversation's notices, removed from the buffer. */
  takeNotices(conversation: string): string[] {
    this.load();
    const list = this.state.notices[conversation];
    if (!list || list.length === 0) return [];
    delete this.state.notices[conversation];
    this.save();
    return list;
  }
}
