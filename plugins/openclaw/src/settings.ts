// The plugin's settings (plugins.entries.claas-feedback.config): checked here as well as by
// OpenClaw's manifest schema, so a bad value fails with a message saying which key is wrong.

export interface PluginSettings {
  /** The CLaaS server's root URL (a trailing /v1 is accepted and dropped). */
  serverUrl: string;
  apiKey?: string;
  /** The adapter that learns ("tenant/name"); also the model id OpenClaw chats with. */
  adapter: string;
  /** The models.providers key whose replies are ours (only those carry our completion ids). */
  provider: string;
  /** Feedback items sent in one request. */
  batchSize: number;
  /** Items waiting longer than this are sent even if the batch is not full. */
  flushIntervalMs: number;
  /** How long a /feedback that fills a batch waits for the training result before replying. */
  replyWaitMs: number;
  /** Senders whose feedback trains: "<sender id>", "<channel>:<sender id>", or "*" for everyone. */
  allowlist: string[];
  /** The buffer's JSON file (default: under OpenClaw's state directory). */
  stateFile?: string;
}

export const DEFAULTS = { provider: 'claas', batchSize: 4, flushIntervalMs: 60_000, replyWaitMs: 60_000 } as const;

const KEYS = new Set(['serverUrl', 'apiKey', 'adapter', 'provider', 'batchSize', 'flushIntervalMs', 'replyWaitMs', 'allowlist', 'stateFile']);

function intIn(raw: Record<string, unknown>, key: string, min: number, max: number, fallback: number): number {
  const v = raw[key];
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new Error(`${key} must be an integer in [${min}, ${max}] (got ${JSON.stringify(v)})`);
  return v;
}

function optionalString(raw: Record<string, unknown>, key: string): string | undefined {
  const v = raw[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v === '') throw new Error(`${key} must be a non-empty string`);
  return v;
}

export function readSettings(input: unknown): PluginSettings {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw new Error('the plugin config must be an object with at least serverUrl and adapter');
  const raw = input as Record<string, unknown>;
  for (const k of Object.keys(raw)) if (!KEYS.has(k)) throw new Error(`unknown config key "${k}" (known: ${[...KEYS].join(', ')})`);
  const serverUrl = optionalString(raw, 'serverUrl');
  if (!serverUrl || !/^https?:\/\/[^/\s]+/.test(serverUrl)) throw new Error('serverUrl must be an http(s) URL such as http://127.0.0.1:8000');
  const adapter = optionalString(raw, 'adapter');
  if (!adapter || !/^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/.test(adapter)) throw new Error('adapter must be an adapter id "tenant/name"');
  const allowlist = raw.allowlist ?? [];
  if (!Array.isArray(allowlist) || !allowlist.every((x) => typeof x === 'string' && x !== '')) throw new Error('allowlist must be an array of sender ids (strings)');
  return {
    serverUrl: serverUrl.replace(/\/+$/, '').replace(/\/v1$/, ''),
    apiKey: optionalString(raw, 'apiKey'),
    adapter,
    provider: optionalString(raw, 'provider') ?? DEFAULTS.provider,
    batchSize: intIn(raw, 'batchSize', 1, 64, DEFAULTS.batchSize),
    flushIntervalMs: intIn(raw, 'flushIntervalMs', 1000, 86_400_000, DEFAULTS.flushIntervalMs),
    replyWaitMs: intIn(raw, 'replyWaitMs', 0, 600_000, DEFAULTS.replyWaitMs),
    allowlist: allowlist as string[],
    stateFile: optionalString(raw, 'stateFile'),
  };
}

/** Whether a sender may train: its id alone or qualified by its channel must be listed (or "*"). */
export function mayTrain(allowlist: readonly string[], sender: string | undefined, channel: string | undefined): boolean {
  if (allowlist.includes('*')) return true;
  if (!sender) return false;
  return allowlist.includes(sender) || (channel !== undefined && allowlist.includes(`${channel}:${sender}`));
}
