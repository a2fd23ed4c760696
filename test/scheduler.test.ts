// The embedded scheduler batches concurrent generations and gives each the tokens it would get alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine } from '../src/engine/engine.js';
import { writeRandomModel } from '../src/model/random-model.js';
import { Scheduler } from '../src/serve/scheduler.js';

const greedy = { temperature: 0, topP: 1, topK: 0, topLogprobs: 0 };

test('concurrent generations are batched and match generating alone', async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 51 }), { backend: 'cpu', threads: 2 });
  const prompts = Array.from({ length: 8 }, (_, i) => Array.from({ length: 3 + i * 5 }, (_, j) => (i * 7 + j * 3) % 60));
  const request = (p: number[]) => ({ promptIds: p, adapter: null, served: null, maxTokens: 10, sampling: greedy, seed: 1, stopTokenIds: [] });

  const alone = [];
  for (const p of prompts) alone.push((await new Scheduler(engine).generate(request(p))).tokens.map((t) => t.id));

  const scheduler = new Scheduler(engine, { prefillChunk: 64 });
  const together = await Promise.all(prompts.map((p) => scheduler.generate(request(p))));
  assert.deepEqual(together.map((r) => r.tokens.map((t) => t.id)), alone);
  assert.ok(together.every((r) => r.finishReason === 'length' && r.tokens.length === 10));
  const perRound = scheduler.stats.batchedSequences / scheduler.stats.rounds;
  assert.ok(perRound > 4, `sequences per engine call: ${perRound.toFixed(2)}`);
});

test('stop tokens, a false from onToken and an abort end a generation', async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 52 }), { backend: 'cpu', threads: 1 });
  const scheduler = new Scheduler(engine);
  const base = { promptIds: [1, 2, 3], adapter: null, served: null, maxTokens: 20, sampling: greedy, seed: 1, stopTokenIds: [] as number[] };
  const full = await scheduler.generate(base);
  const third = full.tokens[2]!.id;
  const firstIndex = full.tokens.findIndex((t) => t.id === third);
  const stopped = await scheduler.generate({ ...base, stopTokenIds: [third] });
  assert.equal(stopped.finishReason, 'stop');
  assert.equal(stopped.tokens.length, firstIndex + 1);
  const byCallback = await scheduler.generate({ ...base, onToken: (_t, i) => i < 4 });
  assert.equal(byCallback.tokens.length, 5);
  const ac = new AbortController();
  const aborted = scheduler.generate({ ...base, signal: ac.signal, onToken: (_t, i) => { if (i === 1) ac.abort(); } });
  assert.equal((await aborted).finishReason, 'abort');
});

test('rounds are fair between tenants: a tenant with many adapters and a long prompt does not slow another', async () => {
  const engine = await Engine.open(writeRandomModel({ seed: 53 }), { backend: 'cpu', threads: 1 });
  const scheduler = new Scheduler(engine, { prefillChunk: 16 });
  const bobAdapters = Array.from({ length: 6 }, (_, i) => engine.createAdapter({ rank: 2, alpha: 4, seed: 10 + i }));
  const request = (tenant: string, adapter: ReturnType<typeof engine.createAdapter> | null, promptIds: number[], maxTokens: number) => ({
    promptIds, adapter, served: null, tenant, maxTokens, sampling: greedy, seed: 1, stopTokenIds: [] as number[],
  });
  const bobPrompt = (i: number) => Array.from({ length: i === 0 ? 400 : 40 }, (_, j) => (j * 5 + i) % 60);
  const bob = bobAdapters.map((a, i) => scheduler.generate(request('bob', a, bobPrompt(i), 40)));
  let callsWhenAliceDone = -1;
  const alice = scheduler.generate(request('alice', null, Array.from({ length: 40 }, (_, j) => (j * 3) % 60), 10)).then((r) => {
    callsWhenAliceDone = scheduler.stats.rounds;
    return r;
  });
  const [a] = await Promise.all([alice, ...bob]);
  assert.equal(a.tokens.length, 10);
  // Every call carries all of bob's adapters and alice together, and the prompt budget is split
  // between the tenants that are prefilling: alice's 40-token prompt takes 5 calls at 8 tokens (half
  // of 16), then one token per call; bob's 640 prompt tokens on six adapters do not push her back.
  assert.ok(callsWhenAliceDone <= 16, `engine calls before alice's 10 tokens: ${callsWhenAliceDone}`);
  assert.ok(scheduler.stats.batchedSequences / scheduler.stats.rounds > 3, `rows per call: ${scheduler.stats.batchedSequences / scheduler.stats.rounds}`);
  // And bob's replies are still the ones he gets alone.
  for (const i of [0, 3]) {
    const solo = await new Scheduler(engine).generate(request('bob', bobAdapters[i]!, bobPrompt(i), 40));
    assert.deepEqual((await bob[i]!).tokens.map((t) => t.id), solo.tokens.map((t) => t.id));
  }
});
