// The store suite: the same cases against SQLite and against a real Postgres server this test
// starts (test/postgres-server.ts). Migrations from empty and on reopen, completion records (exact
// token ids and log-probabilities), feedback jobs (idempotency, queue order, the pending bound,
// restarts, learned feedback, purges; claims under leases: batching, one trainer per adapter,
// heartbeats, expiry, MAX_ATTEMPTS), adapters and versions, API keys and eval runs; two processes'
// transactions (and claims) at once. Then what only one database has: SQLite's file (WAL, 0600,
// older schema versions) and Postgres's errors (an unreachable server named without its password).
// Without Postgres's server programs its half skips, except with CI=true, where that fails.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { ApiKeys } from '../src/auth/keys.js';
import { tempDir } from '../src/model/random-model.js';
import type { CompletionRecord } from '../src/store/completions.js';
import { MAX_ATTEMPTS, type FeedbackItem } from '../src/store/jobs.js';
import { redactUrl } from '../src/store/postgres.js';
import { POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS } from '../src/store/schema.js';
import { isUniqueViolation } from '../src/store/sql.js';
import { openStore, resolveDatabase, type Store } from '../src/store/store.js';
import { postgresBinDir, startPostgres, type PostgresServer } from './postgres-server.js';
import { cli, startServe } from './serve-child.js';

const pgBin = postgresBinDir();
const pgSkip = pgBin ? false : 'no Postgres server programs (initdb, pg_ctl): install the postgresql package';

const record: CompletionRecord = {
  id: 'chatcmpl-abc',
  createdAt: 1_700_000_000_000,
  model: 'me/style',
  adapter: 'me/style',
  adapterVersion: 'v3',
  tenant: 'ana',
  request: { messages: [{ role: 'user', content: 'hi' }], temperature: 0.7 },
  promptIds: [151644, 872, 198, 6023],
  enableThinking: false,
  choices: [
    { index: 0, outputIds: [9707, 0, 151645], outputLogprobs: [-0.25, -1.5, -0.0009765625], text: 'Hi!', finishReason: 'stop' },
    { index: 1, outputIds: [13048], outputLogprobs: [-3.75], text: 'Hey', finishReason: 'length' },
  ],
};

const item = (feedback: string): FeedbackItem => ({ completionId: null, choiceIndex: 0, messages: [{ role: 'user', content: 'q' }], responseText: 'r', feedback });

async function count(store: Store, table: string): Promise<number> {
  return (await store.sql.query<{ n: number }>(`SELECT COUNT(*) AS n FROM ${table}`))[0]!.n;
}

async function schemaVersion(store: Store): Promise<number> {
  if (store.sql.dialect === 'sqlite') return (await store.sql.query<{ user_version: number }>('PRAGMA user_version'))[0]!.user_version;
  return (await store.sql.query<{ v: number }>('SELECT MAX(version) AS v FROM schema_migrations'))[0]!.v;
}

/** The cases every database passes; `fresh` names a new, empty database. */
function storeCases(fresh: () => Promise<string>) {
  const opened: Store[] = [];
  const open = async (database: string) => {
    const store = await openStore(database);
    opened.push(store);
    return store;
  };
  after(async () => {
    for (const s of opened) await s.close().catch(() => {});
  });

  test('an empty database gets the whole schema; opening it again changes nothing', async () => {
    const database = await fresh();
    const store = await open(database);
    const latest = store.sql.dialect === 'sqlite' ? SQLITE_MIGRATIONS.length : POSTGRES_MIGRATIONS.length;
    assert.equal(await schemaVersion(store), latest);
    for (const table of ['completions', 'completion_choices', 'adapters', 'adapter_versions', 'jobs', 'feedback_items', 'api_keys', 'eval_runs']) assert.equal(await count(store, table), 0, table);
    await store.completions.save(record);
    await store.close();
    // Several servers starting at once on one database: each finds it migrated, or migrates it once.
    const [a, b, c] = await Promise.all([open(database), open(database), open(database)]);
    for (const s of [a!, b!, c!]) assert.equal(await schemaVersion(s), latest);
    assert.deepEqual(await a!.completions.get(record.id), record);
  });

  test('a completion record round-trips exactly; a second save of its id fails whole', async () => {
    const store = await open(await fresh());
    await store.completions.save(record);
    assert.deepEqual(await store.completions.get('chatcmpl-abc'), record);
    assert.equal(await store.completions.get('nope'), undefined);
    await assert.rejects(store.completions.save(record), (err) => isUniqueViolation(err));
    // A record whose second choice fails leaves nothing behind.
    const torn = { ...record, id: 'chatcmpl-torn', choices: [record.choices[0]!, record.choices[0]!] };
    await assert.rejects(store.completions.save(torn), (err) => isUniqueViolation(err));
    assert.equal(await store.completions.get('chatcmpl-torn'), undefined);
    assert.equal(await count(store, 'completion_choices'), 2);
  });

  test('many writes and reads at once from one server: every transaction lands whole', async () => {
    const store = await open(await fresh());
    const ids = Array.from({ length: 24 }, (_, i) => `chatcmpl-${i}`);
    const reads: Promise<unknown>[] = [];
    await Promise.all(
      ids.map(async (id, i) => {
        reads.push(store.completions.get(ids[0]!), store.jobs.queuedIds());
        await store.completions.save({ ...record, id });
        if (i % 3 === 0) await store.jobs.submit([{ adapterId: 't/a', options: {}, items: [item(id)] }]);
      }),
    );
    await Promise.all(reads);
    for (const id of ids) assert.deepEqual(await store.completions.get(id), { ...record, id });
    assert.equal(await count(store, 'completion_choices'), 48);
    assert.equal((await store.jobs.queuedIds()).length, 8);
  });

  test('a reply is found by its adapter, text, last user message and tenant; records are deleted by id, tenant and age', async () => {
    const store = await open(await fresh());
    await store.completions.save(record);
    await store.completions.save({ ...record, id: 'chatcmpl-bob', tenant: 'bob', createdAt: record.createdAt + 10, request: { messages: [{ role: 'user', content: 'hi' }] } });
    await store.completions.save({ ...record, id: 'chatcmpl-new', createdAt: record.createdAt + 1_000_000 });
    assert.deepEqual(await store.completions.findReply('me/style', 'hi', 'Hey', 'ana'), { completionId: 'chatcmpl-new', choiceIndex: 1 });
    assert.deepEqual(await store.completions.findReply('me/style', 'hi', 'Hi!', 'bob'), { completionId: 'chatcmpl-bob', choiceIndex: 0 });
    assert.deepEqual(await store.completions.findReply('me/style', 'hi', 'Hi!', null), { completionId: 'chatcmpl-new', choiceIndex: 0 });
    assert.equal(await store.completions.findReply('me/style', 'hello', 'Hi!', null), null);
    assert.equal(await store.completions.findReply('other/adapter', 'hi', 'Hi!', null), null);

    assert.equal(await store.completions.deleteOlderThan(record.createdAt + 11), 2);
    assert.equal(await store.completions.get('chatcmpl-abc'), undefined);
    assert.ok(await store.completions.get('chatcmpl-new'));
    assert.equal(await count(store, 'completion_choices'), 2, 'their choices went with them');
    assert.equal(await store.completions.deleteByTenant('ana'), 1);
    assert.equal(await store.completions.delete('chatcmpl-new'), false);
    await store.completions.save(record);
    assert.equal(await store.completions.delete('chatcmpl-abc'), true);
    assert.equal(await count(store, 'completions'), 0);
  });

  test('jobs: stored in order, found again by their idempotency key, bounded per adapter', async () => {
    const store = await open(await fresh());
    const { ids } = (await store.jobs.submit([{ adapterId: 't/a', options: { steps: 2 }, items: [item('one'), item('two')] }, { adapterId: 't/b', options: {}, items: [item('three')] }], { idempotencyKey: 'k1' })) as { ids: string[] };
    assert.equal(ids.length, 2);
    const again = await store.jobs.submit([{ adapterId: 't/a', options: {}, items: [item('other')] }, { adapterId: 't/b', options: {}, items: [item('x')] }], { idempotencyKey: 'k1' });
    assert.deepEqual(again, { ids, repeated: true });
    for (let i = 0; i < 5; i++) await store.jobs.submit([{ adapterId: 't/a', options: {}, items: [item(`more ${i}`)] }]);
    const queued = await store.jobs.queuedIds();
    assert.equal(queued.length, 7);
    assert.deepEqual(queued.slice(0, 2), ids, 'oldest first; one millisecond keeps the order of submission');
    assert.deepEqual((await store.jobs.recentIds(3)).reverse(), queued.slice(4));
    const job = (await store.jobs.get(ids[0]!))!;
    assert.deepEqual({ adapterId: job.adapterId, status: job.status, options: job.options, items: job.items.map((it) => it.feedback) }, { adapterId: 't/a', status: 'queued', options: { steps: 2 }, items: ['one', 'two'] });
    assert.deepEqual(job.items[0], item('one'));
    assert.equal(await store.jobs.get('job-none'), undefined);

    assert.equal(await store.jobs.pending('t/a'), 6);
    assert.deepEqual(await store.jobs.submit([{ adapterId: 't/b', options: {}, items: [item('y')] }, { adapterId: 't/a', options: {}, items: [item('z')] }], { maxPending: 6 }), { refused: { adapterId: 't/a', pending: 6 } });
    assert.equal((await store.jobs.queuedIds()).length, 7, 'nothing of a refused submission is stored');
    assert.equal((await store.jobs.submit([{ adapterId: 't/b', options: {}, items: [item('y')] }], { maxPending: 6 })).refused, undefined);
  });

  test('an interrupted job runs again after a restart, until the server has stopped during it MAX_ATTEMPTS times', async () => {
    const database = await fresh();
    let store = await open(database);
    const [id] = ((await store.jobs.submit([{ adapterId: 't/a', options: {}, items: [item('f')] }])) as { ids: string[] }).ids;
    for (let start = 1; start <= MAX_ATTEMPTS; start++) {
      await store.jobs.markRunning([id!]);
      assert.equal((await store.jobs.get(id!))!.status, 'running');
      await store.close(); // the process dies during the update
      store = await open(database);
      await store.jobs.requeueInterrupted();
      const job = (await store.jobs.get(id!))!;
      if (start < MAX_ATTEMPTS) {
        assert.equal(job.status, 'queued', `after stop ${start} it runs again`);
        assert.equal(job.startedAt, null);
      } else {
        assert.equal(job.status, 'failed');
        assert.match(job.error!, new RegExp(`stopped during this update ${MAX_ATTEMPTS} times`));
        assert.deepEqual(await store.jobs.queuedIds(), []);
      }
    }
  });

  test('claims: the oldest job with the queued jobs of identical options; one trainer per adapter; heartbeats; finish only by the lease owner', async () => {
    const store = await open(await fresh());
    for (const id of ['t/a', 't/b']) await store.adapters.create({ id, rank: 2, alpha: 4, targetModules: ['q_proj'] });
    const submit = async (adapterId: string, options: Record<string, unknown>, n: number) => ((await store.jobs.submit([{ adapterId, options, items: Array.from({ length: n }, (_, i) => item(`${adapterId} ${i}`)) }])) as { ids: string[] }).ids[0]!;
    const a1 = await submit('t/a', {}, 1);
    const a2 = await submit('t/a', { steps: 2 }, 1);
    const a3 = await submit('t/a', {}, 2);
    const a4 = await submit('t/a', {}, 1);
    const b1 = await submit('t/b', {}, 1);
    const opts = { leaseMs: 60_000, maxItems: 3, sameOptions: true };

    const one = (await store.jobs.claim('w1', opts))!;
    assert.deepEqual({ adapterId: one.adapterId, version: one.version, ids: one.jobs.map((j) => j.id) }, { adapterId: 't/a', version: 2, ids: [a1, a3] }, 'a4 would pass maxItems; a2 has other options');
    for (const j of one.jobs) assert.deepEqual([j.status, j.leaseOwner, j.attempts, j.version], ['running', 'w1', 1, 2]);
    assert.ok(one.jobs[0]!.leaseUntil! > Date.now() + 50_000);

    assert.equal(await store.jobs.claim('w2', { ...opts, adapterId: 't/a' }), null, 't/a is leased');
    const two = (await store.jobs.claim('w2', opts))!;
    assert.deepEqual({ adapterId: two.adapterId, version: two.version, ids: two.jobs.map((j) => j.id) }, { adapterId: 't/b', version: 2, ids: [b1] });
    assert.equal(await store.jobs.claim('w3', opts), null, 'both adapters are leased');

    const before = (await store.jobs.get(a1))!.leaseUntil!;
    assert.equal(await store.jobs.heartbeat('w1', [a1, a3], 120_000), true);
    assert.ok((await store.jobs.get(a1))!.leaseUntil! > before + 50_000, 'the heartbeat extended the lease');
    assert.equal(await store.jobs.heartbeat('w2', [a1], 120_000), false, 'not its lease');

    assert.equal(await store.jobs.finish([a1, a3], 'done', { promoted: true }, null, 'w2'), 0, 'a non-owner finishes nothing');
    assert.equal((await store.jobs.get(a1))!.status, 'running');
    await store.adapters.addVersion('t/a', 2, { parent: 1, status: 'candidate', jobId: a1 });
    assert.equal(await store.jobs.finish([a1, a3], 'done', { promoted: true }, null, 'w1'), 2);
    assert.deepEqual([(await store.jobs.get(a1))!.status, (await store.jobs.get(a1))!.leaseOwner], ['done', null]);

    const three = (await store.jobs.claim('w3', { ...opts, adapterId: 't/a' }))!;
    assert.deepEqual({ version: three.version, ids: three.jobs.map((j) => j.id) }, { version: 3, ids: [a2] }, 'the oldest left, alone with its options; the next version');
    const four = (await store.jobs.claim('w1', { ...opts, sameOptions: false }))!;
    assert.equal(four, null, 't/a is leased again, t/b still');
    assert.equal(await store.jobs.finish([a2], 'failed', null, 'broke', 'w3'), 1);
    const five = (await store.jobs.claim('w1', opts))!;
    assert.deepEqual({ version: five.version, ids: five.jobs.map((j) => j.id) }, { version: 3, ids: [a4] }, 'a batch that wrote nothing leaves its version to the next');
  });

  test('an expired lease is taken over with the same jobs and version, attempts counted, until MAX_ATTEMPTS gives up', async () => {
    const store = await open(await fresh());
    await store.adapters.create({ id: 't/a', rank: 2, alpha: 4, targetModules: ['q_proj'] });
    const { ids } = (await store.jobs.submit([{ adapterId: 't/a', options: {}, items: [item('x')] }, { adapterId: 't/a', options: {}, items: [item('y')] }])) as { ids: string[] };
    const opts = { leaseMs: 40, maxItems: 4, sameOptions: true };
    const expire = () => new Promise((r) => setTimeout(r, 60));
    const first = (await store.jobs.claim('w1', opts))!;
    assert.deepEqual([first.version, first.jobs.map((j) => j.id)], [2, ids]);
    await expire(); // w1 died
    const late = ((await store.jobs.submit([{ adapterId: 't/a', options: {}, items: [item('late')] }])) as { ids: string[] }).ids[0]!;
    assert.deepEqual(await store.jobs.claimableIds('t/a'), [...ids, late]);
    for (let attempt = 2; attempt <= MAX_ATTEMPTS; attempt++) {
      const again = (await store.jobs.claim(`w${attempt}`, opts))!;
      assert.deepEqual([again.version, again.jobs.map((j) => j.id)], [2, ids], 'the same batch, the same version; the late job waits');
      for (const j of again.jobs) assert.deepEqual([j.attempts, j.leaseOwner], [attempt, `w${attempt}`]);
      assert.equal(await store.jobs.heartbeat(`w${attempt - 1}`, ids, 60_000), false, 'the dead trainer lost them');
      assert.equal(await store.jobs.finish(ids, 'done', null, null, `w${attempt - 1}`), 0);
      await expire();
    }
    const next = (await store.jobs.claim('w9', opts))!;
    assert.deepEqual([next.version, next.jobs.map((j) => j.id)], [2, [late]], 'the batch gave up; its version was never written');
    for (const id of ids) {
      const job = (await store.jobs.get(id))!;
      assert.equal(job.status, 'failed');
      assert.match(job.error!, new RegExp(`stopped during this update ${MAX_ATTEMPTS} times`));
    }
  });

  test('a restart requeues its running jobs with their version; a shared queue keeps live leases', async () => {
    const store = await open(await fresh());
    const { ids } = (await store.jobs.submit([{ adapterId: 't/a', options: {}, items: [item('x')] }, { adapterId: 't/b', options: {}, items: [item('y')] }])) as { ids: string[] };
    const a = (await store.jobs.claim('w1', { leaseMs: 60_000, maxItems: 4, sameOptions: true }))!;
    await store.jobs.markRunning([ids[1]!]);
    assert.equal(await store.jobs.requeueInterrupted({ onlyExpired: true }), 1, 'only the job held without a lease');
    assert.equal((await store.jobs.get(ids[0]!))!.status, 'running');
    assert.equal(await store.jobs.requeueInterrupted({ onlyExpired: true, worker: 'w9' }), 0, "another worker's live lease stays");
    assert.equal(await store.jobs.requeueInterrupted({ onlyExpired: true, worker: 'w1' }), 1, 'a restarted w1 takes its own back');
    const held = (await store.jobs.claim('w1', { leaseMs: 60_000, maxItems: 4, sameOptions: true }))!;
    assert.deepEqual([held.version, held.jobs[0]!.attempts], [a.version, 2]);
    assert.equal(await store.jobs.requeueInterrupted(), 1);
    const job = (await store.jobs.get(ids[0]!))!;
    assert.deepEqual([job.status, job.version, job.leaseOwner, job.attempts], ['queued', a.version, null, 2]);
    const b = (await store.jobs.claim('w2', { leaseMs: 60_000, maxItems: 4, sameOptions: true, adapterId: 't/a' }))!;
    assert.deepEqual([b.version, b.jobs[0]!.attempts], [a.version, 3]);
  });

  test('finished jobs: results kept, the feedback of served updates remembered, their text purged by age and tenant', async () => {
    const store = await open(await fresh());
    const submit = async (adapterId: string, texts: string[]) => ((await store.jobs.submit([{ adapterId, options: {}, items: texts.map(item) }])) as { ids: string[] }).ids[0]!;
    const a = await submit('t/a', ['be brief', 'no emoji']);
    const b = await submit('t/a', ['rejected one']);
    const c = await submit('t/a', ['be brief', 'sign off']);
    const d = await submit('u/a', ['other tenant']);
    const e = await submit('t/a', ['still queued']);
    await store.jobs.markRunning([a, b, c, d]);
    await store.jobs.finish([a], 'done', { promoted: true, version: 2 }, null);
    await store.jobs.finish([b], 'done', { promoted: false }, null);
    await store.jobs.finish([c, d], 'done', { promoted: true }, null);
    const done = (await store.jobs.get(a))!;
    assert.equal(done.status, 'done');
    assert.deepEqual(done.result, { promoted: true, version: 2 });
    assert.ok(done.finishedAt! >= done.startedAt!);
    await store.jobs.markRunning([e]);
    await store.jobs.finish([e], 'failed', null, 'it broke');
    assert.deepEqual({ status: (await store.jobs.get(e))!.status, error: (await store.jobs.get(e))!.error }, { status: 'failed', error: 'it broke' });

    // Newest served first, distinct, then oldest first: what the teacher reads as earlier feedback.
    assert.deepEqual(await store.jobs.learnedFeedback('t/a', 10), ['no emoji', 'be brief', 'sign off']);
    assert.deepEqual(await store.jobs.learnedFeedback('t/a', 2), ['be brief', 'sign off']);
    assert.deepEqual(await store.jobs.learnedFeedback('t/a', 10, ['sign off']), ['no emoji', 'be brief']);
    assert.deepEqual(await store.jobs.learnedFeedback('t/none', 10), []);

    const queued = await submit('t/a', ['queued text']);
    assert.equal(await store.jobs.purgeFeedback({ before: Date.now() + 1, tenant: 'u' }), 1);
    assert.equal((await store.jobs.get(d))!.items.length, 0);
    assert.equal((await store.jobs.get(a))!.items.length, 2, "another tenant's text stays");
    assert.equal(await store.jobs.purgeFeedback({ before: 0 }), 0);
    assert.equal(await store.jobs.purgeFeedback({ before: Date.now() + 1 }), 6);
    assert.equal((await store.jobs.get(queued))!.items.length, 1, 'queued feedback is never purged');
    assert.equal((await store.jobs.get(a))!.status, 'done', 'the job and its result stay');
  });

  test('adapters and versions: created once, versions added and promoted or rejected, deleted with their versions', async () => {
    const store = await open(await fresh());
    assert.equal(await store.adapters.create({ id: 't/b', rank: 8, alpha: 16, targetModules: ['q_proj'] }), true);
    assert.equal(await store.adapters.create({ id: 't/a', rank: 4, alpha: 0.5, targetModules: ['q_proj', 'v_proj'], reason: 'imported' }), true);
    assert.equal(await store.adapters.create({ id: 't/a', rank: 2, alpha: 1, targetModules: [] }), false);
    const a = (await store.adapters.get('t/a'))!;
    assert.deepEqual({ ...a, createdAt: 0, versions: a.versions.map((v) => ({ ...v, createdAt: 0 })) }, {
      id: 't/a',
      createdAt: 0,
      rank: 4,
      alpha: 0.5,
      targetModules: ['q_proj', 'v_proj'],
      currentVersion: 1,
      versions: [{ version: 1, createdAt: 0, parentVersion: null, status: 'initial', reason: 'imported', metrics: null, jobId: null }],
    });
    assert.equal(await store.adapters.get('t/none'), undefined);
    assert.equal(await store.adapters.latestVersion('t/a'), 1);
    await store.adapters.addVersion('t/a', 2, { parent: 1, status: 'candidate', metrics: { loss: 0.125 }, jobId: 'job-2' });
    await store.adapters.addVersion('t/a', 3, { parent: 2, status: 'candidate', jobId: 'job-3' });
    assert.equal(await store.adapters.latestVersion('t/a'), 3);
    assert.equal(await store.adapters.versionOfJob('t/a', 'job-3'), 3);
    assert.equal(await store.adapters.versionOfJob('t/a', 'job-9'), undefined);
    assert.equal(await store.adapters.versionOfJob('t/b', 'job-3'), undefined);
    await store.adapters.promote('t/a', 2);
    await store.adapters.reject('t/a', 3, 'KL to the served version too high');
    const after = (await store.adapters.get('t/a'))!;
    assert.equal(after.currentVersion, 2);
    assert.deepEqual(after.versions.map((v) => [v.version, v.status, v.reason, v.metrics]), [
      [1, 'initial', 'imported', null],
      [2, 'promoted', null, { loss: 0.125 }],
      [3, 'rejected', 'KL to the served version too high', null],
    ]);
    await store.adapters.promote('t/a', 1);
    assert.equal((await store.adapters.get('t/a'))!.versions[0]!.status, 'initial', 'rolling back to the first version keeps it initial');
    assert.deepEqual((await store.adapters.list()).map((x) => [x.id, x.versions.length]), [['t/a', 3], ['t/b', 1]]);
    await assert.rejects(store.adapters.addVersion('t/a', 3, { parent: 2, status: 'candidate' }), (err) => isUniqueViolation(err));

    assert.equal(await store.adapters.delete('t/a'), true);
    assert.equal(await store.adapters.delete('t/a'), false);
    assert.equal(await store.adapters.get('t/a'), undefined);
    assert.equal(await count(store, 'adapter_versions'), 1, "the deleted adapter's versions went with it");
    assert.equal(await store.adapters.latestVersion('t/a'), 0);
  });

  test('API keys: only a hash is stored; a revoked key stops working', async () => {
    const store = await open(await fresh());
    const keys = new ApiKeys(store.apiKeys);
    assert.equal(await keys.hasActive(), false);
    const admin = await keys.create({ tenant: 'ops', role: 'admin', name: 'first' });
    const user = await keys.create({ tenant: 'ana', role: 'user' });
    assert.equal(await keys.hasActive(), true);
    assert.deepEqual(await keys.verify(user.key), user.info);
    assert.equal(await keys.verify(`${user.key.slice(0, -1)}x`), undefined);
    assert.equal(await keys.verify('not a key'), undefined);
    assert.deepEqual((await keys.list()).map((k) => [k.tenant, k.role, k.name]), [['ops', 'admin', 'first'], ['ana', 'user', null]]);
    const rows = await store.sql.query<Record<string, unknown>>('SELECT * FROM api_keys');
    assert.ok(!JSON.stringify(rows).includes(user.key.slice(-20)), 'the key itself is not stored');
    const revoked = await keys.revoke(user.info.id);
    assert.ok(revoked.revokedAt !== null);
    assert.equal(await keys.verify(user.key), undefined);
    assert.deepEqual(await keys.revoke(user.info.id), revoked, 'revoking again keeps the first time');
    await assert.rejects(keys.revoke('000000000000'), /does not exist/);
    await keys.revoke(admin.info.id);
    assert.equal(await keys.hasActive(), false);
    await assert.rejects(keys.create({ tenant: '../x', role: 'user' }), /tenant/);
  });

  test("eval runs: each tenant keeps its newest; the admin lists everyone's", async () => {
    const store = await open(await fresh());
    const ids: Record<string, string[]> = { ana: [], bob: [], local: [] };
    for (let i = 0; i < 4; i++) {
      ids.ana!.push(await store.evalRuns.add('ana', { n: i }, 3));
      ids.local!.push(await store.evalRuns.add(null, { n: i }, 2));
    }
    ids.bob!.push(await store.evalRuns.add('bob', { styles: { caps: { before: 0, after: 1 } } }, 3));
    assert.deepEqual((await store.evalRuns.list({ tenant: 'ana' }, 10)).map((r) => r.id), ids.ana!.slice(1).reverse());
    assert.deepEqual((await store.evalRuns.list({ tenant: null }, 10)).map((r) => r.summary), [{ n: 3 }, { n: 2 }]);
    assert.deepEqual((await store.evalRuns.list({ tenant: 'bob' }, 10))[0]!.summary, { styles: { caps: { before: 0, after: 1 } } });
    const all = await store.evalRuns.list('all', 4);
    assert.equal(all.length, 4);
    assert.equal(all[0]!.id, ids.bob![0], 'newest first');
    assert.equal((await store.evalRuns.list('all', 100)).length, 6);
  });
}

describe('SQLite', () => {
  storeCases(async () => join(tempDir(), 'state', 'claas.db'));

  test('the file is in WAL mode and readable by its user only', async () => {
    const file = join(tempDir(), 'claas.db');
    const store = await openStore(file);
    assert.deepEqual(await store.sql.query('PRAGMA journal_mode'), [{ journal_mode: 'wal' }]);
    await store.close();
    assert.equal(statSync(file).mode & 0o777, 0o600);
  });

  test('a database at an older schema version is migrated and keeps its rows; a newer one is refused', async () => {
    for (let version = 1; version < SQLITE_MIGRATIONS.length; version++) {
      const file = join(tempDir(), 'claas.db');
      const old = new Database(file);
      for (const m of SQLITE_MIGRATIONS.slice(0, version)) old.exec(m);
      old.pragma(`user_version = ${version}`);
      old.prepare('INSERT INTO completions (id, created_at, model, request_json, prompt_ids, enable_thinking) VALUES (?, ?, ?, ?, ?, ?)').run('old', 5, 'm', '{"messages":[]}', Buffer.from(Int32Array.from([1, 2]).buffer), 0);
      old.close();
      const store = await openStore(file);
      assert.equal(await schemaVersion(store), SQLITE_MIGRATIONS.length, `from version ${version}`);
      const r = (await store.completions.get('old'))!;
      assert.deepEqual([r.promptIds, r.tenant, r.choices], [[1, 2], null, []]);
      await store.close();
    }
    const file = join(tempDir(), 'claas.db');
    const newer = new Database(file);
    newer.pragma(`user_version = ${SQLITE_MIGRATIONS.length + 1}`);
    newer.close();
    await assert.rejects(openStore(file), /newer than this claas knows/);
  });

  test('--database: a path relative to the working directory, a postgres:// URL as given, nothing else', async () => {
    assert.equal(resolveDatabase(undefined, '/srv/claas'), '/srv/claas/claas.db');
    assert.equal(resolveDatabase('state.db', '/srv/claas'), join(process.cwd(), 'state.db'));
    assert.equal(resolveDatabase('postgresql://u:p@db/claas', '/srv'), 'postgresql://u:p@db/claas');
    assert.throws(() => resolveDatabase('mysql://db/claas', '/srv'), /SQLite file path or a postgres:\/\/ URL/);
    await assert.rejects(openStore('mysql://db/claas'), /SQLite file path or a postgres:\/\/ URL/);
  });
});

test('Postgres server programs are present (required when CI=true)', { skip: process.env.CI === 'true' ? false : pgSkip }, () => {
  assert.ok(pgBin, 'CI is set but initdb and pg_ctl are not installed; .ci/run installs the postgresql package');
});

test('an unreachable Postgres server is named in the error, without its password', async () => {
  const url = 'postgres://claas:hunter2@127.0.0.1:1/claas?application_name=test';
  const err = (await openStore(url).then(
    () => assert.fail('opened'),
    (e: unknown) => e,
  )) as Error;
  assert.match(err.message, /cannot reach the Postgres database at postgres:\/\/claas:\*\*\*@127\.0\.0\.1:1\/claas/);
  assert.ok(!err.message.includes('hunter2'), err.message);
  assert.equal(redactUrl('postgres://u@h/db?password=x'), 'postgres://u@h/db?password=***');
});

describe('Postgres', { skip: pgSkip }, () => {
  let server: PostgresServer;
  before(async () => {
    server = await startPostgres(pgBin);
  });
  // Registered after the cases' own hook, so their stores close before the server stops.
  storeCases(() => server.createDatabase());
  after(async () => {
    await server?.stop();
  });

  test('the description hides the password; a newer schema is refused', async () => {
    const database = await server.createDatabase();
    const store = await openStore(database);
    assert.ok(!store.sql.description.includes('not-checked'));
    await store.sql.run('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)', [POSTGRES_MIGRATIONS.length + 1, Date.now()]);
    await store.close();
    await assert.rejects(openStore(database), /newer than this claas knows/);
  });

  test('two servers at once (their transactions at the same time): a repeated idempotency key stores one set of jobs; the pending bound holds across both', async () => {
    const database = await server.createDatabase();
    const [one, two] = [await openStore(database), await openStore(database)];
    try {
      const job = { adapterId: 't/a', options: {}, items: [item('same')] };
      const [x, y] = await Promise.all([one.jobs.submit([job], { idempotencyKey: 'retry' }), two.jobs.submit([job], { idempotencyKey: 'retry' })]);
      assert.deepEqual(x!.refused ?? y!.refused, undefined);
      assert.deepEqual((x as { ids: string[] }).ids, (y as { ids: string[] }).ids);
      assert.deepEqual([(x as { repeated: boolean }).repeated, (y as { repeated: boolean }).repeated].sort(), [false, true]);

      // The same key naming other adapters (a client that reuses keys): one of them stores, the
      // other finds it; neither fails on the unique index.
      for (let round = 0; round < 5; round++) {
        const [p, q] = await Promise.all([one.jobs.submit([{ ...job, adapterId: 't/p' }], { idempotencyKey: `reused-${round}` }), two.jobs.submit([{ ...job, adapterId: 't/q' }], { idempotencyKey: `reused-${round}` })]);
        assert.deepEqual((p as { ids: string[] }).ids, (q as { ids: string[] }).ids);
      }

      const tries = await Promise.all(Array.from({ length: 6 }, (_, i) => (i % 2 ? one : two).jobs.submit([{ ...job, adapterId: 't/b' }], { maxPending: 3 })));
      assert.equal(tries.filter((t) => !t.refused).length, 3);
      assert.equal(await one.jobs.pending('t/b'), 3);
    } finally {
      await Promise.all([one.close(), two.close()]);
    }
  });

  test('claas keys and claas serve --database postgres://…: the learning loop runs on Postgres; an unreachable one stops the start, named without its password', async () => {
    const url = await server.createDatabase();
    const created = spawnSync(process.execPath, [cli, 'keys', 'create', '--tenant', 'ops', '--role', 'admin', '--database', url], { encoding: 'utf8' });
    assert.equal(created.status, 0, created.stderr);
    const key = created.stdout.match(/sk-claas-\S+/)![0];

    const data = join(tempDir(), 'data');
    const child = await startServe(['--model', 'random', '--data', data, '--database', url, '--port', '0', '--threads', '1', '--batch-wait-ms', '0']);
    const { address } = child;
    let completionId = '';
    let jobId = '';
    try {
      assert.match(child.output(), /state: postgres:\/\/postgres:\*\*\*@127\.0\.0\.1/);
      const call = async (path: string, body: unknown, headers: Record<string, string> = {}) => {
        const res = await fetch(`${address}${path}`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
        return { status: res.status, body: (await res.json()) as Record<string, unknown> };
      };
      assert.equal((await call('/v1/lora/init', { lora_id: 'ops/style', rank: 2 })).status, 201);
      const chat = await call('/v1/chat/completions', { model: 'ops/style', messages: [{ role: 'user', content: 'hello' }], max_tokens: 4 });
      assert.equal(chat.status, 200, JSON.stringify(chat.body));
      completionId = chat.body.id as string;
      const fb = await call('/v1/feedback', { lora_id: 'ops/style', completion_id: completionId, feedback: 'Shorter.', steps: 1 }, { prefer: 'wait' });
      assert.equal(fb.status, 200, JSON.stringify(fb.body));
      assert.equal(fb.body.status, 'ok', JSON.stringify(fb.body));
      jobId = fb.body.request_id as string;
      assert.equal(await child.stop(), 0, child.output());
    } finally {
      child.proc.kill('SIGKILL');
    }
    assert.ok(!child.output().includes('not-checked'), 'the password is not printed');
    const store = await openStore(url);
    try {
      const record = (await store.completions.get(completionId))!;
      assert.deepEqual([record.tenant, record.adapter, record.adapterVersion], ['ops', 'ops/style', 'v0001']);
      assert.equal((await store.jobs.get(jobId))!.status, 'done');
      assert.deepEqual((await store.adapters.get('ops/style'))!.versions.map((v) => [v.version, v.jobId]), [[1, null], [2, jobId]]);
    } finally {
      await store.close();
    }

    const unreachable = spawnSync(process.execPath, [cli, 'serve', '--model', 'random', '--data', data, '--database', 'postgres://claas:hunter2@127.0.0.1:1/claas', '--port', '0'], { encoding: 'utf8' });
    assert.equal(unreachable.status, 1);
    assert.match(unreachable.stderr, /claas: cannot reach the Postgres database at postgres:\/\/claas:\*\*\*@127\.0\.0\.1:1\/claas/);
    assert.ok(!`${unreachable.stdout}${unreachable.stderr}`.includes('hunter2'));
    assert.doesNotMatch(unreachable.stdout, /loading/, 'it stops before the model loads');
  });

  test('two stores claiming at once never take one job twice nor two batches of one adapter', async () => {
    const database = await server.createDatabase();
    const stores = [await openStore(database), await openStore(database)];
    try {
      const adapters = ['t/0', 't/1', 't/2'];
      for (const id of adapters) await stores[0]!.adapters.create({ id, rank: 2, alpha: 4, targetModules: ['q_proj'] });
      const submitted: string[] = [];
      for (let i = 0; i < 36; i++) submitted.push(...((await stores[i % 2]!.jobs.submit([{ adapterId: adapters[i % 3]!, options: { steps: 1 + (i % 2) }, items: [item(`f${i}`)] }])) as { ids: string[] }).ids);
      const taken = new Map<string, string>();
      const holder = new Map<string, string>();
      const versions = new Map<string, number[]>();
      const trainer = async (w: string, store: Store) => {
        for (;;) {
          const c = await store.jobs.claim(w, { leaseMs: 60_000, maxItems: 3, sameOptions: true });
          if (!c) {
            if ((await store.jobs.claimableIds()).length === 0) return;
            await new Promise((r) => setTimeout(r, 2));
            continue;
          }
          assert.equal(holder.get(c.adapterId), undefined, `${w} took ${c.adapterId} while ${holder.get(c.adapterId)} held it`);
          holder.set(c.adapterId, w);
          for (const j of c.jobs) {
            assert.equal(taken.get(j.id), undefined, `${j.id} taken twice`);
            taken.set(j.id, w);
          }
          versions.set(c.adapterId, [...(versions.get(c.adapterId) ?? []), c.version]);
          await store.adapters.addVersion(c.adapterId, c.version, { parent: 1, status: 'candidate', jobId: c.jobs[0]!.id });
          await new Promise((r) => setTimeout(r, Math.random() * 4));
          // Released before the finish commits: no claim of the adapter can commit before it does.
          holder.delete(c.adapterId);
          assert.equal(await store.jobs.finish(c.jobs.map((j) => j.id), 'done', null, null, w), c.jobs.length);
        }
      };
      await Promise.all([trainer('w1', stores[0]!), trainer('w2', stores[0]!), trainer('w3', stores[1]!), trainer('w4', stores[1]!)]);
      assert.deepEqual([...taken.keys()].sort(), [...submitted].sort());
      for (const [id, vs] of versions) assert.deepEqual(vs, vs.map((_, i) => i + 2), `${id}: one version per batch, in order`);
      assert.ok(new Set(taken.values()).size > 1, 'more than one trainer got work');
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  test('transactions holding the same lock run one after the other; others do not wait', async () => {
    const store = await openStore(await server.createDatabase());
    try {
      const events: string[] = [];
      const hold = (name: string, tag: string, ms: number) =>
        store.sql.transaction(async (tx) => {
          await tx.lock(name);
          events.push(`${tag} in`);
          await new Promise((r) => setTimeout(r, ms));
          events.push(`${tag} out`);
        });
      await Promise.all([hold('a', 'first', 150), new Promise((r) => setTimeout(r, 30)).then(() => hold('a', 'second', 0)), new Promise((r) => setTimeout(r, 30)).then(() => hold('b', 'other', 0))]);
      assert.deepEqual(events, ['first in', 'other in', 'other out', 'first out', 'second in', 'second out']);
    } finally {
      await store.close();
    }
  });
});
