// Training defaults that belong to the served model: a model folder's training_profile.json (what it
// leaves out comes from the rule over config.json), checked loudly; the defaults in force on the base
// model's /v1/models entry; requests overriding them within the server's bounds; and, on the toy
// assistant with its shipped profile, an update that garbles replies (rank 32 on all projections,
// lr 1e-2 × 10 steps) refused by the collapse guard with its reason while the served version keeps answering.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildApp } from '../src/api/app.js';
import { ConfigError } from '../src/errors.js';
import { LORA_MODULES } from '../src/engine/lora-modules.js';
import { tempDir } from '../src/model/random-model.js';
import { PROFILE_FILE, readTrainingProfile, ruleProfile } from '../src/model/training-profile.js';
import { TOY_MODEL } from '../src/serve-command.js';
import { openServer } from '../src/serve/open.js';

function folderWith(profile: unknown): string {
  const dir = join(tempDir(), 'model');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, PROFILE_FILE), typeof profile === 'string' ? profile : JSON.stringify(profile));
  return dir;
}

test('the rule: the original service figures at Qwen3-8B, the learning rate scaled by hidden size', () => {
  const big = ruleProfile(4096);
  assert.equal(big.training.learningRate, 3e-5);
  assert.deepEqual({ alpha: big.training.alpha, steps: big.training.steps, topK: big.training.topK, teacher: big.training.teacher }, { alpha: 0.5, steps: 4, topK: 100, teacher: 'current' });
  assert.deepEqual(big.feedback, { batchSize: 4, batchWaitMs: 2000 });
  // Qwen3-0.6B (hidden 1024): (4096 / 1024)^0.0775 = 1.113.
  assert.equal(ruleProfile(1024).training.learningRate, 3.34e-5);
  assert.ok(ruleProfile(128).training.learningRate > ruleProfile(1024).training.learningRate);
});

test('a profile overrides what it names; the rule fills the rest; a bad profile fails naming what is wrong', () => {
  const p = readTrainingProfile(folderWith({ learning_rate: 1e-3, lora: { rank: 8 }, feedback_batch: { size: 2 } }), 4096);
  assert.equal(p.training.learningRate, 1e-3);
  assert.equal(p.training.alpha, 0.5);
  assert.equal(p.lora.rank, 8);
  assert.equal(p.lora.alpha, 64);
  assert.deepEqual(p.feedback, { batchSize: 2, batchWaitMs: 2000 });
  assert.match(p.source, /training_profile\.json \(the rest from the rule\)/);
  assert.equal(readTrainingProfile(join(tempDir(), 'no-profile'), 4096).source.startsWith('rule'), true);
  const cases: [unknown, RegExp][] = [
    ['{ not json', /not valid JSON/],
    [{ learning_rate: 0.5 }, /learning_rate must be a number in \[1e-8, 0\.01\]/],
    [{ lr: 1e-3 }, /unknown key lr/],
    [{ lora: { rank: 8, dropout: 0.1 } }, /unknown key lora\.dropout/],
    [{ steps: 2.5 }, /steps must be an integer/],
    [{ teacher: 'remote' }, /teacher must be base, current or ema/],
    [{ lora: { target_modules: ['lm_head'] } }, /lora\.target_modules/],
    [{ feedback_batch: { size: 0 } }, /feedback_batch\.size/],
  ];
  for (const [profile, message] of cases) {
    assert.throws(() => readTrainingProfile(folderWith(profile), 4096), (err: Error) => err instanceof ConfigError && message.test(err.message) && err.message.includes(PROFILE_FILE), JSON.stringify(profile));
  }
});

test("the toy's profile is in force: /v1/models shows it, new adapters and updates use it, requests override it within bounds, a garbling update is refused", async () => {
  const { service, orchestrator, profile } = await openServer(TOY_MODEL, { dataDir: join(tempDir(), 'data'), threads: 2, orchestrator: { batchSize: 1, maxWaitMs: 0 } });
  const app = await buildApp(service, { orchestrator });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  // Response bodies are read as the JSON they are.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const call = async (method: string, path: string, body?: unknown): Promise<{ status: number; body: Record<string, any> }> => {
    const res = await fetch(`${url}${path}`, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as Record<string, never> };
  };
  try {
    assert.match(profile.source, /models\/toy\/training_profile\.json$/, 'the toy ships a complete profile');
    const models = await call('GET', '/v1/models');
    const training = models.body.data[0].training;
    assert.equal(training.learning_rate, profile.training.learningRate);
    assert.equal(training.alpha, profile.training.alpha);
    assert.equal(training.steps, profile.training.steps);
    assert.deepEqual(training.lora, { rank: profile.lora.rank, alpha: profile.lora.alpha, target_modules: profile.lora.targetModules });
    assert.deepEqual(training.feedback_batch, { size: 1, wait_ms: 0 }, 'the batching in force (set by the server here)');
    assert.deepEqual((await call('GET', '/v1/models/toy')).body.training, training);

    const created = await call('POST', '/v1/lora/init', { lora_id: 'ana/profile', seed: 1 });
    assert.equal(created.status, 201);
    assert.equal(created.body.rank, profile.lora.rank);
    assert.equal(created.body.alpha, profile.lora.alpha);

    const chat = async () => (await call('POST', '/v1/chat/completions', { model: 'ana/profile', messages: [{ role: 'user', content: 'What is the opposite of hot?' }], temperature: 0 })).body;
    const wait = async (jobId: string) => {
      for (let i = 0; i < 600; i++) {
        const job = await call('GET', `/v1/feedback/jobs/${jobId}`);
        if (job.body.status === 'done' || job.body.status === 'failed') return job.body;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`job ${jobId} did not finish`);
    };
    const first = await chat();
    const plain = await wait((await call('POST', '/v1/feedback', { lora_id: 'ana/profile', completion_id: first.id, feedback: 'Please answer in upper case.' })).body.job_id);
    assert.equal(plain.status, 'done', JSON.stringify(plain));
    assert.equal(plain.result.metrics.options.learningRate, profile.training.learningRate, 'no options: the profile decides');
    assert.equal(plain.result.metrics.options.alpha, profile.training.alpha);
    assert.equal(plain.result.metrics.options.steps, profile.training.steps);

    const over = await call('POST', '/v1/feedback', { lora_id: 'ana/profile', completion_id: first.id, feedback: 'x', training: { learning_rate: 0.5 } });
    assert.equal(over.status, 400);
    assert.match(over.body.error.message, /learning_rate must be in \(0, 0\.01\]/);

    // A fresh rank-32 adapter on all seven projections, updated once at lr 1e-2 × 10 steps, garbles the
    // toy's replies (served anyway, it answered 7 of 12 held-out tasks, in mixed case: "HI there!" /
    // "cat, dog, "); the guard measured 1.52 nats/token against the replaced version. The profile's own
    // adapter (rank 8 on the MLP) at the same rate is an abrupt switch to capitals (0.25, 11 of 12
    // answered) and passes: docs/learning.md, "The collapse guard".
    assert.equal((await call('POST', '/v1/lora/init', { lora_id: 'ana/garble', seed: 1, rank: 32, alpha: 64, target_modules: LORA_MODULES })).status, 201);
    const reply = (await call('POST', '/v1/chat/completions', { model: 'ana/garble', messages: [{ role: 'user', content: 'Name three animals.' }], temperature: 0 })).body;
    const garbling = await wait((await call('POST', '/v1/feedback', { lora_id: 'ana/garble', completion_id: reply.id, feedback: 'Please answer in upper case.', training: { learning_rate: 1e-2, steps: 10 } })).body.job_id);
    assert.equal(garbling.status, 'done');
    assert.equal(garbling.result.metrics.options.learningRate, 1e-2, 'the request overrode the profile');
    assert.equal(garbling.result.promoted, false, `lr 1e-2 × 10 steps is refused: ${JSON.stringify(garbling.result.guard)}`);
    assert.match(garbling.result.guard.reason, /update KL to the replaced version|degenerate replies/);
    const after = (await call('GET', '/v1/lora/ana/garble')).body;
    assert.equal(after.current_version, 1, 'the served version stays');
    assert.equal(after.versions.at(-1).status, 'rejected');
    const still = (await call('POST', '/v1/chat/completions', { model: 'ana/garble', messages: [{ role: 'user', content: 'What is the opposite of hot?' }], temperature: 0 })).body;
    assert.equal(still.choices[0].message.content, 'Hi there!\ncold.\nHope that helps!', 'and still answers as before');
  } finally {
    await app.close();
    await orchestrator.close();
    await service.close();
  }
});
