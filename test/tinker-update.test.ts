// One feedback update on Tinker (src/engines/tinker/sdpo-update.ts) against the protocol fake: the
// advantages α·gain·(teacher − student) with the gain clamped to [1, 4], the datum each sample
// becomes (checked field by field as the fake decoded it from protobuf), the calls in order (load
// the served state with its optimizer, score the teacher prompts, forward_backward with
// importance_sampling, one Adam step with β2 0.95, save state and sampler weights under the
// version's name), and a sampling session on the new sampler weights answering as the trained model.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { TinkerClient } from '../src/engines/tinker/client.js';
import type { ForwardBackwardRequestPb } from '../src/engines/tinker/protobuf.js';
import { datumFor, sampleAdvantages, tinkerSdpoStep, type TinkerSample } from '../src/engines/tinker/sdpo-update.js';
import { ROUTES } from '../src/engines/tinker/wire.js';
import { FakeTinker } from './fake-tinker.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

const close: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of close) await c();
});

const near = (a: readonly number[], b: readonly number[], tol = 1e-12) => a.length === b.length && a.every((x, i) => Math.abs(x - b[i]!) <= tol);

test('advantages: α·gain·(teacher − student), each sample scaled up to a mean |Δ| of 0.03, at most 4×, never down', () => {
  // Δ = (0.01, −0.02): mean |Δ| 0.015, gain 2; α 0.5.
  const a = sampleAdvantages([-1, -2], [-0.99, -2.02], 0.5);
  assert.ok(Math.abs(a.gain - 2) < 1e-12, String(a.gain));
  assert.ok(near(a.advantages, [0.5 * 2 * 0.01, 0.5 * 2 * -0.02], 1e-12), JSON.stringify(a));
  assert.ok(Math.abs(a.meanAbsDelta - 0.015) < 1e-12 && Math.abs(a.meanDelta + 0.005) < 1e-12);
  // Large differences are not scaled down; tiny ones are scaled up 4× at most; none: gain 1.
  assert.equal(sampleAdvantages([-3], [-1], 1).gain, 1);
  assert.ok(near(sampleAdvantages([-3], [-1], 1).advantages, [2]));
  assert.equal(sampleAdvantages([-1], [-0.999], 1).gain, 4);
  assert.equal(sampleAdvantages([-1], [-1], 1).gain, 1);
  assert.throws(() => sampleAdvantages([-1, -1], [-1], 1), /differ in length/);
});

test('the datum: input without the last token, next tokens as targets, student log-probs and advantages on response targets only', () => {
  const d = datumFor({ promptIds: [5, 6, 7], teacherPromptIds: [], responseIds: [8, 9], studentLogprobs: [-0.1, -0.2] }, [0.3, -0.4]);
  assert.deepEqual(d, {
    model_input: { chunks: [{ type: 'encoded_text', tokens: [5, 6, 7, 8] }] },
    loss_fn_inputs: {
      target_tokens: { data: [6, 7, 8, 9], dtype: 'int64', shape: [4] },
      logprobs: { data: [0, 0, -0.1, -0.2], dtype: 'float32', shape: [4] },
      advantages: { data: [0, 0, 0.3, -0.4], dtype: 'float32', shape: [4] },
    },
  });
  assert.throws(() => datumFor({ promptIds: [1], teacherPromptIds: [], responseIds: [], studentLogprobs: [] }, []), /empty response/);
  assert.throws(() => datumFor({ promptIds: [1], teacherPromptIds: [], responseIds: [2, 3], studentLogprobs: [-1] }, [0, 0]), /2 response tokens but 1 log-probs/);
});

test('an update on Tinker: load, teacher scores, importance_sampling, Adam β2 0.95, state and sampler saved; the new sampler answers as trained', async () => {
  // The fake's teacher: each prompt token's log-prob depends on the token (so the test can recompute
  // it); its sampler answers (21, 22) once the weights have taken a step, (11, 12) before.
  const teacherLp = (token: number) => -((token % 5) + 1) / 10;
  const fake = await FakeTinker.start({
    promptLogprob: (_info, prompt, i) => teacherLp(prompt[i]!),
    sampler: (info) => (info.steps > 0 ? [21, 22] : [11, 12]),
  });
  const client = new TinkerClient({ baseUrl: fake.url, apiKey: fake.apiKey, pollIntervalMs: 5, maxPollIntervalMs: 20 });
  close.push(() => fake.close(), () => client.close());
  await client.createSession({ tags: ['claas-test'] });
  const model = await client.createModel({ baseModel: 'Qwen/Qwen3-8B', loraRank: 8 });
  const v1 = await client.saveWeights(model, 'v0001');
  const v1Sampler = await client.saveWeightsForSampler(model, 'v0001');
  const before = await client.sample({ samplingSessionId: await client.createSamplingSession({ modelPath: v1Sampler }), prompt: [1, 2], maxTokens: 2 });
  assert.deepEqual(before.sequences[0]!.tokens, [11, 12]);

  const samples: TinkerSample[] = [
    { promptIds: [1, 2, 3], teacherPromptIds: [1, 2, 30, 31, 3], responseIds: [40, 41, 42], studentLogprobs: [-0.5, -0.25, -0.1] },
    { promptIds: [4, 5], teacherPromptIds: [4, 50, 5], responseIds: [43], studentLogprobs: [-0.3] },
  ];
  const teacherSession = await client.createSamplingSession({ baseModel: 'Qwen/Qwen3-8B' });
  const r = await tinkerSdpoStep(client, { modelId: model, fromState: v1, teacherSession, samples, learningRate: 3e-5, alpha: 0.5, name: 'v0002' });

  // Calls, in order, on the training model.
  const order = fake.received.filter((x) => [ROUTES.loadWeights, ROUTES.forwardBackward, ROUTES.optimStep, ROUTES.saveWeights, ROUTES.saveWeightsForSampler].includes(x.path as never)).map((x) => x.path);
  assert.deepEqual(order.slice(-5), [ROUTES.loadWeights, ROUTES.forwardBackward, ROUTES.optimStep, ROUTES.saveWeights, ROUTES.saveWeightsForSampler]);
  const load = fake.requests(ROUTES.loadWeights).at(-1)!.body as Json;
  assert.equal(load.path, v1);
  assert.equal(load.optimizer, true);
  // The teacher scored each teacher prompt followed by its response, with prompt log-probs.
  const scored = fake.requests(ROUTES.asample).slice(-2).map((x) => x.body as Json);
  for (const [i, s] of samples.entries()) {
    const q = scored.find((b) => b.prompt.chunks[0].tokens.join() === [...s.teacherPromptIds, ...s.responseIds].join());
    assert.ok(q, `sample ${i} was scored by the teacher`);
    assert.equal(q.sampling_session_id, teacherSession);
    assert.equal(q.prompt_logprobs, true);
  }
  // Each datum as the fake decoded it: the advantages from the teacher's log-probs, recomputed here.
  const fb = fake.requests(ROUTES.forwardBackward).at(-1)!.body as ForwardBackwardRequestPb;
  assert.equal(fb.loss_fn, 'importance_sampling');
  assert.equal(fb.data.length, 2);
  for (const [i, s] of samples.entries()) {
    // Sample results come back as protobuf, their log-probs as float32.
    const teacher = s.responseIds.map((t) => Math.fround(teacherLp(t)));
    const delta = teacher.map((t, j) => t - s.studentLogprobs[j]!);
    const meanAbs = delta.reduce((a, d) => a + Math.abs(d), 0) / delta.length;
    const gain = Math.min(Math.max(0.03 / meanAbs, 1), 4);
    const adv = delta.map((d) => 0.5 * gain * d);
    const d = fb.data[i]!;
    const tokens = [...s.promptIds, ...s.responseIds];
    assert.deepEqual(d.model_input.chunks[0]!.tokens, tokens.slice(0, -1));
    assert.deepEqual(d.loss_fn_inputs.target_tokens, { data: tokens.slice(1), dtype: 'int64', shape: [tokens.length - 1] });
    const pad = s.promptIds.map(() => 0);
    assert.deepEqual(d.loss_fn_inputs.logprobs!.data, [...pad, ...s.studentLogprobs].slice(1).map(Math.fround));
    assert.deepEqual(d.loss_fn_inputs.advantages!.data, [...pad, ...adv].slice(1).map(Math.fround));
    assert.equal(d.loss_fn_inputs.advantages!.dtype, 'float32');
  }
  const opt = fake.requests(ROUTES.optimStep).at(-1)!.body as Json;
  assert.equal(opt.adam_params.learning_rate, 3e-5);
  assert.equal(opt.adam_params.beta1, 0.9);
  assert.equal(opt.adam_params.beta2, 0.95);
  assert.match(r.statePath, /^tinker:\/\/.+\/weights\/v0002$/);
  assert.match(r.samplerPath, /^tinker:\/\/.+\/sampler_weights\/v0002$/);
  assert.equal(r.metrics.samples, 2);
  assert.equal(r.metrics.tokens, 4);

  // The version's sampler weights serve the trained model; the previous version's still serve the old.
  const after2 = await client.sample({ samplingSessionId: await client.createSamplingSession({ modelPath: r.samplerPath }), prompt: [1, 2], maxTokens: 2 });
  assert.deepEqual(after2.sequences[0]!.tokens, [21, 22]);
  const rolledBack = await client.sample({ samplingSessionId: await client.createSamplingSession({ modelPath: v1Sampler }), prompt: [1, 2], maxTokens: 2 });
  assert.deepEqual(rolledBack.sequences[0]!.tokens, [11, 12]);
});
