// Faults: SIGKILL the server at chosen moments (while a long prompt is prefilling, while a feedback
// step runs, at a random time) and restart it each time. Afterwards every acknowledged feedback is
// stored exactly once and trained at most once, no job is left behind, and every version folder the
// database names is complete (none half-written is visible).
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { SqlDatabase, SqlValue } from '../../src/store/sql.js';
import { openStore } from '../../src/store/store.js';
import { post, sleep, startServer } from './server.js';

export interface FaultResult {
  kills: number;
  kill_moments: Record<string, number>;
  feedback_acked: number;
  feedback_lost: number;
  feedback_duplicated: number;
  jobs_trained_twice: number;
  jobs_unfinished: number;
  versions: number;
  versions_torn: number;
}

function safetensorsComplete(file: string): boolean {
  if (!existsSync(file)) return false;
  const buf = readFileSync(file);
  if (buf.length < 8) return false;
  const n = Number(buf.readBigUInt64LE(0));
  if (8 + n > buf.length) return false;
  try {
    const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { data_offsets?: [number, number] }>;
    const end = Math.max(0, ...Object.values(header).map((t) => t.data_offsets?.[1] ?? 0));
    return 8 + n + end === buf.length;
  } catch {
    return false;
  }
}

export async function runFaults(dir: string, kills: number, seed = 1): Promise<FaultResult> {
  const data = join(dir, 'faults');
  const adapter = 'soak/faults';
  const args = ['--batch-size', '2', '--batch-wait-ms', '50'];
  let rand = seed;
  const random = () => ((rand = (rand * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const acked = new Map<string, string>(); // idempotency key -> job id
  const moments: Record<string, number> = { prefill: 0, step: 0, random: 0 };
  let n = 0;

  for (let k = 0; k < kills; k++) {
    const server = await startServer(data, args);
    if (k === 0) await post(`${server.url}/v1/lora/init`, { lora_id: adapter, rank: 8, alpha: 16 });
    let stop = false;
    const sendFeedback = async () => {
      while (!stop) {
        const key = `fb-${n++}`;
        const r = await post(`${server.url}/v1/feedback`, { lora_id: adapter, messages: [{ role: 'user', content: `q ${key}` }], response: `answer ${key}`, feedback: 'Shorter, please.' }, { 'idempotency-key': key }).catch(() => null);
        if (r?.status === 202 || r?.status === 200) acked.set(key, r.json.job_id as string);
        await sleep(20);
      }
    };
    const chats = async () => {
      while (!stop) await post(`${server.url}/v1/chat/completions`, { model: adapter, messages: [{ role: 'user', content: 'word '.repeat(400) }], max_tokens: 8 }).catch(() => null);
    };
    const traffic = [sendFeedback(), chats(), chats()];
    const moment = (['prefill', 'step', 'random'] as const)[k % 3]!;
    if (moment === 'step') {
      // Kill as soon as a job is running (the step, the save or the rename is under way).
      for (let i = 0; i < 400; i++) {
        const running = [...acked.values()].slice(-8);
        const states = await Promise.all(running.map((id) => fetch(`${server.url}/v1/feedback/jobs/${id}`).then((r) => r.json() as Promise<{ status: string }>).catch(() => ({ status: '' }))));
        if (states.some((s) => s.status === 'running')) break;
        await sleep(5);
      }
    } else if (moment === 'prefill') {
      // The chats send 400-word prompts: a short delay lands inside a prefill.
      await sleep(30 + random() * 60);
    } else {
      await sleep(100 + random() * 1500);
    }
    await server.kill();
    moments[moment]!++;
    stop = true;
    await Promise.all(traffic);
  }

  // A last run lets every acknowledged job finish, then stops cleanly.
  const server = await startServer(data, args);
  for (let i = 0; i < 600; i++) {
    const m = await fetch(`${server.url}/v1/lora/${adapter}`).then((r) => r.ok);
    const store = await openStore(join(data, 'claas.db'));
    const open = await count(store.sql, "SELECT COUNT(*) AS n FROM jobs WHERE status IN ('queued', 'running')").finally(() => store.close());
    if (m && open === 0) break;
    await sleep(200);
  }
  await server.stop();

  const store = await openStore(join(data, 'claas.db'));
  const db = store.sql;
  try {
    let lost = 0;
    for (const id of acked.values()) {
      if ((await count(db, 'SELECT COUNT(*) AS n FROM jobs WHERE id = ?', [id])) !== 1 || (await count(db, 'SELECT COUNT(*) AS n FROM feedback_items WHERE job_id = ?', [id])) !== 1) lost++;
    }
    const duplicated = await count(db, 'SELECT COUNT(*) AS n FROM (SELECT idempotency_key FROM jobs WHERE idempotency_key IS NOT NULL GROUP BY idempotency_key HAVING COUNT(*) > 1) AS d');
    const twice = await count(db, 'SELECT COUNT(*) AS n FROM (SELECT job_id FROM adapter_versions WHERE job_id IS NOT NULL GROUP BY adapter_id, job_id HAVING COUNT(*) > 1) AS d');
    const unfinished = await count(db, "SELECT COUNT(*) AS n FROM jobs WHERE status IN ('queued', 'running')");
    const versions = (await db.query<{ version: number }>('SELECT version FROM adapter_versions WHERE adapter_id = ?', [adapter])).map((r) => r.version);
    const folder = join(data, 'adapters', ...adapter.split('/'));
    const names = new Set(versions.map((v) => `v${String(v).padStart(4, '0')}`));
    let torn = 0;
    for (const name of names) {
      const d = join(folder, name);
      if (!existsSync(d) || !statSync(d).isDirectory() || !existsSync(join(d, 'adapter_config.json')) || !safetensorsComplete(join(d, 'adapter_model.safetensors'))) torn++;
    }
    for (const entry of readdirSync(folder)) if (!names.has(entry)) torn++; // a folder the database does not name
    return {
      kills,
      kill_moments: moments,
      feedback_acked: acked.size,
      feedback_lost: lost,
      feedback_duplicated: duplicated,
      jobs_trained_twice: twice,
      jobs_unfinished: unfinished,
      versions: versions.length,
      versions_torn: torn,
    };
  } finally {
    await store.close();
  }
}

async function count(db: SqlDatabase, sql: string, params: SqlValue[] = []): Promise<number> {
  return (await db.query<{ n: number }>(sql, params))[0]!.n;
}
