// CUDA backend against the CPU backend (the oracle): every op of kernels/cuda next to its
// native/cpu twin on the same inputs (odd sizes included), then whole-model logits, token
// log-probs, SDPO steps (metrics, every LoRA gradient, the AdamW step), activation
// checkpointing, KV-cache decode, mixed-adapter decode batches, dispose with the device memory
// reported to V8, and decoding in its own lane during a training step (each with the numbers it
// gives alone). Runs wherever a CUDA device is present; elsewhere each case is
// skipped with the reason, and with CLAAS_REQUIRE_CUDA=1 a missing device fails the run. Every
// device buffer of an op call has a guard band after it; a write past an output fails the op.
// Tolerances (next to each case) are max |cuda - cpu| <= tol * max(|cpu|, floor): fp32 ops differ
// only in summation order (1e-5..1e-4); bf16 GEMMs are checked on bf16-representable inputs (then
// only the order differs) and on raw fp32 inputs, where the device rounds activations to bf16
// (8 significant bits: 2^-9 relative per element, so 1e-2 of the output scale). Whole-model step
// comparisons are also allowed the CPU's own noise under bf16-sized weight perturbations (below).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync } from 'node:fs';
import { join } from 'node:path';
import { Engine, toNativeConfig, type Adapter, type SampledToken } from '../src/engine/engine.js';
import { pickBackend } from '../src/engine/backend.js';
import { resolveSdpoOptions } from '../src/engine/sdpo-options.js';
import { loadCudaAddon, type OpArgs, type OpResult, type OpTable } from '../src/engine/cuda.js';
import { normal, rng, tempDir, writeRandomModel } from '../src/model/random-model.js';
import { readSafetensors, writeSafetensors } from '../src/model/safetensors.js';

const loaded = loadCudaAddon();
const status = 'addon' in loaded ? loaded.addon.deviceStatus() : { available: false, reason: loaded.reason, device: '' };
const skip: string | false = status.available ? false : `no usable CUDA device: ${status.reason}`;

test('a CUDA device is present when CLAAS_REQUIRE_CUDA=1', () => {
  if (process.env.CLAAS_REQUIRE_CUDA === '1') assert.equal(skip, false, String(skip));
});

test('without a device the backend reports why, and the CUDA ops refuse to run', { skip: status.available ? 'a CUDA device is present' : false }, async () => {
  assert.ok(status.reason.length > 0, 'an unavailable backend must say why');
  assert.ok((await pickBackend('auto')).skipped.some((s) => s.backend === 'cuda' && s.reason.length > 0), 'auto must record why cuda was skipped');
  await assert.rejects(pickBackend('cuda'), /backend cuda is not available/);
  if ('addon' in loaded) {
    assert.throws(
      () => loaded.addon.cudaOps.swiglu!({ g: new Float32Array(2), u: new Float32Array(2) }),
      (e: Error & { code?: string }) => e.code === 'E_NO_DEVICE',
    );
  }
});

// ---------------------------------------------------------------------------------------------
const rand = rng(20260);
function randn(n: number, std = 1, r: () => number = rand): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = std * normal(r);
  return a;
}
// Cases added later draw from their own stream, so the draws of everything after them (the engine
// cases' model, adapter and batch included) stay those the device was checked on. The engine cases'
// step-2 gradients are chaotic in their inputs (AdamW's first step is lr * sign(g)): one other draw
// failed them with the CPU itself perturbed by u/2 (CLAAS_CUDA_PARITY_SELFTEST) in the device's place.
const laterRand = rng(20261);
/** Rounds to the nearest bf16 value (ties to even), as the device does. */
function bf16(a: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  const u = new Uint32Array(out.buffer);
  out.set(a);
  for (let i = 0; i < u.length; i++) u[i] = ((u[i]! + 0x7fff + ((u[i]! >>> 16) & 1)) & 0xffff0000) >>> 0;
  return out;
}
function ids(n: number, below: number): Int32Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.floor(rand() * below);
  return a;
}
function logSoftmaxRows(x: Float32Array, R: number, V: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < R; r++) {
    let mx = -Infinity;
    for (let v = 0; v < V; v++) mx = Math.max(mx, x[r * V + v]!);
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(x[r * V + v]! - mx);
    for (let v = 0; v < V; v++) out[r * V + v] = x[r * V + v]! - mx - Math.log(s);
  }
  return out;
}

/**
 * Fails with the first mismatches when max |a - b| > tol * max(max |b|, floor). Returns the worst
 * difference relative to that scale, so each case can report how close to its tolerance it ran.
 */
function close(name: string, a: ArrayLike<number>, b: ArrayLike<number>, tol: number, floor = 1): string {
  assert.equal(a.length, b.length, `${name}: length ${a.length} vs ${b.length}`);
  let scale = floor, worst = 0, at = -1;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]!));
  const bad: string[] = [];
  for (let i = 0; i < b.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
    if (!(d <= tol * scale) && bad.length < 5) bad.push(`[${i}] cuda ${a[i]} cpu ${b[i]}`);
  }
  assert.ok(bad.length === 0, `${name}: max diff ${worst} at ${at} > ${tol} * ${scale}; first: ${bad.join(', ')}`);
  return `${name} ${(worst / scale).toExponential(2)} (tol ${tol})`;
}

interface OpCase {
  op: string;
  args: OpArgs;
  /** Output name -> tolerance (relative to the output's scale). */
  tol: Record<string, number>;
  exact?: string[];
}

function opCases(): OpCase[] {
  const cases: OpCase[] = [];
  for (const [T, H, V] of [[1, 8, 5], [63, 1025, 17]] as const) {
    cases.push({ op: 'embedding', args: { table: bf16(randn(V * H)), ids: ids(T, V), V, T, H }, tol: {}, exact: ['out'] });
  }
  for (const [N, D] of [[1, 1], [63, 1025], [7, 4096]] as const) {
    const x = randn(N * D), w = randn(D);
    cases.push({ op: 'rmsnorm', args: { x, w, N, D, eps: 1e-6 }, tol: { y: 1e-5, rstd: 1e-5 } });
    const rstd = new Float32Array(N).map(() => 0.5 + rand());
    for (const accumulate of [false, true]) {
      cases.push({ op: 'rmsnorm_backward', args: { dx0: randn(N * D), dy: randn(N * D), x, rstd, w, N, D, accumulate }, tol: { dx: 1e-5 } });
    }
  }
  for (const [T, I, O] of [[1, 1, 1], [63, 1025, 17], [64, 256, 512]] as const) {
    const x = randn(T * I), W = randn(O * I, 0.05), b = randn(O);
    // bf16-representable inputs: only the summation order differs.
    cases.push({ op: 'linear', args: { x: bf16(x), W: bf16(W), b, T, I, O }, tol: { y: 1e-5 } });
    // raw fp32 activations, rounded to bf16 on the device (2^-9 relative per element).
    cases.push({ op: 'linear', args: { x, W: bf16(W), T, I, O }, tol: { y: 1e-2 } });
    const dy = bf16(randn(T * O));
    cases.push({ op: 'linear_backward_input', args: { dx0: randn(T * I), dy, W: bf16(W), T, I, O, accumulate: true }, tol: { dx: 1e-5 } });
    cases.push({ op: 'linear_backward_input', args: { dx0: randn(T * I), dy, W: bf16(W), T, I, O, accumulate: false }, tol: { dx: 1e-5 } });
  }
  for (const [T, I, O, R] of [[1, 1, 1, 1], [63, 1025, 17, 8], [64, 256, 512, 32]] as const) {
    const x = randn(T * I), A = randn(R * I, 0.1), B = randn(O * R, 0.1);
    cases.push({ op: 'lora', args: { y0: randn(T * O), x, A, B, T, I, O, R, scale: 2 }, tol: { y: 1e-5, u: 1e-5 } });
    cases.push({
      op: 'lora_backward',
      args: { dx0: randn(T * I), dA0: randn(R * I), dB0: randn(O * R), dy: randn(T * O), x, u: randn(T * R), A, B, T, I, O, R, scale: 2 },
      tol: { dx: 1e-5, dA: 1e-5, dB: 1e-5 },
    });
  }
  for (const [T, N, D] of [[1, 1, 2], [63, 3, 128], [5, 2, 18]] as const) {
    const positions = Int32Array.from({ length: T }, (_, i) => i * 7 + 3);
    for (const op of ['rope', 'rope_backward']) cases.push({ op, args: { x: randn(T * N * D), positions, T, N, D, theta: 1e6 }, tol: { x: 1e-5 } });
  }
  // Attention: GQA groups (up to 4 heads a kv head, as Qwen3-8B), head dims padded to the kernels'
  // 32-column blocks or not, T across several 64-row blocks and 32-row tiles and not a multiple of
  // either, KV-cache offsets inside a tile.
  // Head dims up to 128 run on tensor cores with TF32 inputs (10-bit mantissa, unit roundoff 2^-11
  // = 4.9e-4 per rounded q, k, v, dO, probability and dS): scores move by about that much, so outputs,
  // lse and gradients by a few 1e-4 of their scale. A tile-by-tile numpy model of the kernels with
  // TF32 rounding gave at most 5.8e-4 (out), 2.1e-4 (lse) and 9.5e-4 (dq, dk, dv) on these cases;
  // the bounds leave 5x to 10x. D = 256 runs the fp32 kernels: only the online vs two-pass softmax
  // and the summation order differ there.
  const tc = (D: number): boolean => D <= 128;
  const attentionCases: (readonly [number, number, number, number, number, () => number])[] = [
    ...([[1, 1, 1, 16, 0], [63, 4, 2, 16, 0], [70, 8, 2, 128, 0], [33, 4, 1, 96, 0], [9, 4, 2, 64, 40]] as const).map((c) => [...c, rand] as const),
    ...([[130, 8, 2, 128, 0], [5, 4, 1, 128, 70]] as const).map((c) => [...c, laterRand] as const),
    [1, 4, 4, 256, 100, rand],
  ];
  for (const [T, N, M, D, q0, r] of attentionCases) {
    const q = randn(T * N * D, 1, r), k = randn((q0 + T) * M * D, 1, r), v = randn((q0 + T) * M * D, 1, r);
    cases.push({ op: 'attention', args: { q, k, v, T, N, NKV: M, D, q0 }, tol: tc(D) ? { out: 5e-3, lse: 2e-3 } : { out: 5e-5, lse: 1e-5 } });
  }
  const backwardCases: (readonly [number, number, number, number, () => number])[] = [
    ...([[1, 1, 1, 16], [63, 4, 2, 16], [70, 8, 2, 128], [33, 4, 1, 96]] as const).map((c) => [...c, rand] as const),
    ...([[130, 8, 2, 128], [97, 2, 1, 64]] as const).map((c) => [...c, laterRand] as const),
  ];
  for (const [T, N, M, D, r] of backwardCases) {
    const q = randn(T * N * D, 1, r), k = randn(T * M * D, 1, r), v = randn(T * M * D, 1, r);
    const ref = loaded && 'addon' in loaded ? loaded.addon.cpuOps.attention!({ q, k, v, T, N, NKV: M, D, q0: 0 }) : { out: new Float32Array(T * N * D), lse: new Float32Array(N * T) };
    cases.push({
      op: 'attention_backward',
      args: { dout: randn(T * N * D, 1, r), q, k, v, out: ref.out as Float32Array, lse: ref.lse as Float32Array, T, N, NKV: M, D },
      tol: tc(D) ? { dq: 1e-2, dk: 1e-2, dv: 1e-2 } : { dq: 1e-4, dk: 1e-4, dv: 1e-4 },
    });
  }
  for (const n of [1, 1025, 100003]) {
    const g = randn(n, 3), u = randn(n);
    cases.push({ op: 'swiglu', args: { g, u }, tol: { h: 1e-6 } });
    cases.push({ op: 'swiglu_backward', args: { dh: randn(n), g, u }, tol: { dg: 1e-6, du: 1e-6 } });
  }
  for (const [R, V] of [[1, 1], [3, 1025], [5, 151936]] as const) {
    const logits = randn(R * V, 4);
    cases.push({ op: 'log_softmax', args: { logits, R, V }, tol: { out: 1e-6, lse: 1e-6 }, exact: [] });
    cases.push({ op: 'log_softmax_backward', args: { ds: randn(R * V), logp: logSoftmaxRows(logits, R, V), R, V }, tol: { dlogits: 1e-5 } });
  }
  for (const [R, V, K] of [[1, 1, 1], [4, 1025, 100], [3, 151936, 100], [2, 300, 300]] as const) {
    cases.push({ op: 'topk', args: { x: randn(R * V), R, V, K }, tol: { val: 0 }, exact: ['idx'] });
    // Many ties: the lower index must win, as on the CPU.
    cases.push({ op: 'topk', args: { x: randn(R * V).map((x) => Math.round(x * 2)), R, V, K }, tol: { val: 0 }, exact: ['idx'] });
  }
  // SDPO loss: every divergence form, tail and renormalized, sampled token, importance weights and k3.
  for (const [R, V, K] of [[3, 64, 8], [4, 151936, 100]] as const) {
    const s = logSoftmaxRows(randn(R * V, 2), R, V);
    const teacher = logSoftmaxRows(randn(R * V, 2), R, V);
    const top = loaded && 'addon' in loaded ? loaded.addon.cpuOps.topk!({ x: teacher, R, V, K }) : { idx: new Int32Array(R * K), val: new Float32Array(R * K) };
    const y = ids(R, V);
    const tail = loaded && 'addon' in loaded ? loaded.addon.cpuOps.sdpo_teacher_tail!({ logp: teacher, idx: top.idx as Int32Array, y, R, V, K }) : { tail: new Float32Array(R), token: new Float32Array(R) };
    const common = { s, R, V, K, y, tIdx: top.idx as Int32Array, tLogp: top.val as Float32Array, tTail: tail.tail as Float32Array, tToken: tail.token as Float32Array, base: randn(R, 0.3).map((x, i) => x + s[i * V + y[i]!]!), isClip: 2, coef: 1 / R };
    cases.push({ op: 'sdpo_teacher_tail', args: { logp: teacher, idx: top.idx as Int32Array, y, R, V, K }, tol: { tail: 1e-6, token: 0 } });
    for (const [alpha, tl] of [[0.5, true], [0, true], [1, true], [0.5, false], [0, false]] as const) {
      cases.push({ op: 'sdpo_loss', args: { ...common, alpha, tail: tl, sampledToken: false, beta: 0 }, tol: { ds: 1e-5, values: 1e-6 } });
    }
    const old = randn(R, 0.5).map((x, i) => x + s[i * V + y[i]!]!);
    cases.push({ op: 'sdpo_loss', args: { ...common, old, alpha: 0.5, tail: true, sampledToken: false, beta: 0.1 }, tol: { ds: 1e-5, values: 1e-6 } });
    cases.push({ op: 'sdpo_loss', args: { ...common, old, alpha: 0.5, tail: true, sampledToken: true, beta: 0.1 }, tol: { ds: 1e-5, values: 1e-6 } });
  }
  for (const n of [1, 1025, 300007]) {
    for (const [step, gradScale] of [[1, 1], [7, 0.25]] as const) {
      cases.push({
        op: 'adamw',
        args: { p: randn(n), m: randn(n, 0.01), v: randn(n, 0.01).map(Math.abs), g: randn(n), lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step, gradScale },
        tol: { p: 1e-6, m: 1e-6, v: 1e-6 },
      });
    }
  }
  return cases;
}

const counts = new Map<string, number>();
for (const c of opCases()) {
  const n = (counts.get(c.op) ?? 0) + 1;
  counts.set(c.op, n);
  const dims = Object.entries(c.args).filter(([, v]) => typeof v === 'number' || typeof v === 'boolean').map(([k, v]) => `${k}=${String(v)}`).join(' ');
  test(`cuda ${c.op} #${n} matches cpu (${dims})`, { skip }, (t) => {
    const { addon } = loaded as { addon: { cudaOps: OpTable; cpuOps: OpTable } };
    const got: OpResult = addon.cudaOps[c.op]!(c.args);
    const want: OpResult = addon.cpuOps[c.op]!(c.args);
    const seen: string[] = [];
    for (const name of Object.keys(want)) {
      if (c.exact?.includes(name)) assert.deepEqual(Array.from(got[name]!), Array.from(want[name]!), `${c.op}.${name} must match exactly`);
      else seen.push(close(`${c.op}.${name}`, got[name]!, want[name]!, c.tol[name] ?? 0));
    }
    // Worst |cuda - cpu| / scale per output, for the record (bench/RESULTS.md).
    if (seen.length > 0) t.diagnostic(`worst relative: ${seen.join('; ')}`);
  });
}

// ---------------------------------------------------------------------------------------------
// Whole model: a tiny Qwen3 with bf16-representable weights, so both backends use the same weights
// and differ only by the device's bf16 activations at GEMM inputs (and summation order).
function bf16Model(opts: Parameters<typeof writeRandomModel>[0]): string {
  const dir = writeRandomModel(opts, join(tempDir('claas-cuda-'), 'model'));
  const file = join(dir, 'model.safetensors');
  const { tensors } = readSafetensors(file);
  writeSafetensors(file, [...tensors].map(([name, t]) => ({ name, shape: t.shape, data: bf16(t.data) })), { format: 'pt' });
  return dir;
}

// How far apart may the engines be? The device rounds every GEMM input to bf16, which moves it by
// up to u = 2^-8 of itself (bf16's unit roundoff), and some quantities of a step are ill-conditioned
// under such noise: a per-tensor LoRA gradient that is a small difference of large terms, or the
// sampled-token loss, a mean of (s_y - t_y) s_y over terms of mixed sign. Fixed tolerances cannot
// serve those, so each step comparison is calibrated on the CPU itself: the CPU engine also runs on
// NOISE_DRAWS copies of the model whose GEMM matrices (projections and LM head) are multiplied
// elementwise by 1 + u * U(-1, 1), and the device may differ from the CPU by the quantity's fixed
// tolerance or by NOISE_FACTOR times the most any of those copies moved the CPU, whichever is larger.
// On logits the device's error is about half that of such a copy (first H200 run: 7.9e-3 of the
// scale against 1.4e-2 to 1.8e-2), but one draw of an ill-conditioned quantity scatters widely, so
// the factor keeps the bound from depending on a lucky draw. CLAAS_CUDA_PARITY_SELFTEST=<amplitude>,<seed>
// checks the allowances themselves without a GPU: the CPU engine on a copy of the model perturbed by
// up to <amplitude> stands in for the device in the engine cases. A stand-in at u / 2 (about the
// device's noise on logits) passed every check in 30 seeds, one at u failed 6 runs of 20 (mostly its
// logits, over their fixed 2e-2) and one at 8u failed all 5 (bench/RESULTS.md).
const BF16_UNIT_ROUNDOFF = 2 ** -8;
const NOISE_DRAWS = 4;
const NOISE_FACTOR = 3;
const selfTest = process.env.CLAAS_CUDA_PARITY_SELFTEST?.split(',').map(Number);

function perturbedModel(dir: string, tied: boolean, seed: number, amplitude = BF16_UNIT_ROUNDOFF): string {
  const out = join(tempDir('claas-cuda-noise-'), 'model');
  cpSync(dir, out, { recursive: true });
  const file = join(out, 'model.safetensors');
  const { tensors } = readSafetensors(file);
  const r = rng(seed);
  const gemm = (name: string, shape: number[]) => shape.length === 2 && (tied || name !== 'model.embed_tokens.weight');
  writeSafetensors(file, [...tensors].map(([name, t]) => ({
    name,
    shape: t.shape,
    data: gemm(name, t.shape) ? t.data.map((x) => x * (1 + amplitude * (2 * r() - 1))) : t.data,
  })), { format: 'pt' });
  return out;
}

/** The allowance of one engine-level quantity: its fixed tolerance or the CPU's own noise, whichever is larger. */
const allow = (tol: number, noise: number[]) => Math.max(tol, NOISE_FACTOR * Math.max(...noise));
const fmt = (x: number) => x.toExponential(2);

function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0, n = 0;
  for (let i = 0; i < b.length; i++) {
    d += (a[i]! - b[i]!) ** 2;
    n += b[i]! ** 2;
  }
  return Math.sqrt(d) / Math.max(Math.sqrt(n), 1e-12);
}

/** max |a - b| / max(max |b|, 1): the measure close() bounds. */
function maxRel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let scale = 1, worst = 0;
  for (let i = 0; i < b.length; i++) {
    scale = Math.max(scale, Math.abs(b[i]!));
    worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  }
  return worst / scale;
}

const METRICS = ['loss', 'distillLoss', 'klToBase', 'meanIsWeight', 'gradNorm', 'teacherStudentKl'] as const;

for (const [name, shape] of [
  ['tied, GQA 4/2, head dim 16', { vocab: 97, hidden: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 16, intermediate: 96, tied: true, seed: 3 }],
  ['untied, head dim 128', { vocab: 1000, hidden: 256, layers: 2, heads: 4, kvHeads: 1, headDim: 128, intermediate: 384, tied: false, seed: 4 }],
] as const) {
  test(`cuda engine matches the cpu engine: ${name}`, { skip: selfTest ? false : skip }, async (t) => {
    // Every comparison runs and is reported (error and allowance, or the failure), then the test
    // fails with all failures at once: a device run shows the whole picture, not the first miss.
    const failures: string[] = [];
    const check = (what: string, fn: () => string) => {
      try {
        t.diagnostic(fn());
      } catch (err) {
        failures.push(`${what}: ${(err as Error).message}`);
      }
    };
    const dir = bf16Model(shape);
    const cpu = await Engine.open(dir, { backend: 'cpu', threads: 2 });
    const gpu = selfTest
      ? await Engine.open(perturbedModel(dir, shape.tied, 1_000_000 + selfTest[1]!, selfTest[0]), { backend: 'cpu', threads: 2 })
      : await Engine.open(dir, { backend: 'cuda' });
    if (!selfTest) assert.equal(gpu.backend, 'cuda');
    const noisy: Engine[] = [];
    for (let i = 0; i < NOISE_DRAWS; i++) noisy.push(await Engine.open(perturbedModel(dir, shape.tied, 100 + i), { backend: 'cpu', threads: 2 }));
    const V = shape.vocab;
    const shapeL = { rank: 8, alpha: 16, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const };
    const layoutTotal = cpu.createAdapter({ rank: 8, alpha: 16, seed: 1 }).state().params.length;
    const params = randn(layoutTotal, 0.05);
    const make = (e: Engine) => e.restoreAdapter({ ...shapeL, targetModules: [...shapeL.targetModules] }, { params, step: 0 });

    // Logits and token log-probs, well conditioned: max error over the output's scale, 2e-2 (bf16
    // activations at GEMM inputs; the perturbed CPU copies move them 1.4e-2 to 1.8e-2).
    const tokens = Array.from(ids(40, V));
    const arrays = async (what: string, run: (e: Engine) => Promise<Float32Array>) => {
      const want = await run(cpu), got = await run(gpu);
      check(what, () => {
        const err = maxRel(got, want);
        assert.ok(err <= 2e-2, `max error ${err} of the scale > 2e-2`);
        return `${what} ${fmt(err)} (tol 2e-2)`;
      });
    };
    await arrays('logits (base)', (e) => e.logits(tokens, null));
    await arrays('logits (adapter)', (e) => e.logits(tokens, make(e)));
    await arrays('token logprobs', (e) => e.logprobs(tokens, make(e), 10));

    // SDPO steps: metrics and each step's loss (relative error, fixed 2e-2) and each LoRA gradient
    // tensor (relative L2 error, fixed 5e-2), each allowed the CPU's own noise; and, exactly, that
    // the device's update is AdamW of the device's own gradient. The two engines' updates are not
    // compared with each other: AdamW's first step moves each weight by lr * sign(g), so every
    // gradient entry below the noise flips (relative L2 0.1 to 0.4 between the CPU and its perturbed
    // copies); a second step's loss shows the first update's effect instead.
    const batch = [
      { promptIds: Array.from(ids(12, V)), teacherPromptIds: Array.from(ids(17, V)), responseIds: Array.from(ids(9, V)), oldLogprobs: null },
      { promptIds: Array.from(ids(5, V)), teacherPromptIds: Array.from(ids(8, V)), responseIds: Array.from(ids(20, V)), oldLogprobs: Array.from(randn(20, 0.3), (x) => -2 - Math.abs(x)) },
    ];
    const upd = (p: Float32Array) => p.map((x, i) => x - params[i]!);
    const relErr = (x: number, ref: number) => Math.abs(x - ref) / Math.max(Math.abs(ref), 1e-3);
    for (const options of [{ alpha: 0.5, topK: 20, tail: true }, { alpha: 0, topK: 20, tail: false, beta: 0.1 }, { sampledToken: true }, { alpha: 1, topK: 5, teacher: 'base' as const, steps: 2 }]) {
      const tag = JSON.stringify(options);
      const stepOptions = { learningRate: 1e-3, ...options };
      const run = async (e: Engine) => {
        const a = make(e);
        const result = await e.sdpoStep(a, batch, stepOptions);
        return { result, grads: a.tensors('grads'), state: a.state() };
      };
      const want = await run(cpu), got = await run(gpu);
      const noise: (typeof want)[] = [];
      for (const e of noisy) noise.push(await run(e));
      check(`${tag} metrics`, () => {
        const seen: string[] = [];
        const values: [string, (x: typeof want) => number][] = [
          ...METRICS.map((m) => [m, (x: typeof want) => x.result[m]] as [string, (x: typeof want) => number]),
          ...want.result.stepLosses.slice(1).map((_, i) => [`step ${i + 2} loss`, (x: typeof want) => x.result.stepLosses[i + 1]!] as [string, (x: typeof want) => number]),
        ];
        const failed: string[] = [];
        for (const [m, value] of values) {
          const err = relErr(value(got), value(want)), lim = allow(2e-2, noise.map((n) => relErr(value(n), value(want))));
          if (!(err <= lim)) failed.push(`${m}: cuda ${value(got)} cpu ${value(want)} (relative error ${err} > allowed ${lim})`);
          seen.push(`${m} ${fmt(err)}/${fmt(lim)}`);
        }
        assert.deepEqual(failed, []);
        assert.equal(got.result.tokens, want.result.tokens);
        return `${tag} metrics, relative error/allowed: ${seen.join(', ')}`;
      });
      check(`${tag} grads`, () => {
        let closest = '', ratio = -1;
        const failed: string[] = [];
        for (const [key, ref] of want.grads) {
          const err = relL2(got.grads.get(key)!, ref), lim = allow(5e-2, noise.map((n) => relL2(n.grads.get(key)!, ref)));
          if (!(err <= lim)) failed.push(`grad ${key}: relative L2 error ${err} > allowed ${lim}`);
          if (err / lim > ratio) [ratio, closest] = [err / lim, `${key} ${fmt(err)} (allowed ${fmt(lim)})`];
        }
        assert.deepEqual(failed, []);
        return `${tag} gradient closest to its allowance: ${closest}; all together relative L2 ${fmt(relL2(got.state.grads, want.state.grads))}`;
      });
      if ((stepOptions as { steps?: number }).steps === undefined) {
        // One step from m = v = 0: p <- p (1 - lr wd) - lr gc / (|gc| + eps), gc the gradient after
        // the global-norm clip (torch semantics). Only fp32 rounding separates the two sides.
        check(`${tag} AdamW of the device gradient`, () => {
          const o = resolveSdpoOptions(stepOptions, V).native;
          const g = got.state.grads;
          let sq = 0;
          for (const x of g) sq += x * x;
          const clip = Math.min(1, o.maxGradNorm / (Math.sqrt(sq) + 1e-6));
          const expected = params.map((p, i) => {
            const gc = g[i]! * clip;
            return p * (1 - o.learningRate * o.weightDecay) - (o.learningRate * gc) / (Math.abs(gc) + o.adamEps) - p;
          });
          return `${tag} ${close('AdamW of the device gradient', upd(got.state.params), expected, 1e-4, 0)}`;
        });
      }
    }

    // Decode: the log-probs the device reports (the picked token and the top 5) against the CPU's
    // log-softmax of the same prefix. A log-prob is a logit minus the log-sum-exp of the logits,
    // each within the logits' tolerance (2e-2 of their scale), so the bound is twice that; two
    // log-probs within it of the truth can swap places, so the greedy pick must be within twice
    // the bound of the CPU's best.
    const prompt = Array.from(ids(11, V));
    const seq = gpu.createSequence(5);
    let [tok] = await gpu.decode([{ sequence: seq, ids: prompt, sampling: { temperature: 0, topP: 1, topK: 0, topLogprobs: 5 } }]);
    const seen = [...prompt];
    for (let i = 0; i < 6; i++) {
      const logits = (await cpu.logits(seen, null)).slice((seen.length - 1) * V);
      const lp = logSoftmaxRows(logits, 1, V);
      const picked = tok!;
      check(`decode step ${i}`, () => {
        const lim = 2 * 2e-2 * Math.max(1, ...Array.from(logits, Math.abs));
        let d = Math.abs(lp[picked.id]! - picked.logprob);
        assert.ok(d <= lim, `logprob of ${picked.id}: ${picked.logprob} vs cpu ${lp[picked.id]} (allowed ${lim})`);
        Array.from(picked.topIds).forEach((id, k) => {
          d = Math.max(d, Math.abs(lp[id]! - picked.topLogprobs[k]!));
          assert.ok(Math.abs(lp[id]! - picked.topLogprobs[k]!) <= lim, `top logprob of ${id}: ${picked.topLogprobs[k]} vs cpu ${lp[id]} (allowed ${lim})`);
        });
        assert.ok(lp[picked.id]! >= Math.max(...lp) - 2 * lim, `greedy pick ${picked.id} is not (nearly) the cpu argmax`);
        return `decode step ${i}: |logprob - cpu| ${fmt(d)} at most (allowed ${fmt(lim)})`;
      });
      seen.push(picked.id);
      [tok] = await gpu.decode([{ sequence: seq, ids: [picked.id], sampling: { temperature: 0, topP: 1, topK: 0, topLogprobs: 5 } }]);
    }
    assert.equal(seq.length, seen.length);
    assert.deepEqual(failures, []);
  });
}

test('activation checkpointing gives the same step as keeping every activation', { skip }, async (t) => {
  const { addon } = loaded as { addon: import('../src/engine/cuda.js').CudaAddon };
  const dir = bf16Model({ vocab: 97, hidden: 64, layers: 3, heads: 4, kvHeads: 2, headDim: 16, intermediate: 96, seed: 9 });
  const { readModelConfig } = await import('../src/model/config.js');
  const { weightSpecs } = await import('../src/model/weights.js');
  const c = readModelConfig(dir);
  const spec = {
    config: toNativeConfig(c),
    threads: 1,
    tensors: weightSpecs(dir, c),
  };
  const plain = await addon.loadModel(spec);
  const ckpt = await addon.loadModel({ ...spec, checkpoint: true, logitRows: 3 } as typeof spec);
  const targets = [true, true, true, true, true, true, true];
  const sample = { prompt: ids(9, 97), teacherPrompt: ids(13, 97), response: ids(11, 97) };
  const options = { alpha: 0.5, tail: true, sampledToken: false, isClip: 2, beta: 0, topK: 10, teacher: 1, learningRate: 1e-3, maxGradNorm: 1, weightDecay: 0.01, adamBeta1: 0.9, adamBeta2: 0.999, adamEps: 1e-8, emaRate: 0.05, steps: 1 };
  const a = plain.createAdapter({ rank: 4, alpha: 8, targets, params: randn(plain.createAdapter({ rank: 4, alpha: 8, targets, seed: 1 }).state().params.length, 0.05) });
  const b = ckpt.createAdapter({ rank: 4, alpha: 8, targets, params: a.state().params });
  const ra = await plain.sdpoStep(a, [sample], options);
  const rb = await ckpt.sdpoStep(b, [sample], options);
  // Same kernels on the same inputs; only the chunking of the LM head rows differs.
  assert.ok(Math.abs(ra.loss - rb.loss) <= 1e-5 * Math.max(1, Math.abs(ra.loss)), `loss ${ra.loss} vs ${rb.loss}`);
  t.diagnostic(close('grads with checkpointing', b.state().grads, a.state().grads, 1e-5, 0));
});

// ---------------------------------------------------------------------------------------------
// Mixed-adapter decode: one call carries rows of three adapters (different ranks and targets) and of
// the base model, prefill chunks next to single tokens, and the same adapter on rows that are not
// next to each other in the call (the device groups them into one LoRA product). Its own stream of
// draws, so the cases above keep theirs.
const mixedRand = rng(20262);
const GREEDY = { temperature: 0, topP: 1, topK: 0, topLogprobs: 5 } as const;
const LORA_ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;

/**
 * One sampled token against a reference: the same greedy pick, unless the reference's own best two
 * log-probs lie within 2 * within of each other (two engines each within `within` of the truth may
 * then order them differently; the pick must then be one of the reference's top ids within 2 * within
 * of its best), and the log-prob of every id both report within `within`. Returns the worst
 * difference and whether the pick had to be identical.
 */
function sameToken(what: string, got: SampledToken, want: SampledToken, within: number): { worst: number; decisive: boolean } {
  const ref = new Map<number, number>(Array.from(want.topIds, (id, k) => [id, want.topLogprobs[k]!]));
  ref.set(want.id, want.logprob);
  const best = Math.max(...ref.values());
  const margin = want.topLogprobs.length > 1 ? want.topLogprobs[0]! - want.topLogprobs[1]! : Infinity;
  const decisive = margin > 2 * within;
  if (decisive) assert.equal(got.id, want.id, `${what}: picked ${got.id}, the reference ${want.id} (its margin ${margin})`);
  else assert.ok((ref.get(got.id) ?? -Infinity) >= best - 2 * within, `${what}: picked ${got.id}, not within ${2 * within} of the reference's best ${want.id}`);
  let worst = 0;
  for (const [id, lp] of [[got.id, got.logprob], ...Array.from(got.topIds, (id, k) => [id, got.topLogprobs[k]!])] as [number, number][]) {
    const r = ref.get(id);
    if (r === undefined) continue;
    worst = Math.max(worst, Math.abs(lp - r));
    assert.ok(Math.abs(lp - r) <= within, `${what}: log-prob of ${id} ${lp} vs the reference's ${r} (allowed ${within})`);
  }
  return { worst, decisive };
}

test('mixed-adapter decode: one device call per step matches per-adapter device calls and the cpu engine', { skip: selfTest ? false : skip }, async (t) => {
  // Every pick is compared and every miss collected, then the test fails with all of them at once.
  const failures: string[] = [];
  const check = (fn: () => void) => {
    try {
      fn();
    } catch (err) {
      failures.push((err as Error).message);
    }
  };
  const shape = { vocab: 97, hidden: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 16, intermediate: 96, tied: true, seed: 12 };
  const dir = bf16Model(shape);
  const cpu = await Engine.open(dir, { backend: 'cpu', threads: 2 });
  const gpu = selfTest
    ? await Engine.open(perturbedModel(dir, shape.tied, 2_000_000 + selfTest[1]!, selfTest[0]), { backend: 'cpu', threads: 2 })
    : await Engine.open(dir, { backend: 'cuda' });
  if (!selfTest) assert.equal(gpu.backend, 'cuda');
  const V = shape.vocab;

  // The same random (non-zero B) weights on both engines.
  const kinds = [
    { rank: 4, alpha: 8, targetModules: [...LORA_ALL] },
    { rank: 8, alpha: 16, targetModules: ['q_proj', 'v_proj'] },
    { rank: 2, alpha: 4, targetModules: ['k_proj', 'o_proj', 'up_proj', 'down_proj'] },
  ] as { rank: number; alpha: number; targetModules: (typeof LORA_ALL)[number][] }[];
  const weights = kinds.map((k) => {
    const probe = cpu.createAdapter({ ...k, seed: 1 });
    const n = probe.state().params.length;
    probe.dispose();
    return randn(n, 0.15, mixedRand);
  });
  const adaptersOf = (e: Engine) => kinds.map((k, i) => e.restoreAdapter(k, { params: weights[i]!, step: 0 }));
  const cpuAdapters = adaptersOf(cpu), gpuAdapters = adaptersOf(gpu);
  const on = (list: Adapter[], a: number) => (a < 0 ? null : list[a]!);

  // adapter: index into kinds, -1 for the base model; joins: the step its prompt starts (so prefill
  // chunks and single tokens share calls); chunk: prompt tokens a step.
  const plans = [
    { adapter: 0, prompt: 13, joins: 0, chunk: 5 },
    { adapter: 1, prompt: 7, joins: 0, chunk: 7 },
    { adapter: -1, prompt: 9, joins: 1, chunk: 4 },
    { adapter: 0, prompt: 4, joins: 1, chunk: 4 },
    { adapter: 2, prompt: 11, joins: 2, chunk: 6 },
    { adapter: 1, prompt: 3, joins: 4, chunk: 3 },
  ].map((p) => ({ ...p, ids: Array.from({ length: p.prompt }, () => Math.floor(mixedRand() * V)) }));
  const steps = 12;
  const cpuSeqs = plans.map((_, i) => cpu.createSequence(i + 1));
  const mixedSeqs = plans.map((_, i) => gpu.createSequence(i + 1));
  const groupSeqs = plans.map((_, i) => gpu.createSequence(i + 1));
  const seen: number[][] = plans.map(() => []);
  const fed = plans.map(() => 0);
  const next: number[] = plans.map(() => -1);
  let worstGroup = 0, worstCpu = 0, picks = 0, decisiveGroup = 0, decisiveCpu = 0;

  for (let step = 0; step < steps; step++) {
    const rows: { i: number; ids: number[] }[] = [];
    plans.forEach((p, i) => {
      if (step < p.joins) return;
      const ids = fed[i]! < p.ids.length ? p.ids.slice(fed[i], fed[i]! + p.chunk) : [next[i]!];
      fed[i] = Math.min(p.ids.length, fed[i]! + p.chunk);
      seen[i]!.push(...ids);
      rows.push({ i, ids });
    });
    // The cpu engine's mixed batch is the reference; the device decodes the same rows in one call,
    // and again (other sequences) in one call per adapter through the call's adapter argument.
    const want = await cpu.decode(rows.map((r) => ({ sequence: cpuSeqs[r.i]!, adapter: on(cpuAdapters, plans[r.i]!.adapter), ids: r.ids, sampling: GREEDY })));
    const mixed = await gpu.decode(rows.map((r) => ({ sequence: mixedSeqs[r.i]!, adapter: on(gpuAdapters, plans[r.i]!.adapter), ids: r.ids, sampling: GREEDY })));
    const grouped = new Map<number, SampledToken>();
    for (const a of [...new Set(rows.map((r) => plans[r.i]!.adapter))]) {
      const mine = rows.filter((r) => plans[r.i]!.adapter === a);
      const got = await gpu.decode(mine.map((r) => ({ sequence: groupSeqs[r.i]!, ids: r.ids, sampling: GREEDY })), on(gpuAdapters, a));
      mine.forEach((r, k) => grouped.set(r.i, got[k]!));
    }
    for (const [k, r] of rows.entries()) {
      const what = `step ${step} sequence ${r.i} (adapter ${plans[r.i]!.adapter})`;
      // The decode case's bound: twice the logits' 2e-2 of their scale (cpu logits of the same prefix).
      const logits = (await cpu.logits(seen[r.i]!, on(cpuAdapters, plans[r.i]!.adapter))).slice((seen[r.i]!.length - 1) * V);
      const lim = 2 * 2e-2 * Math.max(1, ...Array.from(logits, Math.abs));
      // Per-adapter calls run the same kernels on the same rows; only the frozen GEMMs see another
      // number of rows, so cuBLAS may sum in another order (fp32) and flip the bf16 rounding of a few
      // activations at the next GEMM input. A tenth of the cpu bound leaves room for that.
      check(() => {
        const r1 = sameToken(`${what}: mixed vs per-adapter`, mixed[k]!, grouped.get(r.i)!, lim / 10);
        worstGroup = Math.max(worstGroup, r1.worst / (lim / 10));
        decisiveGroup += r1.decisive ? 1 : 0;
      });
      check(() => {
        const r2 = sameToken(`${what}: device vs cpu`, mixed[k]!, want[k]!, lim);
        worstCpu = Math.max(worstCpu, r2.worst / lim);
        decisiveCpu += r2.decisive ? 1 : 0;
      });
      picks++;
      // Every run goes on with the cpu's pick, so a near tie taken the other way does not fork them.
      next[r.i] = want[k]!.id;
    }
  }
  t.diagnostic(
    `${picks} picks; the same token where decisive: ${decisiveGroup} against per-adapter calls, ${decisiveCpu} against the cpu; ` +
      `worst log-prob difference over its bound: ${fmt(worstGroup)} and ${fmt(worstCpu)}`,
  );
  plans.forEach((_, i) => {
    assert.equal(mixedSeqs[i]!.length, seen[i]!.length);
    assert.equal(groupSeqs[i]!.length, seen[i]!.length);
  });

  // Not vacuous: on each adapter sequence's last prefix, its adapter moves the log-probs of its top
  // ids by more than the cpu bound against the base model and every other adapter, so rows routed
  // to the wrong adapter (or none) would have failed the comparisons above.
  let leastApart = Infinity;
  for (const [i, p] of plans.entries()) {
    if (p.adapter < 0) continue;
    const lastRow = async (a: Adapter | null) => (await cpu.logits(seen[i]!, a)).slice((seen[i]!.length - 1) * V);
    const raw = await lastRow(cpuAdapters[p.adapter]!);
    const own = logSoftmaxRows(raw, 1, V);
    const lim = 2 * 2e-2 * Math.max(1, ...Array.from(raw, Math.abs));
    const top = Array.from(own.keys()).sort((x, y) => own[y]! - own[x]!).slice(0, GREEDY.topLogprobs);
    for (const other of [-1, 0, 1, 2].filter((a) => a !== p.adapter)) {
      const lp = logSoftmaxRows(await lastRow(on(cpuAdapters, other)), 1, V);
      const d = Math.max(...top.map((id) => Math.abs(own[id]! - lp[id]!)));
      assert.ok(d > lim, `sequence ${i}: adapter ${p.adapter} and ${other === -1 ? 'the base model' : `adapter ${other}`} differ by only ${d} on its top ids (bound ${lim})`);
      leastApart = Math.min(leastApart, d / lim);
    }
  }
  t.diagnostic(`adapters apart on their top ids by at least ${fmt(leastApart)} times the bound`);
  for (const s of [...cpuSeqs, ...mixedSeqs, ...groupSeqs]) s.dispose();
  assert.deepEqual(failures, []);
});

test('cuda: disposed adapters, sequences and models fail with E_DISPOSED, calls running keep theirs, device bytes are reported', { skip }, async () => {
  const { addon } = loaded as { addon: import('../src/engine/cuda.js').CudaAddon };
  const dir = bf16Model({ vocab: 97, hidden: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 16, intermediate: 96, seed: 14 });
  const { readModelConfig } = await import('../src/model/config.js');
  const { weightSpecs } = await import('../src/model/weights.js');
  const c = readModelConfig(dir);
  const spec = { config: toNativeConfig(c), threads: 1, tensors: weightSpecs(dir, c) };
  // Argument errors throw synchronously, failures of the work reject: async wrappers take both.
  const disposedError = (e: Error & { code?: string }) => e.code === 'E_DISPOSED';
  // V8's count of reported external memory (process.memoryUsage() does not include it); read
  // around synchronous calls only, where nothing else can report or be finalized in between.
  const external = () => (addon as typeof addon & { externalMemory(): number }).externalMemory();

  const model = await addon.loadModel(spec);
  const targets = [true, true, true, true, true, true, true];
  const probe = model.createAdapter({ rank: 4, alpha: 8, targets, seed: 1 });
  const params = randn(probe.state().params.length, 0.1, mixedRand);
  probe.dispose();
  const a = model.createAdapter({ rank: 4, alpha: 8, targets, params });
  const twin = model.createAdapter({ rank: 4, alpha: 8, targets, params });
  assert.equal(a.bytes, 5 * 4 * params.length);
  const s = model.createSequence(1), sTwin = model.createSequence(1);
  assert.equal(s.bytes, 0);
  const prompt = Int32Array.from({ length: 100 }, (_, i) => (i * 7) % 97);
  const entry = { ids: prompt, temperature: 0, topP: 1, topK: 0, topLogprobs: 5 };

  // Disposed while its decode is queued: the call keeps the adapter and the cache to its end and
  // gives what an untouched twin gives; nothing is reported for them afterwards.
  const running = model.decode([{ seq: s, adapter: a, ...entry }]);
  const bytesA = a.bytes;
  let x0 = external();
  a.dispose();
  assert.equal(x0 - external(), bytesA, 'dispose takes back exactly what the adapter reported');
  s.dispose();
  const [got] = await running;
  const [want] = await model.decode([{ seq: sTwin, adapter: twin, ...entry }]);
  assert.equal(got!.id, want!.id);
  assert.deepEqual(Array.from(got!.topIds), Array.from(want!.topIds));
  close('decode with a disposed adapter and cache', got!.topLogprobs, want!.topLogprobs, 1e-6);
  assert.equal(s.bytes, 0);
  assert.equal(s.length, 0);
  // The cache grew to 128 rows (doubling from 64) and was reported after the decode.
  assert.equal(sTwin.bytes, 2 * c.numLayers * 128 * c.numKvHeads * c.headDim * 4);
  assert.equal(sTwin.length, prompt.length);

  a.dispose();
  s.dispose();
  assert.equal(a.bytes, 0);
  assert.throws(() => a.state(), disposedError);
  assert.throws(() => a.layout(), disposedError);
  assert.throws(() => a.clone(), disposedError);
  await assert.rejects(async () => model.decode([{ seq: sTwin, adapter: a, ...entry, ids: Int32Array.of(1) }]), disposedError);
  await assert.rejects(async () => model.forward(Int32Array.of(1, 2, 3), a, false), disposedError);
  await assert.rejects(async () => model.decode([{ seq: s, adapter: null, ...entry, ids: Int32Array.of(1) }]), disposedError);

  x0 = external();
  const cacheBytes = sTwin.bytes;
  sTwin.dispose();
  assert.equal(x0 - external(), cacheBytes, 'dispose takes back exactly what the sequence reported');

  // The model: it reports its bf16 matrices and fp32 norms (this model has no biases, no LM head of
  // its own); later calls fail; what is still alive (twin) keeps working on its own reference.
  const H = c.hiddenSize, D = c.headDim;
  const matrices = c.vocabSize * H + c.numLayers * (H * (c.numHeads + 2 * c.numKvHeads) * D + c.numHeads * D * H + 3 * H * c.intermediateSize);
  const norms = H + c.numLayers * (2 * H + (c.qkNorm ? 2 * D : 0));
  x0 = external();
  model.dispose();
  assert.equal(x0 - external(), 2 * matrices + 4 * norms, 'dispose takes back exactly the weight bytes the model reported');
  model.dispose();
  assert.throws(() => model.createSequence(2), disposedError);
  await assert.rejects(async () => model.forward(Int32Array.of(1, 2, 3), null, false), disposedError);
  assert.equal(twin.state().params.length, params.length);
  twin.dispose();
});

// ---------------------------------------------------------------------------------------------
// The two lanes on the device: decoding (its own stream, cuBLAS handle and buffers) goes on while a
// training step runs in the other lane, and neither changes the other's numbers. cuBLAS keeps its
// GEMMs bit-identical with other streams busy only when each stream has its own handle, so the
// decode must give exactly the tokens and log-probs it gives alone, and the step exactly the losses
// and weights it gives alone. Its own model, so the cases above keep their draws.
const laneSample = { promptIds: [1, 2, 3, 4, 5, 6, 7, 8], teacherPromptIds: [1, 2, 3, 40, 41, 4, 5, 6, 7, 8], responseIds: Array.from({ length: 24 }, (_, i) => (i * 7 + 3) % 60) };

test('cuda: decoding runs in its own lane while a step trains another adapter, each with the results it gives alone', { skip }, async (t) => {
  const engine = await Engine.open(writeRandomModel({ seed: 63, hidden: 64, layers: 4, vocab: 64 }, join(tempDir('claas-cuda-lanes-'), 'model')), { backend: 'cuda' });
  assert.equal(engine.backend, 'cuda');
  assert.equal(engine.concurrentLanes, true);
  const served = engine.createAdapter({ rank: 4, alpha: 8, seed: 1 });
  // Some weight in B, so the served adapter's tokens are its own and not the base model's.
  await engine.sdpoStep(served, [laneSample], { learningRate: 5e-2, steps: 2 });
  const sampling = { temperature: 0, topP: 1, topK: 0, topLogprobs: 5 };
  /** 12 greedy tokens on the served adapter, one decode call per token. */
  const greedy12 = async (onCall?: () => void): Promise<SampledToken[]> => {
    const seq = engine.createSequence(1);
    const out: SampledToken[] = [];
    let ids = [3, 9, 27, 21, 5, 11];
    for (let i = 0; i < 12; i++) {
      const [tok] = await engine.decode([{ sequence: seq, ids, sampling }], served);
      onCall?.();
      out.push(tok!);
      ids = [tok!.id];
    }
    seq.dispose();
    return out;
  };
  const flat = (toks: SampledToken[]) => toks.map((x) => ({ id: x.id, logprob: x.logprob, topIds: Array.from(x.topIds), topLogprobs: Array.from(x.topLogprobs) }));

  const alone = await greedy12();
  const candidate = await engine.cloneAdapter(served, { freshOptimizer: true });
  const lone = await engine.cloneAdapter(served, { freshOptimizer: true });
  let t0 = performance.now();
  const stepAlone = await engine.sdpoStep(lone, [laneSample], { learningRate: 1e-2, steps: 40 });
  const stepAloneMs = performance.now() - t0;

  let stepDone = false;
  let callsDuringStep = 0;
  t0 = performance.now();
  const step = engine.sdpoStep(candidate, [laneSample], { learningRate: 1e-2, steps: 40 }).then((r) => {
    stepDone = true;
    return r;
  });
  const during = await greedy12(() => {
    if (!stepDone) callsDuringStep++;
  });
  const decodeMs = performance.now() - t0;
  const stepped = await step;
  t.diagnostic(`${callsDuringStep} of 12 decode calls finished while the 40-step update ran (the 12 took ${decodeMs.toFixed(1)} ms; the update alone ${stepAloneMs.toFixed(1)} ms)`);

  assert.deepEqual(flat(during), flat(alone), 'the tokens and log-probs decoded during the step');
  // With the lanes serialized, decode calls wait for the whole update (the first may slip in ahead of
  // it); running at once, most finish inside it: the update is 40 forwards and backwards over 32
  // tokens, a decode call one token.
  assert.ok(callsDuringStep >= 6, `decode calls that finished while the 40-step update ran: ${callsDuringStep} of 12`);
  assert.deepEqual(stepped.stepLosses, stepAlone.stepLosses, 'the losses of the step run next to decoding');
  const a = candidate.state(), b = lone.state();
  for (const key of ['params', 'ema', 'm', 'v'] as const) assert.deepEqual([...a[key]], [...b[key]], `${key} after the step run next to decoding`);
  assert.equal(a.step, b.step);
  for (const x of [served, candidate, lone]) x.dispose();
  engine.dispose();
});
