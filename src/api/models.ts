// GET /v1/models and /v1/models/:id: the base model and every resident adapter, by name.
import type { FastifyPluginAsync } from 'fastify';
import { NotFoundError } from '../errors.js';
import type { InferenceService } from '../serve/inference.js';
import { mayUseAdapter, type Principal } from './access.js';
import { errorSchema } from './schemas.js';

const modelSchema = {
  type: 'object',
  properties: { id: { type: 'string' }, object: { type: 'string' }, created: { type: 'integer' }, owned_by: { type: 'string' }, root: { type: 'string' }, parent: { type: ['string', 'null'] } },
} as const;

export const modelRoutes = (service: InferenceService): FastifyPluginAsync =>
  async (app) => {
    // A key sees the base model and its own tenant's adapters.
    const visible = (p: Principal) => service.listModels().filter((m) => m.parent === null || mayUseAdapter(p, m.id));
    app.get('/v1/models', { schema: { response: { 200: { type: 'object', properties: { object: { type: 'string' }, data: { type: 'array', items: modelSchema } } } } } }, async (request) => ({
      object: 'list',
      data: visible(request.principal).map((m) => ({ ...m, object: 'model' })),
    }));
    app.get<{ Params: { '*': string } }>(
      '/v1/models/*',
      { schema: { params: { type: 'object', properties: { '*': { type: 'string' } } }, response: { 200: modelSchema, '4xx': errorSchema } } },
      async (request) => {
        const m = visible(request.principal).find((x) => x.id === request.params['*']);
        if (!m) throw new NotFoundError(`The model \`${request.params['*']}\` does not exist.`);
        return { ...m, object: 'model' };
      },
    );
  };
