// /v1/lora: create (POST /v1/lora/init), list, get, delete and roll back adapters. The id is
// "tenant/name"; clients chat with that id as the model and get its current version.
import type { FastifyPluginAsync } from 'fastify';
import type { AdapterInfo, AdapterRegistry } from '../orchestrator/adapters.js';
import { versionDir } from '../orchestrator/adapter-ids.js';
import { errorSchema } from './schemas.js';

export function adapterJson(a: AdapterInfo) {
  return {
    lora_id: a.id,
    created_at: a.createdAt,
    rank: a.rank,
    alpha: a.alpha,
    target_modules: a.targetModules,
    current_version: a.currentVersion,
    served_as: `${a.id}@${versionDir(a.currentVersion)}`,
    versions: a.versions.map((v) => ({ version: v.version, created_at: v.createdAt, parent_version: v.parentVersion, status: v.status, reason: v.reason, metrics: v.metrics, job_id: v.jobId })),
  };
}

const idParams = { type: 'object', required: ['tenant', 'name'], properties: { tenant: { type: 'string' }, name: { type: 'string' } } } as const;

export const loraRoutes = (registry: AdapterRegistry): FastifyPluginAsync =>
  async (app) => {
    app.post<{ Body: { lora_id: string; rank?: number; alpha?: number; target_modules?: string[] } }>(
      '/v1/lora/init',
      {
        schema: {
          body: {
            type: 'object',
            required: ['lora_id'],
            properties: {
              lora_id: { type: 'string', minLength: 3, maxLength: 129 },
              rank: { type: 'integer', minimum: 1, maximum: 256 },
              alpha: { type: 'number', exclusiveMinimum: 0, maximum: 4096 },
              target_modules: { type: 'array', minItems: 1, maxItems: 7, items: { type: 'string' } },
            },
          },
          response: { '4xx': errorSchema },
        },
      },
      async (request, reply) => {
        const b = request.body;
        const info = await registry.create(b.lora_id, { rank: b.rank, alpha: b.alpha, targetModules: b.target_modules });
        return reply.status(201).send(adapterJson(info));
      },
    );
    app.get('/v1/lora', { schema: { response: { '4xx': errorSchema } } }, async () => ({ data: registry.list().map(adapterJson) }));
    app.get<{ Params: { tenant: string; name: string } }>('/v1/lora/:tenant/:name', { schema: { params: idParams, response: { '4xx': errorSchema } } }, async (request) =>
      adapterJson(registry.get(`${request.params.tenant}/${request.params.name}`)),
    );
    app.delete<{ Params: { tenant: string; name: string } }>('/v1/lora/:tenant/:name', { schema: { params: idParams, response: { '4xx': errorSchema } } }, async (request) => {
      const id = `${request.params.tenant}/${request.params.name}`;
      await registry.delete(id);
      return { lora_id: id, deleted: true };
    });
    app.post<{ Params: { tenant: string; name: string }; Body: { version: number } }>(
      '/v1/lora/:tenant/:name/rollback',
      { schema: { params: idParams, body: { type: 'object', required: ['version'], properties: { version: { type: 'integer', minimum: 1 } } }, response: { '4xx': errorSchema } } },
      async (request) => {
        const id = `${request.params.tenant}/${request.params.name}`;
        await registry.promote(id, request.body.version);
        return adapterJson(registry.get(id));
      },
    );
  };
