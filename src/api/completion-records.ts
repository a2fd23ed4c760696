// GET /v1/completions/:id: what a completion record says about a reply (which adapter version
// answered, the reply text), without the prompt. Clients that only kept the id (a chat gateway's
// plugin, for one) can check what feedback would name. A user key sees only its tenant's records.
import type { FastifyPluginAsync } from 'fastify';
import { NotFoundError } from '../errors.js';
import type { CompletionStore } from '../store/completions.js';
import { errorSchema } from './schemas.js';

export const completionRecordRoutes = (store: CompletionStore): FastifyPluginAsync =>
  async (app) => {
    app.get<{ Params: { id: string } }>(
      '/v1/completions/:id',
      { config: { owns: ['record'] }, schema: { params: { type: 'object', properties: { id: { type: 'string', minLength: 1, maxLength: 200 } } }, response: { '4xx': errorSchema } } },
      async (request) => {
        const r = await store.get(request.params.id);
        if (!r) throw new NotFoundError(`completion ${request.params.id} does not exist`);
        return {
          id: r.id,
          object: 'completion.record',
          created_at: r.createdAt,
          model: r.model,
          adapter: r.adapter,
          adapter_version: r.adapterVersion,
          prompt_tokens: r.promptIds.length,
          choices: r.choices.map((c) => ({ index: c.index, text: c.text, finish_reason: c.finishReason, completion_tokens: c.outputIds.length })),
        };
      },
    );
  };
