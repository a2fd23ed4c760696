// Feedback in the original CLaaS's form: answered when the update is done, in its response shape, with
// its training option names mapped onto the step; a reply named by its text trains on the ids this
// server sampled for it.
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

// JSON replies are read field by field and checked by the assertions below.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${base}${path}`, { method, headers: { 'content-type': 'application/json', ...headers }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Json };
}

before(async () => {
  const dir = tempDir();
  // The default batching would hold a lone item for a minute: a client waiting for its update must not.
  ({ service, orchestrator } = await openServer(writeRandomChatModel(join(dir, 'random-tiny')), {
    dataDir: join(dir, 'data'),
    threads: 1,
    orchestrator: { batchSize: 4, maxWaitMs: 60_000 },
    guard: { maxUpdateKl: 50, probeTokens: 2 },
  }));
  app = await buildApp(service, { orchestrator });
  base = await app.listen({ host: '127.0.0.1', port: 0 });
  assert.equal((await call('POST', '/v1/lora/init', { lora_id: 'ana/orig', rank: 4, alpha: 8 })).status, 201);
});

after(async () => {
  await app.close();
  await orchestrator.close();
  await service.close();
});

const training = { learning_rate: 1e-4, alpha: 0.5, is_clip: 5, max_grad_norm: 0.5, kl_reg_weight: 0.001, teacher_top_k: 50 };
const orchestration = { sleep_before: true, wake_after: true, wake_on_failure: true, sleep_level: 1 };

test("the original's batch is answered when its update is done, in its shape, trained on the stored reply", async () => {
  const prompt = 'Name three colours.';
  const chat = await call('POST', '/v1/chat/completions', { model: 'ana/orig', messages: [{ role: 'user', content: prompt }], max_tokens: 6, temperature: 0 });
  assert.equal(chat.status, 200);
  const response = chat.body.choices[0].message.content as string;
  const record = (await service.store.completions.get(chat.body.id as string))!;

  const t0 = performance.now();
  const r = await call('POST', '/v1/feedback', { requests: [{ lora_id: 'ana/orig', prompt, response, feedback: 'Be brief.', training }], orchestration });
  const waited = performance.now() - t0;
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const b = r.body;
  assert.deepEqual(Object.keys(b).sort(), ['batch_size', 'distill_result', 'feedback_log_path', 'lora_id', 'request_id', 'status', 'timing_ms', 'vllm']);
  assert.equal(b.status, 'ok');
  assert.equal(b.lora_id, 'ana/orig');
  assert.equal(b.batch_size, 1);
  assert.deepEqual(b.vllm, { slept: false, woke: false }, 'embedded serving puts nothing to sleep');
  assert.equal(b.distill_result.lora_id, 'ana/orig');
  assert.deepEqual(Object.keys(b.timing_ms).sort(), ['distill', 'logprobs', 'save', 'sleep', 'total', 'wake']);
  for (const v of Object.values(b.timing_ms as Record<string, number>)) assert.ok(Number.isInteger(v) && v >= 0);
  assert.ok(b.timing_ms.total >= b.timing_ms.distill && b.timing_ms.total <= waited + 1, JSON.stringify(b.timing_ms));
  // Answered after the update, not queued behind a batch that was never going to fill.
  const job = (await orchestrator.jobs.get(b.request_id as string))!;
  assert.equal(job.status, 'done');
  assert.equal(b.feedback_log_path, `/v1/feedback/jobs/${job.id}`);
  assert.equal((await call('GET', b.feedback_log_path as string)).body.status, 'done');
  const metrics = b.distill_result.metadata.metrics as Json;
  // The original's names reached the step.
  assert.equal(metrics.options.isClip, 5);
  assert.equal(metrics.options.maxGradNorm, 0.5);
  assert.equal(metrics.options.beta, 0.001);
  assert.equal(metrics.options.topK, 50);
  assert.equal(metrics.options.learningRate, 1e-4);
  // The reply named by its text is the stored one: its exact sampled ids were trained on.
  assert.deepEqual({ ...job.items[0]!, feedback: undefined }, { completionId: record.id, choiceIndex: 0, messages: null, responseText: null, feedback: undefined });
  assert.equal(metrics.tokens, record.choices[0]!.outputIds.length);
  assert.equal(b.distill_result.metadata.promoted, true);
  const after = await call('GET', '/v1/lora/ana/orig');
  assert.equal(after.body.current_version, b.distill_result.metadata.version);
});

test('text the server never sent is tokenized; Prefer: wait gives our own requests the same answer', async () => {
  const r = await call('POST', '/v1/feedback', { lora_id: 'ana/orig', prompt: 'Say hi.', response: 'hello there friend', feedback: 'Shorter.' }, { prefer: 'wait' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.status, 'ok');
  const job = (await orchestrator.jobs.get(r.body.request_id as string))!;
  assert.equal(job.items[0]!.completionId, null);
  assert.equal(job.items[0]!.responseText, 'hello there friend');
  const eos = service.tokenizer.eosTokenId === undefined ? 0 : 1;
  assert.equal(r.body.distill_result.metadata.metrics.tokens, service.tokenizer.encode('hello there friend', { addSpecialTokens: false }).length + eos);
  // Without either, the same item is queued as usual.
  const queued = await call('POST', '/v1/feedback', { lora_id: 'ana/orig', prompt: 'Say hi.', response: 'hello', feedback: 'Shorter.' });
  assert.equal(queued.status, 202);
  assert.equal(queued.body.status, 'queued');
});

test("the original's requests that cannot be honoured are refused with the reason", async () => {
  const item = { lora_id: 'ana/orig', prompt: 'q', response: 'r', feedback: 'f' };
  const cases: [unknown, RegExp][] = [
    [{ requests: [item, { ...item, lora_id: 'ana/other' }], orchestration }, /one lora_id/],
    [{ requests: [{ ...item, training }, { ...item, training: { ...training, learning_rate: 2e-4 } }], orchestration }, /one training config/],
    [{ requests: [{ ...item, training: { teacher_top_k: 50, top_k: 20 } }] }, /top_k \(20\) and teacher_top_k \(50\) disagree/],
    [{ requests: [{ ...item, training: { kl_reg_weight: 0.1, beta: 0.2 } }] }, /beta .* kl_reg_weight .* disagree/],
    [{ requests: [item], orchestration: { ...orchestration, nap: true } }, /unexpected property "nap"/],
    [{ requests: [{ ...item, training: { is_clip: 50 } }], orchestration }, /is_clip must be in \[1, 20\]/],
  ];
  const before = (await orchestrator.jobs.queuedIds()).length;
  for (const [body, message] of cases) {
    const r = await call('POST', '/v1/feedback', body);
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.match(r.body.error.message as string, message);
  }
  assert.equal((await orchestrator.jobs.queuedIds()).length, before, 'nothing refused was stored');
});
