// Eval runs: `claas eval` posts its summary here so the dashboard can show what was learned; a key
// sees its own tenant's runs (the admin sees all). Each tenant keeps its newest MAX_RUNS, so one
// tenant's posts never push out another's, and what the dashboard reads is validated on the way in.
import type { FastifyPluginAsync } from 'fastify';
import type { EvalRunStore } from '../store/eval-runs.js';
import { errorSchema } from './schemas.js';

/** Runs kept per tenant (and listed at most). */
export const MAX_RUNS = 100;

export const evalRunRoutes = (runs: EvalRunStore): FastifyPluginAsync =>
  async (app) => {
    const number = { type: ['number', 'null'] } as const;
    const styleResult = { type: 'object', required: ['before', 'after'], properties: { before: number, after: number, events: { type: ['integer', 'null'], minimum: 0 } } } as const;
    app.post<{ Body: Record<string, unknown> }>(
      '/v1/eval/runs',
      {
        bodyLimit: 1024 * 1024,
        config: { owns: ['own-data'] },
        schema: {
          body: {
            type: 'object',
            required: ['styles'],
            properties: {
              styles: { type: 'object', maxProperties: 32, propertyNames: { type: 'string', maxLength: 64 }, additionalProperties: styleResult },
              seed: { type: 'integer' },
              retention_delta: number,
              control_delta: number,
            },
          },
          response: { '4xx': errorSchema },
        },
      },
      async (request, reply) => {
        const id = await runs.add(request.principal.tenant, request.body, MAX_RUNS);
        return reply.status(201).send({ id });
      },
    );
    app.get('/v1/eval/runs', { config: { owns: ['own-data'] }, schema: { response: { '4xx': errorSchema } } }, async (request) => ({
      data: (await runs.list(request.principal.admin ? 'all' : { tenant: request.principal.tenant }, MAX_RUNS)).map((r) => ({ id: r.id, created_at: r.createdAt, tenant: r.tenant, summary: r.summary })),
    }));
  };
