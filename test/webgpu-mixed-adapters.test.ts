// Mixed-adapter decode batches on the WebGPU engine: one decode call whose rows use three adapters of
// different ranks and target modules plus the base model (prompt chunks and single tokens in the same
// call) against the same sequences decoded one adapter per call, and against the CPU engine with the
// same adapter weights; the LoRA kernels' row range on its own against the CPU op; then dispose() and
// bytes of adapters, sequences and the model. With CI=true a missing WebGPU adapter fails the run
// instead of skipping it.
//
// Tolerances, with the worst errors seen on lavapipe in brackets:
//   lora over rows t0..t0+T-1 of larger buffers vs the CPU op on those rows: abs 2e-5 + rel 1e-4, as
//     in webgpu-ops-basic.test.ts [y 4.8e-7, u 1.5e-7]; rows outside the range untouched (exact);
//   mixed call vs per-adapter calls: identical token ids and top-20 ids, sampled-token log-prob and
//     top-20 log-probs max abs 5e-5 [0: bitwise equal, as no row's arithmetic depends on the others];
//   mixed call vs the CPU engine (per-adapter calls there): the same, max abs 5e-5 (the f32 parity
//     tolerance of webgpu-engine.test.ts) [2.9e-6].
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Engine, toNativeConfig, type Adapter, type DecodeEntry, type SampledToken, type SamplingParams } from '../src/engine/engine.js';
import { LORA_MODULES } from '../src/engine/lora-modules.js';
import type { AdapterFileState, LoraShape } from '../src/engine/peft.js';
import { lora } from '../src/engine/webgpu/ops/lora.js';
import { WebGpuModel } from '../src/engine/webgpu/model.js';
import { probeWebGpu } from '../src/engine/webgpu/probe.js';
import { readModelConfig } from '../src/model/config.js';
import { normal, rng, writeRandomModel } from '../src/model/random-model.js';
import { weightSpecs } from '../src/model/weights.js';
import { ids, maxAbs } from './webgpu/compare.js';
import { closeGpu, cpuOps, describe, gpuOrSkip, randF32, runCase } from './webgpu/harness.js';

const probe = await probeWebGpu();
const skip = probe.ok ? false : `no WebGPU adapter: ${probe.reason}`;
after(closeGpu);

test('a WebGPU adapter is present (required when CI=true)', { skip: process.env.CI === 'true' ? false : skip }, () => {
  assert.ok(probe.ok, probe.ok ? '' : probe.reason);
});

const TOL = 5e-5;

test('lora over a row range of larger buffers touches only those rows', async (t) => {
  const gpu = await gpuOrSkip(t);
  if (!gpu) return;
  // 11 rows in all; the branch covers rows 4..9 (the last row stays outside).
  const rows = 11, t0 = 4, T = 6, I = 40, O = 24, R = 3, scale = 1.5;
  const report = await runCase(gpu, {
    name: `lora rows ${t0}..${t0 + T - 1} of ${rows}`,
    inputs: { x: randF32(rows * I, 51), A: randF32(R * I, 52, 1 / Math.sqrt(I)), B: randF32(O * R, 53, 1 / Math.sqrt(R)) },
    outputs: { y: randF32(rows * O, 54), u: randF32(T * R, 55) },
    gpu: (g, b) => lora(g, b.y!, b.u!, b.x!, b.A!, b.B!, T, I, O, R, scale, t0),
    cpu: (a) => {
      const y = a.y as Float32Array, x = a.x as Float32Array;
      cpuOps.lora(y.subarray(t0 * O, (t0 + T) * O), a.u as Float32Array, x.subarray(t0 * I, (t0 + T) * I), a.A as Float32Array, a.B as Float32Array, T, I, O, R, scale);
    },
    tol: { abs: 2e-5, rel: 1e-4 },
  });
  t.diagnostic(describe(report));
  assert.throws(() => lora(gpu, gpu.buffer(rows * O * 4), gpu.buffer(T * R * 4), gpu.buffer(rows * I * 4), gpu.buffer(R * I * 4), gpu.buffer(O * R * 4), T, I, O, R, scale, 6), /lora: y holds 1056 bytes, needs 1152/);
});

const SHAPES: LoraShape[] = [
  { rank: 4, alpha: 8, targetModules: [...LORA_MODULES] },
  { rank: 2, alpha: 4, targetModules: ['q_proj', 'v_proj', 'down_proj'] },
  { rank: 8, alpha: 16, targetModules: ['k_proj', 'o_proj', 'gate_proj', 'up_proj'] },
];

/** A CPU adapter from a seed with its B matrices moved off zero (B = 0 would leave the base model). */
function adapterState(cpu: Engine, shape: LoraShape, seed: number): AdapterFileState {
  const r = rng(seed);
  const params = Float32Array.from(cpu.createAdapter({ ...shape, seed }).state().params, (x) => x + 0.15 * normal(r));
  return { params, ema: params.slice(), step: 0 };
}

const GREEDY: SamplingParams = { temperature: 0, topP: 1, topK: 0, topLogprobs: 20 };

/** One generation: its adapter (index into SHAPES, null: base), prompt, and prompt chunk size. */
interface Stream {
  adapter: number | null;
  prompt: number;
  chunk: number;
  seed: number;
  sampling: SamplingParams;
}

// Interleaved so that grouping by adapter reorders rows; prompts fed whole, in chunks or a token at a
// time, so that one call mixes prefill chunks with single decoded tokens.
const STREAMS: Stream[] = [
  { adapter: 0, prompt: 7, chunk: 7, seed: 11, sampling: GREEDY },
  { adapter: null, prompt: 3, chunk: 1, seed: 12, sampling: GREEDY },
  { adapter: 1, prompt: 12, chunk: 5, seed: 13, sampling: GREEDY },
  { adapter: 0, prompt: 1, chunk: 1, seed: 14, sampling: GREEDY },
  { adapter: 2, prompt: 9, chunk: 4, seed: 15, sampling: { temperature: 0.8, topP: 0.9, topK: 20, topLogprobs: 20 } },
  { adapter: 1, prompt: 2, chunk: 2, seed: 16, sampling: GREEDY },
  { adapter: null, prompt: 6, chunk: 6, seed: 17, sampling: GREEDY },
];
const STEPS = 12;

/**
 * Runs every stream for STEPS calls: 'mixed' decodes all of them in one call per step (each entry
 * naming its adapter), 'per-adapter' one call per adapter with the call's adapter argument.
 */
async function generate(e: Engine, adapters: (Adapter | null)[], mode: 'mixed' | 'per-adapter', V: number): Promise<SampledToken[][]> {
  const seqs = STREAMS.map((s) => e.createSequence(s.seed));
  const prompts = STREAMS.map((s, i) => ids(rng(100 + i), s.prompt, V));
  const fed = STREAMS.map(() => 0);
  const last = STREAMS.map(() => 0);
  const out: SampledToken[][] = STREAMS.map(() => []);
  for (let step = 0; step < STEPS; step++) {
    const newIds = STREAMS.map((s, i) => {
      if (fed[i]! >= s.prompt) return [last[i]!];
      const chunk = prompts[i]!.slice(fed[i]!, fed[i]! + s.chunk);
      fed[i]! += chunk.length;
      return chunk;
    });
    const adapterOf = (i: number) => (STREAMS[i]!.adapter === null ? null : adapters[STREAMS[i]!.adapter!]!);
    const toks: SampledToken[] = [];
    if (mode === 'mixed') {
      toks.push(...(await e.decode(STREAMS.map((s, i): DecodeEntry => ({ sequence: seqs[i]!, adapter: adapterOf(i), ids: newIds[i]!, sampling: s.sampling })))));
    } else {
      for (const key of [null, 0, 1, 2]) {
        const members = STREAMS.flatMap((s, i) => (s.adapter === key ? [i] : []));
        const got = await e.decode(members.map((i) => ({ sequence: seqs[i]!, ids: newIds[i]!, sampling: STREAMS[i]!.sampling })), key === null ? null : adapters[key]);
        members.forEach((i, j) => (toks[i] = got[j]!));
      }
    }
    // The token after a prompt chunk that is not the prompt's last is compared, then dropped.
    toks.forEach((tk, i) => {
      out[i]!.push(tk);
      last[i] = tk.id;
    });
  }
  return out;
}

/** Asserts the same tokens and top ids; returns the worst log-prob difference. */
function compare(got: SampledToken[][], want: SampledToken[][], label: string): number {
  let worst = 0;
  got.forEach((g, s) => {
    const w = want[s]!;
    assert.deepEqual(g.map((x) => x.id), w.map((x) => x.id), `${label}: tokens of stream ${s}`);
    g.forEach((x, k) => {
      const y = w[k]!;
      assert.deepEqual([...x.topIds], [...y.topIds], `${label}: top ids of stream ${s} at step ${k}`);
      worst = Math.max(worst, Math.abs(x.logprob - y.logprob), maxAbs(x.topLogprobs, y.topLogprobs));
    });
  });
  return worst;
}

test('one mixed-adapter decode call per step gives what per-adapter calls and the CPU engine give', { skip }, async (t) => {
  const dir = writeRandomModel({ vocab: 96, hidden: 32, layers: 2, heads: 4, kvHeads: 2, headDim: 16, intermediate: 48, tied: true, seed: 23 });
  const cpu = await Engine.open(dir, { backend: 'cpu', threads: 1 });
  const gpu = await Engine.open(dir, { backend: 'webgpu' });
  assert.equal(gpu.backend, 'webgpu');
  const V = cpu.config.vocabSize;
  const states = SHAPES.map((shape, i) => adapterState(cpu, shape, 1000 + i));
  const restore = (e: Engine) => SHAPES.map((shape, i) => e.restoreAdapter(shape, states[i]!));

  const mixed = await generate(gpu, restore(gpu), 'mixed', V);
  const perAdapter = await generate(gpu, restore(gpu), 'per-adapter', V);
  const onCpu = await generate(cpu, restore(cpu), 'per-adapter', V);
  const vsCalls = compare(mixed, perAdapter, 'mixed vs per-adapter calls');
  const vsCpu = compare(mixed, onCpu, 'mixed vs the CPU engine');
  t.diagnostic(`log-prob max abs: mixed vs per-adapter calls ${vsCalls.toExponential(2)}, mixed vs CPU ${vsCpu.toExponential(2)}`);
  assert.ok(vsCalls <= TOL, `mixed vs per-adapter calls: ${vsCalls}`);
  assert.ok(vsCpu <= TOL, `mixed vs CPU: ${vsCpu}`);
  // The comparison means something only if the adapters move every adapter stream off the base model.
  const base = await generate(gpu, [null, null, null], 'mixed', V);
  STREAMS.forEach((s, i) => {
    const moved = maxAbs(mixed[i]!.map((x) => x.logprob), base[i]!.map((x) => x.logprob)) > 1e-3;
    assert.equal(moved, s.adapter !== null, `stream ${i} (adapter ${s.adapter}) ${moved ? 'differs from' : 'matches'} the base model`);
  });
  gpu.dispose();
});

function isDisposed(err: unknown): boolean {
  assert.equal((err as { code?: unknown }).code, 'E_DISPOSED', String(err));
  return true;
}

test('dispose: adapters, sequences and the engine fail with E_DISPOSED afterwards; bytes', { skip }, async () => {
  const dir = writeRandomModel({ vocab: 64, seed: 29 });
  const gpu = await Engine.open(dir, { backend: 'webgpu' });
  const V = gpu.config.vocabSize;
  const sampling = GREEDY;
  const adapter = gpu.createAdapter({ rank: 4, alpha: 8, seed: 3 });
  const R4 = adapter.state().params.length * 4;
  // params, EMA, m, v and gradients flat, plus the per-tensor mirrors of params and gradients.
  assert.equal(adapter.bytes, 7 * R4);
  const seq = gpu.createSequence(1);
  assert.equal(seq.bytes, 0, 'no cache before the first token');
  await gpu.decode([{ sequence: seq, ids: ids(rng(1), 5, V), sampling }], adapter);
  const small = seq.bytes;
  assert.ok(small > 0);
  await gpu.decode([{ sequence: seq, ids: ids(rng(2), 200, V), sampling }], adapter);
  assert.ok(seq.bytes > small, `the cache grew with a long prefill (${small} -> ${seq.bytes} bytes)`);

  adapter.dispose();
  adapter.dispose();
  assert.equal(adapter.bytes, 0);
  const other = gpu.createSequence(2);
  await assert.rejects(gpu.decode([{ sequence: other, adapter, ids: [1], sampling }]), isDisposed);
  await assert.rejects(gpu.decode([{ sequence: other, ids: [1], sampling }], adapter), isDisposed);
  await assert.rejects(gpu.logits([1, 2, 3], adapter), isDisposed);
  await assert.rejects(gpu.sdpoStep(adapter, [{ promptIds: [1, 2], teacherPromptIds: [1, 2, 3], responseIds: [4, 5] }]), isDisposed);
  assert.throws(() => adapter.state(), isDisposed);
  assert.equal(other.length, 0, 'a refused call appends nothing');

  seq.dispose();
  seq.dispose();
  assert.equal(seq.bytes, 0);
  await assert.rejects(gpu.decode([{ sequence: seq, ids: [1], sampling }]), isDisposed);
  // Other sequences and the base model are unaffected.
  const [tok] = await gpu.decode([{ sequence: other, ids: [1, 2], sampling }]);
  assert.ok(tok!.id >= 0 && tok!.id < V);

  gpu.dispose();
  assert.throws(() => gpu.createSequence(3), isDisposed);
  await assert.rejects(gpu.decode([{ sequence: other, ids: [1], sampling }]), isDisposed);
  other.dispose();
});

test('dispose during a running call frees once the call ends', { skip }, async () => {
  const dir = writeRandomModel({ vocab: 64, seed: 31 });
  const c = readModelConfig(dir);
  const model = await WebGpuModel.load({ config: toNativeConfig(c), tensors: weightSpecs(dir, c) });
  const targets = Array.from({ length: 7 }, () => true);
  const adapter = model.createAdapter({ rank: 2, alpha: 4, targets, seed: 5 });
  const seq = model.createSequence(9);
  const entry = { seq, adapter, ids: Int32Array.from([1, 2, 3]), temperature: 0, topP: 1, topK: 0, topLogprobs: 0 };
  const running = model.decode([entry]);
  adapter.dispose();
  seq.dispose();
  model.dispose();
  const [tok] = await running;
  assert.ok(tok!.id >= 0 && tok!.id < 64, 'the call that was running completes');
  assert.equal(adapter.bytes, 0);
  assert.equal(seq.bytes, 0);
  await assert.rejects(model.decode([{ ...entry, seq: seq }]), isDisposed);
  assert.throws(() => model.createAdapter({ rank: 2, alpha: 4, targets, seed: 5 }), isDisposed);
});
