// POST /v1/feedback: one item or {"requests": [...]}; stored durably before the 202 with job ids.
// A request in the original CLaaS's form (an `orchestration` object, or its training option names),
// or with `Prefer: wait`, is answered when its update is done, in the original's shape.
// GET /v1/feedback/jobs/:id: queued, running, done (version, metrics, guard) or failed (reason).
import type { FastifyPluginAsync } from 'fastify';
import { InputError, NotFoundError } from '../errors.js';
import type { JobRecord, NewJob, TrainingOptions } from '../store/jobs.js';
import type { Orchestrator } from '../orchestrator/orchestrator.js';
import { checkAdapterId } from '../orchestrator/adapter-ids.js';
import { errorSchema } from './schemas.js';

export const MAX_FEEDBACK_CHARS = 4000;
export const MAX_BATCH = 64;

interface ItemBody {
  lora_id: string;
  completion_id?: string;
  choice_index?: number;
  prompt?: string;
  messages?: unknown[];
  response?: string;
  feedback: string;
  learning_rate?: number;
  alpha?: number;
  top_k?: number;
  teacher?: 'base' | 'current' | 'ema' | 'remote';
  steps?: number;
  beta?: number;
  tail?: boolean;
  sampled_token?: boolean;
  memory?: number;
  is_clip?: number;
  max_grad_norm?: number;
  kl_reg_weight?: number;
  teacher_top_k?: number;
  training?: Training;
}

type Training = { learning_rate?: number; alpha?: number; top_k?: number; teacher?: 'base' | 'current' | 'ema' | 'remote'; steps?: number; beta?: number; tail?: boolean; sampled_token?: boolean; memory?: number } & OriginalTraining;

/** The original CLaaS's training option names: mapped onto ours (top_k, beta) or passed to the step. */
interface OriginalTraining {
  is_clip?: number;
  max_grad_norm?: number;
  kl_reg_weight?: number;
  teacher_top_k?: number;
}
const ORIGINAL_TRAINING = ['is_clip', 'max_grad_norm', 'kl_reg_weight', 'teacher_top_k'] as const;

interface Orchestration {
  sleep_before?: boolean;
  wake_after?: boolean;
  wake_on_failure?: boolean;
  sleep_level?: number;
}

const trainingProps = {
  learning_rate: { type: 'number' },
  alpha: { type: 'number' },
  top_k: { type: 'integer' },
  teacher: { type: 'string', enum: ['base', 'current', 'ema', 'remote'] },
  steps: { type: 'integer' },
  beta: { type: 'number' },
  tail: { type: 'boolean' },
  sampled_token: { type: 'boolean' },
  memory: { type: 'integer', minimum: 0, maximum: 32 },
  is_clip: { type: 'number' },
  max_grad_norm: { type: 'number' },
  kl_reg_weight: { type: 'number' },
  teacher_top_k: { type: 'integer' },
} as const;

const orchestrationSchema = {
  type: 'object',
  additionalProperties: false,
  properties: { sleep_before: { type: 'boolean' }, wake_after: { type: 'boolean' }, wake_on_failure: { type: 'boolean' }, sleep_level: { type: 'integer', minimum: 1, maximum: 2 } },
} as const;

const itemSchema = {
  type: 'object',
  required: ['lora_id', 'feedback'],
  additionalProperties: false,
  properties: {
    lora_id: { type: 'string' },
    completion_id: { type: 'string', minLength: 1, maxLength: 200 },
    choice_index: { type: 'integer', minimum: 0, maximum: 15 },
    prompt: { type: 'string', minLength: 1 },
    messages: { type: 'array', minItems: 1 },
    response: { type: 'string' },
    feedback: { type: 'string', minLength: 1, maxLength: MAX_FEEDBACK_CHARS },
    ...trainingProps,
    // Unknown training options are refused rather than silently ignored.
    training: { type: 'object', additionalProperties: false, properties: trainingProps },
  },
} as const;

/** One of two names for an option: either, or both when they agree. */
function either<T>(where: string, ours: [string, T | undefined], original: [string, T | undefined]): T | undefined {
  if (ours[1] !== undefined && original[1] !== undefined && ours[1] !== original[1]) throw new InputError(`${where}: ${ours[0]} (${String(ours[1])}) and ${original[0]} (${String(original[1])}) disagree`);
  return ours[1] ?? original[1];
}

function toJob(b: ItemBody, i: number): NewJob {
  const where = `requests[${i}]`;
  checkAdapterId(b.lora_id);
  if (b.feedback.trim() === '') throw new InputError(`${where}.feedback is empty`);
  const hasCompletion = b.completion_id !== undefined;
  const hasRaw = b.prompt !== undefined || b.messages !== undefined;
  if (hasCompletion === hasRaw) throw new InputError(`${where}: give either completion_id, or prompt (or messages) with response`);
  if (hasRaw && b.response === undefined) throw new InputError(`${where}: response is required with prompt or messages`);
  const top = { learning_rate: b.learning_rate, alpha: b.alpha, top_k: b.top_k, teacher: b.teacher, steps: b.steps, beta: b.beta, tail: b.tail, sampled_token: b.sampled_token, memory: b.memory, is_clip: b.is_clip, max_grad_norm: b.max_grad_norm, kl_reg_weight: b.kl_reg_weight, teacher_top_k: b.teacher_top_k };
  const t: Training = { ...b.training, ...Object.fromEntries(Object.entries(top).filter(([, v]) => v !== undefined)) };
  const options: TrainingOptions = Object.fromEntries(
    Object.entries({
      learningRate: t.learning_rate,
      alpha: t.alpha,
      topK: either(where, ['top_k', t.top_k], ['teacher_top_k', t.teacher_top_k]),
      teacher: t.teacher,
      steps: t.steps,
      beta: either(where, ['beta', t.beta], ['kl_reg_weight', t.kl_reg_weight]),
      tail: t.tail,
      sampledToken: t.sampled_token,
      memory: t.memory,
      isClip: t.is_clip,
      maxGradNorm: t.max_grad_norm,
    }).filter(([, v]) => v !== undefined),
  );
  return {
    adapterId: b.lora_id,
    options,
    items: [
      {
        completionId: b.completion_id ?? null,
        choiceIndex: b.choice_index ?? 0,
        messages: hasRaw ? (b.messages ?? [{ role: 'user', content: b.prompt }]) : null,
        responseText: hasRaw ? b.response! : null,
        feedback: b.feedback,
      },
    ],
  };
}

/** Whether a body asks for the original CLaaS's synchronous answer. */
function isOriginal(body: ItemBody | { requests: ItemBody[]; orchestration?: Orchestration }): boolean {
  if ('orchestration' in body) return true;
  const items = 'requests' in body ? body.requests : [body];
  return items.some((it) => ORIGINAL_TRAINING.some((k) => it[k] !== undefined || it.training?.[k] !== undefined));
}

/**
 * The original's orchestration flags say how to treat vLLM around the update. Embedded serving has
 * nothing to put to sleep; with vLLM this server always frees it for the step (level 1) and wakes it
 * after, so a request asking otherwise is refused rather than ignored.
 */
function checkOrchestration(o: Orchestration | undefined, sleeps: boolean): void {
  if (!o || !sleeps) return;
  if (o.sleep_before === false || o.wake_after === false || o.wake_on_failure === false) throw new InputError('orchestration: this server always puts vLLM to sleep for an update and wakes it after (also after a failure)');
  if (o.sleep_level !== undefined && o.sleep_level !== 1) throw new InputError('orchestration.sleep_level: this server sleeps vLLM at level 1');
}

/** A finished job in the original CLaaS's feedback answer. */
function originalAnswer(job: JobRecord, sleeps: boolean, totalMs: number) {
  const result = (job.result ?? {}) as { phases_ms?: Record<string, number> };
  const phases = result.phases_ms ?? {};
  const ms = (x: number | undefined) => Math.round(x ?? 0);
  return {
    status: job.status === 'done' ? 'ok' : 'failed',
    request_id: job.id,
    lora_id: job.adapterId,
    distill_result: job.status === 'done' ? { lora_id: job.adapterId, metadata: job.result } : null,
    vllm: { slept: sleeps && job.status === 'done', woke: sleeps && job.status === 'done' },
    // This server keeps the record in its database; this is where to read it.
    feedback_log_path: `/v1/feedback/jobs/${job.id}`,
    timing_ms: { sleep: ms(phases.sleep), distill: ms(phases.step), save: ms(phases.save), wake: ms(phases.wake), logprobs: ms(phases.samples), total: ms(totalMs) },
    batch_size: job.items.length,
    ...(job.error ? { error: job.error } : {}),
  };
}

export const feedbackRoutes = (orchestrator: Orchestrator): FastifyPluginAsync =>
  async (app) => {
    app.post<{ Body: ItemBody | { requests: ItemBody[] } }>(
      '/v1/feedback',
      {
        config: { rate: 'feedback', owns: ['lora_id', 'completion_id'] },
        schema: {
          // The shape is decided first (a body with `requests` is a batch, and nothing else), then
          // validated strictly: no branch can accept a body another branch refused.
          body: {
            type: 'object',
            if: { required: ['requests'] },
            then: { required: ['requests'], additionalProperties: false, properties: { requests: { type: 'array', minItems: 1, maxItems: MAX_BATCH, items: itemSchema }, orchestration: orchestrationSchema } },
            else: itemSchema,
          },
          headers: { type: 'object', properties: { 'idempotency-key': { type: 'string', minLength: 1, maxLength: 200 }, prefer: { type: 'string', maxLength: 200 } } },
          response: { '4xx': errorSchema },
        },
      },
      async (request, reply) => {
        const body = request.body;
        const batch = 'requests' in body;
        const items = batch ? body.requests : [body as ItemBody];
        const wait = isOriginal(body) || /(^|[,;\s])wait\b/i.test(String(request.headers.prefer ?? ''));
        let jobs = items.map(toJob);
        // A reply this server gave, named by its text: train on the ids it sampled, not a re-tokenization.
        for (const job of jobs) {
          const it = job.items[0]!;
          const prompt = it.messages?.length === 1 ? (it.messages[0] as { content?: unknown }).content : undefined;
          if (it.responseText === null || typeof prompt !== 'string') continue;
          const stored = await orchestrator.storedReply(job.adapterId, prompt, it.responseText, request.principal?.tenant ?? null);
          if (stored) job.items[0] = { ...it, ...stored, messages: null, responseText: null };
        }
        if (wait) {
          // One update over all the items, as the original trains a request's batch in one step.
          const first = jobs[0]!;
          const same = JSON.stringify(first.options);
          for (const [i, job] of jobs.entries()) {
            if (job.adapterId !== first.adapterId) throw new InputError(`requests[${i}]: every item of a request answered when its update is done must name one lora_id (${first.adapterId}), got ${job.adapterId}`);
            if (JSON.stringify(job.options) !== same) throw new InputError(`requests[${i}]: every item of a request answered when its update is done must share one training config`);
          }
          checkOrchestration(batch ? (body as { orchestration?: Orchestration }).orchestration : undefined, orchestrator.sleepsServing);
          jobs = [{ ...first, items: jobs.flatMap((j) => j.items) }];
        }
        const given = request.headers['idempotency-key'] as string | undefined;
        // Keys are per tenant: another tenant's key names none of your jobs, and cannot claim yours.
        // A tenant name never holds "/", so the prefix is unambiguous (and text Postgres accepts, unlike NUL).
        const key = given === undefined ? undefined : `${request.principal?.tenant ?? ''}/${given}`;
        const t0 = performance.now();
        const { ids, repeated } = await orchestrator.submit(jobs, key, { now: wait });
        if (wait) {
          const [job] = await orchestrator.settled(ids);
          return reply.status(200).send(originalAnswer(job!, orchestrator.sleepsServing, performance.now() - t0));
        }
        const statuses = await Promise.all(ids.map(async (id) => ({ job_id: id, status: (await orchestrator.jobs.get(id))!.status })));
        return reply.status(repeated ? 200 : 202).send(batch ? { jobs: statuses } : statuses[0]!);
      },
    );
    app.get<{ Params: { id: string } }>('/v1/feedback/jobs/:id', { config: { owns: ['job'] }, schema: { params: { type: 'object', properties: { id: { type: 'string' } } }, response: { '4xx': errorSchema } } }, async (request) => {
      const job = await orchestrator.jobs.get(request.params.id);
      if (!job) throw new NotFoundError(`job ${request.params.id} does not exist`);
      return {
        job_id: job.id,
        lora_id: job.adapterId,
        status: job.status,
        created_at: job.createdAt,
        started_at: job.startedAt,
        finished_at: job.finishedAt,
        items: job.items.length,
        result: job.result,
        error: job.error,
      };
    });
  };
