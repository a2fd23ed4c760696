// vLLM's admin routes with vLLM's semantics, so the vLLM client is tested against a real server and
// clients that manage vLLM (OpenClaw's provider discovery, scripts) work against this one:
// POST /v1/load_lora_adapter, POST /v1/unload_lora_adapter, POST /sleep, POST /wake_up, GET /is_sleeping.
import type { FastifyPluginAsync } from 'fastify';
import { existsSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { InputError, NotFoundError } from '../errors.js';
import type { InferenceService } from '../serve/inference.js';
import { errorSchema } from './schemas.js';

export const vllmAdminRoutes = (service: InferenceService): FastifyPluginAsync =>
  async (app) => {
    app.post<{ Body: { lora_name: string; lora_path: string } }>(
      '/v1/load_lora_adapter',
      { config: { access: 'admin' }, schema: { body: { type: 'object', required: ['lora_name', 'lora_path'], additionalProperties: false, properties: { lora_name: { type: 'string', minLength: 1, maxLength: 200 }, lora_path: { type: 'string', minLength: 1 } } }, response: { '4xx': errorSchema } } },
      async (request, reply) => {
        const { lora_name: name, lora_path: path } = request.body;
        if (name === service.modelName || service.adapters.has(name)) throw new InputError(`The lora adapter '${name}' has already been loaded.`);
        if (!isAbsolute(path) || !existsSync(join(path, 'adapter_config.json'))) throw new InputError(`lora_path must be an absolute path to a PEFT adapter folder (no adapter_config.json in ${path})`);
        const adapter = await service.engine.loadAdapter(path);
        service.setAdapter(name, 'external', adapter, path);
        return reply.type('text/plain').send(`Success: LoRA adapter '${name}' added successfully.`);
      },
    );
    app.post<{ Body: { lora_name: string } }>(
      '/v1/unload_lora_adapter',
      { config: { access: 'admin' }, schema: { body: { type: 'object', required: ['lora_name'], additionalProperties: false, properties: { lora_name: { type: 'string', minLength: 1 } } }, response: { '4xx': errorSchema } } },
      async (request, reply) => {
        const name = request.body.lora_name;
        // An adapter of the registry has versions, jobs and an alias: unloading it here would leave the
        // database serving what the server no longer does.
        if (service.adapters.managed(name)) throw new InputError(`The lora adapter '${name}' is managed by CLaaS (versions, feedback jobs); delete it with DELETE /v1/lora/${encodeURIComponent(name)}`);
        if (!service.removeAdapter(name)) throw new NotFoundError(`The lora adapter '${name}' cannot be found.`);
        return reply.type('text/plain').send(`Success: LoRA adapter '${request.body.lora_name}' removed successfully.`);
      },
    );
    app.post<{ Querystring: { level?: string } }>(
      '/sleep',
      { config: { access: 'admin' }, schema: { querystring: { type: 'object', additionalProperties: false, properties: { level: { type: 'string', enum: ['1', '2'] } } } } },
      async (request, reply) => {
        service.sleep(Number(request.query.level ?? '1'));
        return reply.status(200).send();
      },
    );
    app.post('/wake_up', { config: { access: 'admin' }, schema: {} }, async (_request, reply) => {
      service.wakeUp();
      return reply.status(200).send();
    });
    app.get('/is_sleeping', { config: { access: 'admin' }, schema: { response: { 200: { type: 'object', properties: { is_sleeping: { type: 'boolean' } } } } } }, async () => ({ is_sleeping: service.isSleeping }));
  };
