// The engine's two lanes on the WebGPU backend: decoding goes on while a training step runs on another
// adapter (the step submits its work in chunks that decode calls slot in between), with the same
// tokens it gives alone, and the step gives the losses and weights it gives alone; a call that reads
// an adapter never overlaps a step that writes it. Skipped without a WebGPU adapter; with CI=true a
// missing adapter fails the run instead.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine, type Adapter, type Lane, type SampledToken } from '../src/engine/engine.js';
import { probeWebGpu } from '../src/engine/webgpu/probe.js';
import { writeRandomModel } from '../src/model/random-model.js';

const probe = await probeWebGpu();
const skip = probe.ok ? false : `no WebGPU adapter: ${probe.reason}`;

test('a WebGPU adapter is present (required when CI=true)', { skip: process.env.CI === 'true' ? false : skip }, () => {
  assert.ok(probe.ok, probe.ok ? '' : probe.reason);
});

const greedy = { temperature: 0, topP: 1, topK: 0, topLogprobs: 0 };
const prompt = [3, 9, 27, 81 % 60, 5, 11];
const sample = { promptIds: [1, 2, 3, 4, 5, 6, 7, 8], teacherPromptIds: [1, 2, 3, 40, 41, 4, 5, 6, 7, 8], responseIds: Array.from({ length: 24 }, (_, i) => (i * 7 + 3) % 60) };

/** 12 greedy tokens of `start` (default: prompt), one decode call per token. */
async function greedyTokens(engine: Engine, adapter: Adapter | null, onCall?: () => void, start = prompt, lane: Lane = 'interactive'): Promise<number[]> {
  const seq = engine.createSequence(1);
  const out: SampledToken[] = [];
  let ids = start;
  for (let i = 0; i < 12; i++) {
    const [t] = await engine.decode([{ sequence: seq, ids, sampling: greedy }], adapter, { lane });
    onCall?.();
    out.push(t!);
    ids = [t!.id];
  }
  return out.map((t) => t.id);
}

test('on WebGPU, decoding runs while a step trains another adapter, and gives the tokens it gives alone', { skip }, async (t) => {
  const engine = await Engine.open(writeRandomModel({ seed: 61, hidden: 64, layers: 4, vocab: 64 }), { backend: 'webgpu' });
  try {
    assert.equal(engine.backend, 'webgpu');
    assert.equal(engine.concurrentLanes, true);
    const served = engine.createAdapter({ rank: 4, alpha: 8, seed: 1 });
    // Give the served adapter some weight so its tokens differ from the base model's.
    await engine.sdpoStep(served, [sample], { learningRate: 5e-2, steps: 2 });
    const alone = await greedyTokens(engine, served);
    const logitsAlone = await engine.logits(prompt, served);
    const candidate = await engine.cloneAdapter(served, { freshOptimizer: true });
    const lone = await engine.cloneAdapter(served, { freshOptimizer: true });
    const stepAlone = await engine.sdpoStep(lone, [sample], { learningRate: 1e-2, steps: 40 });

    let stepDone = false;
    let callsDuringStep = 0;
    const t0 = performance.now();
    let stepMs = 0;
    const step = engine.sdpoStep(candidate, [sample], { learningRate: 1e-2, steps: 40 }).then((r) => {
      stepDone = true;
      stepMs = performance.now() - t0;
      return r;
    });
    // A full forward in the interactive lane too: a second pass-sized workspace beside the step's.
    const logitsDuring = engine.logits(prompt, served, { lane: 'interactive' });
    const during = await greedyTokens(engine, served, () => {
      if (!stepDone) callsDuringStep++;
    });
    const stepped = await step;
    t.diagnostic(`decode calls that finished while the 40-step update ran: ${callsDuringStep} of 12; the step took ${stepMs.toFixed(0)} ms (alone: ${stepAlone.timings.totalMs.toFixed(0)} ms)`);
    assert.deepEqual(during, alone, 'the tokens decoded during the step');
    assert.deepEqual(await logitsDuring, logitsAlone, 'the logits computed during the step');
    assert.ok(callsDuringStep >= 6, `decode calls that finished while the 40-step update ran: ${callsDuringStep} of 12`);
    // The step itself is the one it is alone: the same losses, the same weights and optimizer state.
    assert.deepEqual(stepped.stepLosses, stepAlone.stepLosses);
    assert.deepEqual(stepped.gradNorm, stepAlone.gradNorm);
    const [a, b] = [candidate.state(), lone.state()];
    assert.deepEqual([...a.params], [...b.params]);
    assert.deepEqual([...a.ema], [...b.ema]);
    assert.deepEqual([...a.m], [...b.m]);
    assert.deepEqual([...a.v], [...b.v]);
    assert.equal(a.step, b.step);
    // The served adapter was only read.
    assert.deepEqual(await greedyTokens(engine, served), alone);
  } finally {
    engine.dispose();
  }
});

test('on WebGPU, a call on an adapter waits for the step that writes it, and a step waits for the calls that read it', { skip }, async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 62, hidden: 64, layers: 2, vocab: 64 }), { backend: 'webgpu' });
  try {
    const a = engine.createAdapter({ rank: 4, alpha: 8, seed: 2 });
    const order: string[] = [];
    // A long step, then a short decode on the same adapter in the other lane: the decode waits.
    const step = engine.sdpoStep(a, [sample], { learningRate: 5e-2, steps: 30 }).then(() => order.push('step'));
    const seq = engine.createSequence(1);
    const decoded = engine.decode([{ sequence: seq, ids: prompt, sampling: greedy }], a).then((t) => (order.push('decode'), t));
    await Promise.all([step, decoded]);
    assert.deepEqual(order, ['step', 'decode']);
    // It decoded with the trained weights.
    const logits = await engine.logits(prompt, a);
    const last = logits.subarray((prompt.length - 1) * 64, prompt.length * 64);
    assert.equal((await decoded)[0]!.id, last.indexOf(Math.max(...last)));

    // A long prefill, then a one-step update of the same adapter: the step waits for the read.
    order.length = 0;
    const long = engine.createSequence(1);
    const prefill = engine.decode([{ sequence: long, ids: Array.from({ length: 1500 }, (_, i) => (i * 13) % 64), sampling: greedy }], a).then(() => order.push('prefill'));
    const short = engine.sdpoStep(a, [sample], { learningRate: 1e-3, steps: 1 }).then(() => order.push('step'));
    await Promise.all([prefill, short]);
    assert.deepEqual(order, ['prefill', 'step']);
  } finally {
    engine.dispose();
  }
});

test('on WebGPU, two decodes in flight at once (one per lane) each give the tokens they give alone', { skip }, async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 63, hidden: 64, layers: 2, vocab: 64 }), { backend: 'webgpu' });
  try {
    const a = engine.createAdapter({ rank: 4, alpha: 8, seed: 3 });
    await engine.sdpoStep(a, [sample], { learningRate: 5e-2, steps: 2 });
    // Different lengths, so that scratch shared by mistake would hold the other call's rows.
    const other = Array.from({ length: 40 }, (_, i) => (i * 11 + 2) % 64);
    const aloneA = await greedyTokens(engine, a);
    const aloneB = await greedyTokens(engine, null, undefined, other, 'background');
    const [withA, withB] = await Promise.all([greedyTokens(engine, a), greedyTokens(engine, null, undefined, other, 'background')]);
    assert.deepEqual(withA, aloneA);
    assert.deepEqual(withB, aloneB);
  } finally {
    engine.dispose();
  }
});
