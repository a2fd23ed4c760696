// Weight storage on the WebGPU backend, f32 against f16, on the toy model (models/toy): GPU bytes of
// the weights (every weight buffer, as allocated), the largest logit difference between the two on one
// sequence, and the median SDPO step time of each. Last line: {"f32_bytes", "f16_bytes", "f32_step_ms",
// "f16_step_ms", "logits_max_abs_diff"}.
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Engine, toNativeConfig } from '../src/engine/engine.js';
import { readModelConfig } from '../src/model/config.js';
import { rng } from '../src/model/random-model.js';
import { weightSpecs } from '../src/model/weights.js';
import { WebGpuModel } from '../src/engine/webgpu/model.js';
import type { WeightStorage } from '../src/engine/webgpu/weight-storage.js';
import { BENCH_LORA, BENCH_OPTIONS } from './step-sample.js';

const { values } = parseArgs({ options: { steps: { type: 'string', default: '3' }, warmup: { type: 'string', default: '1' } } });
const steps = Number(values.steps), warmup = Number(values.warmup);
const dir = fileURLToPath(new URL('../../models/toy', import.meta.url));
const c = readModelConfig(dir);
const tensors = weightSpecs(dir, c);
const config = toNativeConfig(c);

async function weightBytes(weights: WeightStorage): Promise<number> {
  const m = await WebGpuModel.load({ config, tensors }, { weights });
  try {
    console.log(`${weights}: ${m.weightStorage} (${m.ctx.weights.bytes} bytes)`);
    return m.ctx.weights.bytes;
  } finally {
    m.close();
  }
}

const r = rng(2);
const tok = () => Math.floor(r() * c.vocabSize);
const seq = Array.from({ length: 64 }, tok);
const sample = { promptIds: seq, teacherPromptIds: [...seq.slice(0, -4), ...Array.from({ length: 16 }, tok), ...seq.slice(-4)], responseIds: Array.from({ length: 32 }, tok) };

async function run(weights: WeightStorage): Promise<{ logits: Float32Array; ms: number }> {
  const e = await Engine.open(dir, { backend: 'webgpu', webgpuWeights: weights });
  const logits = await e.logits(seq, null);
  const adapter = e.createAdapter({ ...BENCH_LORA, seed: 1 });
  const times: number[] = [];
  for (let i = 0; i < warmup + steps; i++) {
    const t0 = performance.now();
    await e.sdpoStep(adapter, [sample], BENCH_OPTIONS);
    if (i >= warmup) times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return { logits, ms: times[Math.floor(times.length / 2)]! };
}

const f32Bytes = await weightBytes('f32');
const f16Bytes = await weightBytes('f16');
const a = await run('f32');
const b = await run('f16');
let diff = 0;
for (let i = 0; i < a.logits.length; i++) diff = Math.max(diff, Math.abs(a.logits[i]! - b.logits[i]!));
console.log(JSON.stringify({ f32_bytes: f32Bytes, f16_bytes: f16Bytes, f32_step_ms: Math.round(a.ms), f16_step_ms: Math.round(b.ms), logits_max_abs_diff: +diff.toPrecision(3) }));
