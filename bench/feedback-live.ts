// npm run bench:feedback-live: how long feedback takes to go live. Against `claas serve` as `npm start`
// runs it (the shipped toy model, the server's own training defaults) on loopback, it times each
// POST /v1/feedback until GET /v1/models/<adapter> serves the version that feedback made: first with
// --batch-size 1 --batch-wait-ms 0, then with the default batching (full batches posted one item at a
// time, and lone items that wait out the window). Updates the collapse guard refuses are counted, not
// timed. Prints progress lines, the medians of the step's phases, and as its last line one JSON object:
// {"p50_ms", "p99_ms", "batch_size": 1, ..., "default_batching": {...}, "refused", ...}.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { tempDir } from '../src/model/random-model.js';

const { values } = parseArgs({
  options: {
    iterations: { type: 'string', default: '30' },
    rounds: { type: 'string', default: '8' },
    lone: { type: 'string', default: '4' },
    'timeout-s': { type: 'string', default: '120' },
  },
});
const count = (name: string, v: string | undefined) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer (got ${v})`);
  return n;
};
const iterations = count('iterations', values.iterations);
const rounds = count('rounds', values.rounds);
const loneItems = count('lone', values.lone);
const timeoutMs = count('timeout-s', values['timeout-s']) * 1000;

const cli = fileURLToPath(new URL('../src/cli.js', import.meta.url));
const PROMPT = 'What is the opposite of hot?';
const FEEDBACK = 'Please answer in upper case.';
const POLL_MS = 2;
const JOB_POLL_MS = 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Server {
  url: string;
  proc: ChildProcess;
  data: string;
  exited: Promise<number | null>;
  log(): string;
}

const servers: Server[] = [];

async function startServer(args: string[]): Promise<Server> {
  const data = tempDir('claas-feedback-live-');
  // Per-request info logs would have the server write a line for every 2 ms poll; warn keeps the
  // measurement's own traffic from costing the server more than the requests themselves.
  const proc = spawn(process.execPath, [cli, 'serve', '--port', '0', '--data', data, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn' } });
  let out = '';
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  proc.stderr!.on('data', (d: Buffer) => (out = (out + d).slice(-20_000)));
  const server: Server = { url: '', proc, data, exited, log: () => out };
  servers.push(server);
  server.url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`claas serve did not listen within ${timeoutMs} ms:\n${out}`)), timeoutMs);
    proc.stdout!.on('data', (d: Buffer) => {
      out = (out + d).slice(-20_000);
      const m = out.match(/serving "[^"]+" at (\S+)\/v1/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`claas serve exited (${code}) before listening:\n${out}`));
    });
  });
  return server;
}

async function stopServer(s: Server): Promise<void> {
  if (s.proc.exitCode === null && s.proc.signalCode === null) {
    s.proc.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([s.exited, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), 15_000)))]);
    clearTimeout(timer);
    if (code === 'timeout') {
      s.proc.kill('SIGKILL');
      await s.exited;
    }
  }
  rmSync(s.data, { recursive: true, force: true });
  servers.splice(servers.indexOf(s), 1);
}

async function stopAll(): Promise<void> {
  for (const s of [...servers]) await stopServer(s);
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void stopAll().finally(() => process.exit(130));
  });
}

async function call(method: 'GET' | 'POST', url: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(url, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(timeoutMs) });
    const text = await res.text();
    // The per-key rate limit can refuse a burst; waiting as told keeps the run going without
    // counting that wait, since the clock starts only at an accepted POST.
    if (res.status === 429 && attempt < 5) {
      await sleep(1000 * Number(res.headers.get('retry-after') ?? 1));
      continue;
    }
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      json = { text };
    }
    if (res.status >= 400) throw new Error(`${method} ${url}: ${res.status} ${text.slice(0, 500)}`);
    return { status: res.status, json };
  }
}

interface Timings {
  teacherMs: number;
  baseMs: number;
  studentForwardMs: number;
  backwardMs: number;
  optimizerMs: number;
  totalMs: number;
}

interface JobView {
  job_id: string;
  status: 'queued' | 'running' | 'done' | 'failed';
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  result: { version: number; promoted: boolean; guard?: { reason?: string }; metrics?: { samples?: number; timings?: Timings; options?: unknown }; phases_ms?: Record<string, number> } | null;
  error: string | null;
}

const versionOf = (root: unknown, adapter: string): number => {
  const m = typeof root === 'string' ? root.match(/@v(\d+)$/) : null;
  if (!m || !(root as string).startsWith(`${adapter}@`)) throw new Error(`unexpected root for ${adapter}: ${String(root)}`);
  return Number(m[1]);
};

async function createAdapter(base: string, adapter: string): Promise<void> {
  await call('POST', `${base}/v1/lora/init`, { lora_id: adapter });
  const root = (await call('GET', `${base}/v1/models/${adapter}`)).json.root;
  if (versionOf(root, adapter) !== 1) throw new Error(`a new adapter should serve v0001, got ${String(root)}`);
}

async function chat(base: string, adapter: string): Promise<string> {
  const r = await call('POST', `${base}/v1/chat/completions`, { model: adapter, messages: [{ role: 'user', content: PROMPT }], max_tokens: 32 });
  return r.json.id as string;
}

interface Item {
  postedAt: number;
  jobId: string;
}

interface Outcome {
  /** Latencies of the items whose update was served, ms. */
  latencies: number[];
  refused: number;
  /** One entry per finished update (jobs batched together share it). */
  updates: JobView[];
}

/**
 * Posts one feedback per completion id, back to back, then polls the alias every 2 ms (and the jobs
 * every 20 ms) until every update is finished and each promoted version has been seen served.
 */
async function feedbackRound(base: string, adapter: string, completionIds: string[]): Promise<Outcome> {
  const items: Item[] = [];
  for (const cid of completionIds) {
    const postedAt = performance.now();
    const r = await call('POST', `${base}/v1/feedback`, { lora_id: adapter, completion_id: cid, feedback: FEEDBACK });
    if (r.status !== 202) throw new Error(`feedback: expected 202, got ${r.status}`);
    items.push({ postedAt, jobId: r.json.job_id as string });
  }
  const jobs = new Map<string, JobView>();
  // The first time the alias was seen at each version or later: a version can be overtaken between polls.
  const seenAt = new Map<number, number>();
  let seenMax = 0;
  let lastJobPoll = -Infinity;
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (performance.now() > deadline) throw new Error(`feedback on ${adapter} not served within ${timeoutMs} ms (jobs: ${JSON.stringify([...jobs.values()].map((j) => j.status))})`);
    const root = (await call('GET', `${base}/v1/models/${adapter}`)).json.root;
    const now = performance.now();
    const v = versionOf(root, adapter);
    for (let k = seenMax + 1; k <= v; k++) seenAt.set(k, now);
    seenMax = Math.max(seenMax, v);
    if (now - lastJobPoll >= JOB_POLL_MS) {
      lastJobPoll = now;
      for (const it of items) {
        const known = jobs.get(it.jobId);
        if (known && (known.status === 'done' || known.status === 'failed')) continue;
        jobs.set(it.jobId, (await call('GET', `${base}/v1/feedback/jobs/${it.jobId}`)).json as unknown as JobView);
      }
    }
    const finished = items.every((it) => {
      const j = jobs.get(it.jobId);
      return j !== undefined && (j.status === 'done' || j.status === 'failed');
    });
    if (finished) {
      const failed = [...jobs.values()].find((j) => j.status === 'failed');
      if (failed) throw new Error(`job ${failed.job_id} failed: ${failed.error}`);
      if (items.every((it) => !jobs.get(it.jobId)!.result!.promoted || jobs.get(it.jobId)!.result!.version <= seenMax)) break;
    }
    await sleep(POLL_MS);
  }
  const out: Outcome = { latencies: [], refused: 0, updates: [] };
  const versions = new Set<number>();
  for (const it of items) {
    const j = jobs.get(it.jobId)!;
    const r = j.result!;
    if (!versions.has(r.version)) {
      versions.add(r.version);
      out.updates.push(j);
    }
    if (r.promoted) out.latencies.push(seenAt.get(r.version)! - it.postedAt);
    else out.refused++;
  }
  return out;
}

/** Nearest-rank percentile. */
function pct(xs: number[], p: number): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}
const ms = (x: number | null) => (x === null ? null : Number(x.toFixed(1)));
const median = (xs: number[]) => ms(pct(xs, 50));

/** Where the time of an update goes: server-side queue and run times, and the step's own phases (medians). */
function breakdown(updates: JobView[]) {
  const started = updates.filter((u) => u.started_at !== null && u.finished_at !== null);
  const timed = updates.filter((u) => u.result?.metrics?.timings);
  const t = (k: keyof Timings) => median(timed.map((u) => u.result!.metrics!.timings![k]));
  return {
    updates: updates.length,
    queue_ms: median(started.map((u) => u.started_at! - u.created_at)),
    run_ms: median(started.map((u) => u.finished_at! - u.started_at!)),
    ...(timed.length > 0
      ? {
          step_ms: t('totalMs'),
          teacher_ms: t('teacherMs'),
          base_ms: t('baseMs'),
          student_forward_ms: t('studentForwardMs'),
          backward_ms: t('backwardMs'),
          optimizer_ms: t('optimizerMs'),
          // The rest of a run: cloning the adapter, writing the version, the collapse guard's probe replies, promotion.
          run_outside_step_ms: median(timed.filter((u) => u.started_at !== null && u.finished_at !== null).map((u) => u.finished_at! - u.started_at! - u.result!.metrics!.timings!.totalMs)),
        }
      : {}),
    // The run's own phases as the server timed them (samples, step, save, guard, promote).
    phases_ms: Object.fromEntries([...new Set(updates.flatMap((u) => Object.keys(u.result?.phases_ms ?? {})))].map((k) => [k, median(updates.flatMap((u) => (u.result?.phases_ms?.[k] === undefined ? [] : [u.result.phases_ms[k]!])))])),
  };
}

const fmt = (label: string, xs: number[]) => `${label}: n ${xs.length}, p50 ${ms(pct(xs, 50))} ms, p99 ${ms(pct(xs, 99))} ms`;

/**
 * The batching a server runs with, as it states it: the base model's `training.feedback_batch` in
 * GET /v1/models, else its start-up line, else the defaults in `claas serve --help`. The jobs' results
 * are checked against it afterwards.
 */
async function statedBatching(server: Server): Promise<{ batchSize: number; waitMs: number; from: string }> {
  const models = (await call('GET', `${server.url}/v1/models`)).json.data as { parent: string | null; training?: { feedback_batch?: { size?: number; wait_ms?: number } } }[];
  const fb = models.find((m) => m.parent === null)?.training?.feedback_batch;
  if (typeof fb?.size === 'number' && typeof fb.wait_ms === 'number') return { batchSize: fb.size, waitMs: fb.wait_ms, from: 'GET /v1/models' };
  const line = server.log().match(/feedback batches of (\d+) or ([\d.]+) ms/);
  if (line) return { batchSize: Number(line[1]), waitMs: Number(line[2]), from: 'start-up output' };
  const r = spawnSync(process.execPath, [cli, 'serve', '--help'], { encoding: 'utf8', timeout: 30_000 });
  const help = `${r.stdout}${r.stderr}`.match(/--batch-size <n> \((\d+)\)\s+--batch-wait-ms <n> \((\d+)\)/);
  if (help) return { batchSize: Number(help[1]), waitMs: Number(help[2]), from: 'claas serve --help' };
  throw new Error(`the server states no feedback batching (not in GET /v1/models, its output or --help):\n${server.log()}`);
}

/** The training defaults the server states for feedback without options, when it states them. */
async function statedTraining(server: Server): Promise<unknown> {
  const models = (await call('GET', `${server.url}/v1/models`)).json.data as { parent: string | null; training?: unknown }[];
  return models.find((m) => m.parent === null)?.training ?? null;
}

const t0 = performance.now();
try {
  // 1. One item per update, no wait.
  console.log('starting claas serve --batch-size 1 --batch-wait-ms 0 (default model) …');
  let server = await startServer(['--batch-size', '1', '--batch-wait-ms', '0']);
  console.log(`serving at ${server.url}`);
  const single = { latencies: [] as number[], refused: 0, updates: [] as JobView[] };
  {
    const adapter = 'bench/live-1';
    await createAdapter(server.url, adapter);
    for (let i = 0; i < iterations; i++) {
      const o = await feedbackRound(server.url, adapter, [await chat(server.url, adapter)]);
      single.latencies.push(...o.latencies);
      single.refused += o.refused;
      single.updates.push(...o.updates);
      const u = o.updates[0]!;
      const tm = u.result?.metrics?.timings;
      console.log(`  ${i + 1}/${iterations}: v${String(u.result!.version).padStart(4, '0')} ${u.result!.promoted ? `served after ${o.latencies[0]!.toFixed(1)} ms` : `refused by the guard (${u.result!.guard?.reason ?? 'no reason'})`}${tm ? `, step ${tm.totalMs.toFixed(1)} ms` : ''}`);
    }
  }
  const options = single.updates.find((u) => u.result?.metrics?.options)?.result?.metrics?.options;
  await stopServer(server);
  console.log(fmt('batch size 1', single.latencies) + `, refused ${single.refused}`);
  const singleBreakdown = breakdown(single.updates);
  console.log(`  where the time goes (medians): ${JSON.stringify(singleBreakdown)}`);

  // 2. The server's default batching: users post one item at a time.
  console.log('starting claas serve with its default batching …');
  server = await startServer([]);
  const stated = await statedBatching(server);
  console.log(`serving at ${server.url}; batches of ${stated.batchSize} items or ${stated.waitMs} ms (from ${stated.from})`);
  const training = await statedTraining(server);
  const full = { latencies: [] as number[], refused: 0, updates: [] as JobView[] };
  const lone = { latencies: [] as number[], refused: 0, updates: [] as JobView[] };
  {
    const adapter = 'bench/live-2';
    await createAdapter(server.url, adapter);
    for (let i = 0; i < rounds; i++) {
      // The chats come first so the feedback items arrive as close together as a batch needs.
      const ids: string[] = [];
      for (let k = 0; k < stated.batchSize; k++) ids.push(await chat(server.url, adapter));
      const o = await feedbackRound(server.url, adapter, ids);
      full.latencies.push(...o.latencies);
      full.refused += o.refused;
      full.updates.push(...o.updates);
      console.log(`  full batch ${i + 1}/${rounds}: ${o.updates.map((u) => `v${String(u.result!.version).padStart(4, '0')} (${u.result!.metrics?.samples ?? '?'} items${u.result!.promoted ? '' : ', refused'})`).join(', ')}; per item ${o.latencies.map((x) => x.toFixed(0)).join(', ')} ms`);
    }
    for (let i = 0; i < loneItems; i++) {
      const o = await feedbackRound(server.url, adapter, [await chat(server.url, adapter)]);
      lone.latencies.push(...o.latencies);
      lone.refused += o.refused;
      lone.updates.push(...o.updates);
      const u = o.updates[0]!;
      console.log(`  lone item ${i + 1}/${loneItems}: v${String(u.result!.version).padStart(4, '0')} ${u.result!.promoted ? `served after ${o.latencies[0]!.toFixed(1)} ms` : 'refused by the guard'}, queued ${u.started_at! - u.created_at} ms`);
    }
  }
  await stopServer(server);

  const observedBatch = Math.max(0, ...full.updates.map((u) => u.result?.metrics?.samples ?? 0));
  const observedWait = median(lone.updates.filter((u) => u.started_at !== null).map((u) => u.started_at! - u.created_at));
  if (observedBatch !== stated.batchSize) console.log(`note: the server states a batch size of ${stated.batchSize}, but the largest update trained on ${observedBatch} items`);
  if (observedWait !== null && Math.abs(observedWait - stated.waitMs) > Math.max(50, stated.waitMs * 0.1)) console.log(`note: the server states a wait of ${stated.waitMs} ms, but lone items waited ${observedWait} ms`);
  const all = [...full.latencies, ...lone.latencies];
  console.log(fmt('default batching, full batches', full.latencies));
  console.log(fmt('default batching, lone items', lone.latencies));
  console.log(fmt('default batching, all items', all) + `, refused ${full.refused + lone.refused}`);
  const fullBreakdown = breakdown(full.updates);
  const loneBreakdown = breakdown(lone.updates);
  console.log(`  full batches (medians): ${JSON.stringify(fullBreakdown)}`);
  console.log(`  lone items (medians): ${JSON.stringify(loneBreakdown)}`);

  console.log(
    JSON.stringify({
      p50_ms: ms(pct(single.latencies, 50)),
      p99_ms: ms(pct(single.latencies, 99)),
      batch_size: 1,
      wait_ms: 0,
      n: single.latencies.length,
      refused: single.refused,
      breakdown: singleBreakdown,
      default_batching: {
        batch_size: observedBatch,
        wait_ms: stated.waitMs,
        stated_by: stated.from,
        observed_wait_ms: observedWait,
        p50_ms: ms(pct(all, 50)),
        p99_ms: ms(pct(all, 99)),
        n: all.length,
        refused: full.refused + lone.refused,
        full_batch: { n: full.latencies.length, p50_ms: ms(pct(full.latencies, 50)), p99_ms: ms(pct(full.latencies, 99)), breakdown: fullBreakdown },
        lone_item: { n: lone.latencies.length, p50_ms: ms(pct(lone.latencies, 50)), p99_ms: ms(pct(lone.latencies, 99)), breakdown: loneBreakdown },
      },
      training_defaults: training,
      step_options: options ?? null,
      seconds: Number(((performance.now() - t0) / 1000).toFixed(1)),
    }),
  );
} finally {
  await stopAll();
}
