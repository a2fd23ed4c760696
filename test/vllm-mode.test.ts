// vLLM mode end to end: CLaaS serves through a second server process that speaks vLLM's API (a
// `claas serve` of the same model), and an update drives it through drain, sleep, the step, wake,
// loading the new version under its own name, the alias move and unloading the old version. Chats
// sent during the update wait and all succeed; the recorded tokens and log-probs are the ones the
// model gives; the remote teacher (prompt_logprobs from that server) gives the same step as the
// in-process teacher.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/api/app.js';
import { tempDir } from '../src/model/random-model.js';
import type { ChatMessage } from '../src/model/chat-template.js';
import type { Orchestrator } from '../src/orchestrator/orchestrator.js';
import type { InferenceService } from '../src/serve/inference.js';
import { openServer, writeRandomChatModel } from '../src/serve/open.js';
import { VllmClient } from '../src/serve/vllm-client.js';
import { teacherPrompt } from '../src/train/hindsight.js';

const cli = fileURLToPath(new URL('../src/cli.js', import.meta.url));
const id = 'ana/style';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

let upstream: ChildProcess;
let upstreamUrl: string;
let upstreamLog = '';
let app: FastifyInstance;
let service: InferenceService;
let orchestrator: Orchestrator;
let base: string;

async function call(url: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${url}${path}`, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json: Json = {};
  try {
    json = JSON.parse(text) as Json;
  } catch {
    json = { text };
  }
  return { status: res.status, body: json };
}

before(async () => {
  const dir = tempDir();
  const model = writeRandomChatModel(join(dir, 'random-tiny'));
  upstream = spawn(process.execPath, [cli, 'serve', '--model', model, '--data', join(dir, 'upstream'), '--port', '0', '--threads', '1'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn' } });
  upstream.stderr!.on('data', (d) => (upstreamLog += d));
  upstreamUrl = await new Promise<string>((resolve, reject) => {
    upstream.stdout!.on('data', (d: Buffer) => {
      upstreamLog += d;
      const m = upstreamLog.match(/serving "[^"]+" at (\S+)\/v1/);
      if (m) resolve(m[1]!);
    });
    upstream.on('exit', (code) => reject(new Error(`the upstream server exited (${code}):\n${upstreamLog}`)));
  });
  ({ service, orchestrator } = await openServer(model, {
    dataDir: join(dir, 'claas'),
    threads: 1,
    vllm: { url: upstreamUrl },
    orchestrator: { batchSize: 1, maxWaitMs: 10, defaults: { learningRate: 1e-3, alpha: 0.5, topK: 20, teacher: 'remote', steps: 1 } },
    guard: { maxUpdateKl: 50, probeTokens: 2 },
  }));
  app = await buildApp(service, { orchestrator });
  base = await app.listen({ host: '127.0.0.1', port: 0 });
});

after(async () => {
  await app?.close();
  await orchestrator?.close();
  service?.close();
  upstream?.kill('SIGTERM');
});

test('the vLLM client speaks to a vLLM-compatible server: models, token-id completions, prompt_logprobs, LoRA, sleep', async () => {
  const client = new VllmClient(`${upstreamUrl}/v1`);
  assert.equal(await client.baseModel(), 'random-tiny');
  const prompt = service.tokenizer.encode('Name three colours.', { addSpecialTokens: false });
  const tokens = [];
  const stream = client.streamTokens({ model: 'random-tiny', promptIds: prompt, maxTokens: 6, temperature: 0, topP: 1, topK: 0, seed: 1, topLogprobs: 3, stopTokenIds: [] });
  for await (const t of stream) tokens.push(t);
  assert.equal(tokens.length, 6);
  // Greedy: each sampled token is its position's best, and its log-prob is what the model gives.
  const want = await service.engine.logprobs([...prompt, ...tokens.map((t) => t.id)], null, prompt.length);
  tokens.forEach((t, i) => {
    assert.equal(t.top.length, 3);
    assert.equal(t.top[0]!.id, t.id);
    assert.ok(Math.abs(t.logprob - want[i]!) < 1e-4, `token ${i}: ${t.logprob} vs ${want[i]}`);
  });
  const rows = await client.promptLogprobs('random-tiny', prompt, 5);
  const own = await service.engine.logprobs(prompt, null, 1);
  assert.equal(rows.length, prompt.length - 1);
  rows.forEach((r, i) => {
    assert.equal(r.id, prompt[i + 1]);
    assert.ok(Math.abs(r.logprob - own[i]!) < 1e-4);
    assert.equal(r.top.length, 5);
    assert.ok(r.top.every((a, j) => j === 0 || a.logprob <= r.top[j - 1]!.logprob));
    const above = r.top.filter((a) => a.logprob > r.logprob).length;
    if (above < 5) assert.equal(r.rank, above + 1);
    else assert.ok(r.rank > 5);
  });
  await assert.rejects(client.unloadLoraAdapter('nope@v0001'), (e: Error & { status?: number }) => e.status === 404 && /cannot be found/.test(e.message));
  await assert.rejects(client.loadLoraAdapter('x', 'relative/path'), (e: Error & { status?: number }) => e.status === 400 && /absolute path/.test(e.message));
  assert.equal(await client.isSleeping(), false);
  await client.sleep(1);
  assert.equal(await client.isSleeping(), true);
  // A generation sent while asleep waits for wake_up instead of failing.
  let done = false;
  const waiting = (async () => {
    for await (const t of client.streamTokens({ model: 'random-tiny', promptIds: prompt, maxTokens: 2, temperature: 0, topP: 1, topK: 0, seed: 1, topLogprobs: 0, stopTokenIds: [] })) void t;
    done = true;
  })();
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(done, false, 'the request waits while the server sleeps');
  await client.wakeUp();
  await waiting;
  assert.equal(await client.isSleeping(), false);
});

test('an update in vLLM mode: drain, sleep, step, wake, load the new version, alias, unload the old; chats wait and none fails', async () => {
  assert.equal((await call(base, 'POST', '/v1/lora/init', { lora_id: id, rank: 4, alpha: 8 })).status, 201);
  const messages: ChatMessage[] = [{ role: 'user', content: 'Name three colours.' }];
  const chat = await call(base, 'POST', '/v1/chat/completions', { model: id, messages, max_tokens: 10, temperature: 0 });
  assert.equal(chat.status, 200, JSON.stringify(chat.body));
  // The first request loaded version 1 into the upstream server under its versioned name.
  const upstreamModels = async () => (await call(upstreamUrl, 'GET', '/v1/models')).body.data.map((m: Json) => m.id as string);
  assert.deepEqual(await upstreamModels(), ['random-tiny', `${id}@v0001`]);

  // The recorded tokens and log-probs are the model's own (teacher-forced under version 1).
  const record = (await service.store.completions.get(chat.body.id))!;
  assert.equal(record.adapterVersion, 'v0001');
  const v1 = await service.engine.loadAdapter(orchestrator.registry.dir(id, 1));
  const choice = record.choices[0]!;
  const forced = await service.engine.logprobs([...record.promptIds, ...choice.outputIds], v1, record.promptIds.length);
  choice.outputLogprobs.forEach((lp, i) => assert.ok(Math.abs(lp - forced[i]!) < 1e-4, `token ${i}: recorded ${lp}, model ${forced[i]}`));

  // Chats keep coming from four clients while the feedback is trained.
  const feedback = 'Answer in one word.';
  const fb = await call(base, 'POST', '/v1/feedback', { lora_id: id, completion_id: chat.body.id, feedback });
  assert.equal(fb.status, 202, JSON.stringify(fb.body));
  let finished = false;
  const chats: { start: number; status: number; id: string }[] = [];
  const worker = async (w: number) => {
    for (let i = 0; !finished; i++) {
      const start = Date.now();
      const r = await call(base, 'POST', '/v1/chat/completions', { model: id, messages: [{ role: 'user', content: `question ${w}.${i}` }], max_tokens: 4, temperature: 0.8, seed: i });
      chats.push({ start, status: r.status, id: r.body.id });
    }
  };
  const workers = [0, 1, 2, 3].map(worker);
  let job: Json = {};
  for (let i = 0; i < 1000; i++) {
    job = (await call(base, 'GET', `/v1/feedback/jobs/${fb.body.job_id}`)).body;
    if (job.status === 'done' || job.status === 'failed') break;
    await new Promise((r) => setTimeout(r, 20));
  }
  // A few more rounds after the update, so requests that waited are answered too.
  await new Promise((r) => setTimeout(r, 100));
  finished = true;
  await Promise.all(workers);
  assert.equal(job.status, 'done', JSON.stringify(job));
  assert.equal(job.result.version, 2);
  assert.equal(job.result.promoted, true, JSON.stringify(job.result.guard));

  // Every chat succeeded and its record names the version that served it.
  assert.ok(chats.length >= 8, `${chats.length} chats ran during the test`);
  for (const c of chats) {
    assert.equal(c.status, 200);
    assert.ok(['v0001', 'v0002'].includes((await service.store.completions.get(c.id))!.adapterVersion!));
  }
  const draining = orchestrator.lock.transitions.filter((t) => t.mode === 'draining').at(-1)!.at;
  const resumed = orchestrator.lock.transitions.filter((t) => t.mode === 'serving').at(-1)!.at;
  const during = chats.filter((c) => c.start >= draining && c.start < resumed);
  assert.ok(during.length >= 1, 'some chats arrived while the update ran');
  for (const c of during) assert.equal((await service.store.completions.get(c.id))!.adapterVersion, 'v0002', 'a chat that waited for the update is served by the new version');

  // The upstream went through sleep and wake, got the new version, and lost the old one.
  const health = (await call(base, 'GET', '/v1/admin/status')).body;
  assert.equal(health.serving, 'vllm');
  const events = (health.vllm.events as Json[]).map((e) => e.event as string);
  const order = ['sleep', 'wake_up', `load ${id}@v0002`, `unload ${id}@v0001`].map((e) => events.indexOf(e));
  assert.ok(order.every((i, k) => i >= 0 && (k === 0 || i > order[k - 1]!)), `events in order: ${events.join(', ')}`);
  assert.deepEqual(await upstreamModels(), ['random-tiny', `${id}@v0002`]);
  assert.equal((await call(upstreamUrl, 'GET', '/is_sleeping')).body.is_sleeping, false);
  const models = (await call(base, 'GET', '/v1/models')).body.data as Json[];
  assert.equal(models.find((m) => m.id === id)!.root, `${id}@v0002`);

  // The remote teacher scored version 1 through prompt_logprobs; the same step with the in-process
  // teacher (the current adapter, same top-K) gives the same loss.
  const request = record.request as { messages: ChatMessage[] };
  const teacher = teacherPrompt(service.template, service.tokenizer, request.messages, feedback, { enableThinking: record.enableThinking });
  const local = await service.engine.sdpoStep(
    v1,
    [{ promptIds: record.promptIds, teacherPromptIds: teacher.teacherIds, responseIds: choice.outputIds, oldLogprobs: choice.outputLogprobs }],
    { ...job.result.metrics.options, teacher: 'current' },
  );
  const m = job.result.metrics;
  assert.equal(m.options.teacher, 'remote');
  for (const key of ['loss', 'teacherStudentKl', 'gradNorm'] as const) {
    assert.ok(Math.abs(m[key] - local[key]) <= 1e-4 * Math.max(1e-3, Math.abs(local[key])), `${key}: remote ${m[key]} vs in-process ${local[key]}`);
  }
});
