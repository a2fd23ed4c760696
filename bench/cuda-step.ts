// One full SDPO step on a CUDA device (teacher and base forwards, student forward and backward,
// clip, AdamW, EMA) with random-initialized Qwen3-8B-shaped weights made on the device (no
// download), a 256-token prompt, a 256-token hindsight teacher prompt and a 256-token response,
// K = 100; in the same run Hugging Face transformers + PEFT (bench/hf_peft_step.py) does the same
// step on the same shapes, and both decode greedily with a KV cache.
// Usage: npm run build:ts && node dist/bench/cuda-step.js [--steps 5] [--rank 16] [--checkpoint]
//        [--peak-tflops 989] [--decode-tokens 128] [--python python3]
// --peak-tflops is the device's dense bf16 peak used for MFU (989 for an H100/H200 SXM).
// Last line: {"ours_ms", "hf_peft_ms", "ratio" (ours / hf), "peak_gb", "mfu", ...decode tokens/s}.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { cudaAddon, cudaUnavailableReason } from '../src/engine/cuda.js';
import type { NativeConfig } from '../src/engine/native.js';
import { resolveSdpoOptions } from '../src/engine/sdpo-options.js';
import { rng, tempDir } from '../src/model/random-model.js';

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '5' },
    rank: { type: 'string', default: '16' },
    checkpoint: { type: 'boolean', default: false },
    'peak-tflops': { type: 'string', default: '989' },
    'decode-tokens': { type: 'string', default: '128' },
    python: { type: 'string', default: 'python3' },
  },
});
const steps = Number(values.steps);
const rank = Number(values.rank);
const peakTflops = Number(values['peak-tflops']);
const decodeTokens = Number(values['decode-tokens']);

// Qwen3-8B (config.json of Qwen/Qwen3-8B).
const config: NativeConfig = {
  vocab: 151936, hidden: 4096, layers: 36, heads: 32, kvHeads: 8, headDim: 128, intermediate: 12288,
  ropeTheta: 1e6, rmsEps: 1e-6, tieEmbeddings: false, qkNorm: true, bias: [false, false, false, false],
};
const PROMPT = 256, RESPONSE = 256, K = 100;

const reason = cudaUnavailableReason();
if (reason) {
  console.error(`cannot run the CUDA bench here: ${reason}`);
  process.exit(1);
}
const addon = cudaAddon();
console.log(`device: ${addon.deviceStatus().device}`);

const r = rng(2);
const tok = () => Math.floor(r() * config.vocab);
const prompt = Array.from({ length: PROMPT }, tok);
const teacherPrompt = [...prompt.slice(0, PROMPT - 40), ...Array.from({ length: 32 }, tok), ...prompt.slice(PROMPT - 8)];
const response = Array.from({ length: RESPONSE }, tok);
const sdpo = { alpha: 0.5, topK: K, tail: true, teacher: 'current' as const, learningRate: 1e-4 };
const { native: stepOptions } = resolveSdpoOptions(sdpo, config.vocab);
console.log(`model: Qwen3-8B shape ${JSON.stringify(config)}, random bf16 weights`);
console.log(`sample: ${prompt.length} prompt + ${response.length} response tokens, teacher prompt ${teacherPrompt.length}; LoRA r=${rank} alpha=${2 * rank} on all 7 projections; K=${K}; checkpointing ${values.checkpoint ? 'on' : 'off'}`);

// --- ours ----------------------------------------------------------------------------------------
const model = await addon.loadRandomModel({ config, seed: 1, std: 0.02, checkpoint: values.checkpoint });
const adapter = model.createAdapter({ rank, alpha: 2 * rank, targets: [true, true, true, true, true, true, true], seed: 1 });
const sample = { prompt: Int32Array.from(prompt), teacherPrompt: Int32Array.from(teacherPrompt), response: Int32Array.from(response) };
for (let i = 0; i < 2; i++) await model.sdpoStep(adapter, [sample], stepOptions); // warm-up
addon.resetPeak();
const times: number[] = [];
let phases = {};
for (let i = 0; i < steps; i++) {
  const t0 = performance.now();
  const res = await model.sdpoStep(adapter, [sample], stepOptions); // returns after the device finished
  times.push(performance.now() - t0);
  phases = res.timings;
}
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
const oursMs = median(times);
const peakGb = addon.deviceMemory().peakBytes / 2 ** 30;
console.log(`ours: step ${times.map((t) => t.toFixed(1)).join(', ')} ms (median ${oursMs.toFixed(1)}); phases of the last step ${JSON.stringify(phases)}`);

// Model FLOPs of the step (no recomputation counted): forwards of teacher (with LoRA), base and
// student, and the student's backward, which needs input gradients through the frozen weights
// (one forward's GEMMs), attention backward (twice its forward) and the LoRA gradients.
const { hidden: H, heads: N, kvHeads: M, headDim: D, intermediate: F, layers: L, vocab: V } = config;
const perToken = 2 * (H * N * D + 2 * H * M * D + N * D * H + 3 * H * F);
const loraPerToken = 2 * rank * (6 * H + 2 * N * D + 2 * M * D + 3 * F); // sum over the 7 projections of r (in + out)
const attn = (T: number) => 4 * N * D * ((T * (T + 1)) / 2);
const forwardFlops = (T: number, lora: boolean) => L * (T * perToken + attn(T) + (lora ? T * loraPerToken : 0)) + 2 * RESPONSE * H * V;
const T = PROMPT + RESPONSE;
const stepFlops = forwardFlops(teacherPrompt.length + RESPONSE, true) + forwardFlops(T, false) + forwardFlops(T, true) +
  L * (T * perToken + 2 * attn(T) + 2 * T * loraPerToken) + 2 * RESPONSE * H * V;
const mfu = stepFlops / (oursMs / 1000) / (peakTflops * 1e12);
console.log(`step model FLOPs ${(stepFlops / 1e12).toFixed(2)} T: ${(stepFlops / (oursMs / 1000) / 1e12).toFixed(1)} TFLOP/s, MFU ${(100 * mfu).toFixed(1)}% of ${peakTflops} TFLOP/s; peak device buffers ${peakGb.toFixed(2)} GiB (cuBLAS workspace not counted)`);

const seq = model.createSequence(0);
const greedy = { temperature: 0, topP: 1, topK: 0, topLogprobs: 0 };
const t0 = performance.now();
let next = (await model.decode([{ seq, adapter, ids: Int32Array.from(prompt), ...greedy }]))[0]!;
for (let i = 1; i < decodeTokens; i++) next = (await model.decode([{ seq, adapter, ids: Int32Array.of(next.id), ...greedy }]))[0]!;
const oursDecode = decodeTokens / ((performance.now() - t0) / 1000);
console.log(`ours: greedy decode ${decodeTokens} tokens after a ${PROMPT}-token prompt (prefill included), batch 1: ${oursDecode.toFixed(1)} tok/s`);

// --- transformers + PEFT, same shapes ------------------------------------------------------------
const spec = join(tempDir('claas-cuda-bench-'), 'spec.json');
writeFileSync(spec, JSON.stringify({ config, prompt, teacherPrompt, response, rank, alpha: 2 * rank, options: { ...sdpo, maxGradNorm: 1, weightDecay: 0.01, emaRate: 0.05 }, steps, decodeTokens, checkpoint: values.checkpoint }));
const script = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'hf_peft_step.py');
const py = spawnSync(values.python, [script, spec], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
interface HfResult {
  step_ms: number;
  peak_gb: number;
  decode_tok_s: number;
  versions: string;
}
let hf: HfResult | null = null;
if (py.status === 0) {
  const got = JSON.parse(py.stdout.trim().split('\n').pop()!) as HfResult;
  hf = got;
  console.log(`transformers + PEFT (${got.versions}): step median ${got.step_ms.toFixed(1)} ms, peak ${got.peak_gb.toFixed(2)} GiB, decode ${got.decode_tok_s.toFixed(1)} tok/s`);
} else {
  console.log(`transformers + PEFT did not run (exit ${py.status}): ${py.stderr.trim().split('\n').slice(-3).join(' | ')}`);
}
console.log(
  JSON.stringify({
    ours_ms: Number(oursMs.toFixed(2)),
    hf_peft_ms: hf ? Number(hf.step_ms.toFixed(2)) : null,
    ratio: hf ? Number((oursMs / hf.step_ms).toFixed(4)) : null,
    peak_gb: Number(peakGb.toFixed(2)),
    mfu: Number(mfu.toFixed(4)),
    hf_peak_gb: hf ? Number(hf.peak_gb.toFixed(2)) : null,
    ours_decode_tok_s: Number(oursDecode.toFixed(1)),
    hf_decode_tok_s: hf ? Number(hf.decode_tok_s.toFixed(1)) : null,
  }),
);
