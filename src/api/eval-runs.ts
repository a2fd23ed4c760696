// Eval runs: `claas eval` posts its summary here so the dashboard can show what was learned; a key
// sees its own tenant's runs (the admin sees all).
import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsync } from 'fastify';
import { prepare, type Db } from '../store/db.js';
import { errorSchema } from './schemas.js';

export const evalRunRoutes = (db: Db): FastifyPluginAsync =>
  async (app) => {
    const insert = prepare(db, 'INSERT INTO eval_runs (id, created_at, tenant, summary_json) VALUES (?, ?, ?, ?)');
    const all = prepare(db, 'SELECT * FROM eval_runs ORDER BY created_at DESC LIMIT 100');
    app.post<{ Body: Record<string, unknown> }>(
      '/v1/eval/runs',
      { bodyLimit: 1024 * 1024, schema: { body: { type: 'object', required: ['styles'], properties: { styles: { type: 'object' }, seed: { type: 'integer' } } }, response: { '4xx': errorSchema } } },
      async (request, reply) => {
        const id = `eval-${randomUUID()}`;
        insert.run(id, Date.now(), request.principal.tenant, JSON.stringify(request.body));
        return reply.status(201).send({ id });
      },
    );
    app.get('/v1/eval/runs', { schema: { response: { '4xx': errorSchema } } }, async (request) => ({
      data: (all.all() as { id: string; created_at: number; tenant: string | null; summary_json: string }[])
        .filter((r) => request.principal.admin || r.tenant === request.principal.tenant)
        .map((r) => ({ id: r.id, created_at: r.created_at, tenant: r.tenant, summary: JSON.parse(r.summary_json) as unknown })),
    }));
  };
