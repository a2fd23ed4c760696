// The original CLaaS service's adapter and health routes, on top of this server's own (see README,
// "Coming from CLaaS"): GET /v1/health, DELETE /v1/lora?lora_id=, GET /v1/lora/export?lora_id= (a
// ZIP of the PEFT folder), and /v1/lora/{id} with the id's "/" percent-encoded ("ana%2Fassistant"),
// as the original's clients build their addresses.
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { NotFoundError } from '../errors.js';
import type { AdapterRegistry } from '../orchestrator/adapters.js';
import { adapterJson, deleteAdapter, exportQuery, rollback, rollbackBody, sendExport } from './lora.js';
import { errorSchema } from './schemas.js';
import { zipStream, type ZipEntry } from './zip.js';

const oneId = { type: 'object', required: ['id'], additionalProperties: false, properties: { id: { type: 'string', minLength: 1, maxLength: 129 } } } as const;
const byLoraId = (extra: Record<string, unknown> = {}) =>
  ({ type: 'object', required: ['lora_id'], additionalProperties: false, properties: { lora_id: { type: 'string', minLength: 1, maxLength: 129 }, ...extra } }) as const;

const healthSchema = {
  type: 'object',
  required: ['status', 'worker'],
  additionalProperties: false,
  properties: {
    status: { type: 'string', enum: ['healthy', 'degraded'] },
    worker: { type: ['object', 'null'], required: ['status', 'error'], additionalProperties: false, properties: { status: { type: 'string' }, error: { type: ['string', 'null'] } } },
  },
} as const;

/**
 * The adapter a /v1/lora/{id}... address names. "/v1/lora/ana/export" was, and stays, the adapter
 * "ana/export"; only an id that holds its own "/" is an encoded one.
 */
function addressedId(request: FastifyRequest): string {
  const id = (request.params as { id: string }).id;
  return id.includes('/') || !request.routeOptions.url?.endsWith('/export') ? id : `${id}/export`;
}

/** A version's files, opened now: a deletion while the archive streams cannot cut it short. */
async function openVersionFiles(dir: string, names: readonly string[], id: string): Promise<ZipEntry[]> {
  const handles: FileHandle[] = [];
  try {
    const entries: ZipEntry[] = [];
    for (const name of names) {
      const handle = await open(join(dir, name), 'r');
      handles.push(handle);
      entries.push({ name, modified: (await handle.stat()).mtime, data: handle.createReadStream() });
    }
    return entries;
  } catch (err) {
    await Promise.allSettled(handles.map((h) => h.close()));
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`adapter ${id} does not exist`);
    throw err;
  }
}

export const compatLoraRoutes = (registry: AdapterRegistry): FastifyPluginAsync =>
  async (app) => {
    // Public like /healthz, and as bare: no model, adapter or path.
    app.get('/v1/health', { config: { access: 'public' }, schema: { response: { 200: healthSchema } } }, async () => ({
      // These routes exist only beside the training loop (app.ts), so its presence is a given.
      status: 'healthy',
      worker: { status: 'running', error: null },
    }));

    // Idempotent, as in the original: deleting what is not there answers deleted: false. access.ts
    // refuses another tenant's lora_id (403) before this runs, whether it exists or not.
    app.delete<{ Querystring: { lora_id: string } }>('/v1/lora', { config: { owns: ['lora_id'] }, schema: { querystring: byLoraId(), response: { '4xx': errorSchema } } }, async (request) => {
      try {
        await registry.delete(request.query.lora_id);
        return { deleted: true };
      } catch (err) {
        if (err instanceof NotFoundError) return { deleted: false };
        throw err;
      }
    });

    app.get<{ Querystring: { lora_id: string; version?: string } }>(
      '/v1/lora/export',
      { config: { owns: ['lora_id'] }, schema: { querystring: byLoraId(exportQuery.properties), response: { '4xx': errorSchema } } },
      async (request, reply) => {
        const id = request.query.lora_id;
        const { dir, files } = await registry.versionFiles(id, request.query.version === undefined ? undefined : Number(request.query.version));
        const entries = await openVersionFiles(dir, files, id);
        // The original's file name: the id with "/" as "__".
        return reply.type('application/zip').header('content-disposition', `attachment; filename="${id.replace('/', '__')}.zip"`).send(zipStream(entries));
      },
    );

    const owned = { config: { owns: ['adapter'] as const } };
    app.get('/v1/lora/:id', { ...owned, schema: { params: oneId, response: { '4xx': errorSchema } } }, async (request) => adapterJson(await registry.get(addressedId(request))));
    app.delete('/v1/lora/:id', { ...owned, schema: { params: oneId, response: { '4xx': errorSchema } } }, async (request) => deleteAdapter(registry, addressedId(request)));
    app.get<{ Querystring: { version?: string } }>('/v1/lora/:id/export', { ...owned, schema: { params: oneId, querystring: exportQuery, response: { '4xx': errorSchema } } }, async (request, reply) => {
      const id = addressedId(request);
      // "/v1/lora/ana/export" is a request for the adapter "ana/export" itself, not an export.
      if (!(request.params as { id: string }).id.includes('/')) return adapterJson(await registry.get(id));
      return sendExport(registry, id, request.query.version, reply);
    });
    app.post<{ Body: { version: number } }>('/v1/lora/:id/rollback', { ...owned, schema: { params: oneId, body: rollbackBody, response: { '4xx': errorSchema } } }, async (request) =>
      rollback(registry, addressedId(request), request.body.version),
    );
  };
