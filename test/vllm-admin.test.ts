// vLLM's runtime LoRA routes on the embedded server: an adapter folder loaded by name serves chats
// until unloaded; an adapter of the registry cannot be unloaded there (its alias, versions and jobs
// would disagree with what is served), so feedback on it still trains after the attempt.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/api/app.js';
import { tempDir } from '../src/model/random-model.js';
import type { Orchestrator } from '../src/orchestrator/orchestrator.js';
import type { InferenceService } from '../src/serve/inference.js';
import { openServer, writeRandomChatModel } from '../src/serve/open.js';

let app: FastifyInstance;
let service: InferenceService;
let orchestrator: Orchestrator;
let base: string;
let data: string;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

async function call(path: string, body?: unknown): Promise<{ status: number; body: Json; text: string }> {
  const res = await fetch(`${base}${path}`, { method: body === undefined ? 'GET' : 'POST', headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json: Json = {};
  try {
    json = JSON.parse(text) as Json;
  } catch {
    // plain-text replies (vLLM's admin routes answer in text)
  }
  return { status: res.status, body: json, text };
}

before(async () => {
  const dir = tempDir();
  data = join(dir, 'data');
  ({ service, orchestrator } = await openServer(writeRandomChatModel(join(dir, 'random-tiny')), { dataDir: data, threads: 1, orchestrator: { batchSize: 1, maxWaitMs: 10 }, guard: { enabled: false } }));
  app = await buildApp(service, { orchestrator });
  base = await app.listen({ host: '127.0.0.1', port: 0 });
});

after(async () => {
  await app.close();
  await orchestrator.close();
  await service.close();
});

test('load_lora_adapter serves a folder by name until unload; a registry adapter is not unloaded there', async () => {
  assert.equal((await call('/v1/lora/init', { lora_id: 'ana/style', rank: 4, alpha: 8, seed: 1 })).status, 201);
  const folder = join(data, 'adapters', 'ana', 'style', 'v0001');
  const chat = (model: string) => call('/v1/chat/completions', { model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 3, temperature: 0 });

  const loaded = await call('/v1/load_lora_adapter', { lora_name: 'outside', lora_path: folder });
  assert.equal(loaded.status, 200, loaded.text);
  assert.equal((await chat('outside')).status, 200);
  assert.equal((await call('/v1/load_lora_adapter', { lora_name: 'outside', lora_path: folder })).status, 400, 'loading a name twice');
  assert.equal((await call('/v1/unload_lora_adapter', { lora_name: 'outside' })).status, 200);
  assert.equal((await chat('outside')).status, 404);
  assert.equal((await call('/v1/unload_lora_adapter', { lora_name: 'outside' })).status, 404);

  const refused = await call('/v1/unload_lora_adapter', { lora_name: 'ana/style' });
  assert.equal(refused.status, 400);
  assert.match(refused.body.error.message, /managed by CLaaS.*DELETE \/v1\/lora\/ana%2Fstyle/);
  const reply = await chat('ana/style');
  assert.equal(reply.status, 200);
  const job = await call('/v1/feedback', { lora_id: 'ana/style', completion_id: reply.body.id, feedback: 'Shorter, please.' });
  assert.equal(job.status, 202, job.text);
  let status: Json = {};
  for (let i = 0; i < 500 && status.status !== 'done' && status.status !== 'failed'; i++) {
    await new Promise((r) => setTimeout(r, 20));
    status = (await call(`/v1/feedback/jobs/${String(job.body.job_id)}`)).body;
  }
  assert.equal(status.status, 'done', JSON.stringify(status));
  assert.equal(status.result.version, 2);
  assert.equal((await call('/v1/models')).body.data.find((m: Json) => m.id === 'ana/style').root, 'ana/style@v0002');
});
