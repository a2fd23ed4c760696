// The dashboard: GET /v1/dashboard (the page, assets inline, no CDN) and GET /v1/dashboard/data (what
// it shows: adapters with versions, metrics and guard decisions; recent feedback jobs with each
// sample's conversation, reply, feedback and teacher context; eval runs; the mode lock). Admin only
// when keys exist; a browser passes its key once as ?key=… (the page then sends it as a header).
import type { FastifyPluginAsync } from 'fastify';
import { DASHBOARD_HTML } from '../dashboard/page.js';
import type { ChatMessage } from '../model/chat-template.js';
import type { Orchestrator } from '../orchestrator/orchestrator.js';
import type { InferenceService } from '../serve/inference.js';
import type { FeedbackItem, JobRecord } from '../store/jobs.js';
import { teacherFeedback, teacherTexts } from '../train/hindsight.js';
import { adapterJson } from './lora.js';
import { errorSchema } from './schemas.js';

export const dashboardRoutes = (service: InferenceService, orchestrator: Orchestrator): FastifyPluginAsync =>
  async (app) => {
    app.get('/v1/dashboard', { config: { access: 'admin' }, schema: { querystring: { type: 'object', additionalProperties: false, properties: { key: { type: 'string' } } } } }, async (_request, reply) =>
      reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').header('referrer-policy', 'no-referrer').send(DASHBOARD_HTML),
    );

    app.get<{ Querystring: { jobs?: string } }>(
      '/v1/dashboard/data',
      { config: { access: 'admin' }, schema: { querystring: { type: 'object', additionalProperties: false, properties: { jobs: { type: 'string', pattern: '^[1-9][0-9]{0,2}$' } } }, response: { '4xx': errorSchema } } },
      async (request) => {
        const sample = async (it: FeedbackItem, memory: string[]) => {
          const record = it.completionId ? await service.store.completions.get(it.completionId) : undefined;
          const messages = (record ? (record.request as { messages?: ChatMessage[] }).messages : (it.messages as ChatMessage[] | null)) ?? [];
          const reply = record ? (record.choices[it.choiceIndex]?.text ?? '') : (it.responseText ?? '');
          let teacher: string | null = null;
          try {
            teacher = teacherTexts(service.template, messages, teacherFeedback(memory, it.feedback), { enableThinking: record?.enableThinking ?? false }).teacherText;
          } catch {
            teacher = null;
          }
          return { completion_id: it.completionId, served_by: record ? `${record.adapter ?? record.model}@${record.adapterVersion ?? 'base'}` : null, messages, reply, feedback: it.feedback, teacher_context: teacher };
        };
        const recent = (await Promise.all((await orchestrator.jobs.recentIds(Number(request.query.jobs ?? '50'))).map((id) => orchestrator.jobs.get(id)))).filter((j): j is JobRecord => j !== undefined);
        const jobs = await Promise.all(
          recent.map(async (j) => ({
            id: j.id,
            lora_id: j.adapterId,
            status: j.status,
            created_at: j.createdAt,
            started_at: j.startedAt,
            finished_at: j.finishedAt,
            options: j.options,
            error: j.error,
            result: j.result,
            samples: await Promise.all(j.items.map((it) => sample(it, (j.result?.memory as string[] | undefined) ?? []))),
          })),
        );
        return {
          now: Date.now(),
          model: service.modelName,
          mode: orchestrator.lock.state,
          transitions: orchestrator.lock.transitions.slice(-20),
          adapters: (await orchestrator.registry.list()).map(adapterJson),
          jobs,
          eval_runs: (await service.store.evalRuns.list('all', 20)).map((r) => ({ id: r.id, created_at: r.createdAt, summary: r.summary })),
        };
      },
    );
  };
