// The Tinker client against a fake Tinker that speaks the Python SDK's wire protocol: what each
// call puts on the wire (field by field, forward_backward as protobuf), the results it reads back,
// and how it rides out Tinker's ways of failing: slow futures, 408, 410, a refused key, a training
// error with its category, a server restart while a future is pending, a lost answer to a
// mutating call (retried with the same X-Idempotency-Key, run once), and timeouts.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { InputError, UpstreamError } from '../src/errors.js';
import { TinkerClient, TinkerError, type TinkerClientOptions, type TinkerDatum } from '../src/engines/tinker/client.js';
import type { ForwardBackwardRequestPb } from '../src/engines/tinker/protobuf.js';
import { ROUTES } from '../src/engines/tinker/wire.js';
import { FakeTinker, type FakeTinkerOptions } from './fake-tinker.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

const fakes: FakeTinker[] = [];
const clients: TinkerClient[] = [];
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(fakes.map((f) => f.close()));
});

async function setup(fakeOpts: FakeTinkerOptions = {}, clientOpts: Partial<TinkerClientOptions> = {}) {
  const fake = await FakeTinker.start(fakeOpts);
  fakes.push(fake);
  const logs: string[] = [];
  const client = new TinkerClient({ baseUrl: fake.url, apiKey: fake.apiKey, pollIntervalMs: 5, maxPollIntervalMs: 20, requestTimeoutMs: 2_000, futureTimeoutMs: 10_000, log: (l) => logs.push(l), ...clientOpts });
  clients.push(client);
  return { fake, client, logs };
}

async function waitFor(what: string, cond: () => boolean, ms = 3_000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const adam = { learningRate: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8 };

/** A datum as the SDPO step builds one: input without its last token, next tokens as targets. */
function isDatum(prompt: number[], response: number[], studentLp: number[], adv: number[]): TinkerDatum {
  const tokens = [...prompt, ...response];
  const pad = prompt.map(() => 0);
  const t = (data: number[], dtype: 'int64' | 'float32') => ({ data, dtype, shape: [data.length] });
  return {
    model_input: { chunks: [{ type: 'encoded_text', tokens: tokens.slice(0, -1) }] },
    loss_fn_inputs: {
      target_tokens: t(tokens.slice(1), 'int64'),
      logprobs: t([...pad, ...studentLp].slice(1), 'float32'),
      advantages: t([...pad, ...adv].slice(1), 'float32'),
    },
  };
}

async function rejection(p: Promise<unknown>): Promise<TinkerError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof TinkerError, `expected a TinkerError, got ${String(err)}`);
    assert.ok(err instanceof UpstreamError);
    return err;
  }
  assert.fail('expected a rejection');
}

test('a session: client config first, create_session fields, heartbeats until close', async () => {
  const { fake, client } = await setup({}, { heartbeatMs: 20 });
  const sid = await client.createSession({ tags: ['claas'], userMetadata: { tenant: 'ana' } });
  assert.equal(await client.createSession(), sid, 'one session per client');
  assert.equal(fake.received[0]!.path, ROUTES.clientConfig);
  assert.deepEqual(fake.received[0]!.body, { sdk_version: '0.25.0' });
  const [create] = fake.requests(ROUTES.createSession);
  assert.deepEqual(create!.body, { tags: ['claas'], user_metadata: { tenant: 'ana' }, sdk_version: '0.25.0', type: 'create_session' });
  assert.equal(create!.headers['x-api-key'], fake.apiKey);
  assert.match(create!.headers['x-idempotency-key']!, /^claas-[0-9a-f-]{36}$/);
  assert.equal(create!.headers['content-type'], 'application/json');
  assert.equal(fake.requests(ROUTES.createSession).length, 1);

  await waitFor('two heartbeats', () => (fake.heartbeats.get(sid) ?? 0) >= 2);
  for (const hb of fake.requests(ROUTES.sessionHeartbeat)) assert.deepEqual(hb.body, { session_id: sid, type: 'session_heartbeat' });
  await client.close();
  await new Promise((r) => setTimeout(r, 30));
  const count = fake.heartbeats.get(sid);
  await new Promise((r) => setTimeout(r, 80));
  assert.equal(fake.heartbeats.get(sid), count, 'no heartbeats after close');
});

test('create_model: session, model_seq_id, LoRA config; the future is polled for the model id', async () => {
  const { fake, client } = await setup();
  const m0 = await client.createModel({ baseModel: 'Qwen/Qwen3-8B', loraRank: 16, trainUnembed: false });
  const m1 = await client.createModel({ baseModel: 'Qwen/Qwen3-8B', loraRank: 8, seed: 3, userMetadata: { adapter: 'ana/style' } });
  const sid = await client.createSession();
  assert.equal(m0, `${sid}:train:0`);
  assert.equal(m1, `${sid}:train:1`);
  const [c0, c1] = fake.requests(ROUTES.createModel);
  assert.deepEqual(c0!.body, { session_id: sid, model_seq_id: 0, base_model: 'Qwen/Qwen3-8B', lora_config: { rank: 16, train_unembed: false, train_mlp: true, train_attn: true }, type: 'create_model' });
  assert.deepEqual(c1!.body, {
    session_id: sid,
    model_seq_id: 1,
    base_model: 'Qwen/Qwen3-8B',
    lora_config: { rank: 8, seed: 3, train_unembed: true, train_mlp: true, train_attn: true },
    user_metadata: { adapter: 'ana/style' },
    type: 'create_model',
  });
  const polls = fake.requests(ROUTES.retrieveFuture);
  assert.equal(polls.length, 2);
  assert.match((polls[0]!.body as Json).request_id, /^future-/);
  assert.deepEqual(Object.keys(polls[0]!.body as Json).sort(), ['allow_metadata_only', 'request_id']);
  assert.equal((polls[0]!.body as Json).allow_metadata_only, true);
  assert.equal(polls[0]!.headers['x-tinker-request-type'], 'CreateModel');
  assert.equal(polls[0]!.headers['x-tinker-request-iteration'], '0');
  assert.equal(polls[0]!.headers.accept, 'application/json', 'JSON results are not asked for as protobuf');
  await assert.rejects(client.createModel({ baseModel: 'Qwen/Qwen3-8B', loraRank: 0 }), InputError);
  await assert.rejects(client.optimStep('someone-else:train:0', adam), /was not created by this client/);
});

test('forward_backward goes as protobuf; the fake receives each datum and loss input field by field', async () => {
  const { fake, client } = await setup();
  const model = await client.createModel({ baseModel: 'Qwen/Qwen3-8B', loraRank: 8 });
  const data = [isDatum([1, 2, 3], [40, 41], [-0.25, -1.5], [0.03, -0.02]), isDatum([5, 6], [70], [-2], [0.1])];
  const fb = await client.forwardBackward(model, data, 'importance_sampling');

  const [req] = fake.requests(ROUTES.forwardBackward);
  assert.equal(req!.headers['content-type'], 'application/x-protobuf');
  assert.match(req!.headers['x-idempotency-key']!, /^claas-/);
  const body = req!.body as ForwardBackwardRequestPb;
  assert.equal(body.model_id, model);
  assert.equal(body.seq_id, 1);
  assert.equal(body.loss_fn, 'importance_sampling');
  assert.deepEqual(body.loss_fn_config, {});
  assert.equal(body.forward_only, false);
  assert.equal(body.data.length, 2);
  const d0 = body.data[0]!;
  assert.deepEqual(d0.model_input, { chunks: [{ tokens: [1, 2, 3, 40], type: 'encoded_text' }] });
  assert.deepEqual(Object.keys(d0.loss_fn_inputs).sort(), ['advantages', 'logprobs', 'target_tokens']);
  assert.deepEqual(d0.loss_fn_inputs.target_tokens, { data: [2, 3, 40, 41], dtype: 'int64', shape: [4] });
  assert.deepEqual(d0.loss_fn_inputs.logprobs, { data: [0, 0, -0.25, -1.5], dtype: 'float32', shape: [4] });
  assert.deepEqual(d0.loss_fn_inputs.advantages, { data: [0, 0, Math.fround(0.03), Math.fround(-0.02)], dtype: 'float32', shape: [4] });
  const d1 = body.data[1]!;
  assert.deepEqual(d1.model_input.chunks[0]!.tokens, [5, 6]);
  assert.deepEqual(d1.loss_fn_inputs.target_tokens, { data: [6, 70], dtype: 'int64', shape: [2] });
  assert.deepEqual(d1.loss_fn_inputs.logprobs!.data, [0, -2]);
  assert.deepEqual(d1.loss_fn_inputs.advantages!.data, [0, Math.fround(0.1)]);

  const poll = fake.requests(ROUTES.retrieveFuture).at(-1)!;
  assert.equal(poll.headers.accept, 'application/x-protobuf');
  assert.equal(poll.headers['x-tinker-request-type'], 'ForwardBackward');
  assert.equal(fb.lossFnOutputs.length, 2);
  assert.deepEqual(fb.lossFnOutputs[0]!.logprobs, { data: [-0.5, -0.5, -0.5, -0.5], dtype: 'float32', shape: [4] });
  assert.deepEqual(fb.lossFnOutputs[1]!.logprobs!.shape, [2]);
  assert.equal(typeof fb.metrics['loss:sum'], 'number');

  // optim_step: the Adam parameters as AdamParams, every field sent.
  const opt = await client.optimStep(model, { ...adam, weightDecay: 0.01 });
  assert.deepEqual(fake.requests(ROUTES.optimStep)[0]!.body, {
    adam_params: { learning_rate: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.01, grad_clip_norm: 0 },
    model_id: model,
    seq_id: 2,
    type: 'optim_step',
  });
  assert.equal(opt.metrics['steps:unique'], 1);
  assert.equal(fake.models.get(model)!.steps, 1);

  // A loss input of the wrong dtype is refused by Tinker (400); the refused request takes no seq_id.
  const wrong = isDatum([1], [2], [-1], [0.1]);
  wrong.loss_fn_inputs.target_tokens!.dtype = 'float32';
  const e = await rejection(client.forwardBackward(model, [wrong], 'importance_sampling'));
  assert.equal(e.failure, 'rejected');
  assert.equal(e.status, 400);
  assert.match(e.message, /Tinker rejected forward_backward \(400\): data\[0\]\.loss_fn_inputs\.target_tokens must be int64/);
  await client.forward(model, [isDatum([1, 2], [3], [-1], [0])], 'importance_sampling');
  const last = fake.requests(ROUTES.forwardBackward).at(-1)!.body as ForwardBackwardRequestPb;
  assert.equal(last.seq_id, 3);
  assert.equal(last.forward_only, true);
  // Inputs the loss does not take, or missing ones, are refused too.
  const ce: TinkerDatum = { model_input: { chunks: [{ type: 'encoded_text', tokens: [1, 2] }] }, loss_fn_inputs: { target_tokens: { data: [2, 3], dtype: 'int64', shape: [2] }, weights: { data: [1, 1], dtype: 'float32', shape: [2] } } };
  await client.forwardBackward(model, [ce], 'cross_entropy', {});
  assert.match((await rejection(client.forwardBackward(model, [ce], 'importance_sampling'))).message, /logprobs is required for importance_sampling/);
  await assert.rejects(client.forwardBackward(model, [ce], 'nope' as never), InputError);
});

test("a model's requests go out in call order with consecutive seq_ids, even when not awaited one by one", async () => {
  const { fake, client } = await setup();
  const model = await client.createModel({ baseModel: 'Qwen/Qwen3-8B', loraRank: 8 });
  fake.slowFutures = 2;
  const d = [isDatum([1, 2], [3], [-1], [0.5])];
  const [, , saved] = await Promise.all([client.forwardBackward(model, d, 'importance_sampling'), client.optimStep(model, adam), client.saveWeights(model, 'v1'), client.forwardBackward(model, d, 'importance_sampling')]);
  assert.equal(saved, `tinker://${model}/weights/v1`);
  const sent = fake.received.filter((r) => r.path !== ROUTES.retrieveFuture && r.path !== ROUTES.createModel && r.path !== ROUTES.createSession && r.path !== ROUTES.clientConfig);
  assert.deepEqual(
    sent.map((r) => [r.path, (r.body as Json).seq_id]),
    [
      [ROUTES.forwardBackward, 1],
      [ROUTES.optimStep, 2],
      [ROUTES.saveWeights, 3],
      [ROUTES.forwardBackward, 4],
    ],
  );
  assert.equal(fake.checkpoints.get(saved)!.steps, 1, 'saved after the step');
});

test('save, load and sampler weights: sampling sees the steps the weights were saved at', async () => {
  const { fake, client } = await setup({ sampler: (info, _prompt, max) => [100 + info.steps, 7, 8, 9].slice(0, max), promptLogprob: (_i, _p, i) => -i });
  const model = await client.createModel({ baseModel: 'Qwen/Qwen3-8B', loraRank: 8 });
  await client.forwardBackward(model, [isDatum([1, 2], [3], [-1], [0.5])], 'importance_sampling');
  await client.optimStep(model, adam);
  const state = await client.saveWeights(model, 'v1');
  const sampler = await client.saveWeightsForSampler(model, 'v1');
  assert.equal(state, `tinker://${model}/weights/v1`);
  assert.equal(sampler, `tinker://${model}/sampler_weights/v1`);
  assert.deepEqual(fake.requests(ROUTES.saveWeights)[0]!.body, { model_id: model, path: 'v1', seq_id: 3, overwrite: false, type: 'save_weights' });
  assert.deepEqual(fake.requests(ROUTES.saveWeightsForSampler)[0]!.body, { model_id: model, path: 'v1', seq_id: 4, type: 'save_weights_for_sampler' });

  const sid = (fake.requests(ROUTES.createModel)[0]!.body as Json).session_id as string;
  const session = await client.createSamplingSession({ modelPath: sampler });
  assert.deepEqual(fake.requests(ROUTES.createSamplingSession)[0]!.body, { session_id: sid, sampling_session_seq_id: 0, model_path: sampler, type: 'create_sampling_session' });
  const out = await client.sample({ samplingSessionId: session, prompt: [1, 2, 3], maxTokens: 2, temperature: 0.5, seed: 7, stopTokens: [99], promptLogprobs: true, topkPromptLogprobs: 2 });
  const [asample] = fake.requests(ROUTES.asample);
  assert.deepEqual(asample!.body, {
    num_samples: 1,
    prompt: { chunks: [{ tokens: [1, 2, 3], type: 'encoded_text' }] },
    sampling_params: { max_tokens: 2, temperature: 0.5, top_k: -1, top_p: 1, seed: 7, stop: [99] },
    sampling_session_id: session,
    seq_id: 0,
    prompt_logprobs: true,
    topk_prompt_logprobs: 2,
    type: 'sample',
  });
  assert.equal(asample!.headers['x-tinker-sampling-backpressure'], '1');
  assert.equal(fake.requests(ROUTES.retrieveFuture).at(-1)!.headers['x-tinker-request-type'], 'Sample');
  assert.deepEqual(out.sequences, [{ tokens: [101, 7], logprobs: [-0.5, -0.5], stopReason: 'length' }]);
  assert.deepEqual(out.promptLogprobs, [null, -1, -2]);
  assert.deepEqual(out.topkPromptLogprobs, [
    null,
    [
      { id: 2, logprob: -1 },
      { id: 3, logprob: -2 },
    ],
    [
      { id: 3, logprob: -2 },
      { id: 4, logprob: -3 },
    ],
  ]);
  const stopped = await client.sample({ samplingSessionId: session, prompt: [1], maxTokens: 4, stopTokens: [8], numSamples: 2 });
  assert.deepEqual(stopped.sequences.map((s) => [s.tokens, s.stopReason]), [
    [[101, 7, 8], 'stop'],
    [[101, 7, 8], 'stop'],
  ]);
  assert.equal(stopped.promptLogprobs, null);
  assert.equal(stopped.topkPromptLogprobs, null);
  assert.equal((fake.requests(ROUTES.asample)[1]!.body as Json).seq_id, 1);

  // Two more steps, then back to the saved state: the step count comes back with it.
  await client.optimStep(model, adam);
  await client.optimStep(model, adam);
  assert.equal(fake.models.get(model)!.steps, 3);
  await client.loadWeights(model, state, { optimizer: true });
  assert.deepEqual(fake.requests(ROUTES.loadWeights)[0]!.body, { model_id: model, seq_id: 7, path: state, optimizer: true, type: 'load_weights' });
  assert.equal(fake.models.get(model)!.steps, 1);
  await client.optimStep(model, adam);
  const v2 = await client.createSamplingSession({ modelPath: await client.saveWeightsForSampler(model, 'v2') });
  assert.deepEqual((await client.sample({ samplingSessionId: v2, prompt: [1], maxTokens: 1 })).sequences[0]!.tokens, [102]);
  const base = await client.createSamplingSession({ baseModel: 'Qwen/Qwen3-8B' });
  assert.deepEqual((fake.requests(ROUTES.createSamplingSession).at(-1)!.body as Json).base_model, 'Qwen/Qwen3-8B');
  assert.deepEqual((await client.sample({ samplingSessionId: base, prompt: [1], maxTokens: 1 })).sequences[0]!.tokens, [100]);

  // Saving under a name already taken fails as a user error; loading what is not a state too.
  const dup = await rejection(client.saveWeightsForSampler(model, 'v1'));
  assert.equal(dup.failure, 'failed');
  assert.equal(dup.category, 'user');
  assert.match(dup.message, /already exists/);
  assert.match((await rejection(client.loadWeights(model, sampler))).message, /no training state/);
  await assert.rejects(client.loadWeights(model, 'weights/v1'), InputError);
});

test('results of a server before protobuf (JSON), and a metadata-only answer first, read the same', async () => {
  const { fake, client } = await setup();
  fake.jsonResults = true;
  fake.metadataFirst = true;
  const model = await client.createModel({ baseModel: 'Qwen/Qwen3-8B', loraRank: 8 });
  const fb = await client.forwardBackward(model, [isDatum([1, 2], [3], [-1], [0.5])], 'importance_sampling');
  assert.deepEqual(fb.lossFnOutputs[0]!.logprobs, { data: [-0.5, -0.5], dtype: 'float32', shape: [2] });
  const polls = fake.requests(ROUTES.retrieveFuture).slice(-2);
  assert.deepEqual(
    polls.map((p) => (p.body as Json).allow_metadata_only),
    [true, false],
  );
  const session = await client.createSamplingSession({ baseModel: 'Qwen/Qwen3-8B' });
  const out = await client.sample({ samplingSessionId: session, prompt: [1, 2], maxTokens: 2, topkPromptLogprobs: 1, promptLogprobs: true });
  assert.deepEqual(out.sequences, [{ tokens: [11, 12], logprobs: [-0.5, -0.5], stopReason: 'length' }]);
  assert.deepEqual(out.promptLogprobs, [null, -1]);
  assert.deepEqual(out.topkPromptLogprobs, [null, [{ id: 2, logprob: -1 }]]);
});

test('slow futures: try_again several times with the queue state, which the log reports', async () => {
  const { fake, client, logs } = await setup();
  const model = await client.createModel({ baseModel: 'Qwen/Qwen3-8B', loraRank: 8 });
  fake.slowFutures = 3;
  fake.queueStateReason = 'Tinker is short on capacity';
  await client.optimStep(model, adam);
  const rid = (fake.requests(ROUTES.retrieveFuture).at(-1)!.body as Json).request_id as string;
  assert.equal(fake.requests(ROUTES.retrieveFuture).filter((r) => (r.body as Json).request_id === rid).length, 4);
  assert.ok(
    logs.some((l) => l === `queued: optim_step ${rid} (paused_capacity: Tinker is short on capacity)`),
    logs.join('\n'),
  );
});

test('a 408 on retrieve_future is taken as try_again', async () => {
  const { fake, client, logs } = await setup();
  const model = await client.createModel({ baseModel: 'Qwen/Qwen3-8B', loraRank: 8 });
  fake.slowFutures = 2;
  fake.tryAgainAs408 = true;
  fake.queueState = 'paused_rate_limit';
  await client.optimStep(model, adam);
  assert.deepEqual(
    fake.requests(ROUTES.retrieveFuture).slice(-3).map((r) => r.status),
    [408, 408, 200],
  );
  assert.ok(logs.some((l) => /^queued: optim_step future-\d+ \(paused_rate_limit\)$/.test(l)), logs.join('\n'));
});

test('a future gone on the Tinker side (410) is a clear error; a sample is sent again', async () => {
  const { fake, client, logs } = await setup();
  const model = await client.createModel({ baseModel: 'Qwen/Qwen3-8B', loraRank: 8 });
  fake.expireNext();
  const e = await rejection(client.optimStep(model, adam));
  assert.equal(e.failure, 'expired');
  assert.equal(e.status, 410);
  assert.match(e.message, /^the future for optim_step \(request future-\d+\) expired on the Tinker side \(410\); the request must be sent again/);

  const session = await client.createSamplingSession({ baseModel: 'Qwen/Qwen3-8B' });
  fake.expireNext();
  const out = await client.sample({ samplingSessionId: session, prompt: [1], maxTokens: 1 });
  assert.deepEqual(out.sequences[0]!.tokens, [11]);
  assert.deepEqual(
    fake.requests(ROUTES.asample).map((r) => (r.body as Json).seq_id),
    [0, 1],
  );
  assert.ok(logs.some((l) => /sending the sample again/.test(l)));
});

test('a refused API key is an UpstreamError naming 401 and the key', async () => {
  const { fake } = await setup();
  const client = new TinkerClient({ baseUrl: fake.url, apiKey: 'tml-not-the-key', pollIntervalMs: 5, maxPollIntervalMs: 20 });
  clients.push(client);
  const e = await rejection(client.createSession());
  assert.equal(e.failure, 'auth');
  assert.equal(e.status, 401);
  assert.match(e.message, /^Tinker refused the API key \(401\) on client\/config: Invalid API key$/);
  assert.equal(fake.requests(ROUTES.clientConfig).length, 1, 'a 401 is not retried');
  assert.throws(() => new TinkerClient({ baseUrl: fake.url, apiKey: 'sk-openai' }), InputError);
});

test('where Tinker enables JWT auth, the key is exchanged for a JWT that the calls then carry', async () => {
  const { fake, client } = await setup({ jwtAuth: true });
  const model = await client.createModel({ baseModel: 'Qwen/Qwen3-8B', loraRank: 8 });
  await client.optimStep(model, adam);
  assert.equal(fake.requests(ROUTES.authToken).length, 1);
  assert.equal(fake.requests(ROUTES.authToken)[0]!.headers['x-api-key'], fake.apiKey);
  for (const r of [...fake.requests(ROUTES.createSession), ...fake.requests(ROUTES.optimStep), ...fake.requests(ROUTES.retrieveFuture)]) assert.match(r.headers['x-api-key']!, /^eyJ/);
});

test('a training error carries its category', async () => {
  const { fake, client } = await setup();
  const model = await client.createModel({ baseModel: 'Qwen/Qwen3-8B', loraRank: 8 });
  fake.failNext('user', 'target token 999999 is outside the vocabulary');
  const e = await rejection(client.forwardBackward(model, [isDatum([1], [2], [-1], [0.1])], 'importance_sampling'));
  assert.equal(e.failure, 'failed');
  assert.equal(e.category, 'user');
  assert.match(e.requestId!, /^future-/);
  assert.match(e.message, /^Tinker's forward_backward \(request future-\d+\) failed with a user error: target token 999999 is outside the vocabulary$/);
  fake.failNext('server', 'worker lost');
  const s = await rejection(client.optimStep(model, adam));
  assert.equal(s.category, 'server');
  assert.match(s.message, /failed with a server error: worker lost/);
});

test('a server restart while a future is pending: polling goes on through refused connections', async () => {
  const { fake, client, logs } = await setup();
  const model = await client.createModel({ baseModel: 'Qwen/Qwen3-8B', loraRank: 8 });
  fake.holdFutures = true;
  const step = client.optimStep(model, adam);
  await waitFor('a poll of the step', () => fake.requests(ROUTES.retrieveFuture).some((r) => r.headers['x-tinker-request-type'] === 'OptimStep'));
  await fake.restart({ downMs: 300, keepFutures: true });
  fake.holdFutures = false;
  await step;
  assert.ok(logs.some((l) => /polling optim_step future-\d+: (connection refused|connection reset)/.test(l)), logs.join('\n'));
  assert.equal(fake.executed[ROUTES.optimStep], 1);
  assert.equal(fake.models.get(model)!.steps, 1);

  // When the restart loses the pending futures, they answer 410.
  fake.holdFutures = true;
  const lost = client.optimStep(model, adam);
  await waitFor('a poll of the second step', () => fake.requests(ROUTES.retrieveFuture).filter((r) => r.headers['x-tinker-request-type'] === 'OptimStep').length >= 3);
  await fake.restart({ downMs: 50, keepFutures: false });
  fake.holdFutures = false;
  assert.equal((await rejection(lost)).failure, 'expired');
});

test('a mutating call whose answer is lost is sent again with the same X-Idempotency-Key and runs once', async () => {
  // Retries enough to outlast the restart at these short backoffs.
  const { fake, client, logs } = await setup({}, { retries: 40 });
  const model = await client.createModel({ baseModel: 'Qwen/Qwen3-8B', loraRank: 8 });
  fake.dropNextResponse(ROUTES.optimStep, { restartMs: 150 });
  await client.optimStep(model, adam);
  const sent = fake.requests(ROUTES.optimStep);
  assert.ok(sent.length >= 2, `${sent.length} optim_step requests`);
  assert.equal(new Set(sent.map((r) => r.headers['x-idempotency-key'])).size, 1, 'one key for all the tries');
  assert.equal(new Set(sent.map((r) => JSON.stringify(r.body))).size, 1, 'the same request each time');
  assert.equal(fake.executed[ROUTES.optimStep], 1);
  assert.equal(fake.models.get(model)!.steps, 1);
  assert.ok(logs.some((l) => /^tinker: optim_step failed \(.*\); retry 1\/40/.test(l)), logs.join('\n'));

  // The same for a 503: retried with the same key.
  fake.failHttp(ROUTES.saveWeights, 503, 2);
  await client.saveWeights(model, 'v1');
  const saves = fake.requests(ROUTES.saveWeights);
  assert.deepEqual(
    saves.map((r) => r.status),
    [503, 503, 200],
  );
  assert.equal(new Set(saves.map((r) => r.headers['x-idempotency-key'])).size, 1);
});

test('request timeouts: a call that gets no answer in time is retried (same key), then given up', async () => {
  const { fake, client } = await setup({}, { requestTimeoutMs: 150, retries: 1 });
  const model = await client.createModel({ baseModel: 'Qwen/Qwen3-8B', loraRank: 8 });
  fake.stallNext(ROUTES.optimStep, 400);
  await client.optimStep(model, adam);
  const sent = fake.requests(ROUTES.optimStep);
  assert.equal(sent.length, 2);
  assert.equal(sent[0]!.headers['x-idempotency-key'], sent[1]!.headers['x-idempotency-key']);
  assert.equal(fake.executed[ROUTES.optimStep], 1);

  fake.stallNext(ROUTES.optimStep, 400, 2);
  const e = await rejection(client.optimStep(model, adam));
  assert.equal(e.failure, 'unreachable');
  assert.match(e.message, /^Tinker at http:\/\/127\.0\.0\.1:\d+ did not answer optim_step \(no answer within 150 ms; 2 attempts\)$/);
  // The step ran on Tinker's side, so its seq_id is spent; the next request goes on after it.
  await client.optimStep(model, adam);
  assert.deepEqual(
    fake.requests(ROUTES.optimStep).map((r) => (r.body as Json).seq_id),
    [1, 1, 2, 2, 3],
  );
});

test('a future still queued past futureTimeoutMs is a timeout naming the last queue state', async () => {
  const { fake, client } = await setup({}, { futureTimeoutMs: 200 });
  const model = await client.createModel({ baseModel: 'Qwen/Qwen3-8B', loraRank: 8 });
  fake.holdFutures = true;
  const e = await rejection(client.optimStep(model, adam));
  fake.holdFutures = false;
  assert.equal(e.failure, 'timeout');
  assert.match(e.message, /^Tinker's optim_step \(request future-\d+\) still queued after 0 s \(last queue state paused_capacity\)$/);
});
