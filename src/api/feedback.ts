// POST /v1/feedback: one item or {"requests": [...]}; stored durably before the 202 with job ids.
// GET /v1/feedback/jobs/:id: queued, running, done (version, metrics, guard) or failed (reason).
import type { FastifyPluginAsync } from 'fastify';
import { InputError, NotFoundError } from '../errors.js';
import type { FeedbackItem, TrainingOptions } from '../orchestrator/feedback-jobs.js';
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
  training?: { learning_rate?: number; alpha?: number; top_k?: number; teacher?: 'base' | 'current' | 'ema' | 'remote'; steps?: number; beta?: number; tail?: boolean; sampled_token?: boolean; memory?: number };
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

function toJob(b: ItemBody, i: number): { adapterId: string; options: TrainingOptions; items: FeedbackItem[] } {
  const where = `requests[${i}]`;
  checkAdapterId(b.lora_id);
  if (b.feedback.trim() === '') throw new InputError(`${where}.feedback is empty`);
  const hasCompletion = b.completion_id !== undefined;
  const hasRaw = b.prompt !== undefined || b.messages !== undefined;
  if (hasCompletion === hasRaw) throw new InputError(`${where}: give either completion_id, or prompt (or messages) with response`);
  if (hasRaw && b.response === undefined) throw new InputError(`${where}: response is required with prompt or messages`);
  const t = { ...b.training, ...Object.fromEntries(Object.entries({ learning_rate: b.learning_rate, alpha: b.alpha, top_k: b.top_k, teacher: b.teacher, steps: b.steps, beta: b.beta, tail: b.tail, sampled_token: b.sampled_token, memory: b.memory }).filter(([, v]) => v !== undefined)) };
  const options: TrainingOptions = Object.fromEntries(
    Object.entries({ learningRate: t.learning_rate, alpha: t.alpha, topK: t.top_k, teacher: t.teacher, steps: t.steps, beta: t.beta, tail: t.tail, sampledToken: t.sampled_token, memory: t.memory }).filter(([, v]) => v !== undefined),
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

export const feedbackRoutes = (orchestrator: Orchestrator): FastifyPluginAsync =>
  async (app) => {
    app.post<{ Body: ItemBody | { requests: ItemBody[] } }>(
      '/v1/feedback',
      {
        config: { rate: 'feedback' },
        schema: {
          // The shape is decided first (a body with `requests` is a batch, and nothing else), then
          // validated strictly: no branch can accept a body another branch refused.
          body: {
            type: 'object',
            if: { required: ['requests'] },
            then: { required: ['requests'], additionalProperties: false, properties: { requests: { type: 'array', minItems: 1, maxItems: MAX_BATCH, items: itemSchema } } },
            else: itemSchema,
          },
          headers: { type: 'object', properties: { 'idempotency-key': { type: 'string', minLength: 1, maxLength: 200 } } },
          response: { '4xx': errorSchema },
        },
      },
      async (request, reply) => {
        const body = request.body;
        const batch = 'requests' in body;
        const items = batch ? body.requests : [body as ItemBody];
        const jobs = items.map(toJob);
        const given = request.headers['idempotency-key'] as string | undefined;
        // Keys are per tenant: another tenant's key names none of your jobs, and cannot claim yours.
        const key = given === undefined ? undefined : `${request.principal?.tenant ?? ''}\u0000${given}`;
        const { ids, repeated } = await orchestrator.submit(jobs, key);
        const status = (id: string) => ({ job_id: id, status: orchestrator.jobs.get(id)!.status });
        return reply.status(repeated ? 200 : 202).send(batch ? { jobs: ids.map(status) } : status(ids[0]!));
      },
    );
    app.get<{ Params: { id: string } }>('/v1/feedback/jobs/:id', { schema: { params: { type: 'object', properties: { id: { type: 'string' } } }, response: { '4xx': errorSchema } } }, async (request) => {
      const job = orchestrator.jobs.get(request.params.id);
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
