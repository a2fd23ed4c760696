// vLLM mode in a cluster: each serving node (`claas serve --no-train --vllm-url`) has its own vLLM
// (here a `claas serve` of the same model, which speaks vLLM's API) and a trainer
// (`claas train-worker`) promotes a new version elsewhere. Each node then loads the new version into
// its own vLLM on its next request and unloads the old one there; neither node sleeps its vLLM (it
// does not train). Without Postgres's server programs it skips, except with CI=true.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { tempDir } from '../src/model/random-model.js';
import { writeRandomChatModel } from '../src/serve/open.js';
import { postgresForTests, startPostgres } from './postgres-server.js';
import { startServe, startTrainWorker, type ServeChild } from './serve-child.js';

const { bin: pgBin, skip } = postgresForTests();

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

async function call(url: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: Json }> {
  const res = await fetch(`${url}${path}`, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Json };
}

test('each node loads a version promoted elsewhere into its own vLLM and unloads the old one', { skip, timeout: 120_000 }, async () => {
  assert.ok(pgBin, 'CI is set but initdb and pg_ctl are not installed');
  const server = await startPostgres(pgBin);
  const dir = tempDir();
  const model = writeRandomChatModel(join(dir, 'model'));
  const database = await server.createDatabase();
  const objects = join(dir, 'objects');
  const children: ServeChild[] = [];
  const start = async (p: Promise<ServeChild>) => {
    const c = await p;
    children.push(c);
    return c;
  };
  try {
    const [vllmA, vllmB] = await Promise.all([0, 1].map((i) => start(startServe(['--model', model, '--data', join(dir, `vllm${i}`), '--port', '0', '--threads', '1']))));
    const common = ['--model', model, '--database', database, '--objects', objects, '--threads', '1'];
    const [a, b] = await Promise.all(
      [vllmA!, vllmB!].map((v, i) => start(startServe([...common, '--data', join(dir, `node${i}`), '--no-train', '--vllm-url', `${v.address}/v1`, '--port', '0']))),
    );
    await start(startTrainWorker([...common, '--data', join(dir, 'worker'), '--batch-size', '1', '--batch-wait-ms', '0', '--guard-max-kl', '0']));
    const id = 'ana/style';
    assert.equal((await call(a!.address, 'POST', '/v1/lora/init', { lora_id: id, rank: 4, alpha: 8 })).status, 201);
    const chat = (node: ServeChild) => call(node.address, 'POST', '/v1/chat/completions', { model: id, messages: [{ role: 'user', content: 'Name three colours.' }], max_tokens: 6, temperature: 0 });
    const loaded = async (v: ServeChild) => ((await call(v.address, 'GET', '/v1/models')).body.data as Json[]).map((m) => m.id as string).sort();
    const first = await chat(a!);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.equal((await chat(b!)).status, 200);
    assert.deepEqual(await loaded(vllmA!), [id + '@v0001', 'model']);
    assert.deepEqual(await loaded(vllmB!), [id + '@v0001', 'model']);

    const fb = await call(b!.address, 'POST', '/v1/feedback', { lora_id: id, completion_id: first.body.id, feedback: 'Answer in one word.', training: { learning_rate: 1e-2, steps: 2 } });
    assert.equal(fb.status, 202, JSON.stringify(fb.body));
    let job: Json = {};
    for (let i = 0; i < 600 && job.status !== 'done' && job.status !== 'failed'; i++) {
      await new Promise((r) => setTimeout(r, 50));
      job = (await call(a!.address, 'GET', `/v1/feedback/jobs/${String(fb.body.job_id)}`)).body;
    }
    assert.equal(job.status, 'done', JSON.stringify(job));
    assert.equal(job.result.version, 2);
    for (let i = 0; i < 100 && !(/serving v2 \(announced\)/.test(a!.output()) && /serving v2 \(announced\)/.test(b!.output())); i++) await new Promise((r) => setTimeout(r, 20));

    for (const [node, vllm] of [[a!, vllmA!], [b!, vllmB!]] as const) {
      const after = await chat(node);
      assert.equal(after.status, 200, JSON.stringify(after.body));
      // The old version is unloaded once its last request is done (in the background).
      let models: string[] = [];
      for (let i = 0; i < 100; i++) {
        models = await loaded(vllm);
        if (!models.includes(`${id}@v0001`)) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.deepEqual(models, [id + '@v0002', 'model'], 'each node swapped versions in its own vLLM');
      const status = (await call(node.address, 'GET', '/v1/admin/status')).body;
      const events = (status.vllm.events as Json[]).map((e) => e.event as string);
      assert.deepEqual(events.filter((e) => /^(load|unload|sleep|wake)/.test(e)), [`load ${id}@v0001`, `load ${id}@v0002`, `unload ${id}@v0001`]);
    }
  } finally {
    await Promise.all(children.map((c) => c.stop()));
    await server.stop();
  }
});
