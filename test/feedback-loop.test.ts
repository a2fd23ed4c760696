// The learning loop over HTTP on a tiny model: adapter -> chat -> feedback by completion id -> job
// done -> the next chat is served by the new version -> rollback; chats during an update; bad input.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import * as tar from 'tar';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/api/app.js';
import { normal, rng, tempDir } from '../src/model/random-model.js';
import { CollapseGuard, DEFAULT_GUARD, longestRepeat } from '../src/orchestrator/collapse-guard.js';
import type { Orchestrator } from '../src/orchestrator/orchestrator.js';
import type { InferenceService } from '../src/serve/inference.js';
import { openServer, writeRandomChatModel } from '../src/serve/open.js';

let app: FastifyInstance;
let service: InferenceService;
let orchestrator: Orchestrator;
let base: string;
const id = 'ana/style';
const messages = [{ role: 'user', content: 'Name three colours.' }];

// JSON replies are read field by field and checked by the assertions below.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${base}${path}`, { method, headers: { 'content-type': 'application/json', ...headers }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Json };
}

async function waitJob(jobId: string) {
  for (let i = 0; i < 500; i++) {
    const r = await call('GET', `/v1/feedback/jobs/${jobId}`);
    if (r.body.status === 'done' || r.body.status === 'failed') return r.body;
    await new Promise((res) => setTimeout(res, 20));
  }
  throw new Error(`job ${jobId} did not finish`);
}

before(async () => {
  const dir = tempDir();
  ({ service, orchestrator } = await openServer(writeRandomChatModel(join(dir, 'random-tiny')), {
    dataDir: join(dir, 'data'),
    threads: 2,
    orchestrator: { batchSize: 1, maxWaitMs: 20 },
    guard: { maxUpdateKl: 50, probeTokens: 2 },
  }));
  app = await buildApp(service, { orchestrator });
  base = await app.listen({ host: '127.0.0.1', port: 0 });
});

after(async () => {
  await app.close();
  await orchestrator.close();
  await service.close();
});

test('chat -> feedback -> new version serves the next chat -> rollback', async () => {
  const created = await call('POST', '/v1/lora/init', { lora_id: id, rank: 4, alpha: 8 });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  assert.equal(created.body.current_version, 1);

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
  assert.ok(Number.isFinite(job.result.guard.klToBase));

  const info = await call('GET', `/v1/lora/${id}`);
  assert.equal(info.body.current_version, 2);
  assert.deepEqual(info.body.versions.map((v: { status: string }) => v.status), ['initial', 'promoted']);
  const models = await call('GET', '/v1/models');
  assert.equal(models.body.data.find((m: { id: string }) => m.id === id).root, `${id}@v0002`);

  const next = await call('POST', '/v1/chat/completions', { model: id, messages, max_tokens: 8, temperature: 0 });
  assert.equal((await service.store.completions.get(next.body.id))!.adapterVersion, 'v0002');
  // The update moved the model: the reply's log-probability under v2 differs from v1's.
  const before = (await service.store.completions.get(chat.body.id))!.choices[0]!.outputLogprobs;
  const record = (await service.store.completions.get(chat.body.id))!;
  const v2 = await service.engine.logprobs([...record.promptIds, ...record.choices[0]!.outputIds], (await service.lease(id))!.adapter, record.promptIds.length);
  assert.ok(Array.from(v2).some((lp, i) => Math.abs(lp - before[i]!) > 1e-4));

  const rolled = await call('POST', `/v1/lora/${id}/rollback`, { version: 1 });
  assert.equal(rolled.body.current_version, 1);
  const after = await call('POST', '/v1/chat/completions', { model: id, messages, max_tokens: 8, temperature: 0 });
  assert.equal((await service.store.completions.get(after.body.id))!.adapterVersion, 'v0001');
  assert.deepEqual((await service.store.completions.get(after.body.id))!.choices[0]!.outputIds, (await service.store.completions.get(chat.body.id))!.choices[0]!.outputIds, 'v1 answers exactly as before');
});

test('16 chats during an update are all answered, each by a known version', async () => {
  const chat = await call('POST', '/v1/chat/completions', { model: id, messages, max_tokens: 4 });
  const fb = await call('POST', '/v1/feedback', { lora_id: id, completion_id: chat.body.id, feedback: 'Shorter, please.', steps: 3, learning_rate: 1e-3 });
  const chats = await Promise.all(Array.from({ length: 16 }, (_, i) => call('POST', '/v1/chat/completions', { model: id, messages: [{ role: 'user', content: `question ${i}` }], max_tokens: 6 })));
  assert.ok(chats.every((c) => c.status === 200));
  const versions = new Set(await Promise.all(chats.map(async (c) => (await service.store.completions.get(c.body.id))!.adapterVersion)));
  for (const v of versions) assert.match(v!, /^v000[13]$/);
  const job = await waitJob(fb.body.job_id);
  assert.equal(job.status, 'done');
  assert.equal(job.result.version, 3);
});

test('raw prompt + response feedback, batches and idempotency', async () => {
  const batch = await call('POST', '/v1/feedback', { requests: [
    { lora_id: id, prompt: 'Say hi', response: 'Hello there!', feedback: 'No exclamation marks.' },
    { lora_id: id, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }], response: 'Hi.', feedback: 'Sign off with "- Ana".' },
  ] }, { 'idempotency-key': 'abc-1' });
  assert.equal(batch.status, 202);
  assert.equal(batch.body.jobs.length, 2);
  const again = await call('POST', '/v1/feedback', { requests: [{ lora_id: id, prompt: 'x', response: 'y', feedback: 'z' }, { lora_id: id, prompt: 'x', response: 'y', feedback: 'z' }] }, { 'idempotency-key': 'abc-1' });
  assert.equal(again.status, 200);
  assert.deepEqual(again.body.jobs.map((j: { job_id: string }) => j.job_id), batch.body.jobs.map((j: { job_id: string }) => j.job_id));
  for (const j of batch.body.jobs) assert.equal((await waitJob(j.job_id)).status, 'done');
});

test('the KL-to-base weight, tail bucket and sampled-token mode of a request reach the SDPO step', async () => {
  const r = await call('POST', '/v1/feedback', { lora_id: id, prompt: 'Say hi', response: 'Hello there!', feedback: 'Shorter.', training: { beta: 0.5, tail: false, sampled_token: true } });
  assert.equal(r.status, 202);
  const job = await waitJob(r.body.job_id);
  assert.equal(job.status, 'done', JSON.stringify(job));
  const used = job.result.metrics.options;
  assert.deepEqual([used.beta, used.tail, used.sampledToken], [0.5, false, true]);
});

test('with memory, the teacher also sees the earlier feedback of this adapter whose updates were served', async () => {
  const feedback = async (lora: string, text: string, training: Json = {}) => {
    const r = await call('POST', '/v1/feedback', { lora_id: lora, prompt: 'Name a colour.', response: 'Blue, I think.', feedback: text, learning_rate: 1e-3, training });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const job = await waitJob(r.body.job_id);
    assert.equal(job.status, 'done', JSON.stringify(job));
    return { ...job, id: r.body.job_id as string } as Json;
  };
  for (const lora of ['mem/a', 'mem/b', 'mem/c']) assert.equal((await call('POST', '/v1/lora/init', { lora_id: lora, rank: 4, alpha: 8, seed: 3 })).status, 201);
  for (const text of ['One.', 'Two.', 'One.']) await feedback('mem/a', text);
  const remembered = await feedback('mem/a', 'Three.', { memory: 2 });
  assert.deepEqual(remembered.result.memory, ['Two.', 'One.'], 'the two most recent distinct texts, oldest first');
  const dash = await call('GET', '/v1/dashboard/data?jobs=5');
  const shown = dash.body.jobs.find((j: Json) => j.id === remembered.id);
  assert.match(shown.samples[0].teacher_context, /Two\. One\. Three\./, 'the dashboard shows the teacher context the step used');
  const again = await feedback('mem/a', 'Two.', { memory: 3 });
  assert.deepEqual(again.result.memory, ['One.', 'Three.'], 'a text said again now is not repeated from memory');
  assert.equal((await feedback('mem/a', 'Four.')).result.memory, undefined, 'memory is off by default');

  // Same history and the same feedback: only the remembered text differs, and the teacher with it.
  await feedback('mem/b', 'Answer in capital letters.');
  await feedback('mem/c', 'Answer in capital letters.');
  const withMemory = await feedback('mem/b', 'Be brief.', { memory: 1 });
  const without = await feedback('mem/c', 'Be brief.');
  assert.deepEqual(withMemory.result.memory, ['Answer in capital letters.']);
  assert.notEqual(withMemory.result.metrics.teacherStudentKl, without.result.metrics.teacherStudentKl, 'the remembered feedback reaches the teacher');

  const bad = await call('POST', '/v1/feedback', { lora_id: 'mem/a', prompt: 'x', response: 'y', feedback: 'z', training: { memory: 33 } });
  assert.equal(bad.status, 400);
  assert.match(bad.body.error.message, /memory/);
});

test('bad feedback and adapter requests get clear 4xx errors and change nothing', async () => {
  const jobsBefore = (await orchestrator.jobs.queuedIds()).length;
  const cases: [string, string, unknown, number, RegExp][] = [
    ['POST', '/v1/feedback', { lora_id: id, completion_id: 'chatcmpl-nope', feedback: 'x' }, 404, /completion chatcmpl-nope does not exist/],
    ['POST', '/v1/feedback', { lora_id: id, prompt: 'a', response: 'b', feedback: '' }, 400, /feedback/],
    ['POST', '/v1/feedback', { lora_id: id, prompt: 'a', response: 'b', feedback: 'x'.repeat(5000) }, 400, /feedback/],
    ['POST', '/v1/feedback', { lora_id: id, prompt: 'a', response: 'b', feedback: 'x', learning_rate: 5 }, 400, /learning_rate/],
    ['POST', '/v1/feedback', { lora_id: id, prompt: 'a', response: 'b', feedback: 'x', training: { gamma: 0.1 } }, 400, /unexpected property "gamma"/],
    ['POST', '/v1/feedback', { lora_id: id, prompt: 'a', response: 'b', feedback: 'x', training: { beta: -1 } }, 400, /beta must be in/],
    ['POST', '/v1/lora/init', { lora_id: 'ana/seeded', seed: -1 }, 400, /seed/],
    ['POST', '/v1/feedback', { lora_id: 'nobody/none', prompt: 'a', response: 'b', feedback: 'x' }, 404, /does not exist/],
    ['POST', '/v1/feedback', { requests: [{ lora_id: id }] }, 400, /feedback/],
    ['POST', '/v1/feedback', { requests: 'all of them' }, 400, /requests|body/],
    ['POST', '/v1/feedback', { lora_id: id, prompt: 'a', feedback: 'x' }, 400, /response is required/],
    ['POST', '/v1/lora/init', { lora_id: '../../etc' }, 400, /tenant\/name/],
    ['POST', '/v1/lora/init', { lora_id: 'a/..b' }, 400, /no "\.\."/],
    ['POST', '/v1/lora/init', { lora_id: id }, 400, /already exists/],
    ['POST', '/v1/lora/init', { lora_id: 'ana/x', target_modules: ['lm_head'] }, 400, /unknown target module/],
    ['POST', `/v1/lora/${id}/rollback`, { version: 99 }, 404, /no version 99/],
    ['GET', '/v1/feedback/jobs/job-nope', undefined, 404, /does not exist/],
  ];
  for (const [method, path, body, status, message] of cases) {
    const r = await call(method, path, body);
    assert.equal(r.status, status, `${path} ${String(JSON.stringify(body)).slice(0, 80)} -> ${JSON.stringify(r.body)}`);
    assert.match(r.body.error.message, message);
  }
  assert.equal((await orchestrator.jobs.queuedIds()).length, jobsBefore);
  const ok = await call('POST', '/v1/chat/completions', { model: id, messages, max_tokens: 2 });
  assert.equal(ok.status, 200);
});

test('the collapse guard bounds one update against the version it replaces, not against the base model', async () => {
  const engine = service.engine;
  const strict = new CollapseGuard(engine, service.template, service.tokenizer, { ...DEFAULT_GUARD, probeTokens: 2, maxUpdateKl: 1e-6 }, service.stopTokenIds);
  const fresh = engine.createAdapter({ rank: 4, alpha: 8, seed: 1 });
  const ok = await strict.check(fresh, null);
  assert.equal(ok.passed, true, 'B = 0 is the base model');
  assert.ok(Math.abs(ok.updateKl) < 1e-9 && Math.abs(ok.klToBase) < 1e-9);
  const r = rng(9);
  const moved = engine.restoreAdapter(fresh.shape, { params: fresh.state().params.map(() => 0.2 * normal(r)), step: 0 });
  const verdict = await strict.check(moved, fresh);
  assert.equal(verdict.passed, false);
  assert.match(verdict.reason!, /update KL to the replaced version/);
  // Far from the base model, yet no step from the version it replaces: it passes.
  const same = await strict.check(moved, moved);
  assert.ok(same.klToBase > 1e-3, `KL to base ${same.klToBase}`);
  assert.ok(Math.abs(same.updateKl) < 1e-9);
  assert.equal(same.passed, true, same.reason ?? '');
});

test('the guard drafts a candidate\'s replies from the replaced version\'s: the same replies and measures as plain greedy decoding', async () => {
  const engine = service.engine;
  const config = { ...DEFAULT_GUARD, probeTokens: 8, maxUpdateKl: 1e9 };
  const guard = new CollapseGuard(engine, service.template, service.tokenizer, config, service.stopTokenIds);
  let parent = engine.createAdapter({ rank: 4, alpha: 8, seed: 1 });
  await guard.check(parent, null);
  const r = rng(5);
  let kept = 0, redecoded = 0;
  for (const scale of [0.001, 0.3, 0.001, 1, 0.002]) {
    const moved = engine.restoreAdapter(parent.shape, { params: parent.state().params.map((x) => x + scale * normal(r)), step: 0 });
    const verdict = await guard.check(moved, parent);
    // A guard that kept nothing decodes every reply token by token and scores both versions afresh.
    const plain = new CollapseGuard(engine, service.template, service.tokenizer, config, service.stopTokenIds);
    const plainReplies = await plain.probeReplies(moved);
    const drafted = await guard.probeReplies(moved);
    assert.deepEqual(drafted.map((x) => x.ids), plainReplies.map((x) => x.ids), `scale ${scale}`);
    assert.deepEqual(drafted.map((x) => x.ended), plainReplies.map((x) => x.ended));
    const fresh = await plain.check(moved, parent);
    for (const k of ['updateKl', 'klToBase', 'entropy'] as const) assert.ok(Math.abs(verdict[k] - fresh[k]) <= 1e-9 * Math.max(1, Math.abs(fresh[k])), `${k}: ${verdict[k]} vs ${fresh[k]}`);
    const before = await guard.probeReplies(parent);
    for (const [i, x] of drafted.entries()) {
      if (x.ids.join() === before[i]!.ids.join()) kept++;
      else redecoded++;
    }
    parent = moved;
  }
  assert.ok(kept > 0 && redecoded > 0, `both paths ran: ${kept} replies kept, ${redecoded} decoded anew`);
});

test('the collapse guard refuses non-finite weights, even when it is switched off', async () => {
  const engine = service.engine;
  const fresh = engine.createAdapter({ rank: 4, alpha: 8, seed: 1 });
  const params = fresh.state().params.slice();
  params[7] = Number.NaN;
  const broken = engine.restoreAdapter(fresh.shape, { params, step: 0 });
  for (const enabled of [true, false]) {
    const guard = new CollapseGuard(engine, service.template, service.tokenizer, { ...DEFAULT_GUARD, probeTokens: 2, enabled }, service.stopTokenIds);
    const v = await guard.check(broken, fresh);
    assert.equal(v.passed, false, `enabled: ${enabled}`);
    assert.match(v.reason!, /non-finite weight \(NaN at index 7/);
  }
});

test('longestRepeat finds loops of one to four tokens', () => {
  assert.equal(longestRepeat([1, 2, 3, 4]), 1);
  assert.equal(longestRepeat([5, 5, 5, 5, 1]), 4);
  assert.equal(longestRepeat([1, 7, 8, 7, 8, 7, 8, 2]), 3);
  assert.equal(longestRepeat([1, 2, 3, 4, 1, 2, 3, 4, 9]), 2);
});

test('export a version as .tar.gz and import it as a new adapter', async () => {
  const res = await fetch(`${base}/v1/lora/${id}/export?version=2`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'application/gzip');
  const archive = Buffer.from(await res.arrayBuffer());
  const dir = tempDir();
  writeFileSync(join(dir, 'a.tar.gz'), archive);
  const names: string[] = [];
  await tar.t({ file: join(dir, 'a.tar.gz'), onReadEntry: (e) => names.push(e.path) });
  assert.deepEqual(names.sort(), ['adapter_config.json', 'adapter_model.safetensors', 'ema_model.safetensors', 'optimizer.safetensors']);
  mkdirSync(join(dir, 'listed'));
  tar.x({ file: join(dir, 'a.tar.gz'), cwd: join(dir, 'listed'), sync: true });
  const exportedConfig = JSON.parse(readFileSync(join(dir, 'listed', 'adapter_config.json'), 'utf8')) as { base_model_name_or_path: string };
  assert.equal(exportedConfig.base_model_name_or_path, basename(service.engine.modelDir), 'an export names the base model, not where the server keeps it');

  const upload = (body: Buffer, lora = 'bob/copy') => fetch(`${base}/v1/lora/import?lora_id=${encodeURIComponent(lora)}`, { method: 'POST', headers: { 'content-type': 'application/gzip' }, body: new Uint8Array(body) });
  const imported = await upload(archive);
  assert.equal(imported.status, 201, await imported.clone().text());
  const ids = [3, 14, 15, 92, 65];
  const v2 = await service.engine.loadAdapter(join(orchestrator.registry.root, 'ana', 'style', 'v0002'));
  assert.deepEqual(await service.engine.logits(ids, (await service.lease('bob/copy'))!.adapter), await service.engine.logits(ids, v2));

  // An archive with anything beyond the PEFT files, or not an archive at all, is refused.
  mkdirSync(join(dir, 'extra'));
  tar.x({ file: join(dir, 'a.tar.gz'), cwd: join(dir, 'extra'), sync: true });
  writeFileSync(join(dir, 'extra', 'evil.sh'), 'echo hi');
  tar.c({ gzip: true, cwd: join(dir, 'extra'), file: join(dir, 'b.tar.gz'), sync: true }, readdirSync(join(dir, 'extra')));
  const extra = await upload(readFileSync(join(dir, 'b.tar.gz')), 'bob/extra');
  assert.equal(extra.status, 400);
  assert.match(((await extra.json()) as { error: { message: string } }).error.message, /evil\.sh/);
  const garbage = await upload(Buffer.from('not a tarball at all'), 'bob/garbage');
  assert.equal(garbage.status, 400);
  assert.equal((await call('GET', '/v1/lora/bob/extra')).status, 404, 'nothing was created');

  // A shape out of range, or a NaN weight, is refused; nothing is left behind, in the data
  // directory or the system's temp folder.
  const repack = (name: string, edit: (folder: string) => void) => {
    const folder = join(dir, name);
    mkdirSync(folder);
    tar.x({ file: join(dir, 'a.tar.gz'), cwd: folder, sync: true });
    edit(folder);
    tar.c({ gzip: true, cwd: folder, file: join(dir, `${name}.tar.gz`), sync: true }, readdirSync(folder));
    return readFileSync(join(dir, `${name}.tar.gz`));
  };
  const tempBefore = readdirSync(tmpdir()).filter((n) => n.startsWith('claas-import-')).length;
  for (const [field, value] of [['r', 1e12], ['lora_alpha', 1e308]] as const) {
    const body = repack(`shape-${field}`, (folder) => {
      const config = JSON.parse(readFileSync(join(folder, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
      writeFileSync(join(folder, 'adapter_config.json'), JSON.stringify({ ...config, [field]: value }));
    });
    const r = await upload(body, `bob/${field.replace('_', '-')}`);
    assert.equal(r.status, 400, field);
    assert.match(((await r.json()) as { error: { message: string } }).error.message, new RegExp(field));
  }
  const nan = repack('nan', (folder) => {
    const file = join(folder, 'adapter_model.safetensors');
    const bytes = readFileSync(file);
    bytes.writeFloatLE(Number.NaN, bytes.length - 4); // the last value of the last tensor
    writeFileSync(file, bytes);
  });
  // 32 MiB of zeros packs into a few kilobytes; the declared shape needs far less.
  const bomb = repack('bomb', (folder) => writeFileSync(join(folder, 'adapter_model.safetensors'), Buffer.alloc(32 * 1024 * 1024)));
  assert.ok(bomb.length < 200_000, `the archive is small (${bomb.length} bytes)`);
  const burst = await upload(bomb, 'bob/bomb');
  assert.equal(burst.status, 400);
  assert.match(((await burst.json()) as { error: { message: string } }).error.message, /larger than the adapter its adapter_config.json declares: adapter_model.safetensors \(33554432 bytes/);
  const refused = await upload(nan, 'bob/nan');
  assert.equal(refused.status, 400);
  assert.match(((await refused.json()) as { error: { message: string } }).error.message, /non-finite/);
  assert.equal((await call('GET', '/v1/lora/bob/nan')).status, 404);
  // A broken file is named, but not where the server keeps it.
  const dataDir = dirname(orchestrator.registry.root);
  const broken = [
    repack('bad-header', (folder) => {
      const file = join(folder, 'adapter_model.safetensors');
      const bytes = readFileSync(file);
      bytes.writeUInt32LE(7, 0); // a header length that is not JSON
      writeFileSync(file, bytes);
    }),
    repack('bad-config', (folder) => writeFileSync(join(folder, 'adapter_config.json'), '{"r": 2,')),
  ];
  for (const [i, body] of broken.entries()) {
    const r = await upload(body, `bob/broken-${i}`);
    assert.equal(r.status, 400);
    const message = ((await r.json()) as { error: { message: string } }).error.message;
    assert.match(message, i === 0 ? /adapter_model\.safetensors/ : /adapter_config\.json/);
    assert.ok(!message.includes(dataDir) && !message.includes(tmpdir()) && !message.includes(service.engine.modelDir), `no server path in: ${message}`);
  }
  assert.deepEqual(readdirSync(orchestrator.registry.root).filter((n) => n.startsWith('.')), [], 'no import work folder stays');
  assert.equal(readdirSync(tmpdir()).filter((n) => n.startsWith('claas-import-')).length, tempBefore, 'nothing was unpacked in the temp folder');
});
