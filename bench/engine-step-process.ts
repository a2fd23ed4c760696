// A whole process that loads the model and runs SDPO steps, for the whole-process comparison.
// Usage: node dist/bench/engine-step-process.js <modelDir> <sample.json> <threads> <steps>
// Prints one JSON line: {"load_ms", "step_ms" (median), "steps"}.
import { readFileSync } from 'node:fs';
import { Engine } from '../src/engine/engine.js';

const [modelDir, sampleFile, threadsArg, stepsArg] = process.argv.slice(2);
if (!modelDir || !sampleFile) {
  console.error('usage: engine-step-process <modelDir> <sample.json> <threads> <steps>');
  process.exit(2);
}
const { sample, lora, options } = JSON.parse(readFileSync(sampleFile, 'utf8'));
const t0 = performance.now();
const engine = await Engine.open(modelDir, { threads: Number(threadsArg ?? 1) });
const adapter = engine.createAdapter({ ...lora, seed: 1 });
const loadMs = performance.now() - t0;
const times: number[] = [];
for (let i = 0; i < Number(stepsArg ?? 5); i++) {
  const t = performance.now();
  await engine.sdpoStep(adapter, [sample], options);
  times.push(performance.now() - t);
}
times.sort((a, b) => a - b);
console.log(JSON.stringify({ load_ms: loadMs, step_ms: times[Math.floor(times.length / 2)], steps: times.length }));
