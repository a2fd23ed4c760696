// Keys (admin): create, list, revoke. Data deletion: one completion record by id, or everything a
// tenant's keys asked and the feedback text of its finished jobs (a user key: its own tenant only).
import type { FastifyPluginAsync } from 'fastify';
import type { ApiKeys, KeyInfo, Role } from '../auth/keys.js';
import { NotFoundError } from '../errors.js';
import type { CompletionStore } from '../store/completions.js';
import type { JobStore } from '../store/jobs.js';
import { errorSchema } from './schemas.js';

const keyJson = (k: KeyInfo) => ({ id: k.id, tenant: k.tenant, role: k.role, name: k.name, created_at: k.createdAt, revoked_at: k.revokedAt });
const keySchema = {
  type: 'object',
  properties: { id: { type: 'string' }, key: { type: 'string' }, tenant: { type: 'string' }, role: { type: 'string' }, name: { type: ['string', 'null'] }, created_at: { type: 'integer' }, revoked_at: { type: ['integer', 'null'] } },
} as const;

export const adminRoutes = (keys: ApiKeys, completions: CompletionStore, jobs: JobStore | null): FastifyPluginAsync =>
  async (app) => {
    app.post<{ Body: { tenant: string; role: Role; name?: string } }>(
      '/v1/admin/keys',
      {
        config: { access: 'admin' },
        schema: {
          body: { type: 'object', required: ['tenant', 'role'], additionalProperties: false, properties: { tenant: { type: 'string', minLength: 1, maxLength: 64 }, role: { type: 'string', enum: ['user', 'admin'] }, name: { type: 'string', maxLength: 200 } } },
          response: { 201: keySchema, '4xx': errorSchema },
        },
      },
      async (request, reply) => {
        const { key, info } = await keys.create(request.body);
        request.log.info({ keyId: info.id, tenant: info.tenant, role: info.role }, 'api key created');
        return reply.status(201).send({ ...keyJson(info), key });
      },
    );
    app.get('/v1/admin/keys', { config: { access: 'admin' }, schema: { response: { 200: { type: 'object', properties: { data: { type: 'array', items: keySchema } } }, '4xx': errorSchema } } }, async () => ({
      data: (await keys.list()).map(keyJson),
    }));
    app.delete<{ Params: { id: string } }>(
      '/v1/admin/keys/:id',
      { config: { access: 'admin' }, schema: { params: { type: 'object', properties: { id: { type: 'string', pattern: '^[0-9a-f]{12}$' } } }, response: { 200: keySchema, '4xx': errorSchema } } },
      async (request) => {
        const info = await keys.revoke(request.params.id);
        request.log.info({ keyId: info.id }, 'api key revoked');
        return keyJson(info);
      },
    );
    app.delete<{ Params: { id: string } }>(
      '/v1/completions/:id',
      { config: { owns: ['record'] }, schema: { params: { type: 'object', properties: { id: { type: 'string', minLength: 1, maxLength: 200 } } }, response: { '4xx': errorSchema } } },
      async (request) => {
        if (!(await completions.delete(request.params.id))) throw new NotFoundError(`completion ${request.params.id} does not exist`);
        return { id: request.params.id, deleted: true };
      },
    );
    app.delete<{ Params: { tenant: string } }>(
      '/v1/tenants/:tenant/data',
      { config: { owns: ['tenant'] }, schema: { params: { type: 'object', properties: { tenant: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' } } }, response: { '4xx': errorSchema } } },
      async (request) => {
        const tenant = request.params.tenant;
        const deleted = await completions.deleteByTenant(tenant);
        const feedbackItems = jobs ? await jobs.purgeFeedback({ before: Date.now() + 1, tenant }) : 0;
        request.log.info({ tenant, completions: deleted, feedbackItems }, 'tenant data deleted');
        return { tenant, deleted: { completions: deleted, feedback_items: feedbackItems } };
      },
    );
  };
