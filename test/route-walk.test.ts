// Every registered route, walked with another tenant's key: each route declares what it owns (or that
// it is public or admin), and bob, naming alice's things in every place a route takes an id, changes
// and learns nothing of hers. A route added without an entry here fails the walk.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Fastify from 'fastify';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/api/app.js';
import { registerAccess } from '../src/api/access.js';
import { ApiKeys } from '../src/auth/keys.js';
import { RateLimiter } from '../src/auth/rate-limit.js';
import { tempDir } from '../src/model/random-model.js';
import type { Orchestrator } from '../src/orchestrator/orchestrator.js';
import type { InferenceService } from '../src/serve/inference.js';
import { openServer, writeRandomChatModel } from '../src/serve/open.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

let app: FastifyInstance;
let service: InferenceService;
let orchestrator: Orchestrator;
let url: string;
const key: Record<string, string> = {};
const alice = { record: '', job: '', run: '' };

async function call(method: string, path: string, who: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${key[who]}`, ...(body === undefined ? {} : { 'content-type': typeof body === 'string' ? 'application/gzip' : 'application/json' }), ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, text };
}

before(async () => {
  const dir = tempDir();
  ({ service, orchestrator } = await openServer(writeRandomChatModel(join(dir, 'random-tiny')), {
    dataDir: join(dir, 'data'),
    threads: 1,
    orchestrator: { batchSize: 1, maxWaitMs: 0 },
    guard: { maxUpdateKl: 50, probeTokens: 2 },
  }));
  const keys = new ApiKeys(service.store.apiKeys);
  key.alice = (await keys.create({ tenant: 'alice', role: 'user' })).key;
  key.bob = (await keys.create({ tenant: 'bob', role: 'user' })).key;
  app = await buildApp(service, { orchestrator });
  url = await app.listen({ host: '127.0.0.1', port: 0 });
  assert.equal((await call('POST', '/v1/lora/init', 'alice', { lora_id: 'alice/mine', rank: 2, alpha: 4 })).status, 201);
  assert.equal((await call('POST', '/v1/lora/init', 'bob', { lora_id: 'bob/mine', rank: 2, alpha: 4 })).status, 201);
  const chat = JSON.parse((await call('POST', '/v1/chat/completions', 'alice', { model: 'alice/mine', messages: [{ role: 'user', content: 'private' }], max_tokens: 3 })).text) as Json;
  alice.record = chat.id as string;
  const fb = JSON.parse((await call('POST', '/v1/feedback', 'alice', { lora_id: 'alice/mine', completion_id: alice.record, feedback: 'Shorter.' }, { prefer: 'wait' })).text) as Json;
  alice.job = fb.request_id as string;
  assert.equal(fb.status, 'ok', JSON.stringify(fb));
  alice.run = (JSON.parse((await call('POST', '/v1/eval/runs', 'alice', { seed: 1, styles: { caps: { before: 0, after: 1, events: 2 } } })).text) as Json).id as string;
});

after(async () => {
  await app.close();
  await orchestrator.close();
  await service.close();
});

/** Bob's requests that name alice's things, per route. */
function attacks(): Record<string, { path: string; body?: unknown }[]> {
  const messages = [{ role: 'user', content: 'hi' }];
  const enc = 'alice%2Fmine';
  return {
    'POST /v1/chat/completions': [{ path: '/v1/chat/completions', body: { model: 'alice/mine', messages, max_tokens: 2 } }],
    'POST /v1/completions': [{ path: '/v1/completions', body: { model: 'alice/mine', prompt: 'x', max_tokens: 1 } }],
    'POST /v1/score': [{ path: '/v1/score', body: { model: 'alice/mine', messages, completion: 'x' } }],
    'GET /v1/completions/:id': [{ path: `/v1/completions/${alice.record}` }],
    'DELETE /v1/completions/:id': [{ path: `/v1/completions/${alice.record}` }],
    'DELETE /v1/tenants/:tenant/data': [{ path: '/v1/tenants/alice/data' }],
    'POST /v1/feedback': [
      { path: '/v1/feedback', body: { lora_id: 'alice/mine', completion_id: alice.record, feedback: 'x' } },
      { path: '/v1/feedback', body: { lora_id: 'bob/mine', completion_id: alice.record, feedback: 'x' } },
      { path: '/v1/feedback', body: { requests: [{ lora_id: 'bob/mine', prompt: 'q', response: 'r', feedback: 'x' }, { lora_id: 'alice/mine', prompt: 'q', response: 'r', feedback: 'x' }] } },
    ],
    'GET /v1/feedback/jobs/:id': [{ path: `/v1/feedback/jobs/${alice.job}` }],
    'POST /v1/lora/init': [{ path: '/v1/lora/init', body: { lora_id: 'alice/new' } }],
    'GET /v1/lora': [{ path: '/v1/lora?prefix=alice/' }, { path: '/v1/lora' }],
    'DELETE /v1/lora': [{ path: '/v1/lora?lora_id=alice/mine' }],
    'GET /v1/lora/export': [{ path: '/v1/lora/export?lora_id=alice/mine' }],
    'POST /v1/lora/import': [{ path: '/v1/lora/import?lora_id=alice/imported', body: 'not an archive' }],
    'GET /v1/lora/:tenant/:name': [{ path: '/v1/lora/alice/mine' }],
    'DELETE /v1/lora/:tenant/:name': [{ path: '/v1/lora/alice/mine' }],
    'GET /v1/lora/:tenant/:name/export': [{ path: '/v1/lora/alice/mine/export' }],
    'POST /v1/lora/:tenant/:name/rollback': [{ path: '/v1/lora/alice/mine/rollback', body: { version: 1 } }],
    'GET /v1/lora/:id': [{ path: `/v1/lora/${enc}` }],
    'DELETE /v1/lora/:id': [{ path: `/v1/lora/${enc}` }],
    'GET /v1/lora/:id/export': [{ path: `/v1/lora/${enc}/export` }],
    'POST /v1/lora/:id/rollback': [{ path: `/v1/lora/${enc}/rollback`, body: { version: 1 } }],
    'GET /v1/models': [{ path: '/v1/models' }],
    'GET /v1/models/*': [{ path: '/v1/models/alice/mine' }],
    'POST /v1/eval/runs': [{ path: '/v1/eval/runs', body: { seed: 2, styles: { caps: { before: 0, after: 1 } } } }],
    'GET /v1/eval/runs': [{ path: '/v1/eval/runs' }],
  };
}

/** What alice has, to compare after the walk. */
async function aliceState() {
  const a = await orchestrator.registry.get('alice/mine');
  return {
    versions: a.versions.map((v) => `${v.version}:${v.status}`),
    current: a.currentVersion,
    record: (await service.store.completions.get(alice.record))?.id ?? null,
    job: (await orchestrator.jobs.get(alice.job))?.status ?? null,
    adapters: (await orchestrator.registry.list()).filter((x) => x.id.startsWith('alice/')).map((x) => x.id),
    runs: (await service.store.evalRuns.list({ tenant: 'alice' }, 1000)).map((r) => r.id).sort(),
  };
}

test("every user route declares what it owns, and bob reaches none of alice's things through any of them", async () => {
  const declared = app.routeDeclarations;
  const table = attacks();
  const before = await aliceState();
  const seen = new Set<string>();
  let walked = 0;
  for (const route of declared) {
    const name = `${route.method} ${route.url}`;
    if (route.access === 'public') continue;
    if (route.access === 'admin') {
      // A user key gets 403 before anything else happens.
      const path = route.url.replace(/:[a-z]+/g, 'x').replace('*', 'x');
      const r = await call(route.method, path, 'bob', route.method === 'GET' || route.method === 'HEAD' || route.method === 'DELETE' ? undefined : {});
      assert.equal(r.status, 403, `${name}: ${r.text.slice(0, 200)}`);
      walked++;
      continue;
    }
    assert.ok(route.owns.length > 0, `${name} declares what it owns`);
    const getName = route.method === 'HEAD' ? `GET ${route.url}` : name;
    const entries = table[getName];
    assert.ok(entries, `${name} has no entry in the walk: add bob's requests naming alice's things`);
    seen.add(getName);
    for (const e of entries) {
      const r = await call(route.method, e.path, 'bob', e.body);
      const ownData = route.owns.includes('own-data');
      if (ownData && r.status !== 404) {
        // A listing or a write of bob's own: it answers, and nothing in it is alice's.
        assert.ok(r.status < 300, `${name} ${e.path}: ${r.status} ${r.text.slice(0, 200)}`);
        assert.ok(!r.text.includes('alice/') && !r.text.includes(alice.run), `${name} ${e.path} shows alice's things: ${r.text.slice(0, 300)}`);
      } else {
        assert.ok(r.status === 403 || r.status === 404, `${route.method} ${e.path}: ${r.status} ${r.text.slice(0, 300)}`);
        assert.ok(!r.text.includes(alice.record) || r.status === 404, `${name} echoes alice's record`);
      }
      walked++;
    }
  }
  assert.deepEqual(Object.keys(table).filter((k) => !seen.has(k)), [], 'every entry of the walk is a registered route');
  assert.deepEqual(await aliceState(), before, "alice's adapter, versions, record, job and eval runs are as they were");
  assert.ok(walked > 40, `requests walked: ${walked}`);
});

test('a query parameter no route takes is a 400 naming it; a percent-encoded model id reads as the plain one', async () => {
  for (const path of ['/v1/models?bogus=1', `/v1/completions/${alice.record}?fields=all`, `/v1/feedback/jobs/${alice.job}?verbose=1`, '/v1/eval/runs?limit=5']) {
    const r = await call('GET', path, 'alice');
    assert.equal(r.status, 400, `${path}: ${r.text.slice(0, 200)}`);
    assert.match(r.text, /unexpected property/);
  }
  const plain = await call('GET', '/v1/models/alice/mine', 'alice');
  const encoded = await call('GET', '/v1/models/alice%2Fmine', 'alice');
  assert.equal(plain.status, 200);
  assert.deepEqual(JSON.parse(encoded.text), JSON.parse(plain.text));
});

test('the server refuses to start with a user route that declares nothing it owns', async () => {
  const bare = Fastify();
  registerAccess(bare, { keys: new ApiKeys(service.store.apiKeys), requireKeys: false, rates: new RateLimiter({}) }, service, orchestrator);
  assert.throws(() => bare.get('/v1/anything/:id', async () => ({})), /declares nothing it owns/);
  // Public and admin routes need no declaration; a declared one is taken.
  bare.get('/v1/open', { config: { access: 'public' } }, async () => ({}));
  bare.get('/v1/admin/thing', { config: { access: 'admin' } }, async () => ({}));
  bare.get('/v1/mine/:id', { config: { owns: ['record'] } }, async () => ({}));
  await bare.ready();
  await bare.close();
});
