// GET /v1/models and /v1/models/:id: the base model and every resident adapter, by name. The base
// model's entry also shows the training defaults in force (what feedback without options does).
import type { FastifyPluginAsync } from 'fastify';
import { NotFoundError } from '../errors.js';
import type { InferenceService } from '../serve/inference.js';
import { mayUseAdapter, type Principal } from './access.js';
import { errorSchema } from './schemas.js';
import type { Orchestrator } from '../orchestrator/orchestrator.js';
import { versionDir } from '../orchestrator/adapter-ids.js';

const trainingSchema = {
  type: 'object',
  properties: {
    source: { type: 'string' },
    learning_rate: { type: 'number' },
    alpha: { type: 'number' },
    steps: { type: 'integer' },
    top_k: { type: 'integer' },
    teacher: { type: 'string' },
    memory: { type: 'integer' },
    lora: { type: 'object', properties: { rank: { type: 'integer' }, alpha: { type: 'number' }, target_modules: { type: 'array', items: { type: 'string' } } } },
    feedback_batch: { type: 'object', properties: { size: { type: 'integer' }, wait_ms: { type: 'number' } } },
  },
} as const;

const modelSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    object: { type: 'string' },
    created: { type: 'integer' },
    owned_by: { type: 'string' },
    root: { type: 'string' },
    parent: { type: ['string', 'null'] },
    training: trainingSchema,
  },
} as const;

export const modelRoutes = (service: InferenceService, orchestrator?: Orchestrator): FastifyPluginAsync =>
  async (app) => {
    // Every adapter in the database, served here yet or not (created on another node, or not used
    // since this one started), at the version the database says it serves; then names served here
    // that the registry does not manage (loaded through the vLLM-compatible admin route).
    const listed = async () => {
      const models = service.listModels();
      if (!orchestrator) return models;
      const base = models.filter((m) => m.parent === null);
      const adapters = (await orchestrator.registry.servedVersions()).map((a) => ({ id: a.id, created: Math.floor(a.createdAt / 1000), owned_by: 'claas', root: `${a.id}@${versionDir(a.currentVersion)}`, parent: service.modelName }));
      const known = new Set(adapters.map((a) => a.id));
      return [...base, ...adapters, ...models.filter((m) => m.parent !== null && !known.has(m.id) && !service.adapters.managed(m.id))];
    };
    // A key sees the base model and its own tenant's adapters.
    const visible = async (p: Principal) =>
      (await listed())
        .filter((m) => m.parent === null || mayUseAdapter(p, m.id))
        .map((m) => (m.parent === null && orchestrator ? { ...m, training: orchestrator.effectiveDefaults() } : m));
    app.get('/v1/models', { config: { owns: ['own-data'] }, schema: { response: { 200: { type: 'object', properties: { object: { type: 'string' }, data: { type: 'array', items: modelSchema } } } } } }, async (request) => ({
      object: 'list',
      data: (await visible(request.principal)).map((m) => ({ ...m, object: 'model' })),
    }));
    app.get<{ Params: { '*': string } }>(
      '/v1/models/*',
      { config: { owns: ['own-data'] }, schema: { params: { type: 'object', properties: { '*': { type: 'string' } } }, response: { 200: modelSchema, '4xx': errorSchema } } },
      async (request) => {
        const m = (await visible(request.principal)).find((x) => x.id === request.params['*']);
        if (!m) throw new NotFoundError(`The model \`${request.params['*']}\` does not exist.`);
        return { ...m, object: 'model' };
      },
    );
  };
