// Finite-difference check of the analytic LoRA gradient of the SDPO loss on a tiny model.
// Central differences in fp32 with h = 3e-3: relative error of the largest components < 2e-2
// (fp32 rounding of the loss contributes ~1e-4 of the gradient at this step).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine, type SdpoSample } from '../src/engine/engine.js';
import { rng, normal, writeRandomModel } from '../src/model/random-model.js';

const batch: SdpoSample[] = [
  { promptIds: [3, 17, 29, 5, 11], teacherPromptIds: [3, 17, 40, 41, 42, 29, 5, 11], responseIds: [8, 2, 33, 1] },
  { promptIds: [9, 9, 12], teacherPromptIds: [9, 50, 51, 9, 12], responseIds: [20, 1] },
];

test('analytic LoRA gradients match central finite differences', async (t) => {
  let worst = 0;
  const engine = await Engine.open(writeRandomModel({ seed: 7 }), { backend: 'cpu', threads: 2 });
  const shape = { rank: 4, alpha: 8, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const };
  const probe = engine.createAdapter({ ...shape, targetModules: [...shape.targetModules], seed: 1 });
  const n = probe.state().params.length;
  const rand = rng(99);
  const params = new Float32Array(n).map(() => 0.15 * normal(rand));
  const ema = new Float32Array(n).map(() => 0.15 * normal(rand));
  for (const [alpha, tail] of [[0, true], [0.5, true], [1, false], [0.3, false]] as const) {
    // The teacher must not depend on the parameters being perturbed: use the EMA teacher.
    const options = { alpha, tail, teacher: 'ema' as const, topK: 6, beta: 0.1, learningRate: 1e-6 };
    const lossAt = async (p: Float32Array) => {
      const a = engine.restoreAdapter({ ...shape, targetModules: [...shape.targetModules] }, { params: p, ema, step: 0 });
      return (await engine.sdpoStep(a, batch, options)).loss;
    };
    const base = engine.restoreAdapter({ ...shape, targetModules: [...shape.targetModules] }, { params, ema, step: 0 });
    await engine.sdpoStep(base, batch, options);
    const grads = base.state().grads;
    const order = Array.from(grads.keys()).sort((i, j) => Math.abs(grads[j]!) - Math.abs(grads[i]!));
    const h = 3e-3;
    for (const i of order.slice(0, 6)) {
      const plus = params.slice();
      plus[i]! += h;
      const minus = params.slice();
      minus[i]! -= h;
      const fd = ((await lossAt(plus)) - (await lossAt(minus))) / (2 * h);
      const rel = Math.abs(fd - grads[i]!) / Math.max(Math.abs(fd), 1e-6);
      worst = Math.max(worst, rel);
      assert.ok(rel < 2e-2, `alpha=${alpha} tail=${tail} param ${i}: analytic ${grads[i]} vs finite difference ${fd} (rel ${rel})`);
    }
  }
  t.diagnostic(`worst relative error over 24 parameters: ${worst.toExponential(2)}`);
});
