// POST /v1/completions: raw text completions (no chat template), streamed or not.
import type { FastifyPluginAsync } from 'fastify';
import { newCompletionId, type InferenceService, type TokenLogprob } from '../serve/inference.js';
import { completionBodySchema, errorSchema } from './schemas.js';
import { abortOnDisconnect, SseWriter } from './sse.js';
import { samplingFromBody, type SamplingBody } from './sampling.js';
import { checkPromptLogprobs } from '../serve/work-bounds.js';

interface CompletionBody extends SamplingBody {
  prompt: string | number[];
  logprobs?: number | null;
  prompt_logprobs?: number | null;
  return_tokens_as_token_ids?: boolean;
  stop_token_ids?: number[] | null;
  skip_special_tokens?: boolean;
}

/** OpenAI's legacy logprobs; with vLLM's return_tokens_as_token_ids, tokens read "token_id:N". */
function legacyLogprobs(tokens: TokenLogprob[], offset0: number, asIds = false) {
  const name = (t: { id: number; token: string }) => (asIds ? `token_id:${t.id}` : t.token);
  let offset = offset0;
  const textOffset: number[] = [];
  for (const t of tokens) {
    textOffset.push(offset);
    offset += t.token.length;
  }
  return {
    tokens: tokens.map(name),
    token_logprobs: tokens.map((t) => t.logprob),
    top_logprobs: tokens.map((t) => Object.fromEntries(t.top.map((a) => [name(a), a.logprob]))),
    text_offset: textOffset,
  };
}

export const completionRoutes = (service: InferenceService): FastifyPluginAsync =>
  async (app) => {
    app.post<{ Body: CompletionBody }>(
      '/v1/completions',
      { config: { rate: 'chat', owns: ['model'] }, schema: { body: completionBodySchema, response: { '4xx': errorSchema } } },
      async (request, reply) => {
        const body = request.body;
        const logprobs = body.logprobs ?? undefined;
        const signal = abortOnDisconnect(reply);
        const id = newCompletionId('cmpl');
        const asIds = body.return_tokens_as_token_ids === true;
        if (body.prompt_logprobs !== undefined && body.prompt_logprobs !== null) {
          // Before any work: the prompt's length as the engine will see it.
          const n = typeof body.prompt === 'string' ? (await service.tokenizer.encodeAsync(body.prompt, { addSpecialTokens: false })).length : body.prompt.length;
          checkPromptLogprobs(n, body.prompt_logprobs, service.engine.config.vocabSize);
        }
        const req = { ...samplingFromBody(body, body.max_tokens ?? 16), prompt: body.prompt, logprobs, id, signal, stopTokenIds: body.stop_token_ids ?? [], keepSpecialTokens: body.skip_special_tokens === false, tenant: request.principal.tenant };
        if (!body.stream) {
          const out = await service.complete(req);
          // vLLM's prompt_logprobs: [null, {token_id: {logprob, rank, decoded_token}}, ...] for the prompt.
          let promptLogprobs: unknown;
          if (body.prompt_logprobs !== undefined && body.prompt_logprobs !== null) {
            const ids = (await service.store.completions.get(out.id))!.promptIds;
            const rows = await service.promptLogprobs(body.model, ids, body.prompt_logprobs);
            promptLogprobs = rows.map((r) =>
              r === null
                ? null
                : Object.fromEntries(
                    [{ id: r.id, logprob: r.logprob, rank: r.rank }, ...r.top.map((a, i) => ({ ...a, rank: i + 1 }))].map((e) => [String(e.id), { logprob: e.logprob, rank: e.rank, decoded_token: service.tokenizer.decode([e.id]) }]),
                  ),
            );
          }
          return {
            ...(promptLogprobs !== undefined ? { prompt_logprobs: promptLogprobs } : {}),
            id: out.id,
            object: 'text_completion',
            created: out.created,
            model: out.model,
            choices: out.choices.map((c) => ({ index: c.index, text: c.text, logprobs: logprobs !== undefined ? legacyLogprobs(c.tokens, 0, asIds) : null, finish_reason: c.finishReason })),
            usage: out.usage,
          };
        }
        const sse = new SseWriter(reply);
        const created = Math.floor(Date.now() / 1000);
        const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) => ({ id, object: 'text_completion', created, model: body.model, choices, ...extra });
        const offsets = new Map<number, number>();
        const out = await service.complete(req, (index, delta, tokens) => {
          const text = delta.content ?? '';
          const at = offsets.get(index) ?? 0;
          offsets.set(index, at + text.length);
          sse.send(chunk([{ index, text, logprobs: logprobs !== undefined ? legacyLogprobs(tokens, at, asIds) : null, finish_reason: null }]));
        });
        for (const c of out.choices) sse.send(chunk([{ index: c.index, text: '', logprobs: null, finish_reason: c.finishReason }]));
        if (body.stream_options?.include_usage) sse.send(chunk([], { usage: out.usage }));
        sse.end();
        return reply;
      },
    );
  };
