// Turns acknowledged feedback into adapter versions: per-adapter batching (size or max wait), one
// update at a time under the mode-switch lock, the hindsight teacher, the SDPO step on a copy of the
// served adapter (version N keeps serving while N+1 trains), a new immutable version, the collapse
// guard, promotion, and job results. Batches are claimed from the job store under a lease renewed
// while they train, so trainer processes sharing a Postgres queue never train one adapter at once and
// a dead trainer's jobs are taken up again; the version a batch writes is the one assigned at claim.
// Jobs interrupted by a crash are resumed on start. With vLLM serving, the update drains and sleeps
// vLLM around the step and loads the new version after it.
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Adapter, SdpoSample } from '../engine/engine.js';
import type { SdpoOptions } from '../engine/sdpo-options.js';
import { BusyError, InputError, NotFoundError } from '../errors.js';
import type { ChatMessage } from '../model/chat-template.js';
import type { InferenceService } from '../serve/inference.js';
import type { VllmClient } from '../serve/vllm-client.js';
import { checkFeedbackSize } from '../serve/work-bounds.js';
import { teacherFeedback, teacherTexts } from '../train/hindsight.js';
import { remoteTeacherTargets } from '../train/remote-teacher.js';
import { versionDir } from './adapter-ids.js';
import type { AdapterRegistry } from './adapters.js';
import type { CollapseGuard, GuardConfig } from './collapse-guard.js';
import type { FeedbackItem, JobRecord, JobStore, NewJob, TrainingOptions } from '../store/jobs.js';
import { ModeLock } from './mode-lock.js';
import { EMBEDDED_UPDATES, type UpdateBackend } from './update-backend.js';
import type { TrainingProfile } from '../model/training-profile.js';

/** Where the `remote` teacher scores samples; model: a fixed model name there, else the adapter's current version. */
export interface RemoteTeacher {
  client: VllmClient;
  model?: string;
}

export interface OrchestratorConfig {
  /** Feedback items that make a batch. */
  batchSize: number;
  /** Longest wait for a batch to fill, from the first queued item. */
  maxWaitMs: number;
  /** Step options used when a request does not set them (the served model's training profile). */
  defaults: TrainingOptions;
  /** Server-set bounds on request options. */
  bounds: { maxLearningRate: number; maxSteps: number; maxTopK: number };
  /** Most queued or running jobs per adapter; more are refused with 429 (nothing accepted is dropped). */
  maxQueuedJobs: number;
  /** Scorer of the `remote` teacher mode (unset: that mode is refused). */
  remoteTeacher?: RemoteTeacher;
  /** How long a claimed batch stays this trainer's without a heartbeat (heartbeats come at a third of it). */
  leaseMs?: number;
  /**
   * This trainer's name in job leases (default: host, process and a random part). Set and kept across
   * restarts, a restarted trainer takes its own interrupted jobs back at once, not when their lease expires.
   */
  worker?: string;
  /**
   * Whether this process trains (default true). A serving-only node (`claas serve --no-train`)
   * stores feedback and leaves the queue to trainer processes (`claas train-worker`) sharing it.
   */
  train?: boolean;
  /** Receives a line per update: claimed, version published, promoted or refused (trainer processes print them). */
  log?: (line: string) => void;
}

const DEFAULT_LEASE_MS = 30_000;

export const DEFAULT_ORCHESTRATOR: OrchestratorConfig = {
  batchSize: 4,
  maxWaitMs: 2000,
  // Replaced by the served model's training profile when a server opens (src/model/training-profile.ts).
  defaults: { learningRate: 3e-5, alpha: 0.5, topK: 100, teacher: 'current', steps: 4 },
  bounds: { maxLearningRate: 1e-2, maxSteps: 10, maxTopK: 1000 },
  maxQueuedJobs: 256,
};

export class Orchestrator {
  readonly lock = new ModeLock();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly busy = new Set<string>();
  /** Adapters with a submission whose client waits for the update: their batch runs without waiting to fill. */
  private readonly urgent = new Set<string>();
  private readonly waiters = new Map<string, (() => void)[]>();
  /** Adapters whose queue changed while their schedule() was busy: looked at again when it ends. */
  private readonly again = new Set<string>();
  private closed = false;
  private readonly inFlight = new Set<Promise<void>>();
  /** Looks for work other trainers' servers queued (a shared queue only). */
  private poll: NodeJS.Timeout | undefined;
  /** Stops following the shared queue's announcements. */
  private unwatch: (() => Promise<void>) | null = null;
  readonly worker: string;

  constructor(
    readonly jobs: JobStore,
    readonly registry: AdapterRegistry,
    private readonly service: InferenceService,
    private readonly guard: CollapseGuard,
    readonly config: OrchestratorConfig = DEFAULT_ORCHESTRATOR,
    private readonly backend: UpdateBackend = EMBEDDED_UPDATES,
    /** The served model's training profile, as read (the owner of the defaults is `config`). */
    readonly profile: TrainingProfile | null = null,
  ) {
    this.worker = config.worker ?? `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  }

  private get leaseMs(): number {
    return this.config.leaseMs ?? DEFAULT_LEASE_MS;
  }

  /** Whether this process trains the queue's jobs (a serving-only node does not). */
  get trains(): boolean {
    return this.config.train !== false;
  }

  private log(line: string): void {
    this.config.log?.(line);
  }

  get guardConfig(): GuardConfig {
    return this.guard.config;
  }

  /** What an update does when a request sets no options: the defaults in force, with where they came from. */
  effectiveDefaults() {
    const d = this.config.defaults;
    const lora = this.registry.defaults;
    return {
      source: this.profile?.source ?? 'server defaults',
      learning_rate: d.learningRate,
      alpha: d.alpha,
      steps: d.steps,
      top_k: d.topK,
      teacher: d.teacher,
      memory: d.memory ?? 0,
      lora: { rank: lora.rank, alpha: lora.alpha, target_modules: lora.targetModules },
      feedback_batch: { size: this.config.batchSize, wait_ms: this.config.maxWaitMs },
    };
  }

  /** Checks request options against the server's bounds. */
  checkOptions(o: TrainingOptions): TrainingOptions {
    const b = this.config.bounds;
    if (o.learningRate !== undefined && !(o.learningRate > 0 && o.learningRate <= b.maxLearningRate)) throw new InputError(`learning_rate must be in (0, ${b.maxLearningRate}]`);
    if (o.steps !== undefined && !(Number.isInteger(o.steps) && o.steps >= 1 && o.steps <= b.maxSteps)) throw new InputError(`steps must be an integer in [1, ${b.maxSteps}]`);
    if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 1 && o.topK <= b.maxTopK)) throw new InputError(`top_k must be an integer in [1, ${b.maxTopK}]`);
    if (o.alpha !== undefined && !(o.alpha >= 0 && o.alpha <= 1)) throw new InputError('alpha must be in [0, 1]');
    if (o.beta !== undefined && !(o.beta >= 0 && o.beta <= 100)) throw new InputError('beta must be in [0, 100]');
    if (o.isClip !== undefined && !(o.isClip >= 1 && o.isClip <= 20)) throw new InputError('is_clip must be in [1, 20]');
    if (o.maxGradNorm !== undefined && !(o.maxGradNorm > 0 && o.maxGradNorm <= 1e6)) throw new InputError('max_grad_norm must be in (0, 1e6]');
    if ((o.teacher ?? this.config.defaults.teacher) === 'remote' && !this.config.remoteTeacher) throw new InputError('teacher "remote" needs a teacher server (claas serve --teacher-url, or --vllm-url)');
    return o;
  }

  /**
   * Validates and durably stores feedback; training happens later. Items are sized first (long texts
   * tokenize off the event loop); the per-adapter bound on waiting jobs is checked in the transaction
   * that stores them.
   */
  async submit(jobs: NewJob[], idempotencyKey?: string, opts: { now?: boolean } = {}): Promise<{ ids: string[]; repeated: boolean }> {
    for (const job of jobs) {
      await this.registry.get(job.adapterId);
      this.checkOptions(job.options);
      for (const it of job.items) {
        if (it.completionId === null) continue;
        const record = await this.service.store.completions.get(it.completionId);
        if (!record) throw new NotFoundError(`completion ${it.completionId} does not exist`);
        if (!(record.request as { messages?: unknown }).messages) throw new InputError(`completion ${it.completionId} is a text completion; feedback needs a chat completion`);
        if (!record.choices[it.choiceIndex]) throw new InputError(`completion ${it.completionId} has no choice ${it.choiceIndex}`);
      }
    }
    const settled = await Promise.allSettled(jobs.flatMap((job, j) => job.items.map((it) => this.checkSize(it, `requests[${j}]`))));
    const refused = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (refused) throw refused.reason;
    for (const job of jobs) await this.registry.get(job.adapterId);
    const out = await this.jobs.submit(jobs, { idempotencyKey, maxPending: this.config.maxQueuedJobs, urgent: opts.now });
    if (out.refused) {
      const { adapterId, pending } = out.refused;
      throw new BusyError(`adapter ${adapterId} has ${pending} feedback jobs waiting (limit ${this.config.maxQueuedJobs}); retry later`, Math.max(1, Math.ceil(this.config.maxWaitMs / 1000)));
    }
    // A client waiting for its update does not wait for the batch to fill as well.
    if (opts.now) for (const job of jobs) this.urgent.add(job.adapterId);
    for (const job of jobs) this.schedule(job.adapterId);
    return { ids: out.ids, repeated: out.repeated };
  }

  /** Whether an update puts serving to sleep around its step (vLLM) rather than training beside it. */
  get sleepsServing(): boolean {
    return this.backend !== EMBEDDED_UPDATES;
  }

  /** The stored reply of `adapterId` with this last user message and text (CompletionStore.findReply). */
  storedReply(adapterId: string, prompt: string, response: string, tenant: string | null): Promise<{ completionId: string; choiceIndex: number } | null> {
    return this.service.store.completions.findReply(adapterId, prompt, response, tenant);
  }

  /** Resolves once every job in `ids` is done or failed. */
  async settled(ids: readonly string[]): Promise<JobRecord[]> {
    for (const id of ids) {
      // Waiting first, then reading: a job that finishes during the read still wakes this.
      let wake!: () => void;
      const woken = new Promise<void>((resolve) => (wake = resolve));
      this.waiters.set(id, [...(this.waiters.get(id) ?? []), wake]);
      const forget = () => {
        const rest = (this.waiters.get(id) ?? []).filter((w) => w !== wake);
        if (rest.length > 0) this.waiters.set(id, rest);
        else this.waiters.delete(id);
      };
      const ended = async () => {
        const status = (await this.jobs.get(id))?.status ?? 'done';
        return status === 'done' || status === 'failed';
      };
      if (await ended()) {
        forget();
        continue;
      }
      // Another process may train it: its end is announced (a shared queue), and read again every
      // second in case an announcement was missed.
      for (;;) {
        let timer: NodeJS.Timeout | undefined;
        const woke = await Promise.race([woken.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 1000)))]);
        clearTimeout(timer);
        if (woke) break;
        if (await ended()) {
          forget();
          break;
        }
      }
    }
    return Promise.all(ids.map(async (id) => (await this.jobs.get(id))!));
  }

  private notify(ids: readonly string[]): void {
    for (const id of ids) {
      for (const resolve of this.waiters.get(id) ?? []) resolve();
      this.waiters.delete(id);
    }
  }

  /**
   * What one item costs, bounded before it is stored (work-bounds.ts). An unbounded item once
   * stalled every tenant's chat, and again after each restart.
   */
  private async checkSize(item: FeedbackItem, where: string): Promise<void> {
    let s: SdpoSample;
    try {
      s = await this.sample(item, []);
    } catch (err) {
      if (err instanceof NotFoundError || err instanceof InputError) throw err;
      throw new InputError(`${where}: the conversation cannot be rendered with the model's chat template (${err instanceof Error ? err.message : String(err)})`);
    }
    checkFeedbackSize(where, { prompt: s.promptIds.length, teacherPrompt: s.teacherPromptIds.length, response: s.responseIds.length }, this.service.maxPromptTokens, this.service.engine.config.maxPositionEmbeddings);
  }

  /**
   * Resumes what a previous run left: interrupted jobs run again. A queue of its own (SQLite) is
   * requeued whole at once; in a shared one, other trainers' live leases are left alone, and jobs
   * submitted to other servers or left by dead trainers are looked for every lease period.
   */
  async start(): Promise<void> {
    // Jobs queued on any node wake a trainer at once; jobs finished by any trainer wake their waiters.
    this.unwatch = await this.jobs.watch((e) => {
      if (e.event === 'finished') this.notify(e.ids);
      else {
        if (e.urgent && this.trains) this.urgent.add(e.adapterId);
        this.schedule(e.adapterId);
      }
    });
    if (!this.trains) return;
    await this.jobs.requeueInterrupted({ onlyExpired: this.jobs.shared, worker: this.config.worker });
    await this.lookEverywhere();
    if (this.jobs.shared && !this.closed) {
      this.poll = setInterval(() => void this.lookEverywhere().catch((err: unknown) => console.error(`feedback jobs: ${err instanceof Error ? err.message : String(err)}`)), this.leaseMs);
      this.poll.unref();
    }
  }

  private async lookEverywhere(): Promise<void> {
    const adapters = new Set<string>();
    for (const id of await this.jobs.claimableIds()) adapters.add((await this.jobs.get(id))!.adapterId);
    for (const id of adapters) this.schedule(id);
  }

  /** Stops scheduling and waits for a running update to finish. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.poll);
    await this.unwatch?.();
    this.unwatch = null;
    await this.registry.stopWatching();
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    await Promise.all([...this.inFlight]);
  }

  private async queuedFor(adapterId: string): Promise<JobRecord[]> {
    const jobs = await Promise.all((await this.jobs.claimableIds(adapterId)).map((id) => this.jobs.get(id)));
    return jobs.filter((j): j is JobRecord => j !== undefined);
  }

  /**
   * Looks at an adapter's queue: runs a batch when one is due, else waits for one to be. One look or
   * batch per adapter at a time; asked again meanwhile, it looks again when that ends.
   */
  private schedule(adapterId: string): void {
    if (this.closed || !this.trains) return;
    if (this.busy.has(adapterId)) {
      this.again.add(adapterId);
      return;
    }
    this.busy.add(adapterId);
    const work = this.look(adapterId)
      .catch((err: unknown) => console.error(`feedback jobs of ${adapterId}: ${err instanceof Error ? err.message : String(err)}`))
      .finally(() => {
        this.inFlight.delete(work);
        this.busy.delete(adapterId);
        if (this.again.delete(adapterId)) this.schedule(adapterId);
      });
    this.inFlight.add(work);
  }

  private async look(adapterId: string): Promise<void> {
    const queued = await this.queuedFor(adapterId);
    if (queued.length === 0 || this.closed) return;
    const items = queued.reduce((n, j) => n + j.items.length, 0);
    const waited = Date.now() - queued[0]!.createdAt;
    const urgent = this.urgent.delete(adapterId);
    if (items >= this.config.batchSize || waited >= this.config.maxWaitMs || urgent) {
      clearTimeout(this.timers.get(adapterId));
      this.timers.delete(adapterId);
      // What was queued meanwhile, or left out of this batch, is looked at next.
      if (await this.runBatch(adapterId)) this.again.add(adapterId);
    } else if (!this.timers.has(adapterId)) {
      this.timers.set(
        adapterId,
        setTimeout(() => {
          this.timers.delete(adapterId);
          this.schedule(adapterId);
        }, this.config.maxWaitMs - waited),
      );
    }
  }

  private async sample(item: FeedbackItem, memory: readonly string[]): Promise<SdpoSample> {
    const { template, tokenizer } = this.service;
    const feedback = teacherFeedback(memory, item.feedback);
    const encode = (text: string) => tokenizer.encodeAsync(text, { addSpecialTokens: false });
    if (item.completionId !== null) {
      const record = await this.service.store.completions.get(item.completionId);
      if (!record) throw new NotFoundError(`completion ${item.completionId} does not exist`);
      const request = record.request as { messages: ChatMessage[]; tools?: unknown[] };
      const choice = record.choices[item.choiceIndex]!;
      const teacher = teacherTexts(template, request.messages, feedback, { tools: request.tools, enableThinking: record.enableThinking });
      return { promptIds: record.promptIds, teacherPromptIds: await encode(teacher.teacherText), responseIds: choice.outputIds, oldLogprobs: choice.outputLogprobs };
    }
    const messages = item.messages as ChatMessage[];
    const teacher = teacherTexts(template, messages, feedback, { enableThinking: false });
    const eos = tokenizer.eosTokenId;
    const [promptIds, teacherPromptIds, response] = await Promise.all([encode(teacher.studentText), encode(teacher.teacherText), encode(item.responseText ?? '')]);
    return { promptIds, teacherPromptIds, responseIds: [...response, ...(eos !== undefined ? [eos] : [])] };
  }

  /** Claims and trains one batch of the adapter; false when there was none to claim. */
  private async runBatch(adapterId: string): Promise<boolean> {
    const claimed = await this.jobs.claim(this.worker, { leaseMs: this.leaseMs, maxItems: this.config.batchSize, sameOptions: true, adapterId });
    // Another trainer holds this adapter: its batch ends with a look here again (or at the next poll).
    if (!claimed) return false;
    const batch = claimed.jobs;
    const ids = batch.map((j) => j.id);
    this.log(`adapter ${adapterId}: training v${claimed.version} from ${batch.reduce((n, j) => n + j.items.length, 0)} feedback item(s) (jobs ${ids.join(', ')}; attempt ${Math.max(...batch.map((j) => j.attempts))})`);
    let lost = false;
    const beat = setInterval(() => {
      this.jobs.heartbeat(this.worker, ids, this.leaseMs).then(
        (held) => (lost ||= !held),
        (err: unknown) => console.error(`feedback jobs of ${adapterId}: heartbeat: ${err instanceof Error ? err.message : String(err)}`),
      );
    }, Math.max(1, Math.floor(this.leaseMs / 3)));
    // Checked before anything another trainer could also do: a lost batch is that trainer's now.
    const stillHeld = async () => {
      if (lost || !(await this.jobs.heartbeat(this.worker, ids, this.leaseMs))) {
        lost = true;
        throw new Error(`the lease of this update was lost (another trainer took jobs ${ids.join(', ')} over)`);
      }
    };
    try {
      const { memory: remember = 0, ...options } = { ...this.config.defaults, ...batch[0]!.options };
      const parent = await this.registry.currentVersion(adapterId);
      const done = await this.registry.versionOfJob(adapterId, batch[0]!.id);
      const said = batch.flatMap((j) => j.items.map((it) => it.feedback));
      const memory = remember > 0 ? await this.jobs.learnedFeedback(adapterId, remember, said) : [];
      const t0 = performance.now();
      const samples = done === undefined ? await Promise.all(batch.flatMap((j) => j.items.map((it) => this.sample(it, memory)))) : [];
      const phases: Record<string, number> = { samples: performance.now() - t0 };
      // The remote teacher scores while serving continues (vLLM cannot score once asleep).
      if (options.teacher === 'remote' && samples.length > 0) await this.scoreRemotely(adapterId, parent, samples, options.topK ?? 100);
      let step: Awaited<ReturnType<Orchestrator['train']>> | undefined;
      await this.lock.runUpdate(
        async () => {
          const t = performance.now();
          await this.backend.drain();
          phases.sleep = performance.now() - t;
        },
        async () => {
          await stillHeld();
          step = await this.train(adapterId, parent, done, samples, options, batch[0]!.id, claimed.version, phases);
        },
        async () => {
          try {
            const w = performance.now();
            await this.backend.wake();
            phases.wake = performance.now() - w;
            const t = performance.now();
            if (step?.passed) {
              await stillHeld();
              const next = { name: adapterId, version: versionDir(step.version), path: this.registry.dir(adapterId, step.version) };
              await this.backend.load(next);
              await this.registry.promote(adapterId, step.version, step.candidate);
              this.log(`adapter ${adapterId}: promoted v${step.version}`);
              await this.backend.unloadStale(adapterId, next.version);
            }
            phases.promote = performance.now() - t;
          } finally {
            this.backend.admit();
          }
        },
      );
      // Where the time went, so a slow update can be read from its job (the step's own phases are in metrics.timings).
      const phasesMs = Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, Math.round(v * 10) / 10]));
      if (!step!.passed) this.log(`adapter ${adapterId}: v${step!.version} refused by the collapse guard (${String((step!.result.guard as { reason?: string }).reason)})`);
      await this.finish(adapterId, ids, 'done', { ...step!.result, ...(memory.length > 0 ? { memory } : {}), phases_ms: phasesMs }, null);
    } catch (err) {
      // A lost lease leaves the jobs to the trainer that took them.
      this.log(`adapter ${adapterId}: v${claimed.version} not written (${err instanceof Error ? err.message : String(err)})`);
      if (!lost) await this.finish(adapterId, ids, 'failed', null, err instanceof Error ? err.message : String(err));
      else console.error(`feedback jobs of ${adapterId}: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      clearInterval(beat);
      this.notify(ids);
    }
    return true;
  }

  private async finish(adapterId: string, ids: readonly string[], status: 'done' | 'failed', result: Record<string, unknown> | null, error: string | null): Promise<void> {
    const n = await this.jobs.finish(ids, status, result, error, this.worker);
    if (n < ids.length) console.error(`feedback jobs of ${adapterId}: ${ids.length - n} of ${ids.length} were taken over by another trainer before they finished here`);
  }

  private async scoreRemotely(adapterId: string, parent: number, samples: SdpoSample[], k: number): Promise<void> {
    const remote = this.config.remoteTeacher!;
    const model = remote.model ?? `${adapterId}@${versionDir(parent)}`;
    for (const s of samples) s.teacherTargets = await remoteTeacherTargets(remote.client, model, s, k);
  }

  /** The step on a copy of the served adapter (or the version an interrupted run already saved), and the guard's verdict. */
  private async train(
    adapterId: string,
    parent: number,
    done: number | undefined,
    samples: SdpoSample[],
    options: Partial<SdpoOptions>,
    jobId: string,
    assigned: number,
    phases: Record<string, number>,
  ): Promise<{ version: number; candidate: Adapter; passed: boolean; result: Record<string, unknown> }> {
    const registry = this.registry;
    let version = done;
    let metrics: Record<string, unknown> | undefined;
    let candidate: Adapter;
    if (version === undefined) {
      let t = performance.now();
      // AdamW starts anew at each update: carried over, the moments of one update scaled the next
      // (a batch with one unusual reply shrank every later step; docs/learning.md, "Optimizer state").
      const served = await registry.lease(adapterId);
      try {
        candidate = await this.service.engine.cloneAdapter(served.adapter, { freshOptimizer: true });
      } finally {
        served.release();
      }
      const r = await this.service.engine.sdpoStep(candidate, samples, options);
      phases.step = performance.now() - t;
      t = performance.now();
      metrics = { loss: r.loss, distillLoss: r.distillLoss, klToBase: r.klToBase, meanIsWeight: r.meanIsWeight, clipFraction: r.clipFraction, gradNorm: r.gradNorm, teacherStudentKl: r.teacherStudentKl, tokens: r.tokens, samples: samples.length, timings: r.timings, options: r.options };
      version = await registry.addVersion(adapterId, candidate, { parent, status: 'candidate', metrics, jobId }, assigned);
      phases.save = performance.now() - t;
    } else {
      candidate = await registry.loadVersion(adapterId, version);
      metrics = (await registry.get(adapterId)).versions.find((v) => v.version === version)?.metrics ?? undefined;
    }
    const t = performance.now();
    const served = await registry.lease(adapterId);
    let verdict: Awaited<ReturnType<CollapseGuard['check']>>;
    try {
      verdict = await this.guard.check(candidate, served.adapter);
    } finally {
      served.release();
    }
    phases.guard = performance.now() - t;
    if (!verdict.passed) {
      await registry.reject(adapterId, version, verdict.reason!);
      candidate.dispose();
    }
    return { version, candidate, passed: verdict.passed, result: { adapter: adapterId, version, parent_version: parent, promoted: verdict.passed, guard: verdict, metrics } };
  }
}
