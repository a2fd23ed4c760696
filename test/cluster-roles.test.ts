// The cluster's roles as separate processes on one Postgres and one object store: two serving-only
// nodes (`claas serve --no-train`) and a trainer (`claas train-worker`). Chats and feedback go to
// either node, as behind a load balancer; the trainer alone trains; after two batches of four
// "Please answer in upper case." the other node answers a new question in capitals and still answers
// it. A retried feedback request (same Idempotency-Key) on the other node finds the job stored first;
// /v1/models on a node lists an adapter created on the other before any use. And the roles refuse to
// start without what they need. Without Postgres's server programs it skips, except with CI=true.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { tempDir } from '../src/model/random-model.js';
import { postgresForTests, startPostgres } from './postgres-server.js';
import { cli, startServe, startTrainWorker, type ServeChild } from './serve-child.js';

const { bin: pgBin, skip } = postgresForTests();

// JSON replies are read field by field by the assertions.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

async function call(node: ServeChild, method: string, path: string, body?: unknown, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<{ status: number; body: Json }> {
  const res = await fetch(`${node.address}${path}`, { method, headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers }, body: body === undefined ? undefined : JSON.stringify(body), signal });
  return { status: res.status, body: (await res.json()) as Json };
}

test('the roles refuse to start without a shared queue or an object store', () => {
  const run = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  const worker = run(['train-worker', '--data', tempDir()]);
  assert.equal(worker.status, 2);
  assert.match(worker.stderr, /train-worker needs --database postgres:\/\//);
  const sqlite = run(['train-worker', '--data', tempDir(), '--database', join(tempDir(), 'x.db'), '--objects', tempDir()]);
  assert.equal(sqlite.status, 2);
  assert.match(sqlite.stderr, /needs a Postgres --database/);
  const noObjects = run(['train-worker', '--data', tempDir(), '--database', 'postgres://127.0.0.1:1/x']);
  assert.equal(noObjects.status, 2);
  assert.match(noObjects.stderr, /needs --objects/);
  const serve = run(['serve', '--no-train', '--data', tempDir()]);
  assert.equal(serve.status, 2);
  assert.match(serve.stderr, /--no-train leaves feedback to claas train-worker processes/);
  const lease = run(['train-worker', '--data', tempDir(), '--database', 'postgres://127.0.0.1:1/x', '--objects', tempDir(), '--lease-ms', '5']);
  assert.equal(lease.status, 2);
  assert.match(lease.stderr, /--lease-ms must be an integer in \[1000, 3600000\]/);
});

test('two serving-only nodes and a trainer: feedback given anywhere changes what every node says', { skip, timeout: 300_000 }, async (t) => {
  assert.ok(pgBin, 'CI is set but initdb and pg_ctl are not installed');
  const server = await startPostgres(pgBin);
  const database = await server.createDatabase();
  const objects = join(tempDir(), 'objects');
  const common = ['--database', database, '--objects', objects, '--threads', '1'];
  const children: ServeChild[] = [];
  try {
    const a = await startServe([...common, '--data', join(tempDir(), 'a'), '--no-train', '--port', '0']);
    children.push(a);
    const b = await startServe([...common, '--data', join(tempDir(), 'b'), '--no-train', '--port', '0']);
    children.push(b);
    assert.match(a.output(), /training: none here \(--no-train\)/);
    const worker = await startTrainWorker([...common, '--data', join(tempDir(), 'w'), '--worker-name', 'trainer-1', '--health-port', '0', '--batch-wait-ms', '60000']);
    children.push(worker);
    assert.equal(worker.address, 'trainer-1');
    // The probe a supervisor (Kubernetes) polls.
    const health = worker.output().match(/health at (\S+)/)![1]!;
    assert.deepEqual(await (await fetch(health)).json(), { status: 'ok', role: 'train-worker', worker: 'trainer-1' });

    assert.equal((await call(a, 'POST', '/v1/lora/init', { lora_id: 'ana/assistant' })).status, 201);
    // Listed by the other node before it ever served it.
    const listed = (await call(b, 'GET', '/v1/models')).body.data as Json[];
    assert.equal(listed.find((m) => m.id === 'ana/assistant')?.root, 'ana/assistant@v0001');

    const questions = ['What is the opposite of hot?', 'Name three animals.', 'What is 2 plus 5?', 'Repeat after me: river stone', 'What number comes after 8?', 'Name three fruits.', 'What is the opposite of up?', 'Say two random words.'];
    const jobs: string[] = [];
    for (const [i, q] of questions.entries()) {
      const [chatNode, feedbackNode] = i % 2 === 0 ? [a, b] : [b, a];
      const chat = await call(chatNode, 'POST', '/v1/chat/completions', { model: 'ana/assistant', messages: [{ role: 'user', content: q }], max_tokens: 32 });
      assert.equal(chat.status, 200, JSON.stringify(chat.body));
      if (i < 4) assert.notEqual(chat.body.choices[0].message.content, String(chat.body.choices[0].message.content).toUpperCase(), 'before the feedback: the default style');
      const body = { lora_id: 'ana/assistant', completion_id: chat.body.id, feedback: 'Please answer in upper case.' };
      const sent = await call(feedbackNode, 'POST', '/v1/feedback', body, { 'idempotency-key': `fb-${i}` });
      assert.equal(sent.status, 202, JSON.stringify(sent.body));
      // The client's retry reaches the other node: the job stored first, not a second one.
      const retried = await call(chatNode, 'POST', '/v1/feedback', body, { 'idempotency-key': `fb-${i}` });
      assert.equal(retried.status, 200, JSON.stringify(retried.body));
      assert.equal(retried.body.job_id, sent.body.job_id);
      jobs.push(sent.body.job_id as string);
    }
    const ended: Json[] = [];
    for (const id of jobs) {
      let job: Json = {};
      for (let i = 0; i < 600 && job.status !== 'done' && job.status !== 'failed'; i++) {
        await new Promise((r) => setTimeout(r, 100));
        job = (await call(i % 2 === 0 ? a : b, 'GET', `/v1/feedback/jobs/${id}`)).body;
      }
      ended.push(job);
    }
    for (const job of ended) assert.equal(job.status, 'done', JSON.stringify(job));
    assert.deepEqual([...new Set(ended.map((j) => j.result.version))], [2, 3], 'two batches of four, versions 2 and 3');
    assert.ok(ended.every((j) => j.result.promoted), JSON.stringify(ended.map((j) => j.result.guard)));
    assert.match(worker.output(), /adapter ana\/assistant: promoted v3/);
    // The serving nodes trained nothing; both follow the trainer's promotion.
    for (const node of [a, b]) assert.doesNotMatch(node.output(), /: training v\d/);
    for (let i = 0; i < 100 && !/serving v3 \(announced\)/.test(b.output()); i++) await new Promise((r) => setTimeout(r, 20));

    const after = await call(b, 'POST', '/v1/chat/completions', { model: 'ana/assistant', messages: [{ role: 'user', content: 'What number comes after 41?' }], max_tokens: 32 });
    const reply = String(after.body.choices[0].message.content);
    t.diagnostic(`after the feedback, node b: ${JSON.stringify(reply)}`);
    assert.match(reply, /[A-Z]/);
    assert.equal(reply, reply.toUpperCase(), `the assistant now answers in capitals: ${reply}`);
    assert.match(reply, /\b42\b/, `and still answers the question: ${reply}`);
    const models = (await call(a, 'GET', '/v1/models')).body.data as Json[];
    assert.equal(models.find((m) => m.id === 'ana/assistant')?.root, 'ana/assistant@v0003');

    // A request answered when its update is done, on a node that does not train: the worker runs its
    // lone item at once rather than after its 60 s batch wait, and the job's end wakes the node.
    const t0 = performance.now();
    const waited = await call(a, 'POST', '/v1/feedback', { lora_id: 'ana/assistant', completion_id: after.body.id, feedback: 'Please answer in upper case.' }, { prefer: 'wait' }, AbortSignal.timeout(30_000));
    assert.equal(waited.status, 200, JSON.stringify(waited.body));
    t.diagnostic(`a waiting feedback request on a serving-only node was answered in ${(performance.now() - t0).toFixed(0)} ms`);
    assert.match(worker.output(), /adapter ana\/assistant: (promoted v4|v4 refused)/);
  } finally {
    await Promise.all(children.map((c) => c.stop()));
    await server.stop();
  }
});
