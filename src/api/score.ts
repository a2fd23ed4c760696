// POST /v1/score: the log-probability of a given assistant reply after a conversation, token by token
// (teacher-forced, no sampling), from the base model or an adapter. The original CLaaS's eval measures
// its logprob margins through this route.
import type { FastifyPluginAsync } from 'fastify';
import { InputError, NotFoundError } from '../errors.js';
import type { ChatMessage } from '../model/chat-template.js';
import type { InferenceService } from '../serve/inference.js';
import { checkPromptTokens } from '../serve/work-bounds.js';
import { chatBodySchema, errorSchema, samplingProperties } from './schemas.js';

interface ScoreBody {
  model: string;
  messages: ChatMessage[];
  completion: string;
}

// Strict, unlike the OpenAI routes: a misspelt field here would silently score something else.
const scoreBodySchema = {
  type: 'object',
  required: ['model', 'messages', 'completion'],
  additionalProperties: false,
  properties: {
    model: samplingProperties.model,
    messages: chatBodySchema.properties.messages,
    completion: { type: 'string', minLength: 1 },
  },
} as const;

export const scoreRoutes = (service: InferenceService): FastifyPluginAsync =>
  async (app) => {
    app.post<{ Body: ScoreBody }>(
      '/v1/score',
      { config: { rate: 'chat', owns: ['model'] }, schema: { body: scoreBodySchema, response: { '4xx': errorSchema } } },
      async (request) => {
        const body = request.body;
        // Same wait as chat (sleep, an adapter update in progress), so the score comes from the version
        // the next chat would be served by.
        await service.awake();
        if (body.model !== service.modelName && !(await service.adapters.ensure(body.model))) throw new NotFoundError(`The model \`${body.model}\` does not exist.`);

        // Rendered as chat renders it (thinking at the server's default), so the score is that of the
        // reply the model would be asked to produce.
        const messages = body.messages.map((m) => (m.role === ('developer' as string) ? { ...m, role: 'system' as const } : m));
        const prompt = service.template.render(messages, { addGenerationPrompt: true, enableThinking: service.enableThinking });
        const promptIds = await service.tokenizer.encodeAsync(prompt, { addSpecialTokens: false });
        const context = service.engine.config.maxPositionEmbeddings;
        checkPromptTokens(promptIds.length, service.maxPromptTokens, context);
        const completionIds = await service.tokenizer.encodeAsync(body.completion, { addSpecialTokens: false });
        if (completionIds.length === 0) throw new InputError('completion is empty: it has no tokens to score');
        const total = promptIds.length + completionIds.length;
        if (total > context) throw new InputError(`the prompt (${promptIds.length} tokens) and the completion (${completionIds.length} tokens) come to ${total} tokens; the model's context is ${context}`);

        const lease = await service.lease(body.model);
        let scored: Float32Array;
        try {
          scored = await service.engine.logprobs([...promptIds, ...completionIds], lease?.adapter ?? null, promptIds.length);
        } finally {
          lease?.release();
        }
        const logprobs = Array.from(scored);
        return {
          logprobs,
          tokens: completionIds.map((id) => service.tokenizer.decode([id])),
          prompt_tokens: promptIds.length,
          completion_tokens: completionIds.length,
          logprob_sum: logprobs.reduce((s, x) => s + x, 0),
        };
      },
    );
  };
