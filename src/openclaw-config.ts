// `claas openclaw-config`: the OpenClaw configuration that chats through this server (provider
// "claas", the adapter as the model) and loads the feedback plugin from plugins/openclaw. Written as
// JSON, which OpenClaw's JSON5 config reader accepts.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClaasError } from './errors.js';

export interface OpenClawConfigOptions {
  /** The CLaaS server's root URL, e.g. http://127.0.0.1:8000. */
  url: string;
  key?: string;
  /** The adapter ("tenant/name") OpenClaw chats with and /feedback trains. */
  adapter: string;
  /** Senders allowed to train (id, channel:id, or "*"). */
  allow: string[];
  batchSize: number;
  flushIntervalMs: number;
  replyWaitMs: number;
  contextWindow: number;
  maxTokens: number;
  pluginPath?: string;
  stateFile?: string;
  /** Keep OpenClaw's system prompt small: no workspace bootstrap files, minimal tools, no memory plugin. */
  smallPrompt: boolean;
  /**
   * Turn on OpenClaw's Telegram channel. The bot token stays out of the file: OpenClaw reads
   * TELEGRAM_BOT_TOKEN from its environment for the default account.
   */
  telegram?: boolean;
}

export const PLUGIN_ID = 'claas-feedback';
export const PROVIDER_ID = 'claas';
/** OpenClaw refuses models with a smaller context window. */
export const MIN_CONTEXT_WINDOW = 16_000;

/** plugins/openclaw of this package (dist/src/openclaw-config.js → ../../plugins/openclaw). */
export function defaultPluginPath(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'plugins', 'openclaw');
}

export function openClawConfig(o: OpenClawConfigOptions): Record<string, unknown> {
  if (!/^https?:\/\/[^/\s]+/.test(o.url)) throw new ClaasError('E_USAGE', `--url must be the server's http(s) URL (got ${JSON.stringify(o.url)})`);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/.test(o.adapter)) throw new ClaasError('E_USAGE', `--adapter must be an adapter id "tenant/name" (got ${JSON.stringify(o.adapter)})`);
  for (const [name, v, min, max] of [
    ['--batch-size', o.batchSize, 1, 64],
    ['--flush-ms', o.flushIntervalMs, 1000, 86_400_000],
    ['--reply-wait-ms', o.replyWaitMs, 0, 600_000],
    ['--context-window', o.contextWindow, MIN_CONTEXT_WINDOW, 10_000_000],
    ['--max-tokens', o.maxTokens, 1, 1_000_000],
  ] as const) {
    if (!Number.isInteger(v) || v < min || v > max) throw new ClaasError('E_USAGE', `${name} must be an integer in [${min}, ${max}] (got ${v})`);
  }
  const pluginPath = resolve(o.pluginPath ?? defaultPluginPath());
  if (!existsSync(join(pluginPath, 'openclaw.plugin.json'))) throw new ClaasError('E_USAGE', `no OpenClaw plugin at ${pluginPath} (openclaw.plugin.json is missing); give --plugin-path`);
  const root = o.url.replace(/\/+$/, '').replace(/\/v1$/, '');
  const pluginConfig: Record<string, unknown> = {
    serverUrl: root,
    ...(o.key ? { apiKey: o.key } : {}),
    adapter: o.adapter,
    provider: PROVIDER_ID,
    batchSize: o.batchSize,
    flushIntervalMs: o.flushIntervalMs,
    replyWaitMs: o.replyWaitMs,
    allowlist: o.allow,
    ...(o.stateFile ? { stateFile: resolve(o.stateFile) } : {}),
  };
  return {
    models: {
      providers: {
        [PROVIDER_ID]: {
          baseUrl: `${root}/v1`,
          // Without keys on loopback the server ignores the header; OpenClaw wants a value.
          apiKey: o.key ?? 'none',
          api: 'openai-completions',
          models: [
            {
              id: o.adapter,
              name: o.adapter,
              reasoning: false,
              input: ['text'],
              cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 },
              contextWindow: o.contextWindow,
              maxTokens: o.maxTokens,
            },
          ],
        },
      },
    },
    agents: { defaults: { model: { primary: `${PROVIDER_ID}/${o.adapter}` }, ...(o.smallPrompt ? { skipBootstrap: true } : {}) } },
    // Each direct-message sender gets their own conversation, so /feedback names their own last reply.
    session: { dmScope: 'per-channel-peer' },
    ...(o.smallPrompt ? { tools: { profile: 'minimal' } } : {}),
    // New Telegram senders get a pairing code that the owner approves (openclaw pairing approve).
    ...(o.telegram ? { channels: { telegram: { enabled: true, dmPolicy: 'pairing' } } } : {}),
    plugins: {
      load: { paths: [pluginPath] },
      ...(o.smallPrompt ? { slots: { memory: 'none' } } : {}),
      entries: {
        [PLUGIN_ID]: {
          enabled: true,
          // The plugin reads each reply's completion id from the llm_output hook.
          hooks: { allowConversationAccess: true },
          config: pluginConfig,
        },
      },
    },
  };
}
