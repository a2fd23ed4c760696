// POST /v1/chat/completions: OpenAI chat completions on the embedded engine, with real token-by-token
// streaming, n choices, log-probabilities and tool calls.
import type { FastifyPluginAsync } from 'fastify';
import type { ChatMessage, ToolDefinition } from '../model/chat-template.js';
import { newCompletionId, type ChoiceResult, type InferenceService, type TokenLogprob } from '../serve/inference.js';
import { errorSchema, chatBodySchema } from './schemas.js';
import { abortOnDisconnect, SseWriter } from './sse.js';
import { samplingFromBody, type SamplingBody } from './sampling.js';

interface ChatBody extends SamplingBody {
  messages: ChatMessage[];
  max_completion_tokens?: number | null;
  logprobs?: boolean | null;
  top_logprobs?: number | null;
  tools?: ToolDefinition[] | null;
  tool_choice?: unknown;
  chat_template_kwargs?: { enable_thinking?: boolean } | null;
}

export function chatLogprobs(tokens: TokenLogprob[]) {
  const bytes = (s: string) => Array.from(Buffer.from(s, 'utf8'));
  return {
    content: tokens.map((t) => ({
      token: t.token,
      logprob: t.logprob,
      bytes: bytes(t.token),
      top_logprobs: t.top.map((a) => ({ token: a.token, logprob: a.logprob, bytes: bytes(a.token) })),
    })),
  };
}

function message(c: ChoiceResult) {
  return {
    role: 'assistant' as const,
    content: c.toolCalls.length > 0 && c.content === '' ? null : c.content,
    ...(c.reasoning !== null ? { reasoning_content: c.reasoning } : {}),
    ...(c.toolCalls.length > 0 ? { tool_calls: c.toolCalls } : {}),
  };
}

export const chatRoutes = (service: InferenceService): FastifyPluginAsync =>
  async (app) => {
    app.post<{ Body: ChatBody }>(
      '/v1/chat/completions',
      { config: { rate: 'chat', owns: ['model'] }, schema: { body: chatBodySchema, response: { '4xx': errorSchema } } },
      async (request, reply) => {
        const body = request.body;
        const wantLogprobs = body.logprobs === true;
        const tools = body.tool_choice === 'none' ? undefined : (body.tools ?? undefined);
        const req = {
          ...samplingFromBody(body, body.max_completion_tokens ?? body.max_tokens ?? undefined),
          messages: body.messages.map((m) => (m.role === ('developer' as string) ? { ...m, role: 'system' as const } : m)),
          tools,
          enableThinking: body.chat_template_kwargs?.enable_thinking,
          logprobs: wantLogprobs ? (body.top_logprobs ?? 0) : undefined,
          tenant: request.principal.tenant,
        };
        const signal = abortOnDisconnect(reply);

        if (!body.stream) {
          const out = await service.chat({ ...req, signal });
          return {
            id: out.id,
            object: 'chat.completion',
            created: out.created,
            model: out.model,
            choices: out.choices.map((c) => ({
              index: c.index,
              message: message(c),
              logprobs: wantLogprobs ? chatLogprobs(c.tokens) : null,
              finish_reason: c.finishReason,
            })),
            usage: out.usage,
          };
        }

        const sse = new SseWriter(reply);
        const id = newCompletionId('chatcmpl');
        const created = Math.floor(Date.now() / 1000);
        const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) => ({ id, object: 'chat.completion.chunk', created, model: body.model, choices, ...extra });
        const begun = new Set<number>();
        const out = await service.chat({ ...req, id, signal }, (index, delta, tokens) => {
          const d: Record<string, unknown> = {};
          if (!begun.has(index)) {
            begun.add(index);
            d.role = 'assistant';
          }
          if (delta.reasoning !== undefined) d.reasoning_content = delta.reasoning;
          if (delta.content !== undefined) d.content = delta.content;
          if (delta.toolCalls) d.tool_calls = delta.toolCalls.map((t, i) => ({ index: i, ...t }));
          sse.send(chunk([{ index, delta: d, logprobs: wantLogprobs ? chatLogprobs(tokens) : null, finish_reason: null }]));
        });
        for (const c of out.choices) {
          const d = begun.has(c.index) ? {} : { role: 'assistant', content: '' };
          sse.send(chunk([{ index: c.index, delta: d, logprobs: null, finish_reason: c.finishReason }]));
        }
        if (body.stream_options?.include_usage) sse.send(chunk([], { usage: out.usage }));
        sse.end();
        return reply;
      },
    );
  };
