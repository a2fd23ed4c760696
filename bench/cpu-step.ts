// One SDPO step on the CPU: the engine (tinybench, in process) against the PyTorch reference
// (test/reference, fp32, timed inside Python), plus a whole-process comparison of both, in one run.
// Both use OpenBLAS with the same thread count; the run says which BLAS PyTorch really loaded.
// Last line: {"ours_ms", "torch_ms", "ratio"} (median step latency, ratio = ours / torch).
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { Bench } from 'tinybench';
import { Engine } from '../src/engine/engine.js';
import { tempDir } from '../src/model/random-model.js';
import { BENCH_LORA, BENCH_MODEL, BENCH_OPTIONS, writeWorkload } from './step-sample.js';

const { values } = parseArgs({
  options: {
    threads: { type: 'string', default: '2' },
    steps: { type: 'string', default: '20' },
    python: { type: 'string', default: '/usr/bin/python3' },
  },
});
const threads = Number(values.threads);
const steps = Number(values.steps);
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const work = writeWorkload(tempDir('claas-bench-'));
const env = { ...process.env, OMP_NUM_THREADS: String(threads), OPENBLAS_NUM_THREADS: String(threads) };

console.log(`model: ${JSON.stringify(BENCH_MODEL)}`);
console.log(`sample: ${work.sample.promptIds.length} prompt + ${work.sample.responseIds.length} response tokens, teacher prompt ${work.sample.teacherPromptIds.length}; LoRA r=${BENCH_LORA.rank} on all 7 projections; K=${BENCH_OPTIONS.topK}; threads=${threads}`);

// --- in process: tinybench over the engine ---------------------------------------------------
const engine = await Engine.open(work.modelDir, { backend: 'cpu', threads });
const adapter = engine.createAdapter({ ...BENCH_LORA, seed: 1 });
let phases: Record<string, number> = {};
const bench = new Bench({ iterations: steps, warmupIterations: 5, time: 0 });
bench.add('engine sdpoStep', async () => {
  const r = await engine.sdpoStep(adapter, [work.sample], BENCH_OPTIONS);
  phases = r.timings;
});
await bench.run();
console.table(bench.table());
const task = bench.tasks[0]!;
const latency = (task.result as { latency?: { p50: number } }).latency;
if (!latency) throw new Error(`tinybench did not complete: ${JSON.stringify(task.result)}`);
const oursMs = latency.p50;
console.log(`engine phases of the last step (ms): ${JSON.stringify(phases)}`);

// --- the PyTorch reference ---------------------------------------------------------------------
const torchScript = join(root, 'test', 'reference', 'bench_step.py');
const torchRun = spawnSync(values.python, [torchScript, work.modelDir, work.sampleFile, String(threads), String(steps)], { env, encoding: 'utf8' });
if (torchRun.status !== 0) {
  console.error(torchRun.stdout, torchRun.stderr);
  throw new Error(`the PyTorch reference failed (exit ${torchRun.status}); is python3-torch installed?`);
}
const torch = JSON.parse(torchRun.stdout.trim().split('\n').pop()!) as { step_ms: number; load_ms: number; blas: string; torch: string };
const blasIsOpenblas = /openblas/i.test(torch.blas);
console.log(`PyTorch ${torch.torch}, BLAS loaded: ${torch.blas}${blasIsOpenblas ? ' (OpenBLAS)' : ''}`);
if (!blasIsOpenblas) {
  console.log('WARNING: PyTorch is not using OpenBLAS (install libopenblas-dev); the comparison below is not like for like.');
}
console.log(`PyTorch reference step: median ${torch.step_ms.toFixed(2)} ms over ${steps} steps`);

// --- whole processes: load + the same number of steps ------------------------------------------
const wall = (cmd: string, args: string[]) => {
  const t0 = performance.now();
  execFileSync(cmd, args, { env, stdio: ['ignore', 'pipe', 'inherit'] });
  return performance.now() - t0;
};
const oursProcessMs = wall(process.execPath, [join(root, 'dist', 'bench', 'engine-step-process.js'), work.modelDir, work.sampleFile, String(threads), String(steps)]);
const torchProcessMs = wall(values.python, [torchScript, work.modelDir, work.sampleFile, String(threads), String(steps)]);
console.log(`whole process (start, load, ${steps} steps): ours ${oursProcessMs.toFixed(0)} ms, torch ${torchProcessMs.toFixed(0)} ms, ratio ${(oursProcessMs / torchProcessMs).toFixed(3)}`);

const ourBlas = readFileSync('/proc/self/maps', 'utf8').split('\n').find((l) => /libopenblas/.test(l))?.split(/\s+/).pop() ?? 'unknown';
console.log(`engine BLAS loaded: ${ourBlas}`);
console.log(
  JSON.stringify({
    ours_ms: Number(oursMs.toFixed(3)),
    torch_ms: Number(torch.step_ms.toFixed(3)),
    ratio: Number((oursMs / torch.step_ms).toFixed(4)),
    process_ratio: Number((oursProcessMs / torchProcessMs).toFixed(4)),
    threads,
    torch_blas: torch.blas,
  }),
);
