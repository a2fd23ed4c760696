// The engine against the independent PyTorch reference (test/reference/fixtures): logits, SDPO loss
// and metrics, every LoRA gradient and the weights after AdamW, for every fixture case.
// Tolerances (fp32 engine vs float64 reference): logits max abs 1e-4; loss relative 1e-5; the other
// metrics 1e-4 (relative, or absolute below 1); gradients 1e-3 relative in L2 norm per tensor;
// weights after the step and EMA copy max abs 1e-5.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Engine } from '../src/engine/engine.js';
import { readSafetensors } from '../src/model/safetensors.js';
import type { SdpoOptions } from '../src/engine/sdpo-options.js';

const root = fileURLToPath(new URL('../../test/reference/fixtures/', import.meta.url));
const METRICS = ['loss', 'distillLoss', 'klToBase', 'meanIsWeight', 'clipFraction', 'gradNorm', 'teacherStudentKl'] as const;

interface FixtureCase {
  name: string;
  options: SdpoOptions;
  samples: { promptIds: number[]; teacherPromptIds: number[]; responseIds: number[]; oldLogprobs: number[] | null }[];
}

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'length mismatch');
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function relNorm(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  let d = 0, n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i]! - ref[i]!) ** 2;
    n += ref[i]! ** 2;
  }
  return Math.sqrt(d) / Math.max(Math.sqrt(n), 1e-12);
}

const fixtures = existsSync(root) ? readdirSync(root).filter((d) => existsSync(join(root, d, 'cases.json'))).sort() : [];

test('reference fixtures are present (npm run fixtures writes them)', () => {
  assert.ok(fixtures.length >= 3, `expected at least three fixture configs in ${root}, found ${fixtures.length}`);
});

for (const name of fixtures) {
  test(`engine matches the PyTorch reference: ${name}`, async (t) => {
    const dir = join(root, name);
    const { logits, cases } = JSON.parse(readFileSync(join(dir, 'cases.json'), 'utf8')) as { logits: { ids: number[] }; cases: FixtureCase[] };
    const expected = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8')) as Record<string, Record<string, number>>;
    const tensors = readSafetensors(join(dir, 'expected.safetensors')).tensors;
    const get = (key: string) => {
      const v = tensors.get(key);
      assert.ok(v, `expected.safetensors lacks ${key}`);
      return v.data;
    };
    const engine = await Engine.open(join(dir, 'model'), { backend: 'cpu', threads: 2 });
    const fixtureAdapter = await engine.loadAdapter(join(dir, 'adapter'));

    const logitsErr = Math.max(
      maxAbs(await engine.logits(logits.ids, fixtureAdapter), get('logits.adapter')),
      maxAbs(await engine.logits(logits.ids, null), get('logits.base')),
    );
    assert.ok(logitsErr <= 1e-4, `logits max abs error ${logitsErr}`);

    const worst = { loss: 0, metric: 0, grad: 0, weight: 0 };
    for (const c of cases) {
      const adapter = await engine.loadAdapter(join(dir, 'adapter'));
      const r = await engine.sdpoStep(
        adapter,
        c.samples.map((s) => ({ promptIds: s.promptIds, teacherPromptIds: s.teacherPromptIds, responseIds: s.responseIds, oldLogprobs: s.oldLogprobs })),
        c.options,
      );
      const want = expected[c.name]!;
      const lossRel = Math.abs(r.loss - want.loss!) / Math.max(Math.abs(want.loss!), 1e-12);
      worst.loss = Math.max(worst.loss, lossRel);
      assert.ok(lossRel <= 1e-5, `${c.name}: loss ${r.loss} vs reference ${want.loss} (relative ${lossRel})`);
      for (const m of METRICS) {
        const err = Math.abs(r[m] - want[m]!) / Math.max(Math.abs(want[m]!), 1);
        worst.metric = Math.max(worst.metric, err);
        assert.ok(err <= 1e-4, `${c.name}: ${m} ${r[m]} vs reference ${want[m]} (error ${err})`);
      }
      const grads = adapter.tensors('grads');
      const after = adapter.tensors('params');
      const ema = adapter.tensors('ema');
      for (const slot of adapter.slots) {
        const g = relNorm(grads.get(slot.key)!, get(`${c.name}/grad/${slot.key}`));
        worst.grad = Math.max(worst.grad, g);
        assert.ok(g <= 1e-3, `${c.name}: gradient of ${slot.key} relative error ${g}`);
        const w = maxAbs(after.get(slot.key)!, get(`${c.name}/after/${slot.key}`));
        worst.weight = Math.max(worst.weight, w);
        assert.ok(w <= 1e-5, `${c.name}: ${slot.key} after the step, max abs error ${w}`);
        if (tensors.has(`${c.name}/ema_after/${slot.key}`)) {
          const e = maxAbs(ema.get(slot.key)!, get(`${c.name}/ema_after/${slot.key}`));
          worst.weight = Math.max(worst.weight, e);
          assert.ok(e <= 1e-5, `${c.name}: EMA ${slot.key} max abs error ${e}`);
        }
      }
    }
    t.diagnostic(
      `${cases.length} cases; worst: logits ${logitsErr.toExponential(2)} abs, loss ${worst.loss.toExponential(2)} rel, ` +
        `metrics ${worst.metric.toExponential(2)}, gradients ${worst.grad.toExponential(2)} rel-norm, weights ${worst.weight.toExponential(2)} abs`,
    );
  });
}
