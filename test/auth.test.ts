// API keys and tenants, limits and retention: a tenant's key reaches only its own adapters,
// completions, jobs and exports; a revoked key stops working at once; admin routes need an admin key;
// rate limits and the job-queue bound answer 429 (a prompt over the limit 400) with Retry-After; expired records go, queued
// feedback stays; logs hold neither keys nor prompts; the server refuses to listen beyond loopback
// without keys.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/api/app.js';
import { ApiKeys } from '../src/auth/keys.js';
import { RateLimiter } from '../src/auth/rate-limit.js';
import { tempDir } from '../src/model/random-model.js';
import type { Orchestrator } from '../src/orchestrator/orchestrator.js';
import type { InferenceService } from '../src/serve/inference.js';
import { openServer, writeRandomChatModel } from '../src/serve/open.js';
import { sweep } from '../src/store/retention.js';

const cli = fileURLToPath(new URL('../src/cli.js', import.meta.url));

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

let app: FastifyInstance;
let service: InferenceService;
let orchestrator: Orchestrator;
let url: string;
let model: string;
let logs = '';
const key: Record<string, string> = {};

async function call(method: string, path: string, who: string | null, body?: unknown) {
  const headers: Record<string, string> = {};
  if (who) headers.authorization = `Bearer ${key[who] ?? who}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json: Json = {};
  try {
    json = JSON.parse(text) as Json;
  } catch {
    json = { text };
  }
  return { status: res.status, body: json, headers: res.headers };
}

const chatBody = (m: string, content = 'Hello there.') => ({ model: m, messages: [{ role: 'user', content }], max_tokens: 4, temperature: 0 });

before(async () => {
  const dir = tempDir();
  model = writeRandomChatModel(join(dir, 'random-tiny'));
  ({ service, orchestrator } = await openServer(model, {
    dataDir: join(dir, 'data'),
    threads: 2,
    orchestrator: { batchSize: 1, maxWaitMs: 10, maxQueuedJobs: 1000 },
    guard: { maxUpdateKl: 50, probeTokens: 2 },
  }));
  const keys = new ApiKeys(service.store.apiKeys);
  key.admin = (await keys.create({ tenant: 'ops', role: 'admin' })).key;
  key.a = (await keys.create({ tenant: 'a', role: 'user', name: 'Ana' })).key;
  key.b = (await keys.create({ tenant: 'b', role: 'user' })).key;
  const sink = new Writable({ write: (chunk, _enc, done) => ((logs += chunk), done()) });
  app = await buildApp(service, { orchestrator, logger: { level: 'info', stream: sink } });
  url = await app.listen({ host: '127.0.0.1', port: 0 });
});

after(async () => {
  await app.close();
  await orchestrator.close();
  await service.close();
});

test('keys: none or a wrong one is 401; public routes stay open; admin routes need admin', async () => {
  assert.equal((await call('POST', '/v1/chat/completions', null, chatBody('random-tiny'))).status, 401);
  const wrong = await call('GET', '/v1/models', 'sk-claas-000000000000-' + 'x'.repeat(43));
  assert.equal(wrong.status, 401);
  assert.match(wrong.body.error.message, /not valid/);
  assert.equal(wrong.headers.get('www-authenticate'), 'Bearer');
  assert.equal((await call('GET', '/healthz', null)).status, 200);
  assert.equal((await call('GET', '/docs/json', null)).status, 200);
  for (const [method, path] of [['GET', '/metrics'], ['GET', '/v1/admin/status'], ['GET', '/is_sleeping'], ['GET', '/v1/admin/keys'], ['POST', '/wake_up']] as const) {
    assert.equal((await call(method, path, 'a')).status, 403, `${method} ${path} with a user key`);
    assert.equal((await call(method, path, 'admin')).status, 200, `${method} ${path} with the admin key`);
  }
  const listed = (await call('GET', '/v1/admin/keys', 'admin')).body.data as Json[];
  assert.deepEqual(listed.map((k) => [k.tenant, k.role]), [['ops', 'admin'], ['a', 'user'], ['b', 'user']]);
  assert.ok(listed.every((k) => !('key' in k) && !('hash' in k)), 'listing shows no secrets');
});

test("tenants: B's key cannot see or touch A's adapters, completions, jobs and exports", async () => {
  assert.equal((await call('POST', '/v1/lora/init', 'a', { lora_id: 'a/style', rank: 4, alpha: 8 })).status, 201);
  const foreign = await call('POST', '/v1/lora/init', 'a', { lora_id: 'b/mine', rank: 4 });
  assert.equal(foreign.status, 403);
  assert.match(foreign.body.error.message, /tenant "a"/);
  assert.equal((await call('POST', '/v1/lora/init', 'b', { lora_id: 'b/own', rank: 4, alpha: 8 })).status, 201);

  const chat = await call('POST', '/v1/chat/completions', 'a', chatBody('a/style'));
  assert.equal(chat.status, 200);
  assert.equal((await service.store.completions.get(chat.body.id))!.tenant, 'a');
  const fb = await call('POST', '/v1/feedback', 'a', { lora_id: 'a/style', completion_id: chat.body.id, feedback: 'Shorter.' });
  assert.equal(fb.status, 202);

  // B: A's things read as missing.
  assert.equal((await call('POST', '/v1/chat/completions', 'b', chatBody('a/style'))).status, 404);
  assert.equal((await call('GET', '/v1/lora/a/style', 'b')).status, 404);
  assert.equal((await call('GET', '/v1/lora/a/style/export', 'b')).status, 404);
  assert.equal((await call('POST', '/v1/lora/a/style/rollback', 'b', { version: 1 })).status, 404);
  assert.equal((await call('DELETE', '/v1/lora/a/style', 'b')).status, 404);
  assert.equal((await call('GET', `/v1/feedback/jobs/${fb.body.job_id}`, 'b')).status, 404);
  assert.equal((await call('POST', '/v1/feedback', 'b', { lora_id: 'b/own', completion_id: chat.body.id, feedback: 'x' })).status, 404);
  assert.equal((await call('POST', '/v1/feedback', 'b', { lora_id: 'a/style', completion_id: chat.body.id, feedback: 'x' })).status, 403);
  assert.equal((await call('POST', '/v1/feedback', 'b', { requests: [{ lora_id: 'b/own', messages: [{ role: 'user', content: 'q' }], response: 'r', feedback: 'f' }, { lora_id: 'a/style', messages: [{ role: 'user', content: 'q' }], response: 'r', feedback: 'f' }] })).status, 403);
  assert.equal((await call('DELETE', `/v1/completions/${chat.body.id}`, 'b')).status, 404);
  assert.equal((await call('GET', `/v1/completions/${chat.body.id}`, 'b')).status, 404);
  assert.equal((await call('DELETE', '/v1/tenants/a/data', 'b')).status, 404);
  assert.deepEqual(((await call('GET', '/v1/models', 'b')).body.data as Json[]).map((m) => m.id), ['random-tiny', 'b/own']);
  assert.deepEqual(((await call('GET', '/v1/lora', 'b')).body.data as Json[]).map((a) => a.lora_id), ['b/own']);
  assert.ok(await service.store.completions.get(chat.body.id), "A's record is untouched");

  // A: its own things work; the admin sees everyone's.
  assert.equal((await call('GET', `/v1/feedback/jobs/${fb.body.job_id}`, 'a')).status, 200);
  const record = await call('GET', `/v1/completions/${chat.body.id}`, 'a');
  assert.deepEqual([record.status, record.body.adapter, record.body.adapter_version, record.body.choices[0].text], [200, 'a/style', 'v0001', chat.body.choices[0].message.content]);
  assert.equal((await call('GET', '/v1/lora/a/style/export', 'a')).status, 200);
  assert.deepEqual(((await call('GET', '/v1/lora', 'admin')).body.data as Json[]).map((a) => a.lora_id).sort(), ['a/style', 'b/own']);
  assert.equal((await call('GET', `/v1/feedback/jobs/${fb.body.job_id}`, 'admin')).status, 200);

  // Deleting data: one record, then everything of tenant A.
  const other = await call('POST', '/v1/chat/completions', 'a', chatBody('random-tiny'));
  assert.deepEqual((await call('DELETE', `/v1/completions/${other.body.id}`, 'a')).body, { id: other.body.id, deleted: true });
  assert.equal(await service.store.completions.get(other.body.id), undefined);
  assert.equal((await call('DELETE', `/v1/completions/${other.body.id}`, 'a')).status, 404);
  for (let i = 0; i < 200 && (await orchestrator.jobs.get(fb.body.job_id))!.status !== 'done'; i++) await new Promise((r) => setTimeout(r, 20));
  const gone = await call('DELETE', '/v1/tenants/a/data', 'a');
  assert.equal(gone.status, 200);
  assert.deepEqual(gone.body.deleted, { completions: 1, feedback_items: 1 });
  assert.equal(await service.store.completions.get(chat.body.id), undefined);
  assert.equal((await orchestrator.jobs.get(fb.body.job_id))!.items.length, 0, 'the feedback text is gone');
  assert.equal((await orchestrator.jobs.get(fb.body.job_id))!.status, 'done', 'the job and its result stay');
});

test('a revoked key gets 401 at once', async () => {
  const { body } = await call('POST', '/v1/admin/keys', 'admin', { tenant: 'c', role: 'user', name: 'temp' });
  assert.match(body.key, /^sk-claas-[0-9a-f]{12}-/);
  key.c = body.key;
  assert.equal((await call('GET', '/v1/models', 'c')).status, 200);
  assert.equal((await call('DELETE', `/v1/admin/keys/${body.id}`, 'admin')).status, 200);
  assert.equal((await call('GET', '/v1/models', 'c')).status, 401);
  assert.equal((await call('DELETE', '/v1/admin/keys/000000000000', 'admin')).status, 404);
  assert.equal((await call('POST', '/v1/admin/keys', 'admin', { tenant: '../etc', role: 'user' })).status, 400);
  assert.equal((await call('POST', '/v1/admin/keys', 'admin', { tenant: 'x', role: 'root' })).status, 400);
});

test('logs at info level hold neither keys nor prompts', async () => {
  const marker = 'my secret diary entry 8412';
  assert.equal((await call('POST', '/v1/chat/completions', 'a', chatBody('random-tiny', marker))).status, 200);
  assert.equal((await call('POST', '/v1/chat/completions', 'a', { ...chatBody('random-tiny', marker), max_tokens: -1 })).status, 400);
  // A tool call whose arguments are not JSON: the parser's message would quote them.
  const toolTurn = { role: 'assistant', content: '', tool_calls: [{ id: 'c1', type: 'function', function: { name: 'note', arguments: `{"text": ${marker}}` } }] };
  const bad = await call('POST', '/v1/chat/completions', 'a', { ...chatBody('random-tiny'), messages: [{ role: 'user', content: 'hi' }, toolTurn, { role: 'user', content: 'and?' }] });
  assert.equal(bad.status, 400);
  assert.match(bad.body.error.message, /function.arguments is not valid JSON/);
  assert.ok(!JSON.stringify(bad.body).includes('my secret'), 'the error does not quote the prompt');
  assert.ok(logs.includes('/v1/chat/completions'), 'requests are logged');
  for (const k of Object.values(key)) assert.ok(!logs.includes(k.slice(-20)), 'no key in the logs');
  assert.ok(!logs.includes(marker), 'no prompt in the logs');
});

test('rate limits per key and the per-adapter job bound answer 429 with Retry-After; nothing accepted is lost', async () => {
  const limited = await buildApp(service, { orchestrator, rateLimits: { chat: { perMinute: 60, burst: 2 }, feedback: { perMinute: 60, burst: 50 } } });
  try {
    const chat = async (who: string) => (await limited.inject({ method: 'POST', url: '/v1/chat/completions', headers: { authorization: `Bearer ${key[who]}` }, payload: chatBody('random-tiny') }));
    assert.equal((await chat('a')).statusCode, 200);
    assert.equal((await chat('a')).statusCode, 200);
    const third = await chat('a');
    assert.equal(third.statusCode, 429);
    assert.ok(Number(third.headers['retry-after']) >= 1);
    assert.equal((await chat('b')).statusCode, 200, 'another key has its own budget');
  } finally {
    await limited.close();
  }

  const dir = tempDir();
  const small = await openServer(model, { dataDir: join(dir, 'data'), threads: 1, orchestrator: { batchSize: 100, maxWaitMs: 60_000, maxQueuedJobs: 2 }, maxPromptTokens: 40 });
  const small2 = await buildApp(small.service, { orchestrator: small.orchestrator });
  try {
    await small2.inject({ method: 'POST', url: '/v1/lora/init', payload: { lora_id: 't/q', rank: 2 } });
    const item = { lora_id: 't/q', messages: [{ role: 'user', content: 'q' }], response: 'r', feedback: 'f' };
    const codes = [];
    for (let i = 0; i < 3; i++) codes.push((await small2.inject({ method: 'POST', url: '/v1/feedback', payload: item, headers: { 'idempotency-key': `k${i}` } })).statusCode);
    assert.deepEqual(codes, [202, 202, 429]);
    const long = await small2.inject({ method: 'POST', url: '/v1/chat/completions', payload: chatBody('random-tiny', 'word '.repeat(60)) });
    assert.equal(long.statusCode, 400);
    assert.match(long.json().error.message, /accepts at most 40/);
    const again = await small2.inject({ method: 'POST', url: '/v1/feedback', payload: item, headers: { 'idempotency-key': 'k0' } });
    assert.equal(again.statusCode, 200, 'a repeat of an accepted request is still answered');
    assert.equal(await small.orchestrator.jobs.pending('t/q'), 2, 'both accepted jobs are queued');
    // Retention never touches queued feedback; it expires old records.
    const r = await sweep(small.service.store.completions, small.orchestrator.jobs, 0, Date.now() + 1000);
    assert.equal(r.feedbackItems, 0);
    const queued = await Promise.all((await small.orchestrator.jobs.queuedIds()).map((id) => small.orchestrator.jobs.get(id)));
    assert.equal(queued.map((j) => j!.items.length).join(','), '1,1');
  } finally {
    await small2.close();
    await small.orchestrator.close();
    await small.service.close();
  }
});

test('retention deletes records older than the limit and keeps newer ones', async () => {
  const fresh = await call('POST', '/v1/chat/completions', 'a', chatBody('random-tiny'));
  const createdAt = (await service.store.completions.get(fresh.body.id))!.createdAt;
  assert.equal((await sweep(service.store.completions, orchestrator.jobs, 60_000, createdAt + 59_000)).completions, 0);
  assert.ok(await service.store.completions.get(fresh.body.id));
  assert.ok((await sweep(service.store.completions, orchestrator.jobs, 60_000, createdAt + 61_000)).completions >= 1);
  assert.equal(await service.store.completions.get(fresh.body.id), undefined);
});

test('claas keys create/list/revoke, and no listening beyond loopback without keys', () => {
  const data = join(tempDir(), 'data');
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args, '--data', data], { encoding: 'utf8', env: { ...process.env, LOG_LEVEL: 'warn' } });
  const refused = run('serve', '--host', '0.0.0.0', '--port', '0', '--model', model);
  assert.notEqual(refused.status, 0);
  assert.match(refused.stderr + refused.stdout, /refusing to listen on 0\.0\.0\.0 without API keys/);
  const created = run('keys', 'create', '--tenant', 'ana', '--role', 'admin', '--name', 'laptop');
  assert.equal(created.status, 0, created.stderr);
  const k = created.stdout.match(/sk-claas-([0-9a-f]{12})-\S+/)!;
  const listed = run('keys', 'list');
  assert.match(listed.stdout, new RegExp(`${k[1]}\\s+ana\\s+admin .* active\\s+laptop`));
  assert.ok(!listed.stdout.includes(k[0]), 'the key itself is never listed');
  assert.equal(run('keys', 'revoke', k[1]!).status, 0);
  assert.match(run('keys', 'list').stdout, /revoked/);
  assert.notEqual(run('keys', 'create').status, 0);
});

test('the token bucket refills at its rate', () => {
  let now = 0;
  const limiter = new RateLimiter({ chat: { perMinute: 60, burst: 2 } }, () => now);
  assert.deepEqual([limiter.take('chat', 'k'), limiter.take('chat', 'k'), limiter.take('chat', 'k')], [0, 0, 1]);
  now += 1000;
  assert.equal(limiter.take('chat', 'k'), 0);
  assert.equal(limiter.take('chat', 'k'), 1);
  assert.equal(limiter.take('feedback', 'k'), 0, 'no limit configured for this kind');
});
