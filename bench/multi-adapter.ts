// Many users, each on their own adapter: what it costs next to all of them sharing one, and what a
// training step does to the replies streaming meanwhile.
//
// Whole process: `claas serve` on the toy (the defaults `npm start` uses) in a child process, driven
// over HTTP by `--clients` concurrent clients, each making `--chats` chats of `--tokens` tokens:
//   one_adapter_tok_s: every client on the same adapter; many_adapters_tok_s: each on its own
//   (medians over `--rounds` alternations); ratio = many / one.
// Inter-token latency: `--clients` clients streaming chats on their own adapters for 4 s, idle, then
// for 4 s while feedback on another adapter keeps updates running back to back (batch size 1, no
// wait: step, guard, save, promote); p99 of the gaps between streamed tokens in each case. rss_mb: the server's peak resident memory.
// In process (tinybench): one engine call decoding a token for 16 sequences on 16 adapters (of the
// profile's shape) against the same 16 sequences on one adapter, against 16 calls of one sequence
// each, and on the base model.
// Last line: {"one_adapter_tok_s", "many_adapters_tok_s", "ratio", "p99_itl_idle_ms",
//   "p99_itl_training_ms", "rss_mb", ...}.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Bench } from 'tinybench';
import { Engine, type Sequence } from '../src/engine/engine.js';
import { tempDir } from '../src/model/random-model.js';
import { readTrainingProfile } from '../src/model/training-profile.js';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '16' },
    chats: { type: 'string', default: '6' },
    tokens: { type: 'string', default: '48' },
    model: { type: 'string' },
    rounds: { type: 'string', default: '5' },
  },
});
const CLIENTS = Number(values.clients);
const CHATS = Number(values.chats);
const TOKENS = Number(values.tokens);
const cli = fileURLToPath(new URL('../src/cli.js', import.meta.url));
const toy = fileURLToPath(new URL('../../models/toy', import.meta.url));
const modelDir = values.model ?? toy;

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

async function start(): Promise<{ proc: ChildProcess; base: string; model: string }> {
  const data = join(tempDir('claas-bench-'), 'data');
  const proc = spawn(process.execPath, [cli, 'serve', '--model', modelDir, '--data', data, '--port', '0', '--batch-size', '1', '--batch-wait-ms', '0', '--rate-chat', '0', '--rate-feedback', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LOG_LEVEL: 'warn' },
  });
  let out = '';
  proc.stderr!.on('data', (d) => (out += d));
  const m = await new Promise<RegExpMatchArray>((resolve, reject) => {
    proc.stdout!.on('data', (d: Buffer) => {
      out += d;
      const found = out.match(/serving "([^"]+)" at (\S+)\/v1/);
      if (found) resolve(found);
    });
    proc.on('exit', (code) => reject(new Error(`server exited (${code}):\n${out}`)));
  });
  return { proc, base: m[2]!, model: m[1]! };
}

const { proc, base } = await start();
let peakRss = 0;
const sampler = setInterval(() => (peakRss = Math.max(peakRss, rssBytes(proc.pid!))), 50);

async function post(path: string, body: unknown): Promise<Record<string, unknown>> {
  const r = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return (await r.json()) as Record<string, unknown>;
}

const question = (i: number) => `What is the capital of ${['France', 'Spain', 'Italy', 'Japan', 'Peru', 'Egypt', 'Chile', 'Kenya'][i % 8]}?`;
const chatBody = (adapter: string, i: number) => ({ model: adapter, messages: [{ role: 'user', content: question(i) }], max_tokens: TOKENS, temperature: 1, seed: i });

for (let i = 0; i < CLIENTS; i++) await post('/v1/lora/init', { lora_id: `bench/u${i}`, seed: i });
await post('/v1/lora/init', { lora_id: 'bench/trainee', seed: 99 });

/** Completion tokens per second of CLIENTS clients making CHATS chats each, client c on adapter(c). */
async function throughput(adapter: (c: number) => string): Promise<number> {
  const t0 = performance.now();
  const counts = await Promise.all(
    Array.from({ length: CLIENTS }, async (_, c) => {
      let n = 0;
      for (let k = 0; k < CHATS; k++) n += ((await post('/v1/chat/completions', chatBody(adapter(c), c * CHATS + k))).usage as { completion_tokens: number }).completion_tokens;
      return n;
    }),
  );
  return counts.reduce((s, n) => s + n, 0) / ((performance.now() - t0) / 1000);
}

/** Gaps (ms) between streamed content chunks of CLIENTS clients streaming chats for `ms` milliseconds. */
async function interTokenGaps(ms: number): Promise<number[]> {
  const gaps: number[] = [];
  const end = performance.now() + ms;
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, c) => {
      for (let k = 0; performance.now() < end; k++) {
        const r = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...chatBody(`bench/u${c}`, c + 100 * k), stream: true }) });
        const reader = r.body!.getReader();
        let last = -1;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          const now = performance.now();
          const events = new TextDecoder().decode(value).split('\n\n').filter((e) => e.includes('"delta"')).length;
          if (last >= 0 && events > 0) gaps.push(now - last);
          if (events > 0) last = now;
        }
      }
    }),
  );
  return gaps;
}

const p99 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(0.99 * xs.length))] ?? NaN;

// Warm up, then the two throughput runs, alternated `--rounds` times (the median of each) so a noisy moment does not decide.
await throughput((c) => `bench/u${c}`);
const one: number[] = [];
const many: number[] = [];
for (let r = 0; r < Number(values.rounds); r++) {
  one.push(await throughput(() => 'bench/u0'));
  many.push(await throughput((c) => `bench/u${c}`));
}

const ITL_MS = 4000;
const idleGaps = await interTokenGaps(ITL_MS);

// Training meanwhile: feedback on one reply of the trainee adapter, again as soon as each update ends.
const reply = await post('/v1/chat/completions', chatBody('bench/trainee', 0));
let training = true;
let steps = 0;
let stepMs = 0;
const trainer = (async () => {
  while (training) {
    const job = await post('/v1/feedback', { lora_id: 'bench/trainee', completion_id: reply.id, feedback: 'Please answer in upper case.' });
    for (;;) {
      const j = (await (await fetch(`${base}/v1/feedback/jobs/${String(job.job_id)}`)).json()) as { status: string; result?: { metrics?: { timings?: { totalMs?: number } } } };
      if (j.status === 'done' || j.status === 'failed') {
        steps++;
        stepMs += j.result?.metrics?.timings?.totalMs ?? 0;
        break;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }
})();
await new Promise((r) => setTimeout(r, 300));
const t0 = performance.now();
const trainingGaps = await interTokenGaps(ITL_MS);
const window = performance.now() - t0;
training = false;
await trainer;

clearInterval(sampler);
proc.kill('SIGTERM');
await new Promise((r) => proc.on('exit', r));

// In process: the engine call itself.
const engine = await Engine.open(modelDir, { backend: 'cpu' });
// Adapters of the shape the server gives new ones (the model's training profile), as above.
const shape = readTrainingProfile(modelDir, engine.config.hiddenSize).lora;
const adapters = Array.from({ length: 16 }, (_, i) => engine.createAdapter({ rank: shape.rank, alpha: shape.alpha, targetModules: shape.targetModules, seed: i }));
const greedy = { temperature: 0, topP: 1, topK: 0, topLogprobs: 0 };
let seqs: Sequence[] = [];
// Before each iteration, sequences whose caches have grown past 64 tokens start again from a
// 24-token prompt (outside the timing), so every task decodes at the same cache lengths.
const fresh = async () => {
  if (seqs.length > 0 && seqs[0]!.length < 64) return;
  for (const s of seqs) s.dispose();
  seqs = Array.from({ length: 16 }, (_, i) => engine.createSequence(i));
  await engine.decode(seqs.map((sequence, i) => ({ sequence, ids: Array.from({ length: 24 }, (_, j) => 3 + ((i + j) % 40)), sampling: greedy })));
};
const bench = new Bench({ time: 1500, warmupTime: 200 });
const hooks = { beforeEach: fresh };
bench
  .add('16 sequences, one adapter, one call', async () => {
    await engine.decode(seqs.map((sequence) => ({ sequence, adapter: adapters[0]!, ids: [5], sampling: greedy })));
  }, hooks)
  .add('16 sequences, 16 adapters, one call', async () => {
    await engine.decode(seqs.map((sequence, i) => ({ sequence, adapter: adapters[i]!, ids: [5], sampling: greedy })));
  }, hooks)
  .add('16 sequences, 16 adapters, 16 calls', async () => {
    await Promise.all(seqs.map((sequence, i) => engine.decode([{ sequence, adapter: adapters[i]!, ids: [5], sampling: greedy }])));
  }, hooks)
  .add('16 sequences, base model, one call', async () => {
    await engine.decode(seqs.map((sequence) => ({ sequence, adapter: null, ids: [5], sampling: greedy })));
  }, hooks);
await bench.run();
console.table(bench.table());
const mean = (i: number) => (bench.tasks[i]!.result as { latency: { mean: number } }).latency.mean;

const round = (x: number, d = 2) => Number(x.toFixed(d));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const oneTok = median(one);
const manyTok = median(many);
console.log(`throughput, ${CLIENTS} clients × ${CHATS} chats × ≤ ${TOKENS} tokens: one adapter ${one.map((x) => x.toFixed(0)).join(', ')} tok/s; ${CLIENTS} adapters ${many.map((x) => x.toFixed(0)).join(', ')} tok/s`);
console.log(`inter-token gaps: ${idleGaps.length} idle, ${trainingGaps.length} during training (${steps} updates in ${(window / 1000).toFixed(1)} s, steps ${(stepMs / Math.max(1, steps)).toFixed(0)} ms each)`);
console.log(
  JSON.stringify({
    one_adapter_tok_s: round(oneTok, 0),
    many_adapters_tok_s: round(manyTok, 0),
    ratio: round(manyTok / oneTok),
    p99_itl_idle_ms: round(p99(idleGaps)),
    p99_itl_training_ms: round(p99(trainingGaps)),
    itl_training_vs_idle: round(p99(trainingGaps) / p99(idleGaps)),
    updates_during_itl: steps,
    rss_mb: round(peakRss / 2 ** 20, 0),
    engine_many_vs_one_adapter: round(mean(0) / mean(1)),
    engine_one_adapter_vs_base: round(mean(3) / mean(0)),
    engine_one_call_vs_16_calls: round(mean(2) / mean(1)),
  }),
);
