// The OpenClaw plugin's logic without OpenClaw: per-conversation pairing, the durable buffer,
// batching, the time-based flush, permanent versus transient server errors, and the allowlist.
// The server is a fake that answers /v1/feedback the way CLaaS does (one unknown completion id
// rejects the whole request with 404; jobs of one request train into one new version).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../src/model/random-model.js';
import { FeedbackBuffer } from '../plugins/openclaw/src/buffer.js';
import { isFeedbackTurn } from '../plugins/openclaw/src/context-filter.js';
import { ClaasClient, type Fetch } from '../plugins/openclaw/src/client.js';
import { FeedbackService } from '../plugins/openclaw/src/feedback-service.js';
import { readSettings, mayTrain } from '../plugins/openclaw/src/settings.js';
import { defaultPluginPath, openClawConfig, PLUGIN_ID } from '../src/openclaw-config.js';

interface Posted {
  key: string;
  items: { lora_id: string; completion_id: string; feedback: string }[];
}

class FakeClaas {
  readonly known = new Set<string>();
  readonly posts: Posted[] = [];
  private readonly jobs = new Map<string, { polls: number; version: number }>();
  private readonly keys = new Map<string, string[]>();
  version = 1;
  /** Status to answer every POST with instead of working (e.g. 503), while set. */
  outage: number | null = null;
  /** GETs a job needs before it reads as done. */
  pollsToFinish = 1;

  readonly fetch: Fetch = async (url, init) => {
    const path = new URL(url).pathname;
    const reply = (status: number, body: unknown) => ({ status, text: async () => JSON.stringify(body) });
    if (init.method === 'POST' && path === '/v1/feedback') {
      if (this.outage !== null) return reply(this.outage, { error: { message: 'the server is restarting' } });
      const body = JSON.parse(init.body!) as { requests: Posted['items'] };
      // The server's training defaults (the served model's profile) decide how feedback trains.
      for (const it of body.requests) assert.deepEqual(Object.keys(it).sort(), ['completion_id', 'feedback', 'lora_id'], 'the plugin sends no training options');
      const key = init.headers['idempotency-key']!;
      const seen = this.keys.get(key);
      if (seen) return reply(200, { jobs: seen.map((id) => ({ job_id: id, status: 'queued' })) });
      for (const it of body.requests) {
        if (!this.known.has(it.completion_id)) return reply(404, { error: { message: `completion ${it.completion_id} does not exist` } });
      }
      this.posts.push({ key, items: body.requests });
      const version = ++this.version;
      const ids = body.requests.map((_, i) => `job-${version}-${i}`);
      for (const id of ids) this.jobs.set(id, { polls: 0, version });
      this.keys.set(key, ids);
      return reply(202, { jobs: ids.map((id) => ({ job_id: id, status: 'queued' })) });
    }
    const m = /^\/v1\/feedback\/jobs\/(.+)$/.exec(path);
    if (init.method === 'GET' && m) {
      const job = this.jobs.get(decodeURIComponent(m[1]!));
      if (!job) return reply(404, { error: { message: 'no such job' } });
      job.polls++;
      const done = job.polls >= this.pollsToFinish;
      return reply(200, { job_id: m[1], status: done ? 'done' : 'running', result: done ? { version: job.version, parent_version: job.version - 1, promoted: true } : null, error: null });
    }
    return reply(404, { error: { message: `no route ${path}` } });
  };
}

function setup(config: Record<string, unknown> = {}, file = join(tempDir(), 'state', 'buffer.json'), server = new FakeClaas()) {
  let now = 1_000_000;
  const clock = { now: () => now, advance: (ms: number) => (now += ms) };
  const settings = readSettings({ serverUrl: 'http://claas.test/v1', adapter: 'me/assistant', allowlist: ['*'], batchSize: 2, flushIntervalMs: 60_000, replyWaitMs: 10_000, ...config });
  const open = () => {
    const { buffer, recovered } = FeedbackBuffer.open(file);
    const service = new FeedbackService(settings, buffer, new ClaasClient(settings.serverUrl, undefined, server.fetch), {
      now: clock.now,
      sleep: async (ms) => {
        clock.advance(ms);
      },
    });
    return { buffer, service, recovered };
  };
  return { server, clock, file, ...open(), reopen: open };
}

const cmd = (conversation: string, sender: string, text: string) => ({ conversation, sender, channel: 'telegram', text });

test('two users giving feedback at the same time each train on their own last reply and see only their own result', async () => {
  const { server, service } = setup({ batchSize: 2 });
  for (const id of ['c-ana-1', 'c-ana-2', 'c-bo-1']) server.known.add(id);
  service.recordReply('agent:main:telegram:direct:ana', 'c-ana-1');
  service.recordReply('agent:main:telegram:direct:bo', 'c-bo-1');
  service.recordReply('agent:main:telegram:direct:ana', 'c-ana-2'); // Ana's later reply is the one she means
  const [ana, bo] = await Promise.all([
    service.command(cmd('agent:main:telegram:direct:ana', 'ana', 'Use fewer words.')),
    service.command(cmd('agent:main:telegram:direct:bo', 'bo', 'Sign off with Cheers.')),
  ]);
  assert.equal(server.posts.length, 1);
  const pairs = Object.fromEntries(server.posts[0]!.items.map((i) => [i.feedback, i.completion_id]));
  assert.deepEqual(pairs, { 'Use fewer words.': 'c-ana-2', 'Sign off with Cheers.': 'c-bo-1' });
  assert.ok(server.posts[0]!.items.every((i) => i.lora_id === 'me/assistant'));
  // Whoever came first was queued; whoever filled the batch waited for the training result.
  assert.deepEqual([ana, bo].sort(), ['learned → v2', 'queued 1/2'].sort());
  for (const [reply, other] of [
    [ana, /bo|Cheers|c-bo/],
    [bo, /ana|fewer|c-ana/],
  ] as const) assert.doesNotMatch(reply, other);
  // The one who was only queued hears the outcome with their next /feedback, and only theirs.
  const first = ana === 'queued 1/2' ? 'ana' : 'bo';
  const status = await service.command(cmd(`agent:main:telegram:direct:${first}`, first, ''));
  assert.match(status, /^learned → v2\nqueued 0\/2/);
});

test('a 404 for one item (unknown completion) drops it with a message in its own conversation; the rest train', async () => {
  const { server, service, buffer } = setup({ batchSize: 3 });
  server.known.add('c-a');
  server.known.add('c-c');
  service.recordReply('conv-a', 'c-a');
  service.recordReply('conv-b', 'c-expired'); // e.g. deleted by retention on the server
  service.recordReply('conv-c', 'c-c');
  assert.equal(await service.command(cmd('conv-a', 'a', 'shorter')), 'queued 1/3');
  assert.equal(await service.command(cmd('conv-b', 'b', 'friendlier')), 'queued 2/3');
  const c = await service.command(cmd('conv-c', 'c', 'in French'));
  assert.equal(c, 'learned → v3', 'sent one by one after the batch was refused: c-a trained into v2, c-c into v3');
  assert.deepEqual(
    server.posts.map((p) => p.items.map((i) => i.completion_id)),
    [['c-a'], ['c-c']],
  );
  assert.equal(buffer.pending.length, 0, 'nothing is left to jam the buffer');
  const b = await service.command(cmd('conv-b', 'b', ''));
  assert.match(b, /dropped your feedback on reply c-expired: completion c-expired does not exist \(HTTP 404\)/);
  assert.doesNotMatch(b, /learned/);
  const a = await service.command(cmd('conv-a', 'a', ''));
  assert.match(a, /^learned → v3\n/, 'the batch is reported as one: the version serving now holds both');
  // Later feedback still flows.
  server.known.add('c-b2');
  service.recordReply('conv-b', 'c-b2');
  await service.command(cmd('conv-b', 'b', 'again'));
  await service.command(cmd('conv-b', 'b', 'and again'));
  assert.equal(await service.command(cmd('conv-b', 'b', 'third')), 'learned → v4');
});

test('a restart keeps queued feedback, each conversation\'s last reply and unreported results (atomic file)', async () => {
  const first = setup({ batchSize: 3 });
  first.server.known.add('c-1');
  first.service.recordReply('conv-1', 'c-1');
  assert.equal(await first.service.command(cmd('conv-1', 'u', 'be brief')), 'queued 1/3');
  assert.deepEqual(readdirSync(join(first.file, '..')), ['buffer.json'], 'no temporary file is left beside the buffer');

  const second = first.reopen();
  assert.equal(second.recovered, null);
  assert.equal(second.buffer.pending.length, 1);
  assert.equal(second.buffer.pending[0]!.completionId, 'c-1');
  assert.equal(second.buffer.lastReply('conv-1'), 'c-1');
  assert.equal(await second.service.command(cmd('conv-1', 'u', 'and polite')), 'queued 2/3');
  assert.equal(await second.service.command(cmd('conv-1', 'u', 'and warm')), 'learned → v2');
  assert.deepEqual(first.server.posts[0]!.items.map((i) => i.feedback), ['be brief', 'and polite', 'and warm']);

  // A file that cannot be read is kept aside, not overwritten.
  writeFileSync(first.file, '{"format":1,"replies":');
  const third = first.reopen();
  assert.match(third.recovered ?? '', /could not be read.*kept as .*buffer\.json\.corrupt-/);
  assert.equal(third.buffer.pending.length, 0);
  assert.ok(!existsSync(first.file));
});

test('two instances on one buffer file (OpenClaw registers a plugin more than once) share one state', async () => {
  const one = setup({ batchSize: 2 });
  const two = one.reopen();
  one.server.known.add('c-1');
  one.service.recordReply('conv', 'c-1'); // seen by the instance whose hook fired
  assert.equal(await two.service.command(cmd('conv', 'u', 'shorter')), 'queued 1/2'); // handled by the other
  assert.equal(await one.service.command(cmd('conv', 'u', 'warmer')), 'learned → v2');
  assert.deepEqual(one.server.posts[0]!.items.map((i) => [i.completion_id, i.feedback]), [['c-1', 'shorter'], ['c-1', 'warmer']]);
});

test('two instances flushing the same items at once send them once and report them once', async () => {
  const one = setup({ batchSize: 4, flushIntervalMs: 1000 });
  const two = one.reopen();
  one.server.known.add('c-1');
  one.service.recordReply('conv', 'c-1');
  await one.service.command(cmd('conv', 'u', 'shorter'));
  one.clock.advance(1000);
  await Promise.all([one.service.tick(), two.service.tick()]);
  assert.equal(one.server.posts.length, 1, 'the second request carried the same idempotency key');
  assert.ok(one.buffer.submitted.length <= 1);
  await one.service.tick();
  assert.equal(await two.service.command(cmd('conv', 'u', '')), 'learned → v2\nqueued 0/4. Usage: /feedback <what the last reply should have done differently>');
});

test('senders outside the allowlist get a polite refusal and nothing is recorded or sent', async () => {
  const { server, service, buffer } = setup({ allowlist: ['telegram:ana', '42'] });
  server.known.add('c-1');
  service.recordReply('conv', 'c-1');
  const refusal = await service.command(cmd('conv', 'mallory', 'say something rude'));
  assert.match(refusal, /^Sorry, your feedback cannot be used to train this assistant/);
  assert.equal(buffer.pending.length, 0);
  assert.equal(server.posts.length, 0);
  assert.equal(await service.command(cmd('conv', 'ana', 'ok')), 'queued 1/2');
  assert.equal(await service.command({ conversation: 'conv', sender: '42', channel: 'discord', text: 'ok' }), 'learned → v2');
  assert.equal(mayTrain(['telegram:ana'], 'ana', 'discord'), false, 'a channel-qualified entry names that channel only');
  assert.equal(mayTrain([], 'ana', 'telegram'), false, 'an empty allowlist lets nobody train');
  assert.equal(mayTrain(['*'], undefined, undefined), true);
});

test('items that wait flushIntervalMs are sent by the timer; the result reaches that conversation later', async () => {
  const { server, service, clock } = setup({ batchSize: 4, flushIntervalMs: 60_000 });
  server.pollsToFinish = 2;
  server.known.add('c-1');
  service.recordReply('conv', 'c-1');
  assert.equal(await service.command(cmd('conv', 'u', 'more detail')), 'queued 1/4');
  clock.advance(59_000);
  await service.tick();
  assert.equal(server.posts.length, 0, 'not yet: the item waited 59 s');
  clock.advance(1_000);
  await service.tick();
  assert.equal(server.posts.length, 1, 'sent after 60 s although the batch holds 1 of 4');
  assert.equal(server.posts[0]!.items[0]!.completion_id, 'c-1');
  await service.tick(); // the job is done on its second poll
  assert.equal(await service.command(cmd('conv', 'u', '')), 'learned → v2\nqueued 0/4. Usage: /feedback <what the last reply should have done differently>');
});

test('a transient failure (503) keeps every item and a later flush sends them once', async () => {
  const { server, service, buffer, clock } = setup({ batchSize: 2, flushIntervalMs: 30_000 });
  server.known.add('c-1');
  service.recordReply('conv', 'c-1');
  server.outage = 503;
  await service.command(cmd('conv', 'u', 'one'));
  const r = await service.command(cmd('conv', 'u', 'two'));
  assert.match(r, /the server did not take the feedback now \(the server is restarting \(HTTP 503\)\); 2 item\(s\) kept/);
  assert.equal(buffer.pending.length, 2);
  server.outage = null;
  clock.advance(10_000);
  await service.tick();
  assert.equal(server.posts.length, 0, 'the timer waits flushIntervalMs after a failure');
  clock.advance(30_000);
  await service.tick();
  assert.equal(server.posts.length, 1);
  assert.deepEqual(server.posts[0]!.items.map((i) => i.feedback), ['one', 'two']);
  assert.equal(buffer.pending.length, 0);
});

test('feedback with no earlier reply in the conversation, or without a conversation, is refused with a reason', async () => {
  const { service, buffer } = setup();
  service.recordReply('other-conv', 'c-9');
  assert.match(await service.command(cmd('conv', 'u', 'shorter')), /no reply from the assistant in this conversation yet/);
  assert.match(await service.command({ conversation: undefined, sender: 'u', channel: 'x', text: 'shorter' }), /no session key/);
  assert.match(await service.command(cmd('conv', 'u', 'x'.repeat(4001))), /4001 characters; the limit is 4000/);
  assert.equal(buffer.pending.length, 0);
});

test('settings: defaults, and a clear message for each bad value', () => {
  const s = readSettings({ serverUrl: 'http://127.0.0.1:8000/v1/', adapter: 'me/assistant' });
  assert.deepEqual(s, { serverUrl: 'http://127.0.0.1:8000', apiKey: undefined, adapter: 'me/assistant', provider: 'claas', batchSize: 4, flushIntervalMs: 60_000, replyWaitMs: 60_000, allowlist: [], stateFile: undefined });
  assert.throws(() => readSettings({ serverUrl: 'ftp://x', adapter: 'me/a' }), /serverUrl must be an http\(s\) URL/);
  assert.throws(() => readSettings({ serverUrl: 'http://x', adapter: 'assistant' }), /adapter must be an adapter id "tenant\/name"/);
  assert.throws(() => readSettings({ serverUrl: 'http://x', adapter: 'me/a', batchSize: 0 }), /batchSize must be an integer in \[1, 64\] \(got 0\)/);
  assert.throws(() => readSettings({ serverUrl: 'http://x', adapter: 'me/a', colour: 'red' }), /unknown config key "colour"/);
});

test('claas openclaw-config: provider, model, plugin entry; bad options are refused with a reason', () => {
  const base = { url: 'http://127.0.0.1:8000/v1', adapter: 'me/assistant', allow: ['telegram:42'], batchSize: 4, flushIntervalMs: 60_000, replyWaitMs: 60_000, contextWindow: 32768, maxTokens: 512, smallPrompt: false };
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const c = openClawConfig(base) as any;
  const provider = c.models.providers.claas;
  assert.deepEqual([provider.baseUrl, provider.api, provider.apiKey], ['http://127.0.0.1:8000/v1', 'openai-completions', 'none']);
  assert.deepEqual([provider.models[0].id, provider.models[0].contextWindow, provider.models[0].maxTokens], ['me/assistant', 32768, 512]);
  assert.equal(c.agents.defaults.model.primary, 'claas/me/assistant');
  assert.equal(c.session.dmScope, 'per-channel-peer');
  assert.deepEqual(c.plugins.load.paths, [defaultPluginPath()]);
  const entry = c.plugins.entries[PLUGIN_ID];
  assert.deepEqual(entry.hooks, { allowConversationAccess: true });
  assert.deepEqual(readSettings(entry.config).allowlist, ['telegram:42'], 'the plugin accepts the config it is given');
  assert.equal(c.tools, undefined);
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const small = openClawConfig({ ...base, smallPrompt: true, key: 'sk-1' }) as any;
  assert.deepEqual([small.agents.defaults.skipBootstrap, small.tools.profile, small.plugins.slots.memory], [true, 'minimal', 'none']);
  assert.equal(small.plugins.entries[PLUGIN_ID].config.apiKey, 'sk-1');
  assert.equal(c.channels, undefined, 'no channel unless asked for');
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const telegram = openClawConfig({ ...base, telegram: true }) as any;
  assert.deepEqual(telegram.channels, { telegram: { enabled: true, dmPolicy: 'pairing' } }, 'Telegram on; the bot token stays in TELEGRAM_BOT_TOKEN, out of the file');
  assert.throws(() => openClawConfig({ ...base, adapter: 'assistant' }), /--adapter must be an adapter id "tenant\/name"/);
  assert.throws(() => openClawConfig({ ...base, contextWindow: 8192 }), /--context-window must be an integer in \[16000/);
  assert.throws(() => openClawConfig({ ...base, url: 'localhost:8000' }), /--url must be the server's http\(s\) URL/);
  assert.throws(() => openClawConfig({ ...base, pluginPath: tempDir() }), /no OpenClaw plugin at .*openclaw\.plugin\.json is missing/);
});

test('the manifest (openclaw.plugin.json) is strict and names exactly the settings the plugin reads', () => {
  const manifest = JSON.parse(readFileSync(join(defaultPluginPath(), 'openclaw.plugin.json'), 'utf8')) as { id: string; configSchema: { additionalProperties: boolean; required: string[]; properties: Record<string, unknown> } };
  assert.equal(manifest.id, PLUGIN_ID);
  assert.equal(manifest.configSchema.additionalProperties, false);
  assert.deepEqual(manifest.configSchema.required, ['serverUrl', 'adapter']);
  const all = { serverUrl: 'http://x', apiKey: 'k', adapter: 'me/a', provider: 'p', batchSize: 2, flushIntervalMs: 5000, replyWaitMs: 0, allowlist: ['*'], stateFile: '/tmp/b.json' };
  assert.deepEqual(Object.keys(manifest.configSchema.properties).sort(), Object.keys(all).sort());
  assert.deepEqual(readSettings(all), all);
  assert.match(readFileSync(join(defaultPluginPath(), 'index.ts'), 'utf8'), new RegExp(`id: '${PLUGIN_ID}'`));
});

test('a /feedback turn, as text or as parts, is kept out of the model context; nothing else is', () => {
  assert.ok(isFeedbackTurn({ role: 'user', content: '/feedback Please answer in upper case.' }));
  assert.ok(isFeedbackTurn({ role: 'user', content: '  /feedback' }));
  assert.ok(isFeedbackTurn({ role: 'user', content: [{ type: 'text', text: '/feedback\nshorter' }] }));
  assert.ok(isFeedbackTurn({ role: 'user', content: '/ Feedback shorter' }), 'OpenClaw matches command names in any case, with a space after the slash');
  assert.ok(!isFeedbackTurn({ role: 'user', content: '/feedbacks are welcome' }));
  assert.ok(!isFeedbackTurn({ role: 'user', content: 'What does /feedback do?' }));
  assert.ok(!isFeedbackTurn({ role: 'assistant', content: '/feedback Please answer in upper case.' }));
  assert.ok(!isFeedbackTurn({ role: 'user', content: [{ type: 'image', text: '/feedback' }] }));
  assert.ok(!isFeedbackTurn({ role: 'user' }));
});
