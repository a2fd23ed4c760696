// WebGPU ops of the first family (embedding, rmsnorm, linear, lora, swiglu, adamw) against the CPU
// reference, op by op, with odd shapes (1, 63, 1025) and head_dim 128; sentinels after every output.
// Tolerances sit beside each case: f32 sums in a different order than OpenBLAS / the double-precision
// CPU reductions differ by about sqrt(K) * 6e-8 relative, so reductions get 1e-5..1e-4 and pure
// copies are exact.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { Gpu, uniforms } from '../src/engine/webgpu/device.js';
import { adamw } from '../src/engine/webgpu/ops/adamw.js';
import { embedding } from '../src/engine/webgpu/ops/embedding.js';
import { linear, linear_backward_input } from '../src/engine/webgpu/ops/linear.js';
import { lora, lora_backward } from '../src/engine/webgpu/ops/lora.js';
import { rmsnorm, rmsnorm_backward } from '../src/engine/webgpu/ops/rmsnorm.js';
import { swiglu, swiglu_backward } from '../src/engine/webgpu/ops/swiglu.js';
import { closeGpu, cpuOps, describe, expectClose, gpuOrSkip, randF32, randIds, runCase, GUARD, type Case, type HostArray } from './webgpu/harness.js';

after(closeGpu);

const f32 = (a: HostArray): Float32Array => a as Float32Array;
const i32 = (a: HostArray): Int32Array => a as Int32Array;

async function check(t: import('node:test').TestContext, c: Case): Promise<void> {
  const gpu = await gpuOrSkip(t);
  if (!gpu) return;
  const report = await runCase(gpu, c);
  t.diagnostic(describe(report, c.tol));
}

test('harness: a write past the end of an output is caught by the sentinels', async (t) => {
  const gpu = await gpuOrSkip(t);
  if (!gpu) return;
  await assert.rejects(
    runCase(gpu, {
      name: 'overrun',
      inputs: { x: new Float32Array([1, 2, 3, 4, 5]) },
      outputs: { y: new Float32Array(4) },
      gpu: (g, b) => g.copy(b.x!, 0, b.y!, 4, 16), // 4 floats at offset 1: the last lands on the guard
      cpu: (a) => f32(a.y!).set([0, 1, 2, 3]),
      tol: { abs: 0, rel: 0 },
    }),
    /written 0 elements past its end/,
  );
  await assert.rejects(
    runCase(gpu, {
      name: 'mismatch',
      inputs: { x: new Float32Array([1, 2]) },
      outputs: { y: new Float32Array(2) },
      gpu: (g, b) => g.copy(b.x!, 0, b.y!, 0, 8),
      cpu: (a) => f32(a.y!).set([1, 2.5]),
      tol: { abs: 0.1, rel: 0 },
    }),
    /element 1 is 2, reference 2.5/,
  );
  assert.equal(GUARD > 0, true);
});

for (const [T, H, V] of [
  [63, 128, 1025],
  [1, 1025, 63],
]) {
  test(`embedding T=${T} H=${H} V=${V}`, (t) =>
    check(t, {
      name: `embedding ${T}x${H}`,
      inputs: { table: randF32(V! * H!, 1), ids: randIds(T!, V!, 2) },
      outputs: { out: new Float32Array(T! * H!) },
      gpu: (g, b) => embedding(g, b.out!, b.table!, b.ids!, T!, H!),
      cpu: (a) => cpuOps.embedding(f32(a.out!), f32(a.table!), i32(a.ids!), T!, H!),
      tol: { abs: 0, rel: 0 }, // a copy: exact
    }));
}

for (const [N, D] of [
  [63, 1025],
  [1, 128],
  [1025, 63],
  [65537, 3], // more rows than one grid dimension holds: the row index spans two
]) {
  const eps = 1e-6;
  test(`rmsnorm N=${N} D=${D}`, (t) =>
    check(t, {
      name: `rmsnorm ${N}x${D}`,
      inputs: { x: randF32(N! * D!, 3, 2), w: randF32(D!, 4) },
      outputs: { y: new Float32Array(N! * D!), rstd: new Float32Array(N!) },
      gpu: (g, b) => rmsnorm(g, b.y!, b.rstd!, b.x!, b.w!, N!, D!, eps),
      cpu: (a) => cpuOps.rmsnorm(f32(a.y!), f32(a.rstd!), f32(a.x!), f32(a.w!), N!, D!, eps),
      tol: { abs: 1e-6, rel: 1e-5 }, // f32 tree sum of D squares vs the CPU's double sum
    }));
  for (const accumulate of [false, true]) {
    test(`rmsnorm_backward N=${N} D=${D} accumulate=${accumulate}`, (t) => {
      const x = randF32(N! * D!, 5, 2);
      const w = randF32(D!, 6);
      const rstd = new Float32Array(N!);
      cpuOps.rmsnorm(new Float32Array(N! * D!), rstd, x, w, N!, D!, eps);
      return check(t, {
        name: `rmsnorm_backward ${N}x${D}${accumulate ? ' acc' : ''}`,
        inputs: { dy: randF32(N! * D!, 7), x, rstd, w },
        outputs: { dx: accumulate ? randF32(N! * D!, 8) : new Float32Array(N! * D!) },
        gpu: (g, b) => rmsnorm_backward(g, b.dx!, b.dy!, b.x!, b.rstd!, b.w!, N!, D!, accumulate),
        cpu: (a) => cpuOps.rmsnorm_backward(f32(a.dx!), f32(a.dy!), f32(a.x!), f32(a.rstd!), f32(a.w!), N!, D!, accumulate),
        tol: { abs: 2e-6, rel: 1e-5 }, // one f32 reduction over D (the CPU's is double)
      });
    });
  }
}

test('rmsnorm without rstd writes y only', (t) =>
  check(t, {
    name: 'rmsnorm rstd=null',
    inputs: { x: randF32(63 * 128, 9), w: randF32(128, 10) },
    outputs: { y: new Float32Array(63 * 128) },
    gpu: (g, b) => rmsnorm(g, b.y!, null, b.x!, b.w!, 63, 128, 1e-5),
    cpu: (a) => cpuOps.rmsnorm(f32(a.y!), null, f32(a.x!), f32(a.w!), 63, 128, 1e-5),
    tol: { abs: 1e-6, rel: 1e-5 }, // as rmsnorm
  }));

// Weights scaled by 1/sqrt(I) so outputs stay O(1) and the tolerance is about the summation order.
for (const [T, I, O, bias] of [
  [1, 1025, 63, true],
  [63, 128, 1025, true],
  [1025, 63, 1, false],
  [130, 1025, 129, false],
] as const) {
  test(`linear T=${T} I=${I} O=${O} bias=${bias}`, (t) =>
    check(t, {
      name: `linear ${T}x${I}->${O}`,
      inputs: { x: randF32(T * I, 11), W: randF32(O * I, 12, 1 / Math.sqrt(I)), b: randF32(O, 13) },
      outputs: { y: randF32(T * O, 14) }, // garbage in y must be overwritten
      gpu: (g, b) => linear(g, b.y!, b.x!, b.W!, bias ? b.b! : null, T, I, O),
      cpu: (a) => cpuOps.linear(f32(a.y!), f32(a.x!), f32(a.W!), bias ? f32(a.b!) : null, T, I, O),
      tol: { abs: 2e-5, rel: 1e-4 }, // f32 dot of length I in another order than OpenBLAS
    }));
  for (const accumulate of [false, true]) {
    test(`linear_backward_input T=${T} I=${I} O=${O} accumulate=${accumulate}`, (t) =>
      check(t, {
        name: `linear_backward_input ${T}x${O}->${I}${accumulate ? ' acc' : ''}`,
        inputs: { dy: randF32(T * O, 15), W: randF32(O * I, 16, 1 / Math.sqrt(O)) },
        outputs: { dx: randF32(T * I, 17) },
        gpu: (g, b) => linear_backward_input(g, b.dx!, b.dy!, b.W!, T, I, O, accumulate),
        cpu: (a) => cpuOps.linear_backward_input(f32(a.dx!), f32(a.dy!), f32(a.W!), T, I, O, accumulate),
        tol: { abs: 2e-5, rel: 1e-4 }, // f32 dot of length O in another order than OpenBLAS
      }));
  }
}

for (const [T, I, O, R] of [
  [63, 1025, 128, 8],
  [1, 63, 1025, 1],
  [1025, 128, 63, 16],
] as const) {
  const scale = 2.5;
  test(`lora T=${T} I=${I} O=${O} R=${R}`, (t) =>
    check(t, {
      name: `lora ${T}x${I}->${O} r${R}`,
      inputs: { x: randF32(T * I, 21), A: randF32(R * I, 22, 1 / Math.sqrt(I)), B: randF32(O * R, 23, 1 / Math.sqrt(R)) },
      outputs: { y: randF32(T * O, 24), u: randF32(T * R, 25) }, // y accumulates, u is overwritten
      gpu: (g, b) => lora(g, b.y!, b.u!, b.x!, b.A!, b.B!, T, I, O, R, scale),
      cpu: (a) => cpuOps.lora(f32(a.y!), f32(a.u!), f32(a.x!), f32(a.A!), f32(a.B!), T, I, O, R, scale),
      tol: { abs: 2e-5, rel: 1e-4 }, // two chained f32 GEMMs (reductions over I, then R)
    }));
  test(`lora_backward T=${T} I=${I} O=${O} R=${R}`, (t) =>
    check(t, {
      name: `lora_backward ${T}x${I}->${O} r${R}`,
      inputs: {
        dy: randF32(T * O, 26),
        x: randF32(T * I, 27),
        u: randF32(T * R, 28),
        A: randF32(R * I, 29, 1 / Math.sqrt(I)),
        B: randF32(O * R, 30, 1 / Math.sqrt(R)),
      },
      // dx, dA and dB accumulate onto what they hold; scratch ends holding du.
      // dA and dB are sums over T of terms of size ~10 (du is about scale * sqrt(O/R)): du's own
      // rounding (~1.5e-5, the scratch row below) is carried through T terms and the length-T f32
      // sum adds ~6e-8 * |partial sums| * sqrt(T); hence abs 1e-4 + 3e-6 * T.
      outputs: {
        dx: randF32(T * I, 31),
        dA: { init: randF32(R * I, 32), tol: { abs: 1e-4 + 3e-6 * T, rel: 1e-4 } },
        dB: { init: randF32(O * R, 33), tol: { abs: 1e-4 + 3e-6 * T, rel: 1e-4 } },
        scratch: new Float32Array(T * R),
      },
      gpu: (g, b) => lora_backward(g, b.dx!, b.dA!, b.dB!, b.dy!, b.x!, b.u!, b.A!, b.B!, T, I, O, R, scale, b.scratch!),
      cpu: (a) =>
        cpuOps.lora_backward(f32(a.dx!), f32(a.dA!), f32(a.dB!), f32(a.dy!), f32(a.x!), f32(a.u!), f32(a.A!), f32(a.B!), T, I, O, R, scale, f32(a.scratch!)),
      tol: { abs: 1e-4, rel: 1e-4 }, // dx and du (scratch): f32 sums over R and O
    }));
}

for (const n of [1, 63, 1025 * 128 + 1]) {
  test(`swiglu n=${n}`, (t) =>
    check(t, {
      name: `swiglu ${n}`,
      inputs: { g: randF32(n, 41, 4), u: randF32(n, 42) }, // |g| up to ~16: both sigmoid branches
      outputs: { h: new Float32Array(n) },
      gpu: (gg, b) => swiglu(gg, b.h!, b.g!, b.u!, n),
      cpu: (a) => cpuOps.swiglu(f32(a.h!), f32(a.g!), f32(a.u!), n),
      tol: { abs: 1e-6, rel: 1e-5 }, // exp differs by a few ulp between libm and the shader
    }));
  test(`swiglu_backward n=${n}`, (t) =>
    check(t, {
      name: `swiglu_backward ${n}`,
      inputs: { dh: randF32(n, 43), g: randF32(n, 44, 4), u: randF32(n, 45) },
      outputs: { dg: new Float32Array(n), du: new Float32Array(n) },
      gpu: (gg, b) => swiglu_backward(gg, b.dg!, b.du!, b.dh!, b.g!, b.u!, n),
      cpu: (a) => cpuOps.swiglu_backward(f32(a.dg!), f32(a.du!), f32(a.dh!), f32(a.g!), f32(a.u!), n),
      tol: { abs: 1e-6, rel: 1e-5 }, // as swiglu
    }));
}

for (const [n, step] of [
  [1, 1],
  [63, 10],
  [1025 * 63, 3],
] as const) {
  const [lr, beta1, beta2, eps, wd] = [1e-3, 0.9, 0.999, 1e-8, 0.01];
  test(`adamw n=${n} step=${step}`, (t) => {
    const v = randF32(n, 53, 0.01);
    for (let i = 0; i < n; ++i) v[i] = v[i]! * v[i]!; // second moments are non-negative
    return check(t, {
      name: `adamw ${n} step ${step}`,
      inputs: { g: randF32(n, 50) },
      outputs: { p: randF32(n, 51), m: step > 1 ? randF32(n, 52, 0.1) : new Float32Array(n), v: step > 1 ? v : new Float32Array(n) },
      gpu: (gg, b) => adamw(gg, b.p!, b.m!, b.v!, b.g!, n, lr, beta1, beta2, eps, wd, step),
      cpu: (a) => cpuOps.adamw(f32(a.p!), f32(a.m!), f32(a.v!), f32(a.g!), n, lr, beta1, beta2, eps, wd, step),
      // Same f32 operations in the same order; only sqrt/division rounding (and possible fused
      // multiply-adds in the shader) may differ by an ulp or two.
      tol: { abs: 1e-7, rel: 1e-6 },
    });
  });
}

test('wrappers reject buffers smaller than the dimensions say', async (t) => {
  const gpu = await gpuOrSkip(t);
  if (!gpu) return;
  const small = gpu.buffer(16);
  const big = gpu.buffer(4096);
  assert.throws(() => linear(gpu, big, big, small, null, 2, 4, 8), /linear: W holds 16 bytes, needs 128/);
  assert.throws(() => rmsnorm(gpu, small, null, big, big, 2, 4, 1e-6), /rmsnorm: y holds 16 bytes, needs 32/);
  assert.throws(() => lora(gpu, big, small, big, big, big, 4, 8, 8, 2, 1), /lora: u holds 16 bytes, needs 32/);
  assert.throws(() => adamw(gpu, big, big, big, big, 4, 1e-3, 0.9, 0.999, 1e-8, 0, 0), /step must be a positive integer/);
  assert.throws(() => swiglu(gpu, big, big, big, 1.5), /n must be a non-negative integer/);
  small.destroy();
  big.destroy();
});

test('uniforms packs u32, i32 and f32 fields in order into 16-byte blocks', () => {
  const buf = uniforms([['u32', 7], ['i32', -3], ['f32', 0.5], ['u32', 4294967295], ['f32', -2]]);
  assert.equal(buf.byteLength, 32);
  const view = new DataView(buf);
  assert.deepEqual(
    [view.getUint32(0, true), view.getInt32(4, true), view.getFloat32(8, true), view.getUint32(12, true), view.getFloat32(16, true)],
    [7, -3, 0.5, 4294967295, -2],
  );
  assert.equal(uniforms([]).byteLength, 16);
});

test('Gpu: writes, copies and dispatches take effect in the order they were issued', async (t) => {
  const gpu = await gpuOrSkip(t);
  if (!gpu) return;
  const gHost = new Float32Array([1, -2, 3, 0.5]);
  const ones = new Float32Array([1, 1, 1, 1]);
  const g = gpu.upload(gHost);
  const u = gpu.upload(ones);
  const h = gpu.buffer(16);
  swiglu(gpu, h, g, u, 4);
  gpu.write(g, new Float32Array([9, 9, 9, 9])); // after the dispatch: it must still see gHost
  const first = new Float32Array(await gpu.read(h));
  const want = new Float32Array(4);
  cpuOps.swiglu(want, gHost, ones, 4);
  expectClose('swiglu before the write', first, want, { abs: 1e-6, rel: 1e-5 });

  gpu.copy(u, 0, g, 4, 8); // g = [9, 1, 1, 9]
  swiglu(gpu, h, g, u, 4);
  cpuOps.swiglu(want, new Float32Array([9, 1, 1, 9]), ones, 4);
  expectClose('swiglu after the copy', new Float32Array(await gpu.read(h)), want, { abs: 1e-6, rel: 1e-5 });
  expectClose('read at an offset', new Float32Array(await gpu.read(h, 8, 4)), want.subarray(1, 3), { abs: 1e-6, rel: 1e-5 });
  for (const b of [g, u, h]) b.destroy();
});

test('Gpu: a missing kernel file throws at once; a WebGPU validation error surfaces at the next read', async (t) => {
  if (!(await gpuOrSkip(t))) return;
  const gpu = await Gpu.open(); // its own device: the error below leaves it unusable
  try {
    const b = gpu.buffer(16);
    assert.throws(() => gpu.dispatch('no_such_kernel', 'main', [b], [1]), /WGSL kernel not found: .*no_such_kernel\.wgsl/);
    assert.throws(() => gpu.dispatch('swiglu', 'swiglu', [b], [70000]), /workgroup count 70000 outside/);
    gpu.dispatch('swiglu', 'no_such_entry', [b, b, b], [1], uniforms([['u32', 4]]));
    await assert.rejects(gpu.read(b), /WebGPU error: .*no_such_entry/);
  } finally {
    gpu.destroy();
  }
});

test('cpuOps refuses calls whose arrays do not match the dimensions (instead of reading past them)', () => {
  const f = (n: number): Float32Array => new Float32Array(n);
  assert.throws(() => cpuOps.linear(f(8), f(8), f(7), null, 2, 4, 2), /cpuOps\.linear: W_OI has 7 elements, needs 8/);
  assert.throws(() => cpuOps.embedding(f(8), f(8), new Int32Array([0, 2]), 2, 4), /ids_T\[1\] = 2 is outside 0\.\.1/);
  assert.throws(() => cpuOps.rmsnorm(f(8), f(1), f(8), f(4), 2, 4, 1e-6), /rstd_N has 1 elements, needs 2/);
  assert.throws(() => cpuOps.swiglu(f(4), f(4), new Int32Array(4) as unknown as Float32Array, 4), /u_n must be a Float32Array/);
  assert.throws(() => cpuOps.attention(f(4), f(4), f(4), f(4), f(4), 1, 3, 2, 1), /N must be a positive multiple of NKV/);
  assert.throws(() => cpuOps.topk(new Int32Array(4), f(4), f(4), 1, 4, 5), /K must not exceed V/);
  assert.throws(() => cpuOps.adamw(f(4), f(4), f(4), f(4), 4, 1e-3, 0.9, 0.999, 1e-8, 0, 0), /step must be a positive integer/);
  assert.throws(() => cpuOps.swiglu(f(4), f(4), f(4), 2 ** 40), /_n has 4 elements, needs 1099511627776/);
  const big = 2 ** 31 - 1;
  assert.throws(() => cpuOps.rope(f(4), f(4), f(4), big, big, 2), /dimensions too large|has 4 elements/);
  const teacher = { idx_K: new Int32Array([0, 9]), logp_K: f(2), tailLogp: -1, tokenLogp: -1, K: 2 };
  const options = { alpha: 0.5, tail: true, sampledToken: false, isClip: 2, beta: 0 };
  assert.throws(() => cpuOps.sdpo_loss_row(f(4), f(4), 4, 1, teacher, NaN, 0, options, 1), /teacher\.idx_K\[1\] = 9 is outside 0\.\.3/);
  assert.throws(() => cpuOps.sdpo_loss_row(f(4), f(4), 4, 4, teacher, NaN, 0, options, 1), /y must be a token id below V/);
});
