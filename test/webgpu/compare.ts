// Comparisons and inputs shared by the WebGPU engine tests (engine, f16 storage, split buffers):
// error measures between a backend's arrays and the CPU's, random token ids, a trained-looking
// adapter state, teacher targets as a remote scorer would send them, and one SDPO step on both
// engines checked against each other.
import assert from 'node:assert/strict';
import type { Adapter, Engine, SdpoSample } from '../../src/engine/engine.js';
import type { AdapterFileState, LoraShape } from '../../src/engine/peft.js';
import type { SdpoOptions } from '../../src/engine/sdpo-options.js';
import { normal, rng } from '../../src/model/random-model.js';

export function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'length mismatch');
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

export function relL2(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  assert.equal(a.length, ref.length, 'length mismatch');
  let d = 0, n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i]! - ref[i]!) ** 2;
    n += ref[i]! ** 2;
  }
  return Math.sqrt(d) / Math.max(Math.sqrt(n), 1e-30);
}

export function ids(r: () => number, n: number, vocab: number): number[] {
  return Array.from({ length: n }, () => Math.floor(r() * vocab));
}

export function withRemoteTargets(samples: SdpoSample[], vocab: number, K: number, seed: number): SdpoSample[] {
  const r = rng(seed);
  return samples.map((s) => {
    const T = s.responseIds.length;
    const topIds: number[] = [], topLogprobs: number[] = [], tokenLogprobs: number[] = [];
    for (let t = 0; t < T; t++) {
      const chosen = new Set<number>();
      while (chosen.size < K) chosen.add(Math.floor(r() * vocab));
      const w = [...chosen].map(() => 0.1 + r());
      const total = w.reduce((a, b) => a + b, 0) / 0.9;
      topIds.push(...chosen);
      topLogprobs.push(...w.map((x) => Math.log(x / total)).sort((a, b) => b - a));
      tokenLogprobs.push(Math.log(0.05 + 0.5 * r()));
    }
    return { ...s, teacherTargets: { k: K, topIds, topLogprobs, tokenLogprobs } };
  });
}

/** A trained-looking adapter: random A and B, an EMA copy that differs, AdamW state after 3 steps. */
export function trainedAdapterState(cpu: Engine, shape: LoraShape): AdapterFileState {
  const r = rng(21);
  const total = cpu.createAdapter({ ...shape, seed: 1 }).state().params.length;
  return {
    params: Float32Array.from({ length: total }, () => 0.15 * normal(r)),
    ema: Float32Array.from({ length: total }, () => 0.15 * normal(r)),
    m: Float32Array.from({ length: total }, () => 1e-3 * normal(r)),
    v: Float32Array.from({ length: total }, () => 1e-6 * (1 + r())),
    step: 3,
  };
}

const METRICS = ['loss', 'distillLoss', 'klToBase', 'meanIsWeight', 'gradNorm', 'teacherStudentKl'] as const;

/** Worst errors over a run of step comparisons, for the test's diagnostic line. */
export interface StepWorst {
  loss: number;
  metric: number;
  grad: number;
  weight: number;
  moment: number;
}

export const newStepWorst = (): StepWorst => ({ loss: 0, metric: 0, grad: 0, weight: 0, moment: 0 });

export const describeStepWorst = (w: StepWorst): string =>
  `worst over the step cases: loss rel ${w.loss.toExponential(2)}, metrics ${w.metric.toExponential(2)}, grads rel L2 ${w.grad.toExponential(2)}, weights max abs ${w.weight.toExponential(2)}, moments rel L2 ${w.moment.toExponential(2)}`;

/**
 * One SDPO step on adapter `a` (CPU engine) and `b` (WebGPU engine) restored from `start`: loss,
 * metrics and per-step losses rel ≤ 5e-5, gradients and AdamW moments rel-L2 ≤ 5e-5, weights and EMA
 * ≤ 1e-6 max abs, and the step moved the weights. Returns the WebGPU step's result.
 */
export async function expectSameStep(
  cpu: Engine,
  gpu: Engine,
  a: Adapter,
  b: Adapter,
  samples: SdpoSample[],
  options: Partial<SdpoOptions>,
  start: AdapterFileState,
  worst: StepWorst,
): Promise<Awaited<ReturnType<Engine['sdpoStep']>>> {
  const want = await cpu.sdpoStep(a, samples, options);
  const got = await gpu.sdpoStep(b, samples, options);
  const lossRel = Math.abs(got.loss - want.loss) / Math.max(Math.abs(want.loss), 1e-2);
  worst.loss = Math.max(worst.loss, lossRel);
  assert.ok(lossRel <= 5e-5, `loss ${got.loss} vs CPU ${want.loss}`);
  for (const m of METRICS) {
    const e = Math.abs(got[m] - want[m]) / Math.max(Math.abs(want[m]), 1e-2);
    worst.metric = Math.max(worst.metric, e);
    assert.ok(e <= 5e-5, `${m}: ${got[m]} vs CPU ${want[m]}`);
  }
  assert.equal(got.clipFraction, want.clipFraction);
  assert.equal(got.tokens, want.tokens);
  assert.equal(got.stepLosses.length, want.stepLosses.length);
  for (let i = 0; i < want.stepLosses.length; i++) {
    assert.ok(Math.abs(got.stepLosses[i]! - want.stepLosses[i]!) / Math.max(Math.abs(want.stepLosses[i]!), 1e-2) <= 5e-5, `step loss ${i}`);
  }
  const sa = a.state(), sb = b.state();
  assert.equal(sb.step, sa.step);
  const gradErr = relL2(sb.grads, sa.grads);
  worst.grad = Math.max(worst.grad, gradErr);
  assert.ok(gradErr <= 5e-5, `gradient relative L2 error ${gradErr}`);
  const wErr = Math.max(maxAbs(sb.params, sa.params), maxAbs(sb.ema, sa.ema));
  worst.weight = Math.max(worst.weight, wErr);
  assert.ok(wErr <= 1e-6, `weights / EMA max abs error ${wErr}`);
  const mErr = Math.max(relL2(sb.m, sa.m), relL2(sb.v, sa.v));
  worst.moment = Math.max(worst.moment, mErr);
  assert.ok(mErr <= 5e-5, `AdamW moments relative L2 error ${mErr}`);
  assert.ok(maxAbs(sb.params, start.params) > 1e-4, 'the step moved the weights');
  return got;
}
