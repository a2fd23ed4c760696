// The WebGPU engine with weight matrices and logits over the storage binding limit: the limit is
// capped at 12 KiB (CLAAS_WEBGPU_MAX_BINDING_BYTES). Two configs split the [1000, 16] embedding / LM
// head (64,000 bytes) into 6 row blocks (192 rows each, the last 40) and take logits 3 rows at a time;
// a third (Qwen2-style, q/k/v biases, untied) also splits the projections: q/o [64, 64] into 2 blocks,
// gate/up [128, 64] and down [64, 128] into 3, embedding and head [200, 64] into 5. Every other buffer
// of these tiny models stays under the cap, and a binding over it throws, so parity here means the
// split paths really ran. Checked against the CPU engine: logits, token log-probs, full SDPO steps
// (loss, metrics, LoRA gradients, weights, EMA, AdamW moments) and greedy / seeded generation; and
// with f16 weight storage (3 blocks of half rows) against the unsplit f16 engine. With CI=true a
// missing WebGPU adapter fails the run instead of skipping.
//
// Tolerances are those of webgpu-engine.test.ts (f32 on both sides; a split backward sums its blocks
// in a different order), with the worst errors seen on lavapipe over the three configs in brackets:
//   logits and token log-probs: max abs 5e-5 [2.5e-6, 1.9e-6];
//   loss and the other step metrics: relative 5e-5, absolute below 1e-2 [1.1e-5];
//     clipFraction and tokens exactly;
//   LoRA gradients: relative L2 5e-5 [3.6e-6]; params / EMA: max abs 1e-6 [4.5e-8];
//   AdamW moments: relative L2 5e-5 [2.2e-6];
//   generation: identical token ids and top-logprob ids, log-probs within 5e-5 [1.9e-6];
//   f16 split vs unsplit: the same bounds [logits and loss equal, grads 4.8e-7, weights 1.7e-7].
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Engine, type Adapter, type SdpoSample } from '../src/engine/engine.js';
import { LORA_MODULES, type LoraModule } from '../src/engine/lora-modules.js';
import type { SdpoOptions } from '../src/engine/sdpo-options.js';
import { Gpu } from '../src/engine/webgpu/device.js';
import { probeWebGpu } from '../src/engine/webgpu/probe.js';
import { normal, rng, writeRandomModel } from '../src/model/random-model.js';
import { readSafetensors, writeSafetensors } from '../src/model/safetensors.js';
import { describeStepWorst, expectSameStep, ids, maxAbs, newStepWorst, relL2, trainedAdapterState, withRemoteTargets } from './webgpu/compare.js';

const probe = await probeWebGpu();
const skip = probe.ok ? false : `no WebGPU adapter: ${probe.reason}`;
const CAP = 12 * 1024;

test('a WebGPU adapter is present (required when CI=true)', { skip: process.env.CI === 'true' ? false : skip }, () => {
  assert.ok(probe.ok, probe.ok ? '' : probe.reason);
});

test('a capped binding limit is enforced: a binding over it is refused with a clear error', { skip }, async () => {
  const gpu = await Gpu.open({ maxBindingBytes: CAP });
  try {
    assert.equal(gpu.maxBinding, CAP);
    const big = gpu.buffer(CAP + 16, 'big');
    const small = gpu.buffer(CAP, 'small');
    assert.throws(() => gpu.dispatch('axpby', 'axpby', [small, big], [1]), /binding 1 \(big\) holds 12304 bytes, over the 12288-byte binding limit/);
    big.destroy();
    small.destroy();
  } finally {
    gpu.destroy();
  }
});

/** Two samples; response lengths 7 and 11 span several 3-row logits chunks, with a partial last one. */
function batch(vocab: number, seed: number): SdpoSample[] {
  const r = rng(seed);
  const s1 = { promptIds: ids(r, 6, vocab), teacherPromptIds: ids(r, 10, vocab), responseIds: ids(r, 7, vocab), oldLogprobs: Array.from({ length: 7 }, () => -3 - 3 * r()) };
  const s2 = { promptIds: ids(r, 4, vocab), teacherPromptIds: ids(r, 8, vocab), responseIds: ids(r, 11, vocab) };
  return [s1, s2];
}

const CASES: { name: string; options: Partial<SdpoOptions>; remote?: number }[] = [
  { name: 'alpha 0.5, teacher current, beta 0.1', options: { alpha: 0.5, teacher: 'current', topK: 8, beta: 0.1 } },
  { name: 'alpha 0, teacher ema, isClip 1.2', options: { alpha: 0, teacher: 'ema', topK: 16, isClip: 1.2 } },
  { name: 'alpha 1, teacher base, 2 steps, clipped gradient', options: { alpha: 1, teacher: 'base', topK: 4, steps: 2, maxGradNorm: 0.05 } },
  { name: 'sampled-token mode', options: { sampledToken: true, teacher: 'current', beta: 0.05 } },
  { name: 'remote teacher targets', options: { alpha: 0.5, teacher: 'remote' }, remote: 5 },
];


/** Qwen2-style (q/k/v biases, untied head, no q/k norm) with projections over the cap as well. */
function writeWideBiasModel(): string {
  const dir = writeRandomModel({ vocab: 200, hidden: 64, layers: 2, heads: 4, kvHeads: 1, headDim: 16, intermediate: 128, tied: false, seed: 7, std: 0.1 });
  const file = join(dir, 'model.safetensors');
  const { tensors } = readSafetensors(file);
  const r = rng(12);
  const out = [...tensors].map(([name, t]) => ({ name, shape: t.shape, data: t.data }));
  for (let l = 0; l < 2; l++) {
    for (const [p, n] of [['q', 64], ['k', 16], ['v', 16]] as const) {
      out.push({ name: `model.layers.${l}.self_attn.${p}_proj.bias`, shape: [n], data: Float32Array.from({ length: n }, () => 0.3 * normal(r)) });
    }
  }
  writeSafetensors(file, out, { format: 'pt' });
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2' }));
  return dir;
}

const ALL: LoraModule[] = [...LORA_MODULES];
const CONFIGS = [
  { name: 'tied embedding / LM head', write: () => writeRandomModel({ vocab: 1000, hidden: 16, layers: 2, heads: 2, kvHeads: 1, headDim: 8, intermediate: 32, tied: true, seed: 3 }), modules: ALL, rank: 4 },
  { name: 'untied LM head', write: () => writeRandomModel({ vocab: 1000, hidden: 16, layers: 2, heads: 2, kvHeads: 1, headDim: 8, intermediate: 32, tied: false, seed: 4 }), modules: ALL, rank: 4 },
  // q/o [64, 64] in 2 blocks, gate/up [128, 64] in 3, down [64, 128] in 3 (k/v fit); embedding and head in 5.
  { name: 'split projections with biases, untied head', write: writeWideBiasModel, modules: ['q_proj', 'v_proj', 'down_proj'] as LoraModule[], rank: 2 },
];

/** Opens the WebGPU engine with the binding limit capped (the cap is read when the device opens). */
async function openCapped(dir: string): Promise<Engine> {
  const before = process.env.CLAAS_WEBGPU_MAX_BINDING_BYTES;
  process.env.CLAAS_WEBGPU_MAX_BINDING_BYTES = String(CAP);
  try {
    return await Engine.open(dir, { backend: 'webgpu' });
  } finally {
    if (before === undefined) delete process.env.CLAAS_WEBGPU_MAX_BINDING_BYTES;
    else process.env.CLAAS_WEBGPU_MAX_BINDING_BYTES = before;
  }
}

for (const config of CONFIGS) {
  test(`WebGPU engine with split vocabulary matrices and logits matches the CPU engine: ${config.name}`, { skip }, async (t) => {
    const dir = config.write();
    const cpu = await Engine.open(dir, { backend: 'cpu', threads: 1 });
    const gpu = await openCapped(dir);
    assert.equal(gpu.backend, 'webgpu');
    const V = cpu.config.vocabSize;
    const shape = { rank: config.rank, alpha: 8, targetModules: config.modules };
    const state = trainedAdapterState(cpu, shape);
    const restore = (e: Engine): Adapter => e.restoreAdapter(shape, state);

    await t.test('logits and token log-probs (adapter, EMA copy, base)', async () => {
      // 13 rows: chunks of 3, 3, 3, 3, 1; ids from every embedding block.
      const seq = ids(rng(4), 13, V);
      let err = 0;
      for (const [adapter, ema] of [[restore(cpu), false], [restore(cpu), true], [null, false]] as const) {
        const g = adapter ? restore(gpu) : null;
        err = Math.max(err, maxAbs(await gpu.logits(seq, g, { ema }), await cpu.logits(seq, adapter, { ema })));
      }
      assert.ok(err <= 5e-5, `logits max abs error ${err}`);
      const lpErr = maxAbs(await gpu.logprobs(seq, restore(gpu), 2), await cpu.logprobs(seq, restore(cpu), 2));
      assert.ok(lpErr <= 5e-5, `token log-prob max abs error ${lpErr}`);
      t.diagnostic(`logits max abs ${err.toExponential(2)}, token log-probs ${lpErr.toExponential(2)}`);
    });

    const worst = newStepWorst();
    for (const c of CASES) {
      await t.test(`SDPO step: ${c.name}`, async () => {
        let samples = batch(V, 31);
        if (c.remote) samples = withRemoteTargets(samples, V, c.remote, 41);
        const options: Partial<SdpoOptions> = { learningRate: 1e-2, ...c.options };
        await expectSameStep(cpu, gpu, restore(cpu), restore(gpu), samples, options, state, worst);
      });
    }
    t.diagnostic(describeStepWorst(worst));

    await t.test('generation: batched greedy and seeded sampling give the CPU tokens', async () => {
      let worstLp = 0;
      for (const sampling of [{ temperature: 0, topP: 1, topK: 0, topLogprobs: 3 }, { temperature: 0.8, topP: 0.9, topK: 20, topLogprobs: 0 }]) {
        // 4 sequences decoded together: 4 logits rows, two chunks.
        const run = async (e: Engine, adapter: Adapter | null) => {
          const seqs = [e.createSequence(17), e.createSequence(99), e.createSequence(5), e.createSequence(8)];
          const prompts = [ids(rng(8), 5, V), ids(rng(9), 9, V), ids(rng(10), 1, V), ids(rng(11), 4, V)];
          const out: { id: number; logprob: number; top: number[] }[][] = [[], [], [], []];
          let next = prompts;
          for (let step = 0; step < 8; step++) {
            const toks = await e.decode(seqs.map((sequence, i) => ({ sequence, ids: next[i]!, sampling })), adapter);
            toks.forEach((tk, i) => out[i]!.push({ id: tk.id, logprob: tk.logprob, top: [...tk.topIds] }));
            next = toks.map((tk) => [tk.id]);
          }
          return out;
        };
        const want = await run(cpu, restore(cpu));
        const got = await run(gpu, restore(gpu));
        for (let s = 0; s < want.length; s++) {
          assert.deepEqual(got[s]!.map((x) => x.id), want[s]!.map((x) => x.id), `sequence ${s} at temperature ${sampling.temperature}`);
          assert.deepEqual(got[s]!.map((x) => x.top), want[s]!.map((x) => x.top));
          const e = maxAbs(got[s]!.map((x) => x.logprob), want[s]!.map((x) => x.logprob));
          worstLp = Math.max(worstLp, e);
          assert.ok(e <= 5e-5, `sequence ${s} log-prob error ${e}`);
        }
      }
      t.diagnostic(`generation log-prob max abs ${worstLp.toExponential(2)}`);
    });
  });
}

// f16 storage splits by half-value rows: the same [1000, 16] matrix is 32,000 bytes, 3 blocks of up
// to 384 rows. Against the unsplit f16 engine (same rounded weights), tolerances as above.
test('f16 weight storage with split vocabulary matrices matches the unsplit f16 engine', { skip }, async (t) => {
  const probeGpu = await Gpu.open();
  const f16 = probeGpu.f16;
  probeGpu.destroy();
  if (!f16) {
    t.skip('the adapter does not offer shader-f16');
    return;
  }
  const dir = writeRandomModel({ vocab: 1000, hidden: 16, layers: 2, heads: 2, kvHeads: 1, headDim: 8, intermediate: 32, tied: true, seed: 6 });
  const whole = await Engine.open(dir, { backend: 'webgpu', webgpuWeights: 'f16' });
  const before = process.env.CLAAS_WEBGPU_MAX_BINDING_BYTES;
  process.env.CLAAS_WEBGPU_MAX_BINDING_BYTES = String(CAP);
  let split: Engine;
  try {
    split = await Engine.open(dir, { backend: 'webgpu', webgpuWeights: 'f16' });
  } finally {
    if (before === undefined) delete process.env.CLAAS_WEBGPU_MAX_BINDING_BYTES;
    else process.env.CLAAS_WEBGPU_MAX_BINDING_BYTES = before;
  }
  const V = whole.config.vocabSize;
  const shape = { rank: 4, alpha: 8, targetModules: [...LORA_MODULES] };
  const seq = ids(rng(4), 13, V);
  const logitErr = maxAbs(await split.logits(seq, null), await whole.logits(seq, null));
  assert.ok(logitErr <= 5e-5, `logits max abs error ${logitErr}`);
  const a = whole.createAdapter({ ...shape, seed: 9 }), b = split.createAdapter({ ...shape, seed: 9 });
  const want = await whole.sdpoStep(a, batch(V, 31), { learningRate: 1e-2, alpha: 0.5, teacher: 'current', topK: 8 });
  const got = await split.sdpoStep(b, batch(V, 31), { learningRate: 1e-2, alpha: 0.5, teacher: 'current', topK: 8 });
  const lossRel = Math.abs(got.loss - want.loss) / Math.max(Math.abs(want.loss), 1e-2);
  assert.ok(lossRel <= 5e-5, `loss ${got.loss} vs ${want.loss}`);
  const gradErr = relL2(b.state().grads, a.state().grads);
  assert.ok(gradErr <= 5e-5, `gradient relative L2 error ${gradErr}`);
  const wErr = maxAbs(b.state().params, a.state().params);
  assert.ok(wErr <= 1e-6, `weights max abs error ${wErr}`);
  const greedy = { temperature: 0, topP: 1, topK: 0, topLogprobs: 0 };
  const gen = async (e: Engine) => {
    const s = e.createSequence(1);
    const out: number[] = [];
    let next = ids(rng(8), 5, V);
    for (let i = 0; i < 8; i++) {
      const [tk] = await e.decode([{ sequence: s, ids: next, sampling: greedy }], null);
      out.push(tk!.id);
      next = [tk!.id];
    }
    return out;
  };
  assert.deepEqual(await gen(split), await gen(whole));
  t.diagnostic(`f16 split vs whole: logits max abs ${logitErr.toExponential(2)}, loss rel ${lossRel.toExponential(2)}, grads rel L2 ${gradErr.toExponential(2)}, weights max abs ${wErr.toExponential(2)}`);
});
