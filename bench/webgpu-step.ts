// One SDPO step on the toy-sized model (models/toy: 4 layers, hidden 128, vocab 765; its own weights
// when present, else random weights of the same shape) on the CPU backend and on the WebGPU backend.
// Median of --steps steps after --warmup steps each; the per-phase timings of the last step are
// printed too. Last line: {"cpu_ms", "webgpu_ms"}.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Engine } from '../src/engine/engine.js';
import { rng, tempDir, writeRandomModel } from '../src/model/random-model.js';
import { probeWebGpu } from '../src/engine/webgpu/probe.js';
import { BENCH_LORA, BENCH_OPTIONS } from './step-sample.js';

const { values } = parseArgs({
  options: {
    threads: { type: 'string', default: '2' },
    steps: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '2' },
    prompt: { type: 'string', default: '128' },
    response: { type: 'string', default: '64' },
  },
});
const threads = Number(values.threads), steps = Number(values.steps), warmup = Number(values.warmup);

const toy = fileURLToPath(new URL('../../models/toy', import.meta.url));
const cfg = JSON.parse(readFileSync(join(toy, 'config.json'), 'utf8')) as Record<string, number | boolean>;
let modelDir = toy;
if (!existsSync(join(toy, 'model.safetensors'))) {
  modelDir = writeRandomModel(
    { vocab: cfg.vocab_size as number, hidden: cfg.hidden_size as number, layers: cfg.num_hidden_layers as number, heads: cfg.num_attention_heads as number, kvHeads: cfg.num_key_value_heads as number, headDim: cfg.head_dim as number, intermediate: cfg.intermediate_size as number, tied: cfg.tie_word_embeddings as boolean, seed: 1 },
    join(tempDir('claas-bench-'), 'model'),
  );
}
const V = cfg.vocab_size as number;
const r = rng(2);
const tok = () => Math.floor(r() * V);
const promptIds = Array.from({ length: Number(values.prompt) }, tok);
const sample = {
  promptIds,
  teacherPromptIds: [...promptIds.slice(0, -4), ...Array.from({ length: 16 }, tok), ...promptIds.slice(-4)],
  responseIds: Array.from({ length: Number(values.response) }, tok),
};
console.log(`model: ${modelDir} (${cfg.num_hidden_layers} layers, hidden ${cfg.hidden_size}, vocab ${V}); sample ${sample.promptIds.length} prompt + ${sample.responseIds.length} response tokens, teacher prompt ${sample.teacherPromptIds.length}; LoRA r=${BENCH_LORA.rank} on all 7 projections; ${JSON.stringify(BENCH_OPTIONS)}`);

async function median(engine: Engine): Promise<{ ms: number; phases: Record<string, number> }> {
  const adapter = engine.createAdapter({ ...BENCH_LORA, seed: 1 });
  const times: number[] = [];
  let phases: Record<string, number> = {};
  for (let i = 0; i < warmup + steps; i++) {
    const t0 = performance.now();
    const res = await engine.sdpoStep(adapter, [sample], BENCH_OPTIONS);
    if (i >= warmup) times.push(performance.now() - t0);
    phases = res.timings;
  }
  times.sort((a, b) => a - b);
  return { ms: times[Math.floor(times.length / 2)]!, phases };
}

const cpu = await Engine.open(modelDir, { backend: 'cpu', threads });
const c = await median(cpu);
console.log(`cpu (${threads} threads): median ${c.ms.toFixed(1)} ms; phases of the last step ${JSON.stringify(c.phases)}`);

const probe = await probeWebGpu();
if (!probe.ok) throw new Error(`no WebGPU adapter: ${probe.reason}`);
const gpu = await Engine.open(modelDir, { backend: 'webgpu' });
const g = await median(gpu);
console.log(`webgpu (${probe.name}${probe.software ? ', software' : ''}): median ${g.ms.toFixed(1)} ms; phases of the last step ${JSON.stringify(g.phases)}`);
console.log(JSON.stringify({ cpu_ms: Number(c.ms.toFixed(2)), webgpu_ms: Number(g.ms.toFixed(2)) }));
