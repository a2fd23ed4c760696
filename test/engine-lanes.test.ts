// The engine's two lanes on the CPU: decoding goes on while a training step runs on another adapter,
// with the same tokens it gives alone, and a call that reads an adapter never overlaps a step that
// writes it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine, type Adapter, type SampledToken } from '../src/engine/engine.js';
import { writeRandomModel } from '../src/model/random-model.js';

const greedy = { temperature: 0, topP: 1, topK: 0, topLogprobs: 0 };
const prompt = [3, 9, 27, 81 % 60, 5, 11];
const sample = { promptIds: [1, 2, 3, 4, 5, 6, 7, 8], teacherPromptIds: [1, 2, 3, 40, 41, 4, 5, 6, 7, 8], responseIds: Array.from({ length: 24 }, (_, i) => (i * 7 + 3) % 60) };

/** 12 greedy tokens of `prompt`, one decode call per token. */
async function greedyTokens(engine: Engine, adapter: Adapter | null, onCall?: () => void): Promise<number[]> {
  const seq = engine.createSequence(1);
  const out: SampledToken[] = [];
  let ids = prompt;
  for (let i = 0; i < 12; i++) {
    const [t] = await engine.decode([{ sequence: seq, ids, sampling: greedy }], adapter);
    onCall?.();
    out.push(t!);
    ids = [t!.id];
  }
  return out.map((t) => t.id);
}

test('on the CPU, decoding runs while a step trains another adapter, and gives the tokens it gives alone', async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 61, hidden: 64, layers: 4, vocab: 64 }), { backend: 'cpu', threads: 1 });
  assert.equal(engine.concurrentLanes, true);
  const served = engine.createAdapter({ rank: 4, alpha: 8, seed: 1 });
  // Give the served adapter some weight so its tokens differ from the base model's.
  await engine.sdpoStep(served, [sample], { learningRate: 5e-2, steps: 2 });
  const alone = await greedyTokens(engine, served);
  const candidate = await engine.cloneAdapter(served, { freshOptimizer: true });
  const lone = await engine.cloneAdapter(served, { freshOptimizer: true });
  const stepAlone = await engine.sdpoStep(lone, [sample], { learningRate: 1e-2, steps: 40 });

  let stepDone = false;
  let callsDuringStep = 0;
  const step = engine.sdpoStep(candidate, [sample], { learningRate: 1e-2, steps: 40 }).then((r) => {
    stepDone = true;
    return r;
  });
  const during = await greedyTokens(engine, served, () => {
    if (!stepDone) callsDuringStep++;
  });
  const stepped = await step;
  assert.deepEqual(during, alone, 'the tokens decoded during the step');
  assert.ok(callsDuringStep >= 6, `decode calls that finished while the 40-step update ran: ${callsDuringStep} of 12`);
  // The step itself is the one it is alone: the same losses, the same weights.
  assert.deepEqual(stepped.stepLosses, stepAlone.stepLosses);
  assert.deepEqual([...candidate.state().params], [...lone.state().params]);
});

test('a call on an adapter waits for the step that writes it, and a step waits for the calls that read it', async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 62, hidden: 64, layers: 2, vocab: 64 }), { backend: 'cpu', threads: 1 });
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
});
