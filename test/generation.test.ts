// Generation with KV caches: cached greedy decoding equals recomputing the full forward, prompt
// chunking and batching change nothing, and sampling is reproducible from a seed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine, type Adapter } from '../src/engine/engine.js';
import { normal, rng, writeRandomModel } from '../src/model/random-model.js';

const greedy = { temperature: 0, topP: 1, topK: 0, topLogprobs: 3 };
const V = 64;

function argmaxRow(logits: Float32Array, row: number): number {
  let best = 0;
  for (let v = 1; v < V; v++) if (logits[row * V + v]! > logits[row * V + best]!) best = v;
  return best;
}

async function trained(engine: Engine): Promise<Adapter> {
  const probe = engine.createAdapter({ rank: 4, alpha: 8, seed: 1 });
  const r = rng(3);
  const params = probe.state().params.map(() => 0.1 * normal(r));
  return engine.restoreAdapter(probe.shape, { params, step: 0 });
}

async function generate(engine: Engine, prompt: number[], n: number, adapter: Adapter | null, chunk = prompt.length) {
  const seq = engine.createSequence(1);
  let out = await engine.decode([{ sequence: seq, ids: prompt.slice(0, chunk), sampling: greedy }], adapter);
  for (let i = chunk; i < prompt.length; i += chunk) out = await engine.decode([{ sequence: seq, ids: prompt.slice(i, i + chunk), sampling: greedy }], adapter);
  const tokens = [out[0]!];
  while (tokens.length < n) tokens.push((await engine.decode([{ sequence: seq, ids: [tokens.at(-1)!.id], sampling: greedy }], adapter))[0]!);
  return tokens;
}

test('cached greedy decoding equals the full forward recomputed at every step', async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 41 }), { backend: 'cpu', threads: 2 });
  const adapter = await trained(engine);
  for (const a of [null, adapter]) {
    const prompt = [5, 17, 3, 40, 22, 9, 61];
    const tokens = await generate(engine, prompt, 12, a);
    const ids = [...prompt];
    for (const t of tokens) {
      const logits = await engine.logits(ids, a);
      const row = ids.length - 1;
      assert.equal(t.id, argmaxRow(logits, row));
      let m = -Infinity;
      for (let v = 0; v < V; v++) m = Math.max(m, logits[row * V + v]!);
      let s = 0;
      for (let v = 0; v < V; v++) s += Math.exp(logits[row * V + v]! - m);
      assert.ok(Math.abs(t.logprob - (logits[row * V + t.id]! - m - Math.log(s))) < 1e-4, 'reported logprob is the model log-probability');
      assert.equal(t.topIds[0], t.id);
      ids.push(t.id);
    }
    // The engine's per-token log-probabilities agree with the generation's.
    const lp = await engine.logprobs(ids, a, prompt.length);
    for (let i = 0; i < tokens.length - 1; i++) assert.ok(Math.abs(lp[i]! - tokens[i]!.logprob) < 1e-4);
  }
});

test('prompt chunking and batching with other sequences give the same tokens', async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 42 }), { backend: 'cpu', threads: 2 });
  const p1 = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
  const p2 = [33, 34, 35];
  const alone1 = await generate(engine, p1, 8, null);
  const alone2 = await generate(engine, p2, 8, null);
  assert.deepEqual((await generate(engine, p1, 8, null, 4)).map((t) => t.id), alone1.map((t) => t.id));

  const s1 = engine.createSequence(1), s2 = engine.createSequence(1);
  // s2 starts while s1 is already decoding: prefill and decode mixed in one batch.
  const o1 = (await engine.decode([{ sequence: s1, ids: p1, sampling: greedy }]))[0]!;
  const got1 = [o1.id];
  let [n1, n2] = await engine.decode([{ sequence: s1, ids: [o1.id], sampling: greedy }, { sequence: s2, ids: p2, sampling: greedy }]);
  got1.push(n1!.id);
  const got2 = [n2!.id];
  while (got2.length < 8) {
    [n1, n2] = await engine.decode([{ sequence: s1, ids: [got1.at(-1)!], sampling: greedy }, { sequence: s2, ids: [got2.at(-1)!], sampling: greedy }]);
    if (got1.length < 8) got1.push(n1!.id);
    got2.push(n2!.id);
  }
  assert.deepEqual(got1, alone1.map((t) => t.id));
  assert.deepEqual(got2, alone2.map((t) => t.id));
});

test('sampling with a seed is reproducible and respects top-k', async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 43 }), { backend: 'cpu', threads: 1 });
  const run = async (seed: number) => {
    const seq = engine.createSequence(seed);
    const sampling = { temperature: 1.5, topP: 0.95, topK: 5, topLogprobs: 5 };
    let t = (await engine.decode([{ sequence: seq, ids: [7, 8, 9], sampling }]))[0]!;
    const out = [t];
    for (let i = 0; i < 20; i++) out.push((t = (await engine.decode([{ sequence: seq, ids: [t.id], sampling }]))[0]!));
    return out;
  };
  const a = await run(123), b = await run(123), c = await run(124);
  assert.deepEqual(a.map((t) => t.id), b.map((t) => t.id));
  assert.notDeepEqual(a.map((t) => t.id), c.map((t) => t.id));
  for (const t of a) assert.ok(Array.from(t.topIds).includes(t.id), 'a top-5 token was sampled');
});

test('decode rejects bad sampling parameters and positions beyond the model', async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 44 }), { backend: 'cpu', threads: 1 });
  const seq = engine.createSequence(1);
  await assert.rejects(engine.decode([{ sequence: seq, ids: [1], sampling: { ...greedy, temperature: -1 } }]), /temperature/);
  await assert.rejects(engine.decode([{ sequence: seq, ids: [1], sampling: { ...greedy, topP: 0 } }]), /topP/);
  await assert.rejects(engine.decode([{ sequence: seq, ids: [], sampling: greedy }]), /empty/);
  await assert.rejects(engine.decode([{ sequence: seq, ids: [1], sampling: greedy }, { sequence: seq, ids: [2], sampling: greedy }]), /twice/);
});

test('sampling never picks ids at or above vocabLimit (padded model vocabularies)', async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 45 }), { backend: 'cpu', threads: 1 });
  const limit = 10;
  for (const sampling of [{ ...greedy, vocabLimit: limit }, { temperature: 2, topP: 1, topK: 0, topLogprobs: 5, vocabLimit: limit }]) {
    const seq = engine.createSequence(9);
    let t = (await engine.decode([{ sequence: seq, ids: [40, 50, 60], sampling }]))[0]!;
    for (let i = 0; i < 30; i++) {
      assert.ok(t.id < limit && Array.from(t.topIds).every((id) => id < limit), `sampled ${t.id}, top ${Array.from(t.topIds)}`);
      t = (await engine.decode([{ sequence: seq, ids: [t.id], sampling }]))[0]!;
    }
  }
});
