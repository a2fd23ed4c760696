// f16 storage of the frozen weight matrices on the WebGPU backend (src/engine/webgpu/weight-storage.ts):
// the f32 -> f16 rounding itself, the linear / linear_backward_input / embedding kernels reading f16
// weights against the CPU ops applied to the f16-rounded weights, the storage policy, and whole-model
// parity (logits, SDPO steps, greedy generation) against the CPU engine; then the refusal of f16 on a
// device without shader-f16. With CI=true a missing WebGPU adapter fails the run instead of skipping it.
//
// Tolerances (the worst errors seen on lavapipe in brackets):
//   kernels with f16 weights vs the CPU op on the same (rounded) weights: only the storage differs, so
//     the f32 tolerances of test/webgpu-ops-basic.test.ts apply: linear abs 2e-5 + rel 1e-4 [5.7e-6
//     abs], embedding exact [exact];
//   an F16 checkpoint (stored as is) vs the CPU engine on it, and an F32 checkpoint forced to f16 vs the
//     CPU engine on that checkpoint with its matrices rounded to f16 (what f16 storage holds): the same
//     weight values on both sides, so the f32 parity tolerances of test/webgpu-engine.test.ts apply:
//     logits / log-probs max abs 5e-5 [2.9e-6], step loss and metrics rel 5e-5 [5.2e-7], LoRA gradients
//     rel L2 5e-5 [1.4e-6], params after the step max abs 1e-6 [3.0e-8], greedy tokens identical;
//   an F32 checkpoint forced to f16 vs the CPU engine on the F32 checkpoint itself: every weight moves
//     by up to 2^-12 of itself (half precision keeps 11 significant bits), which shifts logits by about
//     that times their scale, so: logits / log-probs max abs 2e-2 [4.3e-3], step loss and metrics rel
//     5e-3 [5.2e-4], LoRA gradients rel L2 2e-2 [2.0e-3], params after the step max abs 1e-4 [1.0e-5];
//     greedy tokens are still identical on this model.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeChoice } from '../src/engine/backend.js';
import { Engine, toNativeConfig, type Adapter, type SdpoSample } from '../src/engine/engine.js';
import { LORA_MODULES } from '../src/engine/lora-modules.js';
import type { NativeConfig } from '../src/engine/native.js';
import { Gpu } from '../src/engine/webgpu/device.js';
import { floatToHalf, halfToFloat } from '../src/engine/webgpu/half.js';
import { WebGpuModel } from '../src/engine/webgpu/model.js';
import { embedding } from '../src/engine/webgpu/ops/embedding.js';
import { linear, linear_backward_input } from '../src/engine/webgpu/ops/linear.js';
import { decideWeightStorage } from '../src/engine/webgpu/weight-storage.js';
import { readModelConfig } from '../src/model/config.js';
import { rng, tempDir, writeRandomModel } from '../src/model/random-model.js';
import { readSafetensors } from '../src/model/safetensors.js';
import { weightSpecs } from '../src/model/weights.js';
import { closeGpu, cpuOps, describe, gpuOrSkip, randF32, randIds, runCase, type Case, type HostArray } from './webgpu/harness.js';
import { ids, maxAbs, relL2, trainedAdapterState } from './webgpu/compare.js';

after(closeGpu);

const f32 = (a: HostArray): Float32Array => a as Float32Array;
const i32 = (a: HostArray): Int32Array => a as Int32Array;

function halfBits(a: Float32Array): Uint16Array {
  return Uint16Array.from(a, floatToHalf);
}

/** The values as f16 would store them (rounded to nearest even). */
function roundedToHalf(a: Float32Array): Float32Array {
  return Float32Array.from(a, (x) => halfToFloat(floatToHalf(x)));
}

test('f32 -> f16 rounds to nearest, ties to even, over every half value', () => {
  const f = new Float32Array(1);
  for (let h = 0; h < 0x10000; h++) {
    const exp = (h >> 10) & 0x1f;
    const v = halfToFloat(h);
    if (exp === 0x1f) {
      if (h & 0x3ff) assert.ok(Number.isNaN(halfToFloat(floatToHalf(v))), `NaN ${h.toString(16)}`);
      else assert.equal(floatToHalf(v), h);
      continue;
    }
    assert.equal(floatToHalf(v), h, `half ${h.toString(16)} (${v}) round-trips`);
    // The midpoint to the next half of larger magnitude: ties go to the even one of the two.
    const next = h + 1;
    if ((next & 0x7fff) > 0x7c00) continue;
    const w = (h & 0x7fff) === 0x7bff ? Math.sign(v) * 65536 : halfToFloat(next);
    const mid = (v + w) / 2; // an f32: halves have 11 significant bits
    const even = (h & 1) === 0 ? h : next;
    assert.equal(floatToHalf(mid), even, `tie between ${h.toString(16)} and ${next.toString(16)}`);
    // Just off the midpoint: to the nearer one.
    f[0] = mid;
    const bits = new Uint32Array(f.buffer);
    const m = bits[0]!;
    bits[0] = m - 1;
    const below = f[0]!;
    bits[0] = m + 1;
    const above = f[0]!;
    const [lo, hi] = Math.abs(below) < Math.abs(above) ? [below, above] : [above, below];
    assert.equal(floatToHalf(lo), h, `just inside ${h.toString(16)}`);
    assert.equal(floatToHalf(hi), next, `just past the midpoint to ${next.toString(16)}`);
  }
  assert.equal(floatToHalf(65504), 0x7bff);
  assert.equal(floatToHalf(65519.99), 0x7bff);
  assert.equal(floatToHalf(65520), 0x7c00, 'half an ulp past the largest half is infinity (tie to even)');
  assert.equal(floatToHalf(-1e6), 0xfc00);
  assert.equal(floatToHalf(2 ** -25), 0, 'half the smallest subnormal ties to zero');
  assert.equal(floatToHalf(2 ** -25 * 1.0001), 1);
  assert.equal(floatToHalf(-0), 0x8000);
  assert.equal(floatToHalf(1e-10), 0);
});

async function check(t: import('node:test').TestContext, c: Case): Promise<void> {
  const gpu = await gpuOrSkip(t);
  if (!gpu) return;
  assert.ok(gpu.f16, `the adapter ${gpu.adapterName} does not offer shader-f16; these kernels need it`);
  const report = await runCase(gpu, c);
  t.diagnostic(describe(report, c.tol));
}

// Each case uploads W / the table as half bits on the GPU; the CPU gets the same rounded values in f32.
const halves: GPUBuffer[] = [];
function half(gpu: Gpu, values: Float32Array): GPUBuffer {
  const b = gpu.uploadHalf(halfBits(values), 'f16 weight');
  assert.ok(gpu.isHalf(b));
  halves.push(b);
  return b;
}
after(() => {
  for (const b of halves) b.destroy();
});

for (const [T, I, O, bias] of [
  [1, 1025, 63, true],
  [63, 128, 1025, true],
  [1025, 63, 1, false],
  [130, 129, 127, false],
] as const) {
  // Weights scaled by 1/sqrt(fan-in) so outputs stay O(1); already f16 values, so both sides agree.
  const W = roundedToHalf(randF32(O * I, 12, 1 / Math.sqrt(I)));
  const Wb = roundedToHalf(randF32(O * I, 16, 1 / Math.sqrt(O)));
  test(`linear with f16 W: T=${T} I=${I} O=${O} bias=${bias}`, (t) =>
    check(t, {
      name: `linear.f16 ${T}x${I}->${O}`,
      inputs: { x: randF32(T * I, 11), W, b: randF32(O, 13) },
      outputs: { y: randF32(T * O, 14) }, // garbage in y must be overwritten
      gpu: (g, b) => linear(g, b.y!, b.x!, half(g, W), bias ? b.b! : null, T, I, O),
      cpu: (a) => cpuOps.linear(f32(a.y!), f32(a.x!), f32(a.W!), bias ? f32(a.b!) : null, T, I, O),
      tol: { abs: 2e-5, rel: 1e-4 }, // f32 dot in another order than OpenBLAS; the weights are equal
    }));
  for (const accumulate of [false, true]) {
    test(`linear_backward_input with f16 W: T=${T} I=${I} O=${O} accumulate=${accumulate}`, (t) =>
      check(t, {
        name: `linear_backward_input.f16 ${T}x${O}->${I}${accumulate ? ' acc' : ''}`,
        inputs: { dy: randF32(T * O, 15), W: Wb },
        outputs: { dx: randF32(T * I, 17) },
        gpu: (g, b) => linear_backward_input(g, b.dx!, b.dy!, half(g, Wb), T, I, O, accumulate),
        cpu: (a) => cpuOps.linear_backward_input(f32(a.dx!), f32(a.dy!), f32(a.W!), T, I, O, accumulate),
        tol: { abs: 2e-5, rel: 1e-4 }, // as linear
      }));
  }
}

for (const [T, H, V] of [
  [63, 128, 1025],
  [1, 1025, 63],
  [7, 33, 5], // V * H odd: the half table ends mid-word
]) {
  const table = roundedToHalf(randF32(V! * H!, 1));
  test(`embedding with an f16 table: T=${T} H=${H} V=${V}`, (t) =>
    check(t, {
      name: `embedding.f16 ${T}x${H}`,
      inputs: { table, ids: randIds(T!, V!, 2) },
      outputs: { out: new Float32Array(T! * H!) },
      gpu: (g, b) => embedding(g, b.out!, half(g, table), b.ids!, T!, H!),
      cpu: (a) => cpuOps.embedding(f32(a.out!), f32(a.table!), i32(a.ids!), T!, H!),
      tol: { abs: 0, rel: 0 }, // f16 -> f32 is exact
    }));
}

test('f16 weight buffers are checked at their half size', async (t) => {
  const gpu = await gpuOrSkip(t);
  if (!gpu) return;
  const W = half(gpu, new Float32Array(7)); // 14 bytes, padded to 16
  const y = gpu.buffer(64), x = gpu.buffer(64);
  assert.throws(() => linear(gpu, y, x, W, null, 1, 3, 3), /linear: W holds 16 bytes, needs 18/);
  assert.doesNotThrow(() => linear(gpu, y, x, W, null, 1, 4, 2));
  gpu.flush();
  y.destroy();
  x.destroy();
});

// --- Checkpoints in 16 bits, written here from a random f32 model -------------------------------------

function bf16Bits(x: number): number {
  const b = new Uint32Array(new Float32Array([x]).buffer)[0]!;
  return (b + 0x7fff + ((b >>> 16) & 1)) >>> 16; // round to nearest even (no NaNs here)
}

/**
 * A copy of the f32 model folder `dir` with every tensor stored as F16 or BF16, or with `normsF32`
 * only the weight matrices (the norms, one dimensional, stay F32).
 */
function as16Bit(dir: string, dtype: 'F16' | 'BF16', normsF32 = false): string {
  const out = join(tempDir(), `model-${dtype}`);
  const { tensors } = readSafetensors(join(dir, 'model.safetensors'));
  const header: Record<string, unknown> = {};
  const chunks: Buffer[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    const data = normsF32 && t.shape.length === 1 ? t.data : Uint16Array.from(t.data, dtype === 'F16' ? floatToHalf : bf16Bits);
    header[name] = { dtype: data instanceof Float32Array ? 'F32' : dtype, shape: t.shape, data_offsets: [offset, offset + data.byteLength] };
    chunks.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    offset += data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'model.safetensors'), Buffer.concat([len, Buffer.from(json), ...chunks]));
  writeFileSync(join(out, 'config.json'), readFileSync(join(dir, 'config.json')));
  return out;
}

function batch(vocab: number, seed: number): SdpoSample[] {
  const r = rng(seed);
  return [
    { promptIds: ids(r, 7, vocab), teacherPromptIds: ids(r, 11, vocab), responseIds: ids(r, 6, vocab), oldLogprobs: Array.from({ length: 6 }, () => -0.5 - 3 * r()) },
    { promptIds: ids(r, 4, vocab), teacherPromptIds: ids(r, 9, vocab), responseIds: ids(r, 9, vocab) },
  ];
}

/** Tolerances of one comparison (see the header). */
interface Tol {
  logits: number;
  metric: number;
  grad: number;
  weight: number;
}
const SAME_WEIGHTS: Tol = { logits: 5e-5, metric: 5e-5, grad: 5e-5, weight: 1e-6 };
const ROUNDED_WEIGHTS: Tol = { logits: 2e-2, metric: 5e-3, grad: 2e-2, weight: 1e-4 };

const STEP_OPTIONS = [
  { alpha: 0.5, teacher: 'current', topK: 8, learningRate: 1e-2 },
  { alpha: 1, teacher: 'base', topK: 4, learningRate: 1e-2, steps: 2 },
] as const;

/** Logits, SDPO steps and greedy generation of `gpu` against `cpu`; reports the worst errors seen. */
async function compare(t: import('node:test').TestContext, label: string, gpu: Engine, cpu: Engine, tol: Tol): Promise<void> {
  const V = cpu.config.vocabSize;
  const shape = { rank: 4, alpha: 8, targetModules: [...LORA_MODULES] };
  const state = trainedAdapterState(cpu, shape);
  const restore = (e: Engine): Adapter => e.restoreAdapter(shape, state);
  const seq = ids(rng(4), 13, V);
  const logitsErr = Math.max(maxAbs(await gpu.logits(seq, restore(gpu)), await cpu.logits(seq, restore(cpu))), maxAbs(await gpu.logits(seq, null), await cpu.logits(seq, null)));
  assert.ok(logitsErr <= tol.logits, `logits max abs error ${logitsErr}`);
  const lpErr = maxAbs(await gpu.logprobs(seq, restore(gpu), 5), await cpu.logprobs(seq, restore(cpu), 5));
  assert.ok(lpErr <= tol.logits, `token log-prob max abs error ${lpErr}`);
  let metricErr = 0, gradErr = 0, weightErr = 0;
  for (const options of STEP_OPTIONS) {
    const a = restore(cpu), b = restore(gpu);
    const want = await cpu.sdpoStep(a, batch(V, 31), options);
    const got = await gpu.sdpoStep(b, batch(V, 31), options);
    for (const m of ['loss', 'distillLoss', 'klToBase', 'meanIsWeight', 'gradNorm', 'teacherStudentKl'] as const) {
      const e = Math.abs(got[m] - want[m]) / Math.max(Math.abs(want[m]), 1e-2);
      metricErr = Math.max(metricErr, e);
      assert.ok(e <= tol.metric, `${options.teacher}: ${m} ${got[m]} vs CPU ${want[m]}`);
    }
    assert.equal(got.tokens, want.tokens);
    const sa = a.state(), sb = b.state();
    gradErr = Math.max(gradErr, relL2(sb.grads, sa.grads));
    assert.ok(gradErr <= tol.grad, `${options.teacher}: gradient relative L2 error ${gradErr}`);
    weightErr = Math.max(weightErr, maxAbs(sb.params, sa.params));
    assert.ok(weightErr <= tol.weight, `${options.teacher}: params max abs error ${weightErr}`);
    assert.ok(maxAbs(sb.params, state.params) > 1e-4, 'the step moved the weights');
  }
  // Greedy generation: three sequences decoded together for 12 tokens.
  const greedy = { temperature: 0, topP: 1, topK: 0, topLogprobs: 0 };
  const run = async (e: Engine) => {
    const adapter = restore(e);
    const seqs = [e.createSequence(17), e.createSequence(99), e.createSequence(5)];
    const out: number[][] = [[], [], []];
    let next = [ids(rng(8), 5, V), ids(rng(9), 9, V), ids(rng(10), 1, V)];
    for (let step = 0; step < 12; step++) {
      const toks = await e.decode(seqs.map((sequence, i) => ({ sequence, ids: next[i]!, sampling: greedy })), adapter);
      toks.forEach((tk, i) => out[i]!.push(tk.id));
      next = toks.map((tk) => [tk.id]);
    }
    return out;
  };
  assert.deepEqual(await run(gpu), await run(cpu), 'greedy tokens');
  t.diagnostic(`${label}: logits ${logitsErr.toExponential(2)}, log-probs ${lpErr.toExponential(2)}, step metrics rel ${metricErr.toExponential(2)}, grads rel L2 ${gradErr.toExponential(2)}, params max abs ${weightErr.toExponential(2)}`);
}

const modelF32 = writeRandomModel({ vocab: 96, hidden: 32, layers: 2, heads: 4, kvHeads: 2, headDim: 16, intermediate: 48, tied: false, seed: 3 });

test('engine with f16 weights matches the CPU engine', async (t) => {
  const probeGpu = await gpuOrSkip(t);
  if (!probeGpu) return;
  assert.ok(probeGpu.f16, `the adapter ${probeGpu.adapterName} does not offer shader-f16`);
  const modelF16 = as16Bit(modelF32, 'F16');
  // The F32 checkpoint as f16 storage holds it: matrices rounded, norms untouched.
  const modelRounded = as16Bit(modelF32, 'F16', true);
  const cpu32 = await Engine.open(modelF32, { backend: 'cpu', threads: 1 });
  const cpu16 = await Engine.open(modelF16, { backend: 'cpu', threads: 1 });
  const cpuRounded = await Engine.open(modelRounded, { backend: 'cpu', threads: 1 });

  await t.test('F32 checkpoint, auto: f32 storage (within f32 rounding of the CPU)', async () => {
    const gpu = await Engine.open(modelF32, { backend: 'webgpu' });
    assert.match(gpu.backendChoice.weights ?? '', /^weights f32 \(checkpoint F32\)/);
    const seq = ids(rng(4), 13, 96);
    assert.ok(maxAbs(await gpu.logits(seq, null), await cpu32.logits(seq, null)) <= 5e-5);
  });

  await t.test('F16 checkpoint, auto: stored as is in f16; parity as tight as f32', async (st) => {
    const gpu = await Engine.open(modelF16, { backend: 'webgpu' });
    assert.match(gpu.backendChoice.weights ?? '', /^weights f16 \(checkpoint F16, adapter offers shader-f16\)/);
    assert.match(describeChoice(gpu.backendChoice), /^backend webgpu \([^;]+; weights f16 \(checkpoint F16, adapter offers shader-f16\), [\d.]+ MiB\)/);
    await compare(st, 'vs CPU on the F16 checkpoint', gpu, cpu16, SAME_WEIGHTS);
  });

  await t.test('F32 checkpoint forced to f16: equals the CPU on the rounded checkpoint', async (st) => {
    const gpu = await Engine.open(modelF32, { backend: 'webgpu', webgpuWeights: 'f16' });
    assert.match(gpu.backendChoice.weights ?? '', /^weights f16 \(requested; checkpoint F32\)/);
    await compare(st, 'vs CPU on the rounded checkpoint', gpu, cpuRounded, SAME_WEIGHTS);
    await compare(st, 'vs CPU on the F32 checkpoint', gpu, cpu32, ROUNDED_WEIGHTS);
  });

  await t.test('BF16 checkpoint, auto: f16 storage, the bf16 values exactly', async (st) => {
    const modelBf16 = as16Bit(modelF32, 'BF16');
    const gpu = await Engine.open(modelBf16, { backend: 'webgpu' });
    const cpu = await Engine.open(modelBf16, { backend: 'cpu', threads: 1 });
    assert.match(gpu.backendChoice.weights ?? '', /^weights f16 \(checkpoint BF16/);
    const seq = ids(rng(4), 13, 96);
    const err = maxAbs(await gpu.logits(seq, null), await cpu.logits(seq, null));
    // bf16 values of these magnitudes (above 2^-14) are exact in f16: f32 parity.
    assert.ok(err <= 5e-5, `logits max abs error ${err}`);
    st.diagnostic(`bf16 checkpoint logits max abs ${err.toExponential(2)}`);
  });

  await t.test('F16 matrices with F32 norms, auto: f16 storage', async () => {
    const gpu = await Engine.open(modelRounded, { backend: 'webgpu' });
    assert.match(gpu.backendChoice.weights ?? '', /^weights f16 \(checkpoint F16, adapter offers shader-f16\)/);
  });

  await t.test('the f32 choice keeps f32 on a 16-bit checkpoint', async () => {
    const gpu = await Engine.open(modelF16, { backend: 'webgpu', webgpuWeights: 'f32' });
    assert.match(gpu.backendChoice.weights ?? '', /^weights f32 \(requested\)/);
  });
});

function nativeConfig(dir: string): { config: NativeConfig; tensors: ReturnType<typeof weightSpecs> } {
  const c = readModelConfig(dir);
  return {
    config: toNativeConfig(c),
    tensors: weightSpecs(dir, c),
  };
}

test('f16 storage halves the weight matrices and leaves the norms f32', async (t) => {
  if (!(await gpuOrSkip(t))) return;
  const spec = nativeConfig(modelF32);
  const m32 = await WebGpuModel.load(spec, { weights: 'f32' });
  const m16 = await WebGpuModel.load(spec, { weights: 'f16' });
  try {
    const pad4 = (n: number) => Math.ceil(n / 4) * 4;
    const matrices = new Set(['embed', 'lm_head', 'q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);
    const want32 = spec.tensors.reduce((s, x) => s + 4 * x.count, 0);
    const want16 = spec.tensors.reduce((s, x) => s + (matrices.has(x.role) ? pad4(2 * x.count) : 4 * x.count), 0);
    assert.equal(m32.ctx.weights.bytes, want32);
    assert.equal(m16.ctx.weights.bytes, want16);
    assert.ok(m16.gpu.isHalf(m16.ctx.weights.layers[0]!.W[0]!.parts[0]!));
    assert.ok(!m16.gpu.isHalf(m16.ctx.weights.layers[0]!.inNorm));
    assert.ok(!m16.gpu.isHalf(m16.ctx.weights.finalNorm));
    t.diagnostic(`weights f32 ${want32} bytes, f16 ${want16} bytes`);
  } finally {
    m32.close();
    m16.close();
  }
});

test('a matrix with values beyond the f16 range stays f32', async (t) => {
  if (!(await gpuOrSkip(t))) return;
  const dir = as16Bit(modelF32, 'BF16');
  const spec = nativeConfig(dir);
  // Rewrite one value of layer 0's q_proj to 2^17 (a bf16 value; infinite in f16).
  const q = spec.tensors.find((x) => x.role === 'q_proj' && x.layer === 0)!;
  const file = readFileSync(q.file);
  file.writeUInt16LE(0x4800, q.offset);
  writeFileSync(q.file, file);
  const m = await WebGpuModel.load(spec, { weights: 'f16' });
  try {
    assert.equal(m.ctx.weights.keptF32, 1);
    assert.ok(!m.gpu.isHalf(m.ctx.weights.layers[0]!.W[0]!.parts[0]!));
    assert.ok(m.gpu.isHalf(m.ctx.weights.layers[0]!.W[1]!.parts[0]!));
    assert.match(m.weightStorage, /1 matrices kept f32: values beyond the f16 range/);
  } finally {
    m.close();
  }
});

test('f16 on a device without shader-f16 is refused; auto falls back to f32', async (t) => {
  if (!(await gpuOrSkip(t))) return;
  const spec = nativeConfig(as16Bit(modelF32, 'F16'));
  await assert.rejects(WebGpuModel.load(spec, { weights: 'f16', shaderF16: false }), (err: Error) => {
    assert.equal(err.name, 'InputError');
    assert.match(err.message, /webgpuWeights 'f16' needs the WebGPU feature shader-f16, which the adapter \S+ does not offer \(use 'auto' or 'f32'\)/);
    return true;
  });
  const m = await WebGpuModel.load(spec, { shaderF16: false });
  try {
    assert.equal(m.storage.storage, 'f32');
    assert.match(m.weightStorage, /^weights f32 \(the adapter \S+ lacks shader-f16\)/);
  } finally {
    m.close();
  }
  const bare = await Gpu.open({ shaderF16: false });
  try {
    assert.equal(bare.f16, false);
    assert.throws(() => bare.uploadHalf(new Uint16Array(4)), /f16 weight storage needs the shader-f16 feature/);
    assert.throws(() => bare.dispatch('linear.f16', 'linear', [], [1]), /linear\.f16: f16 kernels need the shader-f16 feature/);
  } finally {
    bare.destroy();
  }
  assert.throws(() => decideWeightStorage('f16', false, 'some-gpu', spec.tensors), /adapter some-gpu does not offer/);
  await assert.rejects(Engine.open(modelF32, { backend: 'cpu', webgpuWeights: 'half' as never }), /webgpuWeights must be one of auto, f16, f32 \(got "half"\)/);
});
