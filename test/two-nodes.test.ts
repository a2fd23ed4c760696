// Two servers sharing one Postgres database and one object store (two nodes behind a load balancer,
// here two servers in one process): an adapter created on one is served by the other from its first
// request; a version trained on one is served by the other once promoted (announced by NOTIFY, so
// well within a second), with the reply the trainer's node gives; a deletion is followed too.
// Without Postgres's server programs it skips, except with CI=true.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { tempDir } from '../src/model/random-model.js';
import { writeRandomChatModel } from '../src/serve/open.js';
import { startAppNode, type AppNode, type Json } from './app-node.js';
import { postgresForTests, startPostgres } from './postgres-server.js';

const { bin: pgBin, skip } = postgresForTests();

test('two nodes on one Postgres and object store: created, trained and deleted adapters are followed', { skip }, async (t) => {
  assert.ok(pgBin, 'CI is set but initdb and pg_ctl are not installed');
  const server = await startPostgres(pgBin);
  const dir = tempDir();
  const model = writeRandomChatModel(join(dir, 'model'));
  const database = await server.createDatabase();
  const objects = join(dir, 'objects');
  const a = await startAppNode(model, { dataDir: join(tempDir(), 'data'), database, objects });
  const b = await startAppNode(model, { dataDir: join(tempDir(), 'data'), database, objects });
  const messages = [{ role: 'user', content: 'Name three colours.' }];
  const chat = (n: AppNode) => n.call('POST', '/v1/chat/completions', { model: 'ana/style', messages, max_tokens: 8, temperature: 0 });
  try {
    assert.equal((await a.call('POST', '/v1/lora/init', { lora_id: 'ana/style', rank: 4, alpha: 8, seed: 3 })).status, 201);
    const first = await chat(b);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.equal((await b.service.store.completions.get(first.body.id as string))!.adapterVersion, 'v0001');

    const job = await a.call('POST', '/v1/feedback', { lora_id: 'ana/style', completion_id: first.body.id, feedback: 'Answer in one word.', training: { learning_rate: 1e-2, steps: 2 } });
    assert.equal(job.status, 202, JSON.stringify(job.body));
    let status: Json = {};
    for (let i = 0; i < 1000 && status.status !== 'done' && status.status !== 'failed'; i++) {
      await new Promise((r) => setTimeout(r, 10));
      status = (await a.call('GET', `/v1/feedback/jobs/${String(job.body.job_id)}`)).body;
    }
    assert.equal(status.status, 'done', JSON.stringify(status));
    assert.equal(status.result.version, 2);
    // From the job's end (just after the promotion) until the other node serves v0002.
    const t0 = performance.now();
    let seen = '';
    while (performance.now() - t0 < 3000) {
      seen = b.service.adapters.version('ana/style')?.version ?? '';
      if (seen === 'v0002') break;
      await new Promise((r) => setTimeout(r, 2));
    }
    const visibleMs = performance.now() - t0;
    t.diagnostic(`the other node served the promoted version ${visibleMs.toFixed(1)} ms after the job was seen done`);
    assert.equal(seen, 'v0002');
    assert.ok(visibleMs < 1000, `promotion visible on the other node after ${visibleMs} ms`);
    const onA = await chat(a);
    const onB = await chat(b);
    assert.equal((await b.service.store.completions.get(onB.body.id as string))!.adapterVersion, 'v0002');
    assert.equal(onB.body.choices[0].message.content, onA.body.choices[0].message.content, 'both nodes answer with the same version');

    assert.equal((await a.call('DELETE', '/v1/lora/ana%2Fstyle')).status, 200);
    for (let i = 0; i < 300 && b.service.adapters.has('ana/style'); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal((await chat(b)).status, 404);
  } finally {
    await Promise.all([a.close(), b.close()]);
    await server.stop();
  }
});
