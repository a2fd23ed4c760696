// /v1/lora: create (POST /v1/lora/init), list, get, delete and roll back adapters. The id is
// "tenant/name"; clients chat with that id as the model and get its current version. Clients of the
// original CLaaS service send its field names (lora_r, lora_alpha, base_model) and read `loras`.
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import type { AdapterRegistry } from '../orchestrator/adapters.js';
import type { AdapterInfo } from '../store/adapters.js';
import { versionDir } from '../orchestrator/adapter-ids.js';
import { mayUseAdapter } from './access.js';
import { openAiError } from './errors.js';
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

const idParams = { type: 'object', required: ['tenant', 'name'], additionalProperties: false, properties: { tenant: { type: 'string' }, name: { type: 'string' } } } as const;

export const exportQuery = { type: 'object', additionalProperties: false, properties: { version: { type: 'string', pattern: '^[1-9][0-9]{0,8}$' } } } as const;
export const rollbackBody = { type: 'object', required: ['version'], additionalProperties: false, properties: { version: { type: 'integer', minimum: 1 } } } as const;

/** The /v1/lora/{id} routes' work, shared with their percent-encoded forms (compat-lora.ts). */
export async function deleteAdapter(registry: AdapterRegistry, id: string) {
  await registry.delete(id);
  return { lora_id: id, deleted: true };
}

export async function sendExport(registry: AdapterRegistry, id: string, version: string | undefined, reply: FastifyReply) {
  const { stream, filename } = await registry.exportVersion(id, version === undefined ? undefined : Number(version));
  return reply.type('application/gzip').header('content-disposition', `attachment; filename="${filename}"`).send(stream);
}

export async function rollback(registry: AdapterRegistry, id: string, version: number) {
  await registry.promote(id, version);
  return adapterJson(await registry.get(id));
}

/**
 * Whether a client's base_model names the model served here. The original service's clients name
 * it as on Hugging Face ("Qwen/Qwen3-8B") while this server serves a folder ("Qwen3-8B").
 */
function sameBaseModel(asked: string, served: string): boolean {
  const last = (s: string) => s.slice(s.lastIndexOf('/') + 1);
  return asked === served || last(asked) === last(served);
}

interface InitBody {
  lora_id: string;
  rank?: number;
  alpha?: number;
  lora_r?: number;
  lora_alpha?: number;
  base_model?: string;
  target_modules?: string[] | null;
  seed?: number;
}

export const loraRoutes = (registry: AdapterRegistry): FastifyPluginAsync =>
  async (app) => {
    app.post<{ Body: InitBody }>(
      '/v1/lora/init',
      {
        config: { owns: ['lora_id'] },
        schema: {
          body: {
            type: 'object',
            required: ['lora_id'],
            additionalProperties: false,
            properties: {
              lora_id: { type: 'string', minLength: 3, maxLength: 129 },
              rank: { type: 'integer', minimum: 1, maximum: 256 },
              alpha: { type: 'number', exclusiveMinimum: 0, maximum: 4096 },
              // The original service's names and ranges for rank and alpha.
              lora_r: { type: 'integer', minimum: 4, maximum: 128 },
              lora_alpha: { type: 'integer', minimum: 8, maximum: 256 },
              base_model: { type: 'string', minLength: 1, maxLength: 256 },
              // null: the original's clients send it for "the default modules".
              target_modules: { type: ['array', 'null'], minItems: 1, maxItems: 7, items: { type: 'string' } },
              // Fixes the initialization of A (reproducible experiments); random when absent.
              seed: { type: 'integer', minimum: 0, maximum: 4294967295 },
            },
          },
          response: { '4xx': errorSchema },
        },
      },
      async (request, reply) => {
        const b = request.body;
        for (const [ours, theirs] of [['rank', 'lora_r'], ['alpha', 'lora_alpha']] as const) {
          if (b[ours] !== undefined && b[theirs] !== undefined && b[ours] !== b[theirs]) {
            return reply.status(400).send(openAiError(`${ours} (${b[ours]}) and ${theirs} (${b[theirs]}) are the same setting and differ: send one of them`, 'invalid_request_error', theirs, 'invalid_body'));
          }
        }
        if (b.base_model !== undefined && !sameBaseModel(b.base_model, registry.baseModel)) {
          return reply.status(400).send(openAiError(`This server serves the base model ${JSON.stringify(registry.baseModel)}, not ${JSON.stringify(b.base_model)}.`, 'invalid_request_error', 'base_model', 'invalid_body'));
        }
        const info = await registry.create(b.lora_id, { rank: b.rank ?? b.lora_r, alpha: b.alpha ?? b.lora_alpha, targetModules: b.target_modules ?? undefined, seed: b.seed });
        return reply.status(201).send(adapterJson(info));
      },
    );
    app.get<{ Querystring: { prefix?: string } }>(
      '/v1/lora',
      { config: { owns: ['own-data'] }, schema: { querystring: { type: 'object', additionalProperties: false, properties: { prefix: { type: 'string', maxLength: 129 } } }, response: { '4xx': errorSchema } } },
      async (request) => {
        const prefix = request.query.prefix ?? '';
        const visible = (await registry.list()).filter((a) => mayUseAdapter(request.principal, a.id) && a.id.startsWith(prefix));
        // `loras` (ids only) is the original service's answer; `data` is this server's.
        return { data: visible.map(adapterJson), loras: visible.map((a) => a.id) };
      },
    );
    app.get<{ Params: { tenant: string; name: string } }>('/v1/lora/:tenant/:name', { config: { owns: ['adapter'] }, schema: { params: idParams, response: { '4xx': errorSchema } } }, async (request) =>
      adapterJson(await registry.get(`${request.params.tenant}/${request.params.name}`)),
    );
    app.delete<{ Params: { tenant: string; name: string } }>('/v1/lora/:tenant/:name', { config: { owns: ['adapter'] }, schema: { params: idParams, response: { '4xx': errorSchema } } }, async (request) =>
      deleteAdapter(registry, `${request.params.tenant}/${request.params.name}`),
    );
    app.get<{ Params: { tenant: string; name: string }; Querystring: { version?: string } }>(
      '/v1/lora/:tenant/:name/export',
      { config: { owns: ['adapter'] }, schema: { params: idParams, querystring: exportQuery, response: { '4xx': errorSchema } } },
      async (request, reply) => sendExport(registry, `${request.params.tenant}/${request.params.name}`, request.query.version, reply),
    );
    // Import takes the archive as the raw body (application/gzip or application/octet-stream).
    app.register(async (scope) => {
      for (const type of ['application/gzip', 'application/x-gzip', 'application/octet-stream']) {
        scope.addContentTypeParser(type, { parseAs: 'buffer', bodyLimit: 1024 * 1024 * 1024 }, (_req, body, done) => done(null, body));
      }
      scope.post<{ Querystring: { lora_id: string }; Body: Buffer }>(
        '/v1/lora/import',
        // Counted against the key's feedback rate: an import is training-sized work.
        { bodyLimit: 1024 * 1024 * 1024, config: { rate: 'feedback', owns: ['lora_id'] }, schema: { querystring: { type: 'object', required: ['lora_id'], additionalProperties: false, properties: { lora_id: { type: 'string' } } }, response: { '4xx': errorSchema } } },
        async (request, reply) => {
          if (!Buffer.isBuffer(request.body)) return reply.status(415).send({ error: { message: 'send the .tar.gz as the body with content-type application/gzip', type: 'invalid_request_error', param: null, code: null } });
          return reply.status(201).send(adapterJson(await registry.importArchive(request.query.lora_id, request.body)));
        },
      );
    });
    app.post<{ Params: { tenant: string; name: string }; Body: { version: number } }>(
      '/v1/lora/:tenant/:name/rollback',
      { config: { owns: ['adapter'] }, schema: { params: idParams, body: rollbackBody, response: { '4xx': errorSchema } } },
      async (request) => rollback(registry, `${request.params.tenant}/${request.params.name}`, request.body.version),
    );
  };
