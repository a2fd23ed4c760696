// npm run soak:cluster: the cluster on one machine, under load and random SIGKILLs. It starts its own
// Postgres (initdb/pg_ctl on loopback), an S3 server (s3rver, an emulator, in this process), API nodes
// (`claas serve --no-train`) and trainers (`claas train-worker`) on the toy model, drives chat and
// feedback at random nodes for SOAK_SECONDS, and kills a node or a trainer at random every few
// seconds (some trainers while they train a step, some while they upload a version), restarting each.
// Then it waits for every acknowledged feedback job to end and checks, from the database and the
// object store: nothing acknowledged lost or stored twice, no job trained into two versions, no
// version torn (each row's objects complete, every file matching the manifest's sha256), and how long
// each promotion took to be served by every API node. Last line: the figures as JSON.
// SOAK_SECONDS (120), SOAK_API_NODES (2), SOAK_TRAINERS (2), SOAK_KILLS (12), SOAK_ADAPTERS (4).
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { tempDir } from '../src/model/random-model.js';
import { TOY_MODEL } from '../src/serve-command.js';
import { openObjectStore } from '../src/store/objects/object-store.js';
import { VersionStore } from '../src/store/objects/version-store.js';
import { startPostgres } from '../test/postgres-server.js';

const SECONDS = Number(process.env.SOAK_SECONDS ?? 120);
const API_NODES = Number(process.env.SOAK_API_NODES ?? 2);
const TRAINERS = Number(process.env.SOAK_TRAINERS ?? 2);
const KILLS = Number(process.env.SOAK_KILLS ?? 12);
const ADAPTERS = Number(process.env.SOAK_ADAPTERS ?? 4);
const LEASE_MS = 3000;
const cli = fileURLToPath(new URL('../src/cli.js', import.meta.url));
const t0 = performance.now();
const now = () => performance.now() - t0;
const log = (line: string) => process.stderr.write(`[${(now() / 1000).toFixed(1)} s] ${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pick = <T>(a: readonly T[]): T => a[Math.floor(Math.random() * a.length)]!;

// --- services: Postgres and S3 ---------------------------------------------------------------
interface S3rverInstance {
  run(): Promise<unknown>;
  close(): Promise<void>;
  httpServer: { address(): { port: number } };
}
const S3rver = createRequire(import.meta.url)('s3rver') as new (o: Record<string, unknown>) => S3rverInstance;
const s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: tempDir('claas-soak-s3-'), configureBuckets: [{ name: 'claas' }] });
await s3.run();
const objects = `s3://claas/soak?endpoint=${encodeURIComponent(`http://127.0.0.1:${s3.httpServer.address().port}`)}`;
// s3rver's own credentials, inherited by every node.
process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
process.env.AWS_REGION = 'us-east-1';
const postgres = await startPostgres();
const database = await postgres.createDatabase();
log(`postgres on port ${postgres.port}; objects at ${objects}`);

// --- processes -------------------------------------------------------------------------------
interface Node {
  role: 'api' | 'trainer';
  name: string;
  proc: ChildProcessWithoutNullStreams;
  address: string | null;
  /** This run of it (a restarted node is a new instance under the same name). */
  instance: number;
  startedAt: number;
  /** When it answered (API nodes: printed its address; trainers: took work). */
  readyAt: number | null;
  diedAt: number | null;
  alive: boolean;
  /** What it is doing now, from its last progress line (trainers): idle, step or upload. */
  phase: 'idle' | 'step' | 'upload';
  /** Called on each line it prints (a kill that waits for a phase listens here). */
  onLine: ((line: string) => void) | null;
}

const nodes: Node[] = [];
const promotions: { adapter: string; version: number; at: number }[] = [];
/** What each API node instance followed of other nodes' promotions, in order. */
const followed = new Map<number, { adapter: string; version: number; at: number }[]>();
const outputs: string[] = [];
/** SOAK_LOG=<file>: every line every node printed, for reading a failure afterwards. */
const fullLog = process.env.SOAK_LOG ? createWriteStream(process.env.SOAK_LOG) : null;

function startNode(role: Node['role'], name: string): Promise<Node> {
  const data = tempDir(`claas-soak-${name}-`);
  const common = ['--model', TOY_MODEL, '--database', database, '--objects', objects, '--data', data, '--threads', '1', '--lease-ms', String(LEASE_MS)];
  const args = role === 'api'
    ? ['serve', ...common, '--no-train', '--port', '0', '--rate-chat', '0', '--rate-feedback', '0']
    : ['train-worker', ...common, '--worker-name', name, '--batch-wait-ms', '200'];
  const proc = spawn(process.execPath, [cli, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn' } });
  proc.stdin.end();
  const node: Node = { role, name, proc, address: null, instance: nodes.length, startedAt: now(), readyAt: null, diedAt: null, alive: true, phase: 'idle', onLine: null };
  nodes.push(node);
  let buffer = '';
  const ready = new Promise<Node>((resolve, reject) => {
    const line = (text: string) => {
      outputs.push(`${name}: ${text}`);
      fullLog?.write(`${(now() / 1000).toFixed(3)} ${name}: ${text}\n`);
      if (outputs.length > 400) outputs.shift();
      const served = /serving "[^"]+" at (\S+)\/v1/.exec(text);
      if (served) {
        node.address = served[1]!;
        node.readyAt = now();
        resolve(node);
      }
      if (/^training as worker/.test(text)) {
        node.readyAt = now();
        resolve(node);
      }
      let m = /^adapter (\S+): training v(\d+)/.exec(text);
      if (m) node.phase = 'step';
      m = /^adapter (\S+): publishing v(\d+)/.exec(text);
      if (m) node.phase = 'upload';
      if (/^adapter \S+: v\d+ (published|was already published|not written|refused)/.test(text)) node.phase = 'idle';
      m = /^adapter (\S+): promoted v(\d+)/.exec(text);
      if (m) {
        node.phase = 'idle';
        promotions.push({ adapter: m[1]!, version: Number(m[2]), at: now() });
      }
      m = /^adapter (\S+): serving v(\d+) \(announced\)/.exec(text);
      if (m) followed.set(node.instance, [...(followed.get(node.instance) ?? []), { adapter: m[1]!, version: Number(m[2]), at: now() }]);
      node.onLine?.(text);
    };
    const feed = (d: Buffer) => {
      buffer += d.toString();
      let i: number;
      while ((i = buffer.indexOf('\n')) >= 0) {
        line(buffer.slice(0, i));
        buffer = buffer.slice(i + 1);
      }
    };
    proc.stdout.on('data', feed);
    proc.stderr.on('data', feed);
    proc.on('exit', (code, signal) => {
      node.alive = false;
      node.diedAt ??= now();
      reject(new Error(`${name} exited (${code ?? signal}) before it was ready:\n${outputs.filter((o) => o.startsWith(`${name}:`)).slice(-20).join('\n')}`));
    });
  });
  return ready;
}

const apiNames = Array.from({ length: API_NODES }, (_, i) => `api${i + 1}`);
const trainerNames = Array.from({ length: TRAINERS }, (_, i) => `trainer${i + 1}`);
await Promise.all([...apiNames.map((n) => startNode('api', n)), ...trainerNames.map((n) => startNode('trainer', n))]);
log(`${API_NODES} API nodes and ${TRAINERS} trainers up`);
const live = (role: Node['role']) => nodes.filter((n) => n.alive && n.role === role && (role === 'trainer' || n.address !== null));

// --- load ------------------------------------------------------------------------------------
const stats = { requests: 0, errors5xx: 0, connectionErrors: 0, other4xx: 0, feedbackSent: 0 };
const errorSamples: string[] = [];

/** A request to a random live API node; a node that dies under it is retried on another. */
async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  for (let attempt = 0; ; attempt++) {
    const node = pick(live('api'));
    if (!node) {
      await sleep(100);
      continue;
    }
    try {
      const res = await fetch(`${node.address}${path}`, { method, headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers }, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(60_000) });
      const json = (await res.json()) as Record<string, unknown>;
      stats.requests++;
      if (res.status >= 500) {
        stats.errors5xx++;
        if (errorSamples.length < 10) errorSamples.push(`${method} ${path} on ${node.name}: ${res.status} ${JSON.stringify(json).slice(0, 300)}`);
      } else if (res.status >= 400 && res.status !== 429) stats.other4xx++;
      return { status: res.status, body: json };
    } catch (err) {
      // Connection refused or reset: the node was killed (its port is gone); another node answers.
      stats.connectionErrors++;
      if (attempt > 50) throw err;
      await sleep(50);
    }
  }
}

const adapters = Array.from({ length: ADAPTERS }, (_, i) => `soak/a${i + 1}`);
for (const id of adapters) {
  const r = await call('POST', '/v1/lora/init', { lora_id: id, rank: 32, alpha: 64, target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] });
  if (r.status !== 201) throw new Error(`creating ${id}: ${r.status} ${JSON.stringify(r.body)}`);
}
const prompts = ['What is the opposite of hot?', 'Name three colours.', 'What is 3 plus 4?', 'What number comes after 17?', 'Repeat after me: river stone'];
const feedbackTexts = ['Please answer in upper case.', 'Keep your reply on one line.', 'End every reply with "Best wishes, Toy".', 'My name is Ana. Greet me by name.'];
/** Acknowledged feedback: idempotency key → the job ids every acknowledgement named. */
const acked = new Map<string, Set<string>>();
const completions: { id: string; adapter: string }[] = [];
let stopping = false;

async function chatClient(): Promise<void> {
  while (!stopping) {
    const adapter = pick(adapters);
    const r = await call('POST', '/v1/chat/completions', { model: adapter, messages: [{ role: 'user', content: pick(prompts) }], max_tokens: 16, temperature: 0.6 });
    if (r.status === 200) {
      completions.push({ id: String(r.body.id), adapter });
      if (completions.length > 200) completions.shift();
    }
    await sleep(20);
  }
}

async function feedbackClient(k: number): Promise<void> {
  for (let i = 0; !stopping; i++) {
    if (completions.length === 0) {
      await sleep(100);
      continue;
    }
    const key = `soak-${k}-${i}`;
    const completion = pick(completions);
    const body = { lora_id: completion.adapter, completion_id: completion.id, feedback: pick(feedbackTexts) };
    stats.feedbackSent++;
    // Sent again with the same key until acknowledged (a node killed mid-request never answered).
    for (let tries = 0; tries < 20; tries++) {
      const r = await call('POST', '/v1/feedback', body, { 'idempotency-key': key });
      if (r.status === 202 || r.status === 200) {
        const ids = acked.get(key) ?? new Set<string>();
        ids.add(String(r.body.job_id));
        acked.set(key, ids);
        break;
      }
      if (r.status === 429) await sleep(500);
      else if (r.status < 500) break;
    }
    await sleep(150 + Math.random() * 200);
  }
}

// --- kills -----------------------------------------------------------------------------------
const kills: { node: string; role: string; during: string; at: number }[] = [];

function kill(node: Node, during: string): void {
  if (!node.alive) return;
  node.proc.kill('SIGKILL');
  node.alive = false;
  node.diedAt = now();
  kills.push({ node: node.name, role: node.role, during, at: now() });
  log(`SIGKILL ${node.name} (${during})`);
}

/** Waits (up to `ms`) for a trainer to enter `phase`, and kills it the moment it does. */
function killIn(phase: 'step' | 'upload', ms: number): Promise<boolean> {
  const during = phase === 'step' ? 'during a step' : 'during a version upload';
  const trainers = live('trainer');
  const now = trainers.find((t) => t.phase === phase);
  if (now) {
    kill(now, during);
    return Promise.resolve(true);
  }
  return new Promise((resolve) => {
    const done = (hit: boolean) => {
      clearTimeout(timer);
      for (const t of trainers) t.onLine = null;
      resolve(hit);
    };
    const timer = setTimeout(() => done(false), ms);
    for (const t of trainers) {
      t.onLine = () => {
        if (t.alive && t.phase === phase) {
          kill(t, during);
          done(true);
        }
      };
    }
  });
}

async function killer(): Promise<void> {
  const gap = (SECONDS * 1000) / (KILLS + 1);
  for (let k = 0; k < KILLS && !stopping; k++) {
    await sleep(gap * (0.6 + 0.4 * Math.random()));
    const kind = k % 4;
    const before = kills.length;
    if (kind === 0 || kind === 2) {
      const victim = pick(live('api'));
      if (victim && live('api').length > 1) kill(victim, 'serving');
    } else if (kind === 1) {
      await killIn('step', 8000);
    } else if (!(await killIn('upload', 15_000))) {
      await killIn('step', 5000);
    }
    if (kills.length === before) {
      const victim = pick(live('trainer'));
      if (victim) kill(victim, 'idle');
    }
    const victim = kills.at(-1)!;
    // Restarted under its name, as a supervisor (Kubernetes) would.
    await sleep(300);
    const role = nodes.find((n) => n.name === victim.node)!.role;
    await startNode(role, victim.node).catch((err: unknown) => log(`restart of ${victim.node} failed: ${(err as Error).message}`));
  }
}

const load = [...Array.from({ length: 2 }, () => chatClient()), ...Array.from({ length: 3 }, (_, k) => feedbackClient(k))];
const killing = killer();
await sleep(SECONDS * 1000);
await killing;
stopping = true;
await Promise.all(load);
const loadSeconds = Math.round(now() / 1000);
log(`load stopped: ${stats.requests} requests, ${acked.size} feedback acknowledged, ${kills.length} kills; waiting for the queue to drain`);

// --- checks ----------------------------------------------------------------------------------
const db = new pg.Client({ connectionString: database });
await db.connect();
const ackedIds = new Set([...acked.values()].flatMap((s) => [...s]));
const drainDeadline = Date.now() + 180_000;
let open = ackedIds.size;
while (Date.now() < drainDeadline) {
  const r = await db.query<{ n: string }>("SELECT COUNT(*) AS n FROM jobs WHERE id = ANY($1) AND status NOT IN ('done', 'failed')", [[...ackedIds]]);
  open = Number(r.rows[0]!.n);
  if (open === 0) break;
  await sleep(500);
}
const jobs = (await db.query<{ id: string; status: string; idempotency_key: string | null; version: number | null; result_json: string | null; error: string | null; adapter_id: string }>('SELECT id, status, idempotency_key, version, result_json, error, adapter_id FROM jobs')).rows;
const byId = new Map(jobs.map((j) => [j.id, j]));
const lost = [...ackedIds].filter((id) => byId.get(id)?.status !== 'done' && byId.get(id)?.status !== 'failed').length;
const failed = [...ackedIds].filter((id) => byId.get(id)?.status === 'failed');
// One key, one job: a retry on another node after a kill must find the stored job, not store another.
const keyed = new Map<string, number>();
for (const j of jobs) if (j.idempotency_key) keyed.set(j.idempotency_key, (keyed.get(j.idempotency_key) ?? 0) + 1);
const duplicated = [...acked.values()].filter((s) => s.size > 1).length + [...keyed.values()].filter((n) => n > 1).length + jobs.filter((j) => !ackedIds.has(j.id)).length;
const versions = (await db.query<{ adapter_id: string; version: number; job_id: string | null; status: string }>('SELECT adapter_id, version, job_id, status FROM adapter_versions ORDER BY adapter_id, version')).rows;
const perJob = new Map<string, number>();
for (const v of versions) if (v.job_id) perJob.set(v.job_id, (perJob.get(v.job_id) ?? 0) + 1);
// A job is trained twice when two versions name it, or its result names a version other than its batch's.
const trainedTwice = [...perJob.values()].filter((n) => n > 1).length + jobs.filter((j) => j.status === 'done' && j.result_json && (JSON.parse(j.result_json) as { version?: number }).version !== j.version).length;
const store = new VersionStore(openObjectStore(objects));
let torn = 0;
const tornSamples: string[] = [];
for (const v of versions) {
  try {
    await store.fetch(v.adapter_id, v.version, join(tempDir('claas-soak-check-'), 'v'));
  } catch (err) {
    torn++;
    if (tornSamples.length < 5) tornSamples.push(`${v.adapter_id} v${v.version}: ${(err as Error).message}`);
  }
}
// From each promotion to every API node serving it: the first time each node that was up then reports serving that version or a later one (two promotions in quick succession may
// be followed in one step). A node up 5 s after without it counts as missed, at 5 s.
const visible: number[] = [];
let missed = 0;
for (const p of promotions) {
  let worst = 0;
  for (const n of nodes) {
    // A node that became ready after the promotion loaded the promoted version as it started.
    if (n.role !== 'api' || n.readyAt === null || n.readyAt > p.at || (n.diedAt !== null && n.diedAt < p.at)) continue;
    const seen = (followed.get(n.instance) ?? []).find((f) => f.adapter === p.adapter && f.version >= p.version && f.at >= p.at - 1000);
    if (seen) worst = Math.max(worst, seen.at - p.at);
    else if (n.diedAt === null || n.diedAt > p.at + 5000) {
      missed++;
      worst = 5000;
    }
  }
  visible.push(Math.max(0, worst));
}
visible.sort((a, b) => a - b);
const quantile = (q: number) => (visible.length === 0 ? null : Math.round(visible[Math.min(visible.length - 1, Math.floor(q * visible.length))]! * 10) / 10);
await db.end();
for (const n of nodes) if (n.alive) n.proc.kill('SIGTERM');
await sleep(1000);
await postgres.stop();
await s3.close();
if (errorSamples.length > 0) log(`5xx samples:\n${errorSamples.join('\n')}`);
if (tornSamples.length > 0) log(`torn versions:\n${tornSamples.join('\n')}`);
if (failed.length > 0) log(`failed jobs: ${failed.slice(0, 5).map((id) => `${id}: ${byId.get(id)?.error}`).join('; ')}`);
if (open > 0) log(`${open} acknowledged jobs had not ended after 180 s`);
console.log(
  JSON.stringify({
    api_nodes: API_NODES,
    trainers: TRAINERS,
    load_s: loadSeconds,
    requests: stats.requests,
    errors_5xx: stats.errors5xx,
    connection_errors: stats.connectionErrors,
    kills: kills.length,
    kills_by_kind: Object.fromEntries(['serving', 'during a step', 'during a version upload', 'idle'].map((k) => [k, kills.filter((x) => x.during === k).length])),
    feedback_acked: acked.size,
    feedback_lost: lost,
    feedback_failed: failed.length,
    feedback_duplicated: duplicated,
    jobs_trained_twice: trainedTwice,
    versions: versions.length,
    versions_torn: torn,
    promotions: promotions.length,
    promote_visible_missed: missed,
    promote_visible_p50_ms: quantile(0.5),
    promote_visible_p99_ms: quantile(0.99),
    wall_s: Math.round(now() / 1000),
  }),
);
process.exit(0);
