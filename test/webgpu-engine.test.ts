// The WebGPU engine against the CPU engine on two tiny random configs (Qwen3 with q/k norm and tied
// embeddings; Qwen2-style with q/k/v biases, an untied LM head and 4 query heads per KV head):
// adapter init from a seed, logits, token log-probs, the full SDPO step for alpha 0 / 0.5 / 1 and
// teachers current / ema / base / remote (loss, metrics, LoRA gradients, weights, EMA and AdamW state
// after the step), steps > 1, and generation (greedy and seeded sampling give the same tokens); then
// the learning loop over HTTP on the WebGPU engine, in process and as `claas serve --backend webgpu`.
// With CI=true a missing WebGPU adapter fails the run instead of skipping it.
//
// Tolerances (f32 on both sides; the CPU reduces in double where the GPU reduces in f32), with the
// worst errors seen on lavapipe in brackets:
//   adapter init from a seed: bitwise equal;
//   logits and token log-probs: max abs 5e-5 [4.0e-6, 1.9e-6];
//   loss and the other step metrics: relative 5e-5, absolute below 1e-2 [4.6e-6];
//     clipFraction and tokens exactly;
//   LoRA gradients: relative L2 error 5e-5 per case [2.4e-6];
//   params / EMA after the step: max abs 1e-6 [4.7e-8]; AdamW moments m, v: relative L2 5e-5 [1.8e-6];
//   generation: identical token ids and top-logprob ids, log-probs within 5e-5.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/api/app.js';
import { Engine, type Adapter, type SdpoSample } from '../src/engine/engine.js';
import { LORA_MODULES } from '../src/engine/lora-modules.js';
import type { SdpoOptions } from '../src/engine/sdpo-options.js';
import { probeWebGpu } from '../src/engine/webgpu/probe.js';
import { normal, rng, tempDir, writeRandomModel } from '../src/model/random-model.js';
import { readSafetensors, writeSafetensors } from '../src/model/safetensors.js';
import type { Orchestrator } from '../src/orchestrator/orchestrator.js';
import type { InferenceService } from '../src/serve/inference.js';
import { openServer, writeRandomChatModel } from '../src/serve/open.js';
import { describeStepWorst, expectSameStep, ids, maxAbs, newStepWorst, trainedAdapterState, withRemoteTargets } from './webgpu/compare.js';

const probe = await probeWebGpu();
const skip = probe.ok ? false : `no WebGPU adapter: ${probe.reason}`;

test('a WebGPU adapter is present (required when CI=true)', { skip: process.env.CI === 'true' ? false : skip }, () => {
  assert.ok(probe.ok, probe.ok ? '' : probe.reason);
});

/** Qwen2-style: biases on q, k, v; untied head; 4 query heads per KV head; no q/k norm. */
function writeBiasModel(): string {
  const dir = writeRandomModel({ vocab: 80, hidden: 32, layers: 2, heads: 4, kvHeads: 1, headDim: 8, intermediate: 64, tied: false, seed: 5 });
  const file = join(dir, 'model.safetensors');
  const { tensors } = readSafetensors(file);
  const r = rng(11);
  const out = [...tensors].map(([name, t]) => ({ name, shape: t.shape, data: t.data }));
  for (let l = 0; l < 2; l++) {
    for (const [p, n] of [['q', 32], ['k', 8], ['v', 8]] as const) {
      out.push({ name: `model.layers.${l}.self_attn.${p}_proj.bias`, shape: [n], data: Float32Array.from({ length: n }, () => 0.3 * normal(r)) });
    }
  }
  writeSafetensors(file, out, { format: 'pt' });
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2' }));
  return dir;
}

const CONFIGS: { name: string; write: () => string }[] = [
  { name: 'qwen3 q/k-norm tied GQA 2', write: () => writeRandomModel({ vocab: 96, hidden: 32, layers: 2, heads: 4, kvHeads: 2, headDim: 16, intermediate: 48, tied: true, seed: 3 }) },
  { name: 'qwen2 biases untied GQA 4', write: writeBiasModel },
];

/** Two samples of different lengths; the first carries sampling-time log-probs. */
function batch(vocab: number, seed: number): SdpoSample[] {
  const r = rng(seed);
  const s1 = { promptIds: ids(r, 7, vocab), teacherPromptIds: ids(r, 11, vocab), responseIds: ids(r, 6, vocab), oldLogprobs: Array.from({ length: 6 }, () => -0.5 - 3 * r()) };
  const s2 = { promptIds: ids(r, 4, vocab), teacherPromptIds: ids(r, 9, vocab), responseIds: ids(r, 9, vocab) };
  return [s1, s2];
}

/** Supplied (remote) teacher targets: K random distinct ids per position with log-probs summing below 1. */
interface StepCase {
  name: string;
  options: Partial<SdpoOptions>;
  remote?: number;
}

const CASES: StepCase[] = [
  { name: 'alpha 0, teacher current', options: { alpha: 0, teacher: 'current', topK: 8 } },
  { name: 'alpha 0.5, teacher current, beta 0.1, clipped gradient', options: { alpha: 0.5, teacher: 'current', topK: 8, beta: 0.1, maxGradNorm: 0.05 } },
  { name: 'alpha 1, teacher current', options: { alpha: 1, teacher: 'current', topK: 8 } },
  { name: 'alpha 0, teacher ema', options: { alpha: 0, teacher: 'ema', topK: 16 } },
  { name: 'alpha 0.5, teacher ema, no tail', options: { alpha: 0.5, teacher: 'ema', topK: 16, tail: false } },
  { name: 'alpha 1, teacher ema', options: { alpha: 1, teacher: 'ema', topK: 16 } },
  { name: 'alpha 0, teacher base', options: { alpha: 0, teacher: 'base', topK: 4 } },
  { name: 'alpha 0.5, teacher base, 3 steps', options: { alpha: 0.5, teacher: 'base', topK: 4, steps: 3 } },
  { name: 'alpha 1, teacher base, isClip 1.2', options: { alpha: 1, teacher: 'base', topK: 4, isClip: 1.2 } },
  { name: 'alpha 0.5, whole vocabulary as top-K', options: { alpha: 0.5, teacher: 'current', topK: 1000 } },
  { name: 'sampled-token mode', options: { sampledToken: true, teacher: 'current', beta: 0.05 } },
  { name: 'remote teacher targets, alpha 0.5', options: { alpha: 0.5, teacher: 'remote' }, remote: 5 },
];


for (const config of CONFIGS) {
  test(`WebGPU engine matches the CPU engine: ${config.name}`, { skip }, async (t) => {
    const dir = config.write();
    const cpu = await Engine.open(dir, { backend: 'cpu', threads: 1 });
    const gpu = await Engine.open(dir, { backend: 'webgpu' });
    assert.equal(gpu.backend, 'webgpu');
    const V = cpu.config.vocabSize;
    const shape = { rank: 4, alpha: 8, targetModules: [...LORA_MODULES] };

    await t.test('adapter init from a seed is bitwise the CPU init', () => {
      const a = cpu.createAdapter({ rank: 4, alpha: 8, seed: 1234567 }).state();
      const b = gpu.createAdapter({ rank: 4, alpha: 8, seed: 1234567 }).state();
      assert.deepEqual(b.params, a.params);
      assert.deepEqual(b.ema, a.ema);
      const ca = cpu.createAdapter({ rank: 4, alpha: 8, seed: 1, targetModules: ['q_proj', 'v_proj', 'down_proj'] });
      const ga = gpu.createAdapter({ rank: 4, alpha: 8, seed: 1, targetModules: ['q_proj', 'v_proj', 'down_proj'] });
      assert.deepEqual(ga.native.layout(), ca.native.layout());
      assert.deepEqual(ga.state().params, ca.state().params);
    });

    const state = trainedAdapterState(cpu, shape);
    const restore = (e: Engine): Adapter => e.restoreAdapter(shape, state);

    await t.test('clone: an independent copy of weights, EMA and optimizer state', async () => {
      const original = restore(gpu);
      const copy = await gpu.cloneAdapter(original);
      assert.deepEqual(copy.state(), original.state());
      await gpu.sdpoStep(copy, batch(V, 31), { learningRate: 1e-2, topK: 8 });
      assert.deepEqual(original.state().params, state.params, 'the original is untouched');
      assert.equal(original.state().step, 3);
      assert.equal(copy.state().step, 4);
      assert.ok(maxAbs(copy.state().params, state.params) > 1e-4);
      const seq = ids(rng(6), 9, V);
      assert.deepEqual(await gpu.logits(seq, original), await gpu.logits(seq, restore(gpu)));
    });

    await t.test('logits and token log-probs (adapter, EMA copy, base)', async () => {
      const seq = ids(rng(4), 13, V);
      let err = 0;
      for (const [adapter, ema] of [[restore(cpu), false], [restore(cpu), true], [null, false]] as const) {
        const g = adapter ? restore(gpu) : null;
        err = Math.max(err, maxAbs(await gpu.logits(seq, g, { ema }), await cpu.logits(seq, adapter, { ema })));
      }
      assert.ok(err <= 5e-5, `logits max abs error ${err}`);
      const lpErr = maxAbs(await gpu.logprobs(seq, restore(gpu), 5), await cpu.logprobs(seq, restore(cpu), 5));
      assert.ok(lpErr <= 5e-5, `token log-prob max abs error ${lpErr}`);
      t.diagnostic(`logits max abs ${err.toExponential(2)}, token log-probs ${lpErr.toExponential(2)}`);
    });

    const worst = newStepWorst();
    for (const c of CASES) {
      await t.test(`SDPO step: ${c.name}`, async () => {
        let samples = batch(V, 31);
        if (c.remote) samples = withRemoteTargets(samples, V, c.remote, 41);
        const options: Partial<SdpoOptions> = { learningRate: 1e-2, ...c.options };
        const got = await expectSameStep(cpu, gpu, restore(cpu), restore(gpu), samples, options, state, worst);
        for (const k of ['teacherMs', 'baseMs', 'studentForwardMs', 'backwardMs', 'optimizerMs'] as const) assert.ok(got.timings[k] >= 0);
      });
    }
    t.diagnostic(describeStepWorst(worst));

    await t.test('generation: batched greedy and seeded sampling give the CPU tokens', async () => {
      for (const sampling of [{ temperature: 0, topP: 1, topK: 0, topLogprobs: 3 }, { temperature: 0.8, topP: 0.9, topK: 20, topLogprobs: 0 }]) {
        const run = async (e: Engine, adapter: Adapter | null) => {
          const seqs = [e.createSequence(17), e.createSequence(99), e.createSequence(5)];
          const prompts = [ids(rng(8), 5, V), ids(rng(9), 9, V), ids(rng(10), 1, V)];
          const out: { id: number; logprob: number; top: number[] }[][] = [[], [], []];
          let next = prompts;
          for (let step = 0; step < 12; step++) {
            const toks = await e.decode(seqs.map((sequence, i) => ({ sequence, ids: next[i]!, sampling })), adapter);
            toks.forEach((tk, i) => out[i]!.push({ id: tk.id, logprob: tk.logprob, top: [...tk.topIds] }));
            next = toks.map((tk) => [tk.id]);
          }
          return out;
        };
        const want = await run(cpu, restore(cpu));
        const got = await run(gpu, restore(gpu));
        for (let s = 0; s < want.length; s++) {
          assert.deepEqual(got[s]!.map((x) => x.id), want[s]!.map((x) => x.id), `sequence ${s} at temperature ${sampling.temperature}`);
          assert.deepEqual(got[s]!.map((x) => x.top), want[s]!.map((x) => x.top));
          assert.ok(maxAbs(got[s]!.map((x) => x.logprob), want[s]!.map((x) => x.logprob)) <= 5e-5);
        }
      }
    });
  });
}

test('backend auto never fails for want of WebGPU, and an explicit webgpu request says which adapter is missing', async () => {
  const dir = writeRandomModel({ seed: 2 });
  const e = await Engine.open(dir, { threads: 1 });
  assert.ok(['cpu', 'webgpu'].includes(e.backend));
  assert.ok(e.backendChoice.skipped.some((s) => s.backend === 'cuda'));
  if (!probe.ok) await assert.rejects(Engine.open(dir, { backend: 'webgpu' }), /backend webgpu is not available/);
  await assert.rejects(Engine.open(dir, { backend: 'tpu' as never }), /unknown backend/);
});

// The learning loop over HTTP on the WebGPU engine (the core of feedback-loop.test.ts).
let app: FastifyInstance;
let service: InferenceService;
let orchestrator: Orchestrator;
let base = '';

async function call(method: string, path: string, body?: unknown, root = base) {
  const res = await fetch(`${root}${path}`, { method, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

async function waitJob(jobId: string, root = base) {
  for (let i = 0; i < 3000; i++) {
    const r = await call('GET', `/v1/feedback/jobs/${jobId}`, undefined, root);
    if (r.body.status === 'done' || r.body.status === 'failed') return r.body;
    await new Promise((res) => setTimeout(res, 20));
  }
  throw new Error(`job ${jobId} did not finish`);
}

before(async () => {
  if (skip) return;
  const dir = tempDir();
  ({ service, orchestrator } = await openServer(writeRandomChatModel(join(dir, 'random-tiny')), {
    dataDir: join(dir, 'data'),
    backend: 'webgpu',
    orchestrator: { batchSize: 1, maxWaitMs: 20 },
    guard: { maxUpdateKl: 50, probeTokens: 2 },
  }));
  app = await buildApp(service, { orchestrator });
  base = await app.listen({ host: '127.0.0.1', port: 0 });
});

after(async () => {
  if (skip) return;
  await app.close();
  await orchestrator.close();
  await service.close();
});

test('learning loop on WebGPU: chat -> feedback -> the new version serves the next chat -> rollback', { skip }, async () => {
  assert.equal(service.engine.backend, 'webgpu');
  const id = 'ana/style';
  const messages = [{ role: 'user', content: 'Name three colours.' }];
  const created = await call('POST', '/v1/lora/init', { lora_id: id, rank: 4, alpha: 8 });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const chat = await call('POST', '/v1/chat/completions', { model: id, messages, max_tokens: 8, temperature: 0 });
  assert.equal(chat.status, 200);
  assert.equal((await service.store.completions.get(chat.body.id))!.adapterVersion, 'v0001');
  const fb = await call('POST', '/v1/feedback', { lora_id: id, completion_id: chat.body.id, feedback: 'Answer in capital letters only.', learning_rate: 5e-3 });
  assert.equal(fb.status, 202, JSON.stringify(fb.body));
  const job = await waitJob(fb.body.job_id);
  assert.equal(job.status, 'done', JSON.stringify(job));
  assert.equal(job.result.version, 2);
  assert.equal(job.result.promoted, true);
  assert.ok(job.result.metrics.teacherStudentKl > 0, 'the hindsight teacher differs from the student');
  const next = await call('POST', '/v1/chat/completions', { model: id, messages, max_tokens: 8, temperature: 0 });
  assert.equal((await service.store.completions.get(next.body.id))!.adapterVersion, 'v0002');
  const rec = (await service.store.completions.get(chat.body.id))!;
  const v2 = await service.engine.logprobs([...rec.promptIds, ...rec.choices[0]!.outputIds], (await service.lease(id))!.adapter, rec.promptIds.length);
  assert.ok(Array.from(v2).some((lp, i) => Math.abs(lp - rec.choices[0]!.outputLogprobs[i]!) > 1e-4), 'the update moved the model');
  const rolled = await call('POST', `/v1/lora/${id}/rollback`, { version: 1 });
  assert.equal(rolled.body.current_version, 1);
  const again = await call('POST', '/v1/chat/completions', { model: id, messages, max_tokens: 8, temperature: 0 });
  assert.deepEqual((await service.store.completions.get(again.body.id))!.choices[0]!.outputIds, rec.choices[0]!.outputIds, 'v1 answers exactly as before');
});

const cli = fileURLToPath(new URL('../src/cli.js', import.meta.url));

test('claas serve --backend webgpu: logs the backend, answers a chat, learns from feedback, stops on SIGTERM', { skip }, async () => {
  const data = join(tempDir(), 'data');
  const proc = spawn(process.execPath, [cli, 'serve', '--backend', 'webgpu', '--model', 'random', '--data', data, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn' } });
  let out = '';
  proc.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  try {
    const address = await new Promise<string>((resolve, reject) => {
      proc.stdout.on('data', (d: Buffer) => {
        out += d;
        const m = out.match(/serving "[^"]+" at (\S+)\/v1/);
        if (m) resolve(m[1]!);
      });
      void exited.then((code) => reject(new Error(`server exited early (${code}):\n${out}`)));
    });
    assert.match(out, /done in .*webgpu/);
    assert.match(out, /^backend webgpu/m);
    const created = await call('POST', '/v1/lora/init', { lora_id: 'bo/x', rank: 4, alpha: 8 }, address);
    assert.equal(created.status, 201);
    const chat = await call('POST', '/v1/chat/completions', { model: 'bo/x', messages: [{ role: 'user', content: 'hi' }], max_tokens: 6, temperature: 0 }, address);
    assert.equal(chat.status, 200, JSON.stringify(chat.body));
    const fb = await call('POST', '/v1/feedback', { lora_id: 'bo/x', completion_id: chat.body.id, feedback: 'Shorter.', learning_rate: 1e-3 }, address);
    assert.equal(fb.status, 202);
    const job = await waitJob(fb.body.job_id, address);
    assert.equal(job.status, 'done', JSON.stringify(job));
    assert.equal(job.result.version, 2);
  } finally {
    proc.kill('SIGTERM');
  }
  assert.equal(await exited, 0, out);
});
