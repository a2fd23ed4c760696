// WebGPU ops of the second family (rope, attention, log_softmax, topk, sdpo_loss) against the CPU
// reference, op by op, with odd shapes (1, 63, 1025, a 152k vocabulary) and head_dim 128; sentinels
// after every output (test/webgpu/harness.ts). Tolerances sit beside each case. The GPU sums in f32
// in another order than OpenBLAS, and the CPU's log_softmax sum and sdpo_loss_row run in double, so
// reductions get 1e-6..1e-4 relative; top-K ids are exact. A finite-difference check of the sdpo_loss
// gradient runs on the GPU alone.
import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { attention, attention_backward } from '../src/engine/webgpu/ops/attention.js';
import { log_softmax, log_softmax_backward } from '../src/engine/webgpu/ops/log_softmax.js';
import { rope, rope_backward, rope_tables } from '../src/engine/webgpu/ops/rope.js';
import { sdpo_loss, type SdpoLossOptions } from '../src/engine/webgpu/ops/sdpo_loss.js';
import { topk } from '../src/engine/webgpu/ops/topk.js';
import { closeGpu, cpuOps, describe, expectClose, gpuOrSkip, randF32, randIds, runCase, type Case, type HostArray } from './webgpu/harness.js';

after(closeGpu);

const f32 = (a: HostArray): Float32Array => a as Float32Array;
const i32 = (a: HostArray): Int32Array => a as Int32Array;

async function check(t: TestContext, c: Case): Promise<void> {
  const gpu = await gpuOrSkip(t);
  if (!gpu) return;
  const report = await runCase(gpu, c);
  t.diagnostic(describe(report, c.tol));
}

/** Row-wise log-softmax on the CPU reference (inputs of the ops below are log-probabilities). */
function logSoftmax(x: Float32Array, R: number, V: number): Float32Array {
  const out = new Float32Array(R * V);
  cpuOps.log_softmax(out, null, x, R, V);
  return out;
}

// ---- rope ---------------------------------------------------------------------------------------

for (const [T, N, D, p0] of [
  [1, 1, 2, 0],
  [63, 3, 128, 5],
  [1025, 2, 8, 0],
]) {
  const theta = 1e6;
  const positions = Int32Array.from({ length: T! }, (_, t) => p0! + t);
  const cos = new Float32Array((T! * D!) / 2);
  const sin = new Float32Array((T! * D!) / 2);
  cpuOps.rope_tables(cos, sin, positions, T!, D!, theta);

  test(`rope_tables T=${T} D=${D}`, () => {
    const c = new Float32Array(cos.length);
    const s = new Float32Array(sin.length);
    rope_tables(c, s, positions, T!, D!, theta);
    // Same double-precision formula rounded once to f32; libm and V8 may differ by an ulp in double.
    const tol = { abs: 1.2e-7, rel: 0 };
    expectClose('rope_tables cos', c, cos, tol);
    expectClose('rope_tables sin', s, sin, tol);
  });

  for (const backward of [false, true]) {
    const name = backward ? 'rope_backward' : 'rope';
    test(`${name} T=${T} N=${N} D=${D}`, (t) =>
      check(t, {
        name: `${name} ${T}x${N}x${D}`,
        inputs: { cos, sin },
        outputs: { x: randF32(T! * N! * D!, 11, 2) },
        gpu: (g, b) => (backward ? rope_backward : rope)(g, b.x!, b.cos!, b.sin!, T!, N!, D!),
        cpu: (a) => (backward ? cpuOps.rope_backward : cpuOps.rope)(f32(a.x!), f32(a.cos!), f32(a.sin!), T!, N!, D!),
        tol: { abs: 1e-6, rel: 1e-6 }, // two products and a sum per element; FMA contraction moves an ulp
      }));
  }
}

// ---- attention ----------------------------------------------------------------------------------

// [T, N, NKV, D, q0]: single rows, GQA groups, head_dim 128, keys from a KV cache (q0 > 0), several
// 64-row blocks, and a 1025-row sequence. Up to 4 rows against 128 keys or more take the decoding
// kernel (keys split over a workgroup): the q0 = 1024, 200 and 130 cases; q0 = 37 with one row does not.
for (const [T, N, NKV, D, q0] of [
  [1, 1, 1, 1, 0],
  [1, 8, 2, 128, 1024],
  [3, 4, 2, 64, 200],
  [2, 2, 1, 7, 130],
  [1, 2, 1, 16, 37],
  [63, 4, 2, 128, 0],
  [63, 2, 1, 64, 37],
  [130, 3, 3, 16, 0],
  [1025, 2, 1, 8, 0],
]) {
  const Tk = q0! + T!;
  test(`attention T=${T} N=${N} NKV=${NKV} D=${D} q0=${q0}`, (t) =>
    check(t, {
      name: `attention ${T}x${N}/${NKV}x${D}+${q0}`,
      inputs: { q: randF32(T! * N! * D!, 21, 1.5), k: randF32(Tk * NKV! * D!, 22, 1.5), v: randF32(Tk * NKV! * D!, 23) },
      outputs: { out: new Float32Array(T! * N! * D!), lse: new Float32Array(N! * T!) },
      gpu: (g, b) => attention(g, b.out!, b.lse!, b.q!, b.k!, b.v!, T!, N!, NKV!, D!, q0!),
      cpu: (a) => cpuOps.attention(f32(a.out!), f32(a.lse!), f32(a.q!), f32(a.k!), f32(a.v!), T!, N!, NKV!, D!, q0!),
      // online softmax (running max, rescaled sums) against a two-pass softmax over up to 1025 keys;
      // outputs are averages of O(1) values, so the f32 error is absolute (seen up to 3.6e-6)
      tol: { abs: 6e-6, rel: 2e-5 },
    }));
}

for (const [T, N, NKV, D] of [
  [1, 2, 1, 128],
  [63, 4, 2, 128],
  [130, 2, 1, 32],
  [1025, 2, 2, 8],
]) {
  test(`attention_backward T=${T} N=${N} NKV=${NKV} D=${D}`, async (t) => {
    const q = randF32(T! * N! * D!, 31, 1.5);
    const k = randF32(T! * NKV! * D!, 32, 1.5);
    const v = randF32(T! * NKV! * D!, 33);
    const out = new Float32Array(T! * N! * D!);
    const lse = new Float32Array(N! * T!);
    cpuOps.attention(out, lse, q, k, v, T!, N!, NKV!, D!);
    const scratch: GPUBuffer[] = [];
    try {
      await check(t, {
        name: `attention_backward ${T}x${N}/${NKV}x${D}`,
        inputs: { dout: randF32(T! * N! * D!, 34), q, k, v, out, lse },
        outputs: { dq: new Float32Array(T! * N! * D!), dk: new Float32Array(T! * NKV! * D!), dv: new Float32Array(T! * NKV! * D!) },
        gpu: (g, b) => {
          scratch.push(g.buffer(N! * T! * 4, 'attention scratch'));
          attention_backward(g, b.dq!, b.dk!, b.dv!, b.dout!, b.q!, b.k!, b.v!, b.out!, b.lse!, T!, N!, NKV!, D!, scratch[0]!);
        },
        cpu: (a) =>
          cpuOps.attention_backward(f32(a.dq!), f32(a.dk!), f32(a.dv!), f32(a.dout!), f32(a.q!), f32(a.k!), f32(a.v!), f32(a.out!),
            f32(a.lse!), T!, N!, NKV!, D!, new Float32Array(2 * N! * T! * D!)),
        // sums of O(1) terms with cancellation over up to 1025 keys (dq) or queries x group heads (dk,
        // dv) in another order: about sqrt(T) * 6e-8 * |term| absolute (seen up to 9.1e-6)
        tol: { abs: 3e-5, rel: 1e-4 },
      });
    } finally {
      for (const b of scratch) b.destroy();
    }
  });
}

// ---- log_softmax --------------------------------------------------------------------------------

// 152064 = the Qwen3 vocabulary.
for (const [R, V] of [
  [1, 1],
  [1, 63],
  [3, 1025],
  [2, 152064],
]) {
  const logits = randF32(R! * V!, 41, 4);
  // |logp| reaches ~30; the GPU sums exp in f32, the CPU in double: a few ulp of lse.
  const tol = { abs: 2e-5, rel: 1e-6 };
  test(`log_softmax R=${R} V=${V}`, (t) =>
    check(t, {
      name: `log_softmax ${R}x${V}`,
      inputs: { logits },
      outputs: { out: new Float32Array(R! * V!), lse: new Float32Array(R!) },
      gpu: (g, b) => log_softmax(g, b.out!, b.lse!, b.logits!, R!, V!),
      cpu: (a) => cpuOps.log_softmax(f32(a.out!), f32(a.lse!), f32(a.logits!), R!, V!),
      tol,
    }));
  test(`log_softmax in place, no lse, R=${R} V=${V}`, (t) =>
    check(t, {
      name: `log_softmax in place ${R}x${V}`,
      inputs: {},
      outputs: { x: logits },
      gpu: (g, b) => log_softmax(g, b.x!, null, b.x!, R!, V!),
      cpu: (a) => cpuOps.log_softmax(f32(a.x!), null, f32(a.x!), R!, V!),
      tol,
    }));
  test(`log_softmax in place with lse, R=${R} V=${V}`, (t) =>
    check(t, {
      name: `log_softmax in place + lse ${R}x${V}`,
      inputs: {},
      outputs: { x: logits, lse: new Float32Array(R!) },
      gpu: (g, b) => log_softmax(g, b.x!, b.lse!, b.x!, R!, V!),
      cpu: (a) => cpuOps.log_softmax(f32(a.x!), f32(a.lse!), f32(a.x!), R!, V!),
      tol,
    }));
  test(`log_softmax out of place, no lse, R=${R} V=${V}`, (t) =>
    check(t, {
      name: `log_softmax no lse ${R}x${V}`,
      inputs: { logits },
      outputs: { out: new Float32Array(R! * V!) },
      gpu: (g, b) => log_softmax(g, b.out!, null, b.logits!, R!, V!),
      cpu: (a) => cpuOps.log_softmax(f32(a.out!), null, f32(a.logits!), R!, V!),
      tol,
    }));

  const logp = logSoftmax(logits, R!, V!);
  const ds = randF32(R! * V!, 42, 0.1);
  // sum(ds) over V in f32 (the CPU in double) times softmax <= 1
  const btol = { abs: 2e-6, rel: 1e-5 };
  test(`log_softmax_backward R=${R} V=${V}`, (t) =>
    check(t, {
      name: `log_softmax_backward ${R}x${V}`,
      inputs: { ds, logp },
      outputs: { dl: new Float32Array(R! * V!) },
      gpu: (g, b) => log_softmax_backward(g, b.dl!, b.ds!, b.logp!, R!, V!),
      cpu: (a) => cpuOps.log_softmax_backward(f32(a.dl!), f32(a.ds!), f32(a.logp!), R!, V!),
      tol: btol,
    }));
  test(`log_softmax_backward in place R=${R} V=${V}`, (t) =>
    check(t, {
      name: `log_softmax_backward in place ${R}x${V}`,
      inputs: { logp },
      outputs: { ds },
      gpu: (g, b) => log_softmax_backward(g, b.ds!, b.ds!, b.logp!, R!, V!),
      cpu: (a) => cpuOps.log_softmax_backward(f32(a.ds!), f32(a.ds!), f32(a.logp!), R!, V!),
      tol: btol,
    }));
}

// ---- topk ---------------------------------------------------------------------------------------

/** Rows with many ties: values on a coarse grid, a constant row, +-0 and -inf. */
function tiedRows(R: number, V: number, seed: number): Float32Array {
  const x = randF32(R * V, seed, 2);
  for (let i = 0; i < x.length; ++i) x[i] = Math.round(x[i]! * 2) / 2;
  if (R > 1) x.fill(0.25, V, 2 * V);
  x[0] = -0;
  if (V > 2) {
    x[1] = 0;
    x[2] = -Infinity;
  }
  return x;
}

for (const [R, V, K, ties] of [
  [1, 1, 1, false],
  [2, 63, 63, true],
  [3, 1025, 100, false],
  [4, 1025, 7, true],
  [1, 1025, 1024, true],
  [2, 152064, 100, false],
] as const) {
  const x = ties ? tiedRows(R, V, 51) : logSoftmax(randF32(R * V, 52, 3), R, V);
  test(`topk R=${R} V=${V} K=${K}${ties ? ' with ties' : ''}`, (t) =>
    check(t, {
      name: `topk ${R}x${V} K=${K}`,
      inputs: { x },
      outputs: { idx: new Int32Array(R * K), val: new Float32Array(R * K) },
      gpu: (g, b) => topk(g, b.idx!, b.val!, b.x!, R, V, K),
      cpu: (a) => cpuOps.topk(i32(a.idx!), f32(a.val!), f32(a.x!), R, V, K),
      tol: { abs: 0, rel: 0 }, // a selection: ids and values exact
    }));
}

// ---- sdpo_loss ----------------------------------------------------------------------------------

interface SdpoInputs {
  s: Float32Array;
  y: Int32Array;
  tIdx: Int32Array;
  tLogp: Float32Array;
  tail: Float32Array;
  token: Float32Array;
  old: Float32Array;
  base: Float32Array;
}

/**
 * R rows of a V-way student and a nearby teacher (its top-K, the log of the mass outside it, its log-prob
 * of y). Old log-probs cover unknown (NaN), near the student (w ~ 1) and far below it (clipped); base
 * log-probs cover small and large ratios (one beyond the +-20 clamp). The last row's tail is -inf.
 */
function sdpoInputs(R: number, V: number, K: number, seed: number): SdpoInputs {
  const studentLogits = randF32(R * V, seed, 3);
  const noise = randF32(R * V, seed + 1, 0.7);
  const teacherLogits = studentLogits.map((x, i) => x + noise[i]!);
  const s = logSoftmax(studentLogits, R, V);
  const tl = logSoftmax(teacherLogits, R, V);
  const tIdx = new Int32Array(R * K);
  const tLogp = new Float32Array(R * K);
  cpuOps.topk(tIdx, tLogp, tl, R, V, K);
  const y = randIds(R, V, seed + 2);
  const tail = new Float32Array(R);
  const token = new Float32Array(R);
  const old = new Float32Array(R);
  const base = new Float32Array(R);
  for (let r = 0; r < R; ++r) {
    const inK = new Set(tIdx.subarray(r * K, (r + 1) * K));
    let mass = 0;
    for (let v = 0; v < V; ++v) if (!inK.has(v)) mass += Math.exp(tl[r * V + v]!);
    tail[r] = mass > 0 ? Math.log(mass) : -Infinity;
    token[r] = tl[r * V + y[r]!]!;
    const sy = s[r * V + y[r]!]!;
    old[r] = [NaN, sy + 0.3, sy - 2.0, sy - 0.5][r % 4]!;
    base[r] = sy - [0.05, -0.8, 1.5, 0.002, 30][r % 5]!;
  }
  if (R > 1) tail[R - 1] = -Infinity;
  return { s, y, tIdx, tLogp, tail, token, old, base };
}

function cpuSdpo(a: Record<string, HostArray>, R: number, V: number, K: number, opt: SdpoLossOptions, coef: number): void {
  const ds = f32(a.ds!);
  const vals = f32(a.vals!);
  for (let r = 0; r < R; ++r) {
    const row = cpuOps.sdpo_loss_row(
      ds.subarray(r * V, (r + 1) * V), f32(a.s!).subarray(r * V, (r + 1) * V), V, i32(a.y!)[r]!,
      {
        idx_K: i32(a.tIdx!).subarray(r * K, (r + 1) * K), logp_K: f32(a.tLogp!).subarray(r * K, (r + 1) * K),
        tailLogp: f32(a.tail!)[r]!, tokenLogp: f32(a.token!)[r]!, K,
      },
      f32(a.old!)[r]!, f32(a.base!)[r]!, opt, coef,
    );
    vals.set([row.D, row.w, row.k3, row.clipped ? 1 : 0], r * 4);
  }
}

const SDPO_MODES: Array<[string, SdpoLossOptions]> = [
  ['alpha 0.5 tail', { alpha: 0.5, tail: true, sampledToken: false, isClip: 2, beta: 0 }],
  ['alpha 0 tail beta 0.1', { alpha: 0, tail: true, sampledToken: false, isClip: 2, beta: 0.1 }],
  ['alpha 1 tail', { alpha: 1, tail: true, sampledToken: false, isClip: 2, beta: 0 }],
  ['alpha 0.3 renormalized', { alpha: 0.3, tail: false, sampledToken: false, isClip: 2, beta: 0.05 }],
  ['alpha 0 renormalized', { alpha: 0, tail: false, sampledToken: false, isClip: 1.5, beta: 0 }],
  ['alpha 1 renormalized', { alpha: 1, tail: false, sampledToken: false, isClip: 2, beta: 0 }],
  ['sampled token beta 0.2', { alpha: 0.5, tail: true, sampledToken: true, isClip: 2, beta: 0.2 }],
];

for (const [R, V, K] of [
  [63, 1025, 100],
  [1, 63, 1],
  [5, 1025, 1024],
  [2, 152064, 100],
]) {
  for (const [mode, opt] of SDPO_MODES) {
    // The large shapes run the default mode only (the modes differ in per-category math, not in size).
    if ((V! > 2000 || K! > 100) && mode !== 'alpha 0.5 tail') continue;
    const inp = sdpoInputs(R!, V!, K!, 61 + R!);
    const coef = 1 / (R! * 2);
    test(`sdpo_loss ${mode} R=${R} V=${V} K=${K}`, (t) =>
      check(t, {
        name: `sdpo_loss ${mode} ${R}x${V} K=${K}`,
        inputs: { ...inp },
        outputs: {
          // f32 against the CPU's double per-category math; entries are coef * (probabilities, log-ratios)
          ds: { init: new Float32Array(R! * V!).fill(7), tol: { abs: 1e-8, rel: 2e-5 } },
          // D sums K+1 terms of P * log-ratio; w and k3 are one exp each; clipped must match exactly
          vals: { init: new Float32Array(R! * 4), tol: { abs: 2e-6, rel: 5e-5 } },
        },
        gpu: (g, b) => sdpo_loss(g, b.ds!, b.vals!, b.s!, b.y!, b.tIdx!, b.tLogp!, b.tail!, b.token!, b.old!, b.base!, R!, V!, K!, opt, coef),
        cpu: (a) => cpuSdpo(a, R!, V!, K!, opt, coef),
        tol: { abs: 1e-8, rel: 2e-5 },
      }));
  }
}

// Finite differences on the GPU alone, through the logits: L(z) = coef * (w0 * D + beta * k3) of
// s = log_softmax(z), with w0 the detached weight of the unperturbed row. Row 0 holds z, rows 1..2V hold
// z with one logit moved by +-h; all rows go through log_softmax and sdpo_loss in one dispatch each, and
// the analytic gradient is log_softmax_backward of row 0's ds. (ds itself is a gradient on the simplex:
// the tail's share is carried by the top-K entries, so only its projection is comparable.)
for (const [mode, opt] of SDPO_MODES.filter(([, o]) => !o.sampledToken)) {
  test(`sdpo_loss gradient matches finite differences on the GPU: ${mode}, beta 0.1`, async (t) => {
    const gpu = await gpuOrSkip(t);
    if (!gpu) return;
    const V = 9, K = 4, h = 1e-2, coef = 0.7;
    const o = { ...opt, beta: 0.1 };
    const z0 = randF32(V, 81, 2);
    const one = sdpoInputs(1, V, K, 71);
    const s0 = logSoftmax(z0, 1, V);
    const y = one.y[0]!;
    one.old[0] = s0[y]! - 0.4; // w = e^0.4, below isClip: the weight is in play but detached
    one.base[0] = s0[y]! - 0.3;
    const R = 1 + 2 * V;
    const z = new Float32Array(R * V);
    for (let r = 0; r < R; ++r) z.set(z0, r * V);
    for (let v = 0; v < V; ++v) {
      z[(1 + 2 * v) * V + v] = z0[v]! + h;
      z[(2 + 2 * v) * V + v] = z0[v]! - h;
    }
    const rep = (a: Float32Array | Int32Array): Float32Array | Int32Array => {
      const out = a instanceof Int32Array ? new Int32Array(R * a.length) : new Float32Array(R * a.length);
      for (let r = 0; r < R; ++r) out.set(a, r * a.length);
      return out;
    };
    const inputs = [one.y, one.tIdx, one.tLogp, one.tail, one.token, one.old, one.base].map((a) => gpu.upload(rep(a)));
    const [yb, idxb, lpb, tailb, tokb, oldb, baseb] = inputs as [GPUBuffer, GPUBuffer, GPUBuffer, GPUBuffer, GPUBuffer, GPUBuffer, GPUBuffer];
    const s = gpu.upload(z);
    const ds = gpu.buffer(R * V * 4);
    const dz = gpu.buffer(R * V * 4);
    const vals = gpu.buffer(R * 4 * 4);
    try {
      log_softmax(gpu, s, null, s, R, V);
      sdpo_loss(gpu, ds, vals, s, yb, idxb, lpb, tailb, tokb, oldb, baseb, R, V, K, o, coef);
      log_softmax_backward(gpu, dz, ds, s, R, V);
      const grad = new Float32Array(await gpu.read(dz, V * 4));
      const vv = new Float32Array(await gpu.read(vals));
      const w0 = vv[1]!;
      assert.ok(Math.abs(w0 - Math.exp(0.4)) < 1e-5, `weight ${w0}`);
      const loss = (r: number): number => coef * (w0 * vv[r * 4]! + o.beta * vv[r * 4 + 2]!);
      const fd = new Float32Array(V);
      for (let v = 0; v < V; ++v) fd[v] = (loss(1 + 2 * v) - loss(2 + 2 * v)) / (2 * h);
      // central differences: O(h^2) truncation plus f32 rounding of L (~1e-7) over 2h
      const report = expectClose(`sdpo_loss finite differences (${mode})`, grad, fd, { abs: 2e-4, rel: 2e-3 });
      const gmax = Math.max(...grad.map(Math.abs));
      t.diagnostic(`${mode}: max abs ${report.maxAbs.toExponential(2)}, max rel ${report.maxRel.toExponential(2)} over ${V}; max |grad| ${gmax.toExponential(2)}`);
      assert.ok(gmax > 1e-3, 'the gradient is not trivially zero');
    } finally {
      for (const b of [...inputs, s, ds, dz, vals]) b.destroy();
    }
  });
}

test('wrappers reject shapes the kernels cannot hold', async (t) => {
  const gpu = await gpuOrSkip(t);
  if (!gpu) return;
  const b = gpu.buffer(4096);
  try {
    assert.throws(() => attention(gpu, b, b, b, b, b, 1, 1, 1, 129), /head dim D must be in 1\.\.128/);
    assert.throws(() => attention(gpu, b, b, b, b, b, 1, 3, 2, 8), /multiple of NKV/);
    assert.throws(() => topk(gpu, b, b, b, 1, 8, 9), /exceeds the row length/);
    assert.throws(() => rope(gpu, b, b, b, 1, 1, 3), /D must be even/);
    assert.throws(() => log_softmax(gpu, b, null, b, 2, 1024), /needs 8192/);
    assert.throws(() => log_softmax_backward(gpu, b, b, b, 1, 8), /logp must be a buffer of its own/);
  } finally {
    b.destroy();
  }
});
