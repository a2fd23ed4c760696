// /v1/lora: create (POST /v1/lora/init), list, get, delete and roll back adapters. The id is
// "tenant/name"; clients chat with that id as the model and get its current version.
import type { FastifyPluginAsync } from 'fastify';
import type { AdapterInfo, AdapterRegistry } from '../orchestrator/adapters.js';
import { versionDir } from '../orchestrator/adapter-ids.js';
import { mayUseAdapter } from './access.js';
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
    app.post<{ Body: { lora_id: string; rank?: number; alpha?: number; target_modules?: string[]; seed?: number } }>(
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
              // Fixes the initialization of A (reproducible experiments); random when absent.
              seed: { type: 'integer', minimum: 0, maximum: 4294967295 },
            },
          },
          response: { '4xx': errorSchema },
        },
      },
      async (request, reply) => {
        const b = request.body;
        const info = await registry.create(b.lora_id, { rank: b.rank, alpha: b.alpha, targetModules: b.target_modules, seed: b.seed });
        return reply.status(201).send(adapterJson(info));
      },
    );
    app.get('/v1/lora', { schema: { response: { '4xx': errorSchema } } }, async (request) => ({ data: registry.list().filter((a) => mayUseAdapter(request.principal, a.id)).map(adapterJson) }));
    app.get<{ Params: { tenant: string; name: string } }>('/v1/lora/:tenant/:name', { schema: { params: idParams, response: { '4xx': errorSchema } } }, async (request) =>
      adapterJson(registry.get(`${request.params.tenant}/${request.params.name}`)),
    );
    app.delete<{ Params: { tenant: string; name: string } }>('/v1/lora/:tenant/:name', { schema: { params: idParams, response: { '4xx': errorSchema } } }, async (request) => {
      const id = `${request.params.tenant}/${request.params.name}`;
      await registry.delete(id);
      return { lora_id: id, deleted: true };
    });
    app.get<{ Params: { tenant: string; name: string }; Querystring: { version?: string } }>(
      '/v1/lora/:tenant/:name/export',
      { schema: { params: idParams, querystring: { type: 'object', properties: { version: { type: 'string', pattern: '^[1-9][0-9]{0,8}$' } } }, response: { '4xx': errorSchema } } },
      async (request, reply) => {
        const version = request.query.version === undefined ? undefined : Number(request.query.version);
        const { stream, filename } = registry.exportVersion(`${request.params.tenant}/${request.params.name}`, version);
        return reply.type('application/gzip').header('content-disposition', `attachment; filename="${filename}"`).send(stream);
      },
    );
    // Import takes the archive as the raw body (application/gzip or application/octet-stream).
    app.register(async (scope) => {
      for (const type of ['application/gzip', 'application/x-gzip', 'application/octet-stream']) {
        scope.addContentTypeParser(type, { parseAs: 'buffer', bodyLimit: 1024 * 1024 * 1024 }, (_req, body, done) => done(null, body));
      }
      scope.post<{ Querystring: { lora_id: string }; Body: Buffer }>(
        '/v1/lora/import',
        // Counted against the key's feedback rate: an import is training-sized work.
        { bodyLimit: 1024 * 1024 * 1024, config: { rate: 'feedback' }, schema: { querystring: { type: 'object', required: ['lora_id'], properties: { lora_id: { type: 'string' } } }, response: { '4xx': errorSchema } } },
        async (request, reply) => {
          if (!Buffer.isBuffer(request.body)) return reply.status(415).send({ error: { message: 'send the .tar.gz as the body with content-type application/gzip', type: 'invalid_request_error', param: null, code: null } });
          return reply.status(201).send(adapterJson(await registry.importArchive(request.query.lora_id, request.body)));
        },
      );
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
