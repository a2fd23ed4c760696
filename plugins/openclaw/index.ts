// The OpenClaw entry: wires the SDK's hooks and command to the SDK-independent modules in src/.
// llm_output carries the provider's response id (our completion id) per conversation (sessionKey);
// /feedback pairs with it; a service's timer sends batches that waited flushIntervalMs;
// before_message_write keeps /feedback turns in the history but out of the model's context.
import { join } from 'node:path';
import { definePluginEntry } from 'openclaw/plugin-sdk/plugin-entry';
import { FeedbackBuffer } from './src/buffer.js';
import { ClaasClient } from './src/client.js';
import { isFeedbackTurn } from './src/context-filter.js';
import { FeedbackService } from './src/feedback-service.js';
import { readSettings } from './src/settings.js';

export default definePluginEntry({
  id: 'claas-feedback',
  name: 'CLaaS feedback',
  description: '/feedback <text> teaches the CLaaS adapter from the last reply in the same conversation.',
  register(api) {
    const settings = readSettings(api.pluginConfig);
    // Discovery passes only read the registrations, so the buffer file is opened on first use.
    let opened: FeedbackService | undefined;
    const service = (): FeedbackService => {
      if (opened) return opened;
      const file = settings.stateFile ? api.resolvePath(settings.stateFile) : join(api.runtime.state.resolveStateDir(), 'claas-feedback', 'buffer.json');
      const { buffer, recovered } = FeedbackBuffer.open(file);
      if (recovered) api.logger.warn(recovered);
      opened = new FeedbackService(settings, buffer, new ClaasClient(settings.serverUrl, settings.apiKey), { log: (line) => api.logger.info(`claas-feedback: ${line}`) });
      return opened;
    };

    api.on('llm_output', (event, ctx) => {
      // Only user turns answered by our server carry a completion id that feedback can name.
      if (event.provider !== settings.provider || (ctx.trigger !== undefined && ctx.trigger !== 'user') || !ctx.sessionKey) return;
      const id = (event.lastAssistant as { responseId?: unknown } | undefined)?.responseId;
      if (typeof id === 'string' && id !== '') service().recordReply(ctx.sessionKey, id);
    });

    // The same flag OpenClaw sets on its own context-free commands (PersistedUserTurnMessage).
    api.on('before_message_write', (event) => (isFeedbackTurn(event.message) ? { message: { ...event.message, excludeFromContext: true } as typeof event.message } : undefined));

    api.registerCommand({
      name: 'feedback',
      description: 'Teach the assistant from its last reply here: /feedback <what it should have done>',
      acceptsArgs: true,
      // The plugin's own allowlist decides who trains; others get a refusal rather than silence.
      requireAuth: false,
      handler: async (ctx) => ({
        text: await service().command({ conversation: ctx.sessionKey, sender: ctx.senderId, channel: ctx.channel, text: ctx.args ?? '' }),
      }),
    });

    let timer: ReturnType<typeof setInterval> | undefined;
    api.registerService({
      id: 'claas-feedback-flush',
      start: () => {
        timer = setInterval(() => {
          service().tick().catch((err: unknown) => api.logger.warn(`claas-feedback: ${(err as Error).message}`));
        }, Math.min(5000, settings.flushIntervalMs));
        timer.unref();
      },
      stop: () => {
        if (timer) clearInterval(timer);
        timer = undefined;
      },
    });
  },
});
