// One decode call carrying rows of several adapters and of the base model gives what the same
// sequences give decoded adapter by adapter, on the CPU engine: identical greedy tokens and top-20
// ids, log-probabilities within 1e-5 (worst seen 3.1e-6: OpenBLAS blocks a GEMM differently for a
// different number of rows); and the rows of different adapters really do differ.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine, type Adapter, type SampledToken, type Sequence } from '../src/engine/engine.js';
import { normal, rng, writeRandomModel } from '../src/model/random-model.js';

const greedy = { temperature: 0, topP: 1, topK: 0, topLogprobs: 20 };
const TOLERANCE = 1e-5;

/** An adapter of the given shape with random, non-zero A and B (a fresh one has B = 0). */
export function randomAdapter(engine: Engine, rank: number, targets: string[], seed: number): Adapter {
  const probe = engine.createAdapter({ rank, alpha: 2 * rank, targetModules: targets, seed });
  const r = rng(seed);
  const params = probe.state().params.map(() => 0.15 * normal(r));
  probe.dispose();
  return engine.restoreAdapter(probe.shape, { params, step: 0 });
}

interface Plan {
  adapter: Adapter | null;
  prompt: number[];
  /** The step at which this sequence's prompt arrives (so prefill and decode rows mix). */
  joins: number;
  chunk: number;
}

/**
 * Runs the plans for `steps` steps: at each step every sequence that has joined gets its next prompt
 * chunk or its last token. `group` decides which entries share a call.
 */
async function run(engine: Engine, plans: Plan[], steps: number, group: (p: Plan) => unknown): Promise<SampledToken[][]> {
  const seqs: Sequence[] = plans.map((_, i) => engine.createSequence(i + 1));
  const fed = plans.map(() => 0);
  const out: SampledToken[][] = plans.map(() => []);
  for (let step = 0; step < steps; step++) {
    const calls = new Map<unknown, { i: number; ids: number[] }[]>();
    plans.forEach((p, i) => {
      if (step < p.joins) return;
      const ids = fed[i]! < p.prompt.length ? p.prompt.slice(fed[i], fed[i]! + p.chunk) : [out[i]!.at(-1)!.id];
      fed[i] = Math.min(p.prompt.length, fed[i]! + p.chunk);
      const key = group(p);
      calls.set(key, [...(calls.get(key) ?? []), { i, ids }]);
    });
    for (const entries of calls.values()) {
      const got = await engine.decode(entries.map((e) => ({ sequence: seqs[e.i]!, adapter: plans[e.i]!.adapter, ids: e.ids, sampling: greedy })));
      entries.forEach((e, k) => {
        if (fed[e.i]! >= plans[e.i]!.prompt.length) out[e.i]!.push(got[k]!);
      });
    }
  }
  for (const s of seqs) s.dispose();
  return out;
}

function worst(a: SampledToken[][], b: SampledToken[][]): number {
  let w = 0;
  a.forEach((row, i) =>
    row.forEach((t, j) => {
      const u = b[i]![j]!;
      assert.equal(t.id, u.id, `sequence ${i} token ${j}`);
      assert.deepEqual([...t.topIds], [...u.topIds], `sequence ${i} token ${j}: top ids`);
      w = Math.max(w, Math.abs(t.logprob - u.logprob), ...Array.from(t.topLogprobs, (x, k) => Math.abs(x - u.topLogprobs[k]!)));
    }),
  );
  return w;
}

test('a mixed-adapter decode call gives what per-adapter calls give', async (t) => {
  const engine = await Engine.open(writeRandomModel({ seed: 71 }), { backend: 'cpu', threads: 2 });
  const all = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
  const a = randomAdapter(engine, 4, all, 11);
  const b = randomAdapter(engine, 8, ['q_proj', 'v_proj'], 12);
  const c = randomAdapter(engine, 2, ['o_proj', 'down_proj', 'up_proj'], 13);
  const prompt = (seed: number, n: number) => Array.from({ length: n }, (_, j) => (j * 7 + seed * 13) % 60);
  const plans: Plan[] = [
    { adapter: a, prompt: prompt(1, 9), joins: 0, chunk: 9 },
    { adapter: b, prompt: prompt(2, 14), joins: 0, chunk: 5 },
    { adapter: null, prompt: prompt(3, 6), joins: 1, chunk: 6 },
    { adapter: a, prompt: prompt(4, 11), joins: 2, chunk: 4 },
    { adapter: c, prompt: prompt(5, 7), joins: 3, chunk: 7 },
    { adapter: b, prompt: prompt(6, 3), joins: 5, chunk: 3 },
  ];
  const steps = 16;
  const mixed = await run(engine, plans, steps, () => 'one call');
  const perAdapter = await run(engine, plans, steps, (p) => p.adapter);
  const alone = await run(engine, plans, steps, (p) => p);
  const w = Math.max(worst(mixed, perAdapter), worst(mixed, alone));
  t.diagnostic(`worst log-prob difference, mixed against per-adapter and one-by-one calls: ${w}`);
  assert.ok(w <= TOLERANCE, `worst log-prob difference ${w}`);
  // Not vacuous: the same prompts on the base model give other log-probabilities.
  const base = await run(engine, plans.map((p) => ({ ...p, adapter: null })), steps, () => 'one call');
  plans.forEach((p, i) => {
    if (!p.adapter) return;
    const d = Math.max(...mixed[i]!.map((t, j) => Math.abs(t.logprob - base[i]![j]!.logprob)));
    assert.ok(d > 1e-3, `sequence ${i} on its adapter differs from the base model by ${d}`);
  });
});

test('disposed adapters and sequences are refused with E_DISPOSED; bytes are reported', async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 72 }), { backend: 'cpu', threads: 1 });
  const adapter = engine.createAdapter({ rank: 4, alpha: 8, seed: 1 });
  assert.equal(adapter.bytes, 5 * 4 * adapter.state().params.length);
  const seq = engine.createSequence(1);
  assert.equal(seq.bytes, 0);
  await engine.decode([{ sequence: seq, adapter, ids: Array.from({ length: 100 }, (_, i) => i % 60), sampling: greedy }]);
  const cfg = engine.config;
  assert.equal(seq.bytes, 2 * cfg.numLayers * 128 * cfg.numKvHeads * cfg.headDim * 4); // capacity doubles 64 → 128
  adapter.dispose();
  adapter.dispose();
  assert.equal(adapter.bytes, 0);
  await assert.rejects(engine.decode([{ sequence: seq, adapter, ids: [1], sampling: greedy }]), (e: { code?: string }) => e.code === 'E_DISPOSED');
  await assert.rejects(engine.logits([1, 2, 3], adapter), (e: { code?: string }) => e.code === 'E_DISPOSED');
  {
    using s = engine.createSequence(2);
    await engine.decode([{ sequence: s, ids: [1, 2], sampling: greedy }]);
    assert.ok(s.bytes > 0);
  }
  seq.dispose();
  await assert.rejects(engine.decode([{ sequence: seq, ids: [1], sampling: greedy }]), (e: { code?: string }) => e.code === 'E_DISPOSED');
  engine.dispose();
  assert.throws(() => engine.createSequence(3), (e: { code?: string }) => e.code === 'E_DISPOSED');
});
