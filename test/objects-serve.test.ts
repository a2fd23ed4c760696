// A server with an object store (`objects`): every version it writes (created, trained by feedback)
// is published there; a node without the version folders (here: the same database, its adapter
// folders gone, as on a new machine) serves the current version fetched from the store and answers
// exactly as before; deleting the adapter removes its objects.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../src/model/random-model.js';
import { writeRandomChatModel } from '../src/serve/open.js';
import { startAppNode, type Json } from './app-node.js';
import { openObjectStore } from '../src/store/objects/object-store.js';
import { VersionStore } from '../src/store/objects/version-store.js';

test('versions are published to the object store and served from it on a node without their folders', async () => {
  const dir = tempDir();
  const model = writeRandomChatModel(join(dir, 'model'));
  const data = join(dir, 'data');
  const objects = join(dir, 'objects');
  const versions = new VersionStore(openObjectStore(objects));
  const messages = [{ role: 'user', content: 'Name three colours.' }];

  const first = await startAppNode(model, { dataDir: data, objects });
  let before: Json;
  try {
    assert.equal((await first.call('POST', '/v1/lora/init', { lora_id: 'ana/style', rank: 4, alpha: 8, seed: 3 })).status, 201);
    const chat = await first.call('POST', '/v1/chat/completions', { model: 'ana/style', messages, max_tokens: 8, temperature: 0 });
    const job = await first.call('POST', '/v1/feedback', { lora_id: 'ana/style', completion_id: chat.body.id, feedback: 'Answer in one word.', training: { learning_rate: 1e-2, steps: 2 } });
    assert.equal(job.status, 202, JSON.stringify(job.body));
    let status: Json = {};
    for (let i = 0; i < 500 && status.status !== 'done' && status.status !== 'failed'; i++) {
      await new Promise((r) => setTimeout(r, 20));
      status = (await first.call('GET', `/v1/feedback/jobs/${String(job.body.job_id)}`)).body;
    }
    assert.equal(status.status, 'done', JSON.stringify(status));
    assert.equal(status.result.version, 2);
    assert.deepEqual(await versions.versions('ana/style'), [1, 2]);
    assert.equal((await versions.manifest('ana/style', 2))!.jobId, job.body.job_id);
    before = (await first.call('POST', '/v1/chat/completions', { model: 'ana/style', messages, max_tokens: 8, temperature: 0 })).body;
  } finally {
    await first.close();
  }

  // A node with the same database and object store but none of the version folders.
  rmSync(join(data, 'adapters'), { recursive: true, force: true });
  const second = await startAppNode(model, { dataDir: data, objects });
  try {
    const after = await second.call('POST', '/v1/chat/completions', { model: 'ana/style', messages, max_tokens: 8, temperature: 0 });
    assert.equal(after.status, 200, JSON.stringify(after.body));
    assert.equal((await second.service.store.completions.get(after.body.id as string))!.adapterVersion, 'v0002');
    assert.equal(after.body.choices[0].message.content, before.choices[0].message.content, 'the fetched version answers as it did where it was trained');
    assert.ok(existsSync(join(data, 'adapters', 'ana', 'style', 'v0002', 'adapter_model.safetensors')), 'fetched into the local folder');
    // Rolling back to a version this node never had fetches it too.
    assert.equal((await second.call('POST', '/v1/lora/ana%2Fstyle/rollback', { version: 1 })).status, 200);
    assert.equal((await second.call('POST', '/v1/chat/completions', { model: 'ana/style', messages, max_tokens: 8, temperature: 0 })).status, 200);
    assert.equal((await second.call('DELETE', '/v1/lora/ana%2Fstyle')).status, 200);
    assert.deepEqual(await versions.versions('ana/style'), []);
    assert.deepEqual(await openObjectStore(objects).list('adapters/ana/'), []);
  } finally {
    await second.close();
  }
});
