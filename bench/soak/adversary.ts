// An attacker beside the schema-derived fuzzer: tenant bob, with a user key, sends wrong types in
// every field, arrays where strings go, oversized and overlong values, alice's ids everywhere an id
// goes, and alice's idempotency keys, while alice chats. Afterwards the database must show no effect
// of bob on alice (no job, version, record or eval run of hers created, changed or removed by him,
// none of his jobs holding her records, her keyed job still hers), no request may get a 5xx, and
// alice's chat latency under the flood is compared with her idle latency.
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { rng } from '../../src/model/random-model.js';
import { createKey, post, startServer } from './server.js';

export interface AdversaryResult {
  adversary_requests: number;
  adversary_5xx: number;
  adversary_status: Record<string, number>;
  cross_tenant_effects: string[];
  bystander_idle_p50_ms: number;
  bystander_idle_p99_ms: number;
  bystander_flood_p50_ms: number;
  bystander_flood_p99_ms: number;
  bystander_p99_ratio: number;
  bystander_chats: number;
}

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
};
const p99 = (xs: number[]) => quantile(xs, 0.99);

interface Snapshot {
  jobs: string[];
  versions: string[];
  records: string[];
  evalRuns: string[];
}

function snapshot(file: string): Snapshot & { bobJobsOnAlice: string[]; keyed: Record<string, string> } {
  const db = new Database(file, { readonly: true });
  try {
    const all = <T>(sql: string) => db.prepare(sql).all() as T[];
    return {
      jobs: all<{ id: string; status: string }>("SELECT id FROM jobs WHERE adapter_id LIKE 'alice/%' ORDER BY id").map((r) => r.id),
      versions: all<{ a: string; v: number; s: string; p: number | null }>("SELECT adapter_id a, version v, status s, parent_version p FROM adapter_versions WHERE adapter_id LIKE 'alice/%' ORDER BY 1, 2").map((r) => `${r.a}@${r.v}:${r.p}`),
      records: all<{ id: string }>("SELECT id FROM completions WHERE tenant = 'alice' ORDER BY id").map((r) => r.id),
      evalRuns: all<{ id: string }>("SELECT id FROM eval_runs WHERE tenant = 'alice' ORDER BY id").map((r) => r.id),
      // bob's jobs that trained on (or hold) alice's replies
      bobJobsOnAlice: all<{ id: string }>("SELECT j.id FROM jobs j JOIN feedback_items f ON f.job_id = j.id JOIN completions c ON instr(f.completion_id, c.id) > 0 WHERE j.adapter_id NOT LIKE 'alice/%' AND c.tenant = 'alice'").map((r) => r.id),
      keyed: Object.fromEntries(all<{ k: string; a: string }>('SELECT idempotency_key k, adapter_id a FROM jobs WHERE idempotency_key IS NOT NULL').map((r) => [r.k, r.a])),
    };
  } finally {
    db.close();
  }
}

export async function runAdversary(dir: string, count: number, seed = 11): Promise<AdversaryResult> {
  const data = join(dir, 'adversary');
  const aliceKey = createKey(data, 'alice', 'user');
  const bobKey = createKey(data, 'bob', 'user');
  const server = await startServer(data, ['--max-tokens', '16', '--rate-chat', '0', '--rate-feedback', '0', '--batch-size', '4', '--batch-wait-ms', '200']);
  const random = rng(seed);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(random() * a.length)]!;
  const alice = { authorization: `Bearer ${aliceKey}` };
  const bob = { authorization: `Bearer ${bobKey}` };
  try {
    // Alice's state: an adapter, replies, a keyed feedback job that trained, an eval run.
    await post(`${server.url}/v1/lora/init`, { lora_id: 'alice/mine', rank: 2, alpha: 4 }, alice);
    await post(`${server.url}/v1/lora/init`, { lora_id: 'bob/mine', rank: 2, alpha: 4 }, bob);
    const aliceChat = async (content: string) => {
      const t0 = performance.now();
      const r = await post(`${server.url}/v1/chat/completions`, { model: 'alice/mine', messages: [{ role: 'user', content }], max_tokens: 8 }, alice);
      return { ms: performance.now() - t0, id: String(r.json.id ?? ''), status: r.status };
    };
    const replies = [await aliceChat('my private note'), await aliceChat('another one')];
    const job = await post(`${server.url}/v1/feedback`, { lora_id: 'alice/mine', completion_id: replies[0]!.id, feedback: 'Shorter.' }, { ...alice, 'idempotency-key': 'alice-fb-1' });
    for (let i = 0; i < 200; i++) {
      const s = (await (await fetch(`${server.url}/v1/feedback/jobs/${String(job.json.job_id)}`, { headers: alice })).json()) as { status: string };
      if (s.status === 'done' || s.status === 'failed') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await post(`${server.url}/v1/eval/runs`, { seed: 1, styles: { caps: { before: 0, after: 1, events: 2 } } }, alice);
    const idle: number[] = [];
    // Warm first (compiled code, caches), so that idle is not slower for being early; then enough
    // idle chats that their p99 is not just the slowest one (the flood gives thousands).
    for (let i = 0; i < 200; i++) await aliceChat(`warm ${i}`);
    for (let i = 0; i < 300; i++) idle.push((await aliceChat(`idle ${i}`)).ms);
    const before = snapshot(join(data, 'claas.db'));

    // What bob sends: alice's things in every id, wrong shapes in every field.
    const aliceIds = [replies[0]!.id, replies[1]!.id];
    const aliceJob = String(job.json.job_id);
    const wrong = () => pick<unknown>([null, 12, -1, 1e308, true, [], {}, [aliceIds[0]], { $ne: null }, 'x'.repeat(100_000), '', 'alice/mine', aliceIds[1], '../alice/mine', 'ALICE/mine']);
    const item = (): Record<string, unknown> => {
      const base: Record<string, unknown> = { lora_id: pick(['bob/mine', 'alice/mine', 'bob/mine']), completion_id: pick([...aliceIds, [aliceIds[0]], 'chatcmpl-none']), feedback: 'be brief' };
      if (random() < 0.5) base[pick(['lora_id', 'completion_id', 'feedback', 'choice_index', 'prompt', 'messages', 'response', 'steps', 'learning_rate', 'training', 'memory'])] = wrong();
      return base;
    };
    const feedbackAs = (body: unknown, key?: string) => fetch(`${server.url}/v1/feedback`, { method: 'POST', headers: { ...bob, 'content-type': 'application/json', ...(key ? { 'idempotency-key': key } : {}) }, body: JSON.stringify(body) });
    // The known shapes of attack, sent in turn between the random ones.
    const crafted: (() => Promise<Response>)[] = [
      // a valid single item beside a batch whose item holds alice's id in an array
      () => feedbackAs({ lora_id: 'bob/mine', feedback: 'x', requests: [{ lora_id: 'bob/mine', completion_id: [aliceIds[0]], feedback: 'be brief' }] }),
      () => feedbackAs({ lora_id: 'bob/mine', prompt: 'q', response: 'r', feedback: 'x', requests: [{ lora_id: 'bob/mine', completion_id: [aliceIds[1]], feedback: 'be brief' }] }),
      // alice's idempotency key, on a valid item of bob's
      () => feedbackAs({ lora_id: 'bob/mine', prompt: 'q', response: 'r', feedback: 'x' }, 'alice-fb-1'),
      // the same, with 101 items and overlong feedback behind a valid single item
      () => feedbackAs({ lora_id: 'bob/mine', prompt: 'q', response: 'r', feedback: 'x', requests: Array.from({ length: 101 }, () => ({ lora_id: 'bob/mine', prompt: 'q', response: 'r', feedback: 'f'.repeat(5000) })) }),
    ];
    const attacks: (() => Promise<Response>)[] = [
      () => fetch(`${server.url}/v1/feedback`, { method: 'POST', headers: { ...bob, 'content-type': 'application/json', 'idempotency-key': pick(['alice-fb-1', 'k', 'alice-fb-2']) }, body: JSON.stringify(random() < 0.5 ? item() : { ...item(), requests: Array.from({ length: pick([1, 2, 65, 101]) }, item) }) }),
      () => fetch(`${server.url}/v1/feedback`, { method: 'POST', headers: { ...bob, 'content-type': 'application/json' }, body: JSON.stringify({ lora_id: 'bob/mine', prompt: 'x '.repeat(pick([10, 40_000])), response: 'ok', feedback: 'be brief' }) }),
      () => fetch(`${server.url}/v1/feedback/jobs/${encodeURIComponent(pick([aliceJob, `${aliceJob}x`, '..']))}`, { headers: bob }),
      () => fetch(`${server.url}/v1/completions/${encodeURIComponent(pick(aliceIds))}`, { method: pick(['GET', 'DELETE']), headers: bob }),
      () => fetch(`${server.url}/v1/lora/alice/mine${pick(['', '/export', '/export?version=1'])}`, { method: pick(['GET', 'DELETE']), headers: bob }),
      () => fetch(`${server.url}/v1/lora/alice/mine/rollback`, { method: 'POST', headers: { ...bob, 'content-type': 'application/json' }, body: JSON.stringify({ version: pick([1, 2, '1', [1]]) }) }),
      () => fetch(`${server.url}/v1/tenants/alice/data`, { method: 'DELETE', headers: bob }),
      () => fetch(`${server.url}/v1/lora/init`, { method: 'POST', headers: { ...bob, 'content-type': 'application/json' }, body: JSON.stringify({ lora_id: pick(['alice/mine', 'alice/new', ['alice/x'], 'bob/x'.repeat(50)]), rank: pick([2, -1, 1e12, '2']) }) }),
      () => fetch(`${server.url}/v1/chat/completions`, { method: 'POST', headers: { ...bob, 'content-type': 'application/json' }, body: JSON.stringify({ model: pick(['alice/mine', ['alice/mine'], 'alice/mine@v0001', 'bob/mine']), messages: pick([[{ role: 'user', content: wrong() }], wrong(), [{ role: 'assistant', content: '', tool_calls: [{ id: 'c', type: 'function', function: { name: 'n', arguments: '{bad' } }] }]]), max_tokens: pick([4, -1, 1e9, '4']) }) }),
      () => fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { ...bob, 'content-type': 'application/json' }, body: JSON.stringify({ model: pick(['random-tiny', 'alice/mine']), prompt: pick([Array.from({ length: 1500 }, () => 5), [5, 6], wrong()]), max_tokens: 1, prompt_logprobs: pick([1000, 2, -1, '5']) }) }),
      () => fetch(`${server.url}/v1/eval/runs`, { method: 'POST', headers: { ...bob, 'content-type': 'application/json' }, body: JSON.stringify({ seed: 1, styles: pick([{ x: null }, { x: { before: 0, after: 1 } }, wrong()]) }) }),
      () => fetch(`${server.url}/v1/eval/runs`, { headers: bob }),
      () => fetch(`${server.url}/v1/lora/import?lora_id=${encodeURIComponent(pick(['alice/imp', 'bob/imp']))}`, { method: 'POST', headers: { ...bob, 'content-type': 'application/gzip' }, body: 'not a tarball' }),
    ];

    const status: Record<string, number> = {};
    const leaks: string[] = [];
    let sent = 0;
    let flooding = true;
    const flood = Array.from({ length: 8 }, async () => {
      while (sent < count) {
        const n = sent++;
        try {
          const res = await (n % 10 === 0 ? crafted[(n / 10) % crafted.length]! : pick(attacks))();
          const text = await res.text();
          status[res.status] = (status[res.status] ?? 0) + 1;
          // An answer to bob that names alice's job, or quotes her replies' ids back, is a leak.
          if (res.status < 300 && text.includes(aliceJob)) leaks.push(`an answer to bob named alice's job (HTTP ${res.status})`);
        } catch {
          status.error = (status.error ?? 0) + 1;
        }
      }
    });
    const during: number[] = [];
    const bystander = (async () => {
      while (flooding) during.push((await aliceChat(`during ${during.length}`)).ms);
    })();
    await Promise.all(flood);
    flooding = false;
    await bystander;

    const after = snapshot(join(data, 'claas.db'));
    const effects: string[] = [];
    const sameOrGrown = (what: keyof Snapshot) => {
      const lost = before[what].filter((x) => !after[what].includes(x));
      if (lost.length > 0) effects.push(`alice's ${what} removed or changed: ${lost.slice(0, 3).join(', ')}`);
    };
    for (const what of ['jobs', 'versions', 'records', 'evalRuns'] as const) sameOrGrown(what);
    const newJobs = after.jobs.filter((x) => !before.jobs.includes(x));
    if (newJobs.length > 0) effects.push(`jobs on alice's adapter appeared while only bob sent: ${newJobs.length}`);
    const newVersions = after.versions.filter((x) => !before.versions.includes(x));
    if (newVersions.length > 0) effects.push(`versions of alice's adapter appeared: ${newVersions.join(', ')}`);
    const newEval = after.evalRuns.filter((x) => !before.evalRuns.includes(x));
    if (newEval.length > 0) effects.push(`eval runs under alice: ${newEval.length}`);
    if (after.bobJobsOnAlice.length > 0) effects.push(`bob's jobs hold alice's replies: ${after.bobJobsOnAlice.length}`);
    for (const [k, a] of Object.entries(after.keyed)) if (k.endsWith('alice-fb-1#0') && k.startsWith('alice') && a !== 'alice/mine') effects.push(`alice's keyed job now names ${a}`);
    effects.push(...new Set(leaks));
    if (!Object.entries(after.keyed).some(([k, a]) => k.startsWith('alice') && k.endsWith('alice-fb-1#0') && a === 'alice/mine')) effects.push("alice's idempotency key no longer names her job");

    const fiveXX = Object.entries(status).filter(([s]) => Number(s) >= 500).reduce((a, [, n]) => a + n, 0);
    const idleP99 = p99(idle);
    const floodP99 = p99(during);
    return {
      adversary_requests: sent,
      adversary_5xx: fiveXX,
      adversary_status: status,
      cross_tenant_effects: effects,
      bystander_idle_p50_ms: Math.round(quantile(idle, 0.5) * 10) / 10,
      bystander_idle_p99_ms: Math.round(idleP99 * 10) / 10,
      bystander_flood_p50_ms: Math.round(quantile(during, 0.5) * 10) / 10,
      bystander_flood_p99_ms: Math.round(floodP99 * 10) / 10,
      bystander_p99_ratio: Math.round((floodP99 / idleP99) * 100) / 100,
      bystander_chats: during.length,
    };
  } finally {
    await server.stop();
  }
}
