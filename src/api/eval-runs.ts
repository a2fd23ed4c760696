// Eval runs: `claas eval` posts its summary here so the dashboard can show what was learned; a key
// sees its own tenant's runs (the admin sees all). Each tenant keeps its newest MAX_RUNS, so one
// tenant's posts never push out another's, and what the dashboard reads is validated on the way in.
import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsync } from 'fastify';
import { inTransaction, prepare, type Db } from '../store/db.js';
import { errorSchema } from './schemas.js';

/** Runs kept per tenant (and listed at most). */
export const MAX_RUNS = 100;

export const evalRunRoutes = (db: Db): FastifyPluginAsync =>
  async (app) => {
    const insert = prepare(db, 'INSERT INTO eval_runs (id, created_at, tenant, summary_json) VALUES (?, ?, ?, ?)');
    const trim = prepare(db, 'DELETE FROM eval_runs WHERE tenant IS ? AND id NOT IN (SELECT id FROM eval_runs WHERE tenant IS ? ORDER BY created_at DESC, rowid DESC LIMIT ?)');
    const all = prepare(db, 'SELECT * FROM eval_runs ORDER BY created_at DESC, rowid DESC LIMIT ?');
    const mine = prepare(db, 'SELECT * FROM eval_runs WHERE tenant IS ? ORDER BY created_at DESC, rowid DESC LIMIT ?');
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
        const id = `eval-${randomUUID()}`;
        const tenant = request.principal.tenant;
        inTransaction(db, () => {
          insert.run(id, Date.now(), tenant, JSON.stringify(request.body));
          trim.run(tenant, tenant, MAX_RUNS);
        });
        return reply.status(201).send({ id });
      },
    );
    app.get('/v1/eval/runs', { config: { owns: ['own-data'] }, schema: { response: { '4xx': errorSchema } } }, async (request) => ({
      data: ((request.principal.admin ? all.all(MAX_RUNS) : mine.all(request.principal.tenant, MAX_RUNS)) as { id: string; created_at: number; tenant: string | null; summary_json: string }[])
        .map((r) => ({ id: r.id, created_at: r.created_at, tenant: r.tenant, summary: JSON.parse(r.summary_json) as unknown })),
    }));
  };
