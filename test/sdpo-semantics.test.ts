// Behaviour the SDPO contract promises, checked through the public engine API: the base and teacher
// passes truly run without the adapter, the learning rate of each request is used, and a step never
// blocks the event loop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Engine, type Adapter } from '../src/engine/engine.js';
import { normal, rng, tempDir, writeRandomModel } from '../src/model/random-model.js';

const V = 64;
const prompt = [3, 14, 15, 9, 26];
const response = [5, 35, 8, 1];

function logSoftmaxRow(logits: Float32Array, row: number): Float64Array {
  const x = Array.from(logits.subarray(row * V, (row + 1) * V));
  const m = Math.max(...x);
  const lse = m + Math.log(x.reduce((s, v) => s + Math.exp(v - m), 0));
  return Float64Array.from(x, (v) => v - lse);
}

async function trainedAdapter(engine: Engine): Promise<Adapter> {
  const probe = engine.createAdapter({ rank: 4, alpha: 8, seed: 1 });
  const n = probe.state().params.length;
  const rand = rng(5);
  const params = new Float32Array(n).map(() => 0.1 * normal(rand));
  return engine.restoreAdapter(probe.shape, { params, ema: params.slice(), step: 0 });
}

test('teacher "base" and the KL-to-base term run with the adapter truly off', async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 31 }), { backend: 'cpu', threads: 2 });
  const adapter = await trainedAdapter(engine);
  const ids = [...prompt, ...response];
  const student = await engine.logits(ids, adapter);
  const base = await engine.logits(ids, null);
  assert.notDeepEqual(student, base, 'the adapter changes the logits');

  // Same prompt for teacher and student: the divergence is exactly student vs base model.
  const sample = { promptIds: prompt, teacherPromptIds: prompt, responseIds: response };
  const K = 8;
  let fwd = 0, k3 = 0;
  for (let t = 0; t < response.length; t++) {
    const s = logSoftmaxRow(student, prompt.length - 1 + t);
    const b = logSoftmaxRow(base, prompt.length - 1 + t);
    const top = Array.from(b.keys()).sort((i, j) => b[j]! - b[i]!).slice(0, K);
    const pTail = 1 - top.reduce((a, i) => a + Math.exp(b[i]!), 0);
    const qTail = 1 - top.reduce((a, i) => a + Math.exp(s[i]!), 0);
    fwd += top.reduce((a, i) => a + Math.exp(b[i]!) * (b[i]! - s[i]!), 0) + pTail * Math.log(pTail / qTail);
    const r = s[response[t]!]! - b[response[t]!]!;
    k3 += Math.exp(r) - 1 - r;
  }
  fwd /= response.length;
  k3 /= response.length;
  const r = await engine.sdpoStep(adapter, [sample], { teacher: 'base', alpha: 0, topK: K, beta: 0.5, learningRate: 1e-6 });
  assert.ok(fwd > 1e-3 && k3 > 1e-4, 'the test adapter is far enough from the base model');
  assert.ok(Math.abs(r.teacherStudentKl - fwd) < 1e-4 * Math.max(1, fwd), `teacher KL ${r.teacherStudentKl} vs ${fwd}`);
  assert.ok(Math.abs(r.klToBase - k3) < 1e-4 * Math.max(1, k3), `KL to base ${r.klToBase} vs ${k3}`);

  // With the adapter as its own teacher on the same prompt there is nothing to learn.
  const self = await engine.sdpoStep(engine.restoreAdapter(adapter.shape, { params: adapter.state().params, step: 0 }), [sample], { teacher: 'current', topK: K });
  assert.ok(Math.abs(self.teacherStudentKl) < 1e-6, `self-divergence ${self.teacherStudentKl}`);
});

test('a fresh adapter starts at KL 0 to the base model and training moves it away', async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 32 }), { backend: 'cpu', threads: 2 });
  const adapter = engine.createAdapter({ rank: 4, alpha: 8, seed: 2 });
  const sample = { promptIds: prompt, teacherPromptIds: [3, 14, 60, 61, 62, 15, 9, 26], responseIds: response };
  const first = await engine.sdpoStep(adapter, [sample], { learningRate: 5e-3, topK: 8 });
  assert.equal(first.klToBase, 0);
  let last = first;
  for (let i = 0; i < 5; i++) last = await engine.sdpoStep(adapter, [sample], { learningRate: 5e-3, topK: 8 });
  assert.ok(last.klToBase > 0, 'KL to base becomes positive once the adapter has learned');
  assert.ok(last.loss < first.loss, `distillation reduces the loss (${first.loss} -> ${last.loss})`);
});

test("each request's learning rate is used, also after the optimizer state is reloaded", async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 33 }), { backend: 'cpu', threads: 2 });
  const adapter = await trainedAdapter(engine);
  const sample = { promptIds: prompt, teacherPromptIds: [3, 14, 60, 15, 9, 26], responseIds: response };
  await engine.sdpoStep(adapter, [sample], { learningRate: 1e-2, topK: 8 });
  const dir = join(tempDir(), 'v1');
  await engine.saveAdapter(adapter, dir);
  const before = adapter.state().params;
  const delta = async (lr: number) => {
    const a = await engine.loadAdapter(dir);
    await engine.sdpoStep(a, [sample], { learningRate: lr, topK: 8 });
    const after = a.state().params;
    return Math.sqrt(after.reduce((s, x, i) => s + (x - before[i]!) ** 2, 0));
  };
  const big = await delta(1e-3);
  const small = await delta(1e-5);
  // An AdamW update is linear in the learning rate.
  assert.ok(Math.abs(big / small - 100) < 1, `update ratio ${big / small} for a learning-rate ratio of 100`);
});

test('a clone with a fresh optimizer keeps weights and EMA, and its step ignores earlier moments', async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 34 }), { backend: 'cpu', threads: 2 });
  const sample = { promptIds: prompt, teacherPromptIds: [3, 14, 60, 15, 9, 26], responseIds: response };
  const other = { promptIds: [7, 7, 2], teacherPromptIds: [7, 40, 41, 7, 2], responseIds: [50, 51, 52, 1] };
  // Two adapters with the same weights: one after a large earlier step on other data, one untouched.
  const a = await trainedAdapter(engine);
  await engine.sdpoStep(a, [other], { learningRate: 5e-2, topK: 8, steps: 3 });
  const b = engine.restoreAdapter(a.shape, { params: a.state().params, ema: a.state().ema, step: 0 });
  const freshA = await engine.cloneAdapter(a, { freshOptimizer: true });
  const carried = await engine.cloneAdapter(a);
  const s = freshA.state();
  assert.deepEqual(s.params, a.state().params);
  assert.deepEqual(s.ema, a.state().ema);
  assert.equal(s.step, 0);
  assert.ok(s.m.every((x) => x === 0) && s.v.every((x) => x === 0), 'moments start at zero');
  assert.ok(carried.state().step > 0, 'a plain clone keeps the step count');
  for (const x of [freshA, b, carried]) await engine.sdpoStep(x, [sample], { learningRate: 1e-3, topK: 8, steps: 2 });
  const diff = (x: Float32Array, y: Float32Array) => Math.max(...x.map((v, i) => Math.abs(v - y[i]!)));
  assert.ok(diff(freshA.state().params, b.state().params) < 1e-7, 'the fresh clone steps exactly as an adapter that never trained');
  assert.ok(diff(carried.state().params, b.state().params) > 1e-5, 'carried moments would have changed the step');
});

test('steps > 1 keep the teacher targets and keep lowering the loss', async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 34 }), { backend: 'cpu', threads: 2 });
  const adapter = await trainedAdapter(engine);
  const sample = { promptIds: prompt, teacherPromptIds: [3, 14, 60, 15, 9, 26], responseIds: response };
  const r = await engine.sdpoStep(adapter, [sample], { learningRate: 1e-2, topK: 8, steps: 4 });
  assert.equal(r.stepLosses.length, 4);
  assert.ok(r.stepLosses[3]! < r.stepLosses[0]!, `losses ${r.stepLosses.join(', ')}`);
  assert.equal(adapter.state().step, 4);
});

test('a step runs off the event loop', async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 35, hidden: 192, intermediate: 512, layers: 4, heads: 6, kvHeads: 2, headDim: 32, vocab: 512 }), { backend: 'cpu', threads: 2 });
  const adapter = engine.createAdapter({ rank: 8, alpha: 16, seed: 1 });
  const r = rng(1);
  const longPrompt = Array.from({ length: 300 }, () => Math.floor(r() * 512));
  const sample = { promptIds: longPrompt, teacherPromptIds: [...longPrompt.slice(0, 290), 7, 8, 9, ...longPrompt.slice(290)], responseIds: longPrompt.slice(0, 64) };
  let ticks = 0;
  const timer = setInterval(() => ticks++, 2);
  const t0 = performance.now();
  await engine.sdpoStep(adapter, [sample, sample], { learningRate: 1e-4 });
  const ms = performance.now() - t0;
  clearInterval(timer);
  assert.ok(ms > 30, `the step is long enough to observe (${ms.toFixed(0)} ms)`);
  assert.ok(ticks >= Math.floor(ms / 2 / 4), `the event loop ticked ${ticks} times during a ${ms.toFixed(0)} ms step`);
});
