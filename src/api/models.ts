// GET /v1/models and /v1/models/:id: the base model and every resident adapter, by name.
import type { FastifyPluginAsync } from 'fastify';
import { NotFoundError } from '../errors.js';
import type { InferenceService } from '../serve/inference.js';
import { errorSchema } from './schemas.js';

const modelSchema = {
  type: 'object',
  properties: { id: { type: 'string' }, object: { type: 'string' }, created: { type: 'integer' }, owned_by: { type: 'string' }, root: { type: 'string' }, parent: { type: ['string', 'null'] } },
} as const;

export const modelRoutes = (service: InferenceService): FastifyPluginAsync =>
  async (app) => {
    app.get('/v1/models', { schema: { response: { 200: { type: 'object', properties: { object: { type: 'string' }, data: { type: 'array', items: modelSchema } } } } } }, async () => ({
      object: 'list',
      data: service.listModels().map((m) => ({ ...m, object: 'model' })),
    }));
    app.get<{ Params: { '*': string } }>(
      '/v1/models/*',
      { schema: { params: { type: 'object', properties: { '*': { type: 'string' } } }, response: { 200: modelSchema, '4xx': errorSchema } } },
      async (request) => {
        const m = service.listModels().find((x) => x.id === request.params['*']);
        if (!m) throw new NotFoundError(`The model \`${request.params['*']}\` does not exist.`);
        return { ...m, object: 'model' };
      },
    );
  };
