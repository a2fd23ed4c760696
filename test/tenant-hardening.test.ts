// One tenant cannot harm another through /v1/feedback: a body that fails the batch schema is never
// accepted as a single item (so items are always validated, and bob cannot train on alice's reply
// by wrapping her id in an array), malformed bodies are 400s rather than 500s, idempotency keys are
// per tenant, and a raw item larger than the model's context is refused before it is stored (one
// such job once stalled every tenant's chat, and again after each restart). A client that stalls while
// sending its body is cut off, prompt_logprobs is bounded before it runs, and eval runs are per tenant.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/api/app.js';
import { ApiKeys } from '../src/auth/keys.js';
import { tempDir } from '../src/model/random-model.js';
import type { Orchestrator } from '../src/orchestrator/orchestrator.js';
import type { InferenceService } from '../src/serve/inference.js';
import { openServer, writeRandomChatModel } from '../src/serve/open.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

let app: FastifyInstance;
let service: InferenceService;
let orchestrator: Orchestrator;
let url: string;
const key: Record<string, string> = {};

async function call(method: string, path: string, who: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${key[who]}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Json };
}

const jobCount = async () => (await service.store.sql.query<{ n: number }>('SELECT COUNT(*) AS n FROM jobs'))[0]!.n;

before(async () => {
  const dir = tempDir();
  const model = writeRandomChatModel(join(dir, 'random-tiny'));
  // Queued, never run: these tests are about what is accepted.
  ({ service, orchestrator } = await openServer(model, { dataDir: join(dir, 'data'), threads: 2, orchestrator: { batchSize: 1000, maxWaitMs: 3_600_000, maxQueuedJobs: 1000 } }));
  const keys = new ApiKeys(service.store.apiKeys);
  key.alice = (await keys.create({ tenant: 'alice', role: 'user' })).key;
  key.bob = (await keys.create({ tenant: 'bob', role: 'user' })).key;
  app = await buildApp(service, { orchestrator });
  url = await app.listen({ host: '127.0.0.1', port: 0 });
  assert.equal((await call('POST', '/v1/lora/init', 'alice', { lora_id: 'alice/mine', rank: 2, alpha: 4 })).status, 201);
  assert.equal((await call('POST', '/v1/lora/init', 'bob', { lora_id: 'bob/mine', rank: 2, alpha: 4 })).status, 201);
});

after(async () => {
  await app.close();
  await orchestrator.close();
  await service.close();
});

test("bob cannot train on alice's reply through an item the batch schema refused", async () => {
  const chat = await call('POST', '/v1/chat/completions', 'alice', { model: 'alice/mine', messages: [{ role: 'user', content: 'private' }], max_tokens: 3 });
  assert.equal(chat.status, 200);
  const before = await jobCount();
  const bypass = await call('POST', '/v1/feedback', 'bob', { lora_id: 'bob/mine', feedback: 'x', requests: [{ lora_id: 'bob/mine', completion_id: [chat.body.id], feedback: 'be brief' }] });
  assert.equal(bypass.status, 400, JSON.stringify(bypass.body));
  // An unknown id in an array gave 404 before: the answer must not depend on whether alice's id exists.
  const unknown = await call('POST', '/v1/feedback', 'bob', { requests: [{ lora_id: 'bob/mine', completion_id: ['chatcmpl-nothing'], feedback: 'be brief' }] });
  assert.equal(unknown.status, 400);
  const direct = await call('POST', '/v1/feedback', 'bob', { requests: [{ lora_id: 'bob/mine', completion_id: chat.body.id, feedback: 'be brief' }] });
  assert.equal(direct.status, 404, "alice's record reads as missing");
  assert.equal(await jobCount(), before, 'nothing was stored');
});

test('the batch limits hold whatever else the body carries; malformed bodies are 400, never 500', async () => {
  const item = { lora_id: 'bob/mine', messages: [{ role: 'user', content: 'q' }], response: 'r', feedback: 'f' };
  const before = await jobCount();
  const cases: [string, unknown][] = [
    ['101 items', { requests: Array.from({ length: 101 }, () => item) }],
    ['101 items beside a valid single item', { ...item, requests: Array.from({ length: 101 }, () => item) }],
    ['feedback over 4000 characters', { requests: [{ ...item, feedback: 'f'.repeat(4001) }], lora_id: 'bob/mine', feedback: 'x' }],
    ['an unknown field', { ...item, colour: 'red' }],
    ['feedback a number', { lora_id: 'bob/mine', feedback: 12, prompt: 'q', response: 'r' }],
    ['requests [null]', { requests: [null] }],
    ['requests an object', { requests: {} }],
    ['requests a string', { requests: 'x' }],
    ['a body that is an array', [item]],
  ];
  for (const [what, body] of cases) {
    const r = await call('POST', '/v1/feedback', 'bob', body);
    assert.equal(r.status, 400, `${what}: ${JSON.stringify(r.body).slice(0, 300)}`);
    assert.equal(typeof r.body.error?.message, 'string', `${what}: a message says what was wrong`);
  }
  assert.equal(await jobCount(), before, 'nothing was stored');
  assert.equal((await call('POST', '/v1/feedback', 'bob', { requests: [item, item] })).status, 202, 'a valid batch is still taken');
});

test("idempotency keys are per tenant: bob's use of alice's key neither reads nor blocks hers", async () => {
  const item = (who: string) => ({ lora_id: `${who}/mine`, messages: [{ role: 'user', content: 'q' }], response: 'r', feedback: 'shorter' });
  const first = await call('POST', '/v1/feedback', 'alice', item('alice'), { 'idempotency-key': 'alice-fb-1' });
  assert.equal(first.status, 202);
  const bob = await call('POST', '/v1/feedback', 'bob', item('bob'), { 'idempotency-key': 'alice-fb-1' });
  assert.equal(bob.status, 202, "bob's request is new for bob");
  assert.notEqual(bob.body.job_id, first.body.job_id, "bob does not get alice's job");
  const again = await call('POST', '/v1/feedback', 'alice', item('alice'), { 'idempotency-key': 'alice-fb-1' });
  assert.deepEqual([again.status, again.body.job_id], [200, first.body.job_id], 'alice retrying gets her own job back');
  // Bob first, then alice with the same key: hers is stored.
  assert.equal((await call('POST', '/v1/feedback', 'bob', item('bob'), { 'idempotency-key': 'shared-2' })).status, 202);
  const hers = await call('POST', '/v1/feedback', 'alice', item('alice'), { 'idempotency-key': 'shared-2' });
  assert.equal(hers.status, 202);
  assert.equal((await orchestrator.jobs.get(hers.body.job_id))!.adapterId, 'alice/mine');
});

test("a raw item longer than the model's context is refused before it is stored; chat goes on", async () => {
  const context = service.engine.config.maxPositionEmbeddings;
  const before = await jobCount();
  const big = await call('POST', '/v1/feedback', 'bob', { lora_id: 'bob/mine', prompt: 'x '.repeat(context + 10), response: 'ok', feedback: 'be brief' });
  assert.equal(big.status, 400);
  assert.match(big.body.error.message, /tokens/);
  assert.equal(await jobCount(), before);
  const longAnswer = await call('POST', '/v1/feedback', 'bob', { requests: [{ lora_id: 'bob/mine', prompt: 'q', response: 'y '.repeat(context + 10), feedback: 'f' }] });
  assert.equal(longAnswer.status, 400);
  assert.match(longAnswer.body.error.message, /^requests\[0\]/);
  const chat = await call('POST', '/v1/chat/completions', 'alice', { model: 'alice/mine', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });
  assert.equal(chat.status, 200);
});

test('a client that stalls while sending its body is disconnected', { timeout: 20_000 }, async () => {
  const quick = await buildApp(service, { orchestrator, requestTimeoutMs: 300 });
  const address = new URL(await quick.listen({ host: '127.0.0.1', port: 0 }));
  const socket = connect(Number(address.port), address.hostname);
  try {
    await new Promise<void>((r) => socket.once('connect', () => r()));
    socket.write(`POST /v1/feedback HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${key.bob}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{`);
    let answer = '';
    socket.on('data', (d: Buffer) => (answer += d.toString()));
    const t0 = Date.now();
    const closed = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 5000);
      socket.once('close', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    assert.ok(closed, 'the server closed the stalled connection');
    assert.ok(Date.now() - t0 < 4000);
    assert.match(answer, /^HTTP\/1\.1 408/, 'with 408 Request Timeout');
  } finally {
    socket.destroy();
    await quick.close();
  }
});

test('prompt_logprobs is bounded by what it returns, before any work; within the bound it answers', async () => {
  const t0 = Date.now();
  const big = await call('POST', '/v1/completions', 'bob', { model: 'random-tiny', prompt: Array.from({ length: 1500 }, () => 5), max_tokens: 1, prompt_logprobs: 1000 });
  assert.equal(big.status, 400);
  assert.match(big.body.error.message, /would return 1500499 entries; at most 1000000/);
  assert.ok(Date.now() - t0 < 2000, 'refused before the work');
  const small = await call('POST', '/v1/completions', 'bob', { model: 'random-tiny', prompt: [5, 6, 7, 8], max_tokens: 1, prompt_logprobs: 3 });
  assert.equal(small.status, 200);
  assert.equal(small.body.prompt_logprobs.length, 4);
});

test("eval runs are kept and listed per tenant, and a malformed one is refused", async () => {
  const run = (seed: number) => ({ seed, styles: { caps: { before: 0, after: 1, events: 3 } }, retention_delta: 0, control_delta: 0 });
  assert.equal((await call('POST', '/v1/eval/runs', 'alice', run(1))).status, 201);
  for (let i = 0; i < 101; i++) assert.equal((await call('POST', '/v1/eval/runs', 'bob', run(100 + i))).status, 201);
  const hers = (await call('GET', '/v1/eval/runs', 'alice')).body.data as Json[];
  assert.deepEqual(hers.map((r) => r.summary.seed), [1], "bob's runs neither push out nor show among alice's");
  const his = (await call('GET', '/v1/eval/runs', 'bob')).body.data as Json[];
  assert.equal(his.length, 100, 'each tenant keeps its newest 100');
  assert.equal(his[0]!.summary.seed, 200);
  for (const styles of [{ x: null }, { x: { before: 'a', after: 1 } }, { x: {} }, []]) {
    const r = await call('POST', '/v1/eval/runs', 'bob', { seed: 1, styles });
    assert.equal(r.status, 400, JSON.stringify(styles));
  }
});
