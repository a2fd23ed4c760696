// GET /healthz (public: liveness only), GET /v1/admin/status (admin: what is served, and in vLLM mode
// the upstream's address and its adapter events) and GET /metrics (admin: Prometheus text format).
import type { FastifyPluginAsync } from 'fastify';
import type { InferenceService } from '../serve/inference.js';
import { VllmGenerator } from '../serve/vllm-generator.js';

export interface RequestCounters {
  requests: Map<string, number>;
}

export const healthRoutes = (service: InferenceService, counters: RequestCounters): FastifyPluginAsync =>
  async (app) => {
    const statusSchema = {
      type: 'object',
      properties: {
        status: { type: 'string' },
        model: { type: 'string' },
        backend: { type: 'string' },
        serving: { type: 'string', enum: ['embedded', 'vllm'] },
        active_generations: { type: 'integer' },
        vllm: {
          type: 'object',
          properties: {
            url: { type: 'string' },
            base_model: { type: 'string' },
            admitting: { type: 'boolean' },
            events: { type: 'array', items: { type: 'object', properties: { at: { type: 'integer' }, event: { type: 'string' } } } },
          },
        },
      },
    };
    // Public, so it says nothing a stranger could use: adapter names and the upstream's address are
    // behind the admin key.
    app.get('/healthz', { config: { access: 'public' }, schema: { response: { 200: { type: 'object', properties: { status: { type: 'string' }, ready: { type: 'boolean' } } } } } }, async () => ({ status: 'ok', ready: true }));

    app.get('/v1/admin/status', { config: { access: 'admin' }, schema: { response: { 200: statusSchema } } }, async () => {
      const g = service.generator;
      return {
        status: 'ok',
        model: service.modelName,
        backend: service.engine.backend,
        serving: g.kind,
        active_generations: g.size,
        ...(g instanceof VllmGenerator ? { vllm: { url: g.client.baseUrl, base_model: g.baseModel, admitting: g.admitting, events: g.events.slice(-50) } } : {}),
      };
    });

    app.get('/metrics', { config: { access: 'admin' }, schema: { response: { 200: { type: 'string' } } } }, async (_request, reply) => {
      const s = service.generator.stats;
      const r = service.adapters.stats();
      const mem = process.memoryUsage();
      const lines = [
        '# HELP claas_http_requests_total HTTP requests by route and status.',
        '# TYPE claas_http_requests_total counter',
        ...[...counters.requests].map(([key, n]) => {
          const [route, status] = key.split(' ');
          return `claas_http_requests_total{route="${route}",status="${status}"} ${n}`;
        }),
        '# HELP claas_generated_tokens_total Tokens sampled.',
        '# TYPE claas_generated_tokens_total counter',
        `claas_generated_tokens_total ${s.generatedTokens}`,
        '# HELP claas_prompt_tokens_total Prompt tokens received.',
        '# TYPE claas_prompt_tokens_total counter',
        `claas_prompt_tokens_total ${s.promptTokens}`,
        '# HELP claas_engine_rounds_total Batched engine calls made by the scheduler.',
        '# TYPE claas_engine_rounds_total counter',
        `claas_engine_rounds_total ${s.rounds}`,
        '# HELP claas_batched_sequences_total Sequences advanced, summed over engine calls.',
        '# TYPE claas_batched_sequences_total counter',
        `claas_batched_sequences_total ${s.batchedSequences}`,
        '# HELP claas_active_generations Generations in progress.',
        '# TYPE claas_active_generations gauge',
        `claas_active_generations ${service.generator.size}`,
        '# HELP claas_adapters_resident Adapters loaded in the engine (the rest load when asked for).',
        '# TYPE claas_adapters_resident gauge',
        `claas_adapters_resident ${r.resident}`,
        '# HELP claas_adapters_resident_bytes Bytes the resident adapters hold.',
        '# TYPE claas_adapters_resident_bytes gauge',
        `claas_adapters_resident_bytes ${r.residentBytes}`,
        ...(r.budgetBytes === null ? [] : ['# HELP claas_adapter_memory_budget_bytes --adapter-memory.', '# TYPE claas_adapter_memory_budget_bytes gauge', `claas_adapter_memory_budget_bytes ${r.budgetBytes}`]),
        '# HELP claas_adapter_loads_total Adapters loaded again from their version folder after eviction.',
        '# TYPE claas_adapter_loads_total counter',
        `claas_adapter_loads_total ${r.loads}`,
        '# HELP claas_adapter_evictions_total Adapters freed to keep within --adapter-memory.',
        '# TYPE claas_adapter_evictions_total counter',
        `claas_adapter_evictions_total ${r.evictions}`,
        '# HELP process_resident_memory_bytes Resident memory.',
        '# TYPE process_resident_memory_bytes gauge',
        `process_resident_memory_bytes ${mem.rss}`,
      ];
      return reply.type('text/plain; version=0.0.4').send(lines.join('\n') + '\n');
    });
  };
