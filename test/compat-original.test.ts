// Clients of the original CLaaS service, with its own request bodies and query forms: lora_r and
// lora_alpha create the adapter they name, base_model must be the served model, `loras` lists ids by
// prefix, DELETE ?lora_id= is idempotent, the export is a ZIP that Python's zipfile unpacks to the
// version folder's bytes, /v1/health has the original's shape, and an adapter id may travel
// percent-encoded in a path. Another tenant reaches none of it, through any of these forms.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/api/app.js';
import { zipStream } from '../src/api/zip.js';
import { ApiKeys } from '../src/auth/keys.js';
import { tempDir } from '../src/model/random-model.js';
import type { Orchestrator } from '../src/orchestrator/orchestrator.js';
import type { InferenceService } from '../src/serve/inference.js';
import { openServer, writeRandomChatModel } from '../src/serve/open.js';

// JSON replies are read field by field and checked by the assertions below.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

let app: FastifyInstance;
let service: InferenceService;
let orchestrator: Orchestrator;
let url: string;
let dir: string;
const key: Record<string, string> = {};
let zipCount = 0;
const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

async function raw(method: string, path: string, who?: string, body?: unknown) {
  return fetch(`${url}${path}`, {
    method,
    headers: { ...(who ? { authorization: `Bearer ${key[who]}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function call(method: string, path: string, who?: string, body?: unknown) {
  const res = await raw(method, path, who, body);
  return { status: res.status, body: (await res.json()) as Json };
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const exists = async (id: string) => (await orchestrator.registry.list()).some((a) => a.id === id);

/** The folder's files by name, as sha-256 of their bytes. */
function folderHashes(folder: string): Record<string, string> {
  return Object.fromEntries(readdirSync(folder).sort().map((f) => [f, sha(readFileSync(join(folder, f)))]));
}

/** A ZIP unpacked by Python's zipfile (not by this server's code): name -> sha-256, and the methods. */
function unzipWithPython(zip: Buffer): { files: Record<string, string>; methods: number[] } {
  const file = join(dir, `export-${++zipCount}.zip`);
  writeFileSync(file, zip);
  const script = [
    'import hashlib, json, struct, sys, zipfile',
    'z = zipfile.ZipFile(sys.argv[1])',
    'bad = z.testzip()',
    'assert bad is None, bad',
    // Readers that stream (without the central directory) trust the local header and the data
    // descriptor after each entry: both must agree with the directory.
    'raw = open(sys.argv[1], "rb").read()',
    'for i in z.infolist():',
    '    sig, _, flags, method, _, _, _, _, _, n, extra = struct.unpack_from("<IHHHHHIIIHH", raw, i.header_offset)',
    '    assert sig == 0x04034b50 and method == i.compress_type and raw[i.header_offset + 30:i.header_offset + 30 + n].decode() == i.filename, i.filename',
    '    if flags & 8:',
    '        d = struct.unpack_from("<IIII", raw, i.header_offset + 30 + n + extra + i.compress_size)',
    '        assert d == (0x08074b50, i.CRC, i.compress_size, i.file_size), (i.filename, d)',
    'print(json.dumps({"files": {i.filename: hashlib.sha256(z.read(i)).hexdigest() for i in z.infolist()}, "methods": [i.compress_type for i in z.infolist()]}))',
  ].join('\n');
  return JSON.parse(execFileSync(python, ['-c', script, file], { encoding: 'utf8' })) as { files: Record<string, string>; methods: number[] };
}

before(async () => {
  dir = tempDir();
  const model = writeRandomChatModel(join(dir, 'random-tiny'));
  // Queued, never run: these tests are about the routes, not training.
  ({ service, orchestrator } = await openServer(model, { dataDir: join(dir, 'data'), threads: 2, orchestrator: { batchSize: 1000, maxWaitMs: 3_600_000 } }));
  const keys = new ApiKeys(service.store.apiKeys);
  key.alice = (await keys.create({ tenant: 'alice', role: 'user' })).key;
  key.bob = (await keys.create({ tenant: 'bob', role: 'user' })).key;
  app = await buildApp(service, { orchestrator });
  url = await app.listen({ host: '127.0.0.1', port: 0 });
});

after(async () => {
  await app.close();
  await orchestrator.close();
  await service.close();
});

test("GET /v1/health answers the original's shape, without a key, and nothing more", async () => {
  const health = await call('GET', '/v1/health');
  assert.equal(health.status, 200);
  assert.deepEqual(health.body, { status: 'healthy', worker: { status: 'running', error: null } });
  // The same server refuses a keyless request elsewhere: the health route is public on purpose.
  assert.equal((await call('GET', '/v1/lora')).status, 401);
});

test("POST /v1/lora/init takes the original's body: lora_r, lora_alpha, base_model, target_modules", async () => {
  const created = await call('POST', '/v1/lora/init', 'alice', { lora_id: 'alice/coder-v1', base_model: service.modelName, lora_r: 8, lora_alpha: 16, target_modules: ['q_proj', 'v_proj'] });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  assert.equal(created.body.lora_id, 'alice/coder-v1');
  assert.equal(created.body.rank, 8);
  assert.equal(created.body.alpha, 16);
  assert.deepEqual(created.body.target_modules, ['q_proj', 'v_proj']);
  const config = JSON.parse(readFileSync(join(orchestrator.registry.dir('alice/coder-v1', 1), 'adapter_config.json'), 'utf8')) as Json;
  assert.equal(config.r, 8);
  assert.equal(config.lora_alpha, 16);

  // The Hugging Face form of the served model's name, and the original's null for default modules.
  const hf = await call('POST', '/v1/lora/init', 'alice', { lora_id: 'alice/other', base_model: `some-org/${service.modelName}`, lora_r: 4, lora_alpha: 8, target_modules: null });
  assert.equal(hf.status, 201, JSON.stringify(hf.body));
  assert.equal(hf.body.rank, 4);
  assert.equal(hf.body.target_modules.length, 7);

  // rank and lora_r together are fine when they agree.
  const both = await call('POST', '/v1/lora/init', 'alice', { lora_id: 'alice/both', rank: 4, lora_r: 4, alpha: 8, lora_alpha: 8 });
  assert.equal(both.status, 201, JSON.stringify(both.body));
  assert.equal(both.body.rank, 4);
});

test('POST /v1/lora/init refuses another base model, contradicting sizes, unknown fields and the original out-of-range values', async () => {
  const other = await call('POST', '/v1/lora/init', 'alice', { lora_id: 'alice/wrong-base', base_model: 'Qwen/Qwen3-8B', lora_r: 8 });
  assert.equal(other.status, 400);
  assert.equal(other.body.error.param, 'base_model');
  assert.ok(other.body.error.message.includes(JSON.stringify(service.modelName)), other.body.error.message);
  assert.ok(!(await exists('alice/wrong-base')));

  const conflict = await call('POST', '/v1/lora/init', 'alice', { lora_id: 'alice/conflict', rank: 8, lora_r: 16 });
  assert.equal(conflict.status, 400);
  assert.match(conflict.body.error.message, /rank.*lora_r/);
  const alphaConflict = await call('POST', '/v1/lora/init', 'alice', { lora_id: 'alice/conflict', alpha: 8, lora_alpha: 16 });
  assert.equal(alphaConflict.status, 400);
  assert.match(alphaConflict.body.error.message, /alpha.*lora_alpha/);
  assert.ok(!(await exists('alice/conflict')));

  const unknown = await call('POST', '/v1/lora/init', 'alice', { lora_id: 'alice/unknown', lora_r: 8, lora_dropout: 0.1 });
  assert.equal(unknown.status, 400);
  assert.ok(unknown.body.error.message.includes('"lora_dropout"'), unknown.body.error.message);
  assert.ok(!(await exists('alice/unknown')));

  for (const body of [{ lora_r: 2 }, { lora_r: 256 }, { lora_alpha: 4 }, { lora_alpha: 512 }]) {
    const r = await call('POST', '/v1/lora/init', 'alice', { lora_id: 'alice/range', ...body });
    assert.equal(r.status, 400, JSON.stringify(body));
  }
  assert.ok(!(await exists('alice/range')));

  // Unknown query parameters are named too, on this server's routes as on the original's.
  const list = await call('GET', '/v1/lora?prefix=alice/&limit=3', 'alice');
  assert.equal(list.status, 400);
  assert.ok(list.body.error.message.includes('"limit"'), list.body.error.message);
  const tar = await call('GET', '/v1/lora/alice/coder-v1/export?format=zip', 'alice');
  assert.equal(tar.status, 400);
  assert.ok(tar.body.error.message.includes('"format"'), tar.body.error.message);
});

test('GET /v1/lora answers `loras` (ids) beside `data`, by prefix and by tenant', async () => {
  assert.equal((await call('POST', '/v1/lora/init', 'bob', { lora_id: 'bob/coder-v1', lora_r: 4, lora_alpha: 8 })).status, 201);
  const all = await call('GET', '/v1/lora', 'alice');
  assert.equal(all.status, 200);
  assert.deepEqual(all.body.loras, ['alice/both', 'alice/coder-v1', 'alice/other']);
  assert.deepEqual(all.body.data.map((a: Json) => a.lora_id), all.body.loras);
  const coder = await call('GET', '/v1/lora?prefix=alice/coder', 'alice');
  assert.deepEqual(coder.body.loras, ['alice/coder-v1']);
  assert.deepEqual(coder.body.data.map((a: Json) => a.lora_id), ['alice/coder-v1']);
  assert.deepEqual((await call('GET', '/v1/lora?prefix=alice/', 'alice')).body.loras, ['alice/both', 'alice/coder-v1', 'alice/other']);
  // bob sees his own only, whatever prefix he asks for.
  const bobAll = await call('GET', '/v1/lora', 'bob');
  assert.deepEqual(bobAll.body.loras, ['bob/coder-v1']);
  const bobPeek = await call('GET', '/v1/lora?prefix=alice/', 'bob');
  assert.equal(bobPeek.status, 200);
  assert.deepEqual(bobPeek.body, { data: [], loras: [] });
});

test('DELETE /v1/lora?lora_id= is idempotent: deleted true, then false', async () => {
  assert.equal((await call('POST', '/v1/lora/init', 'alice', { lora_id: 'alice/scratch', lora_r: 4, lora_alpha: 8 })).status, 201);
  const first = await call('DELETE', '/v1/lora?lora_id=alice/scratch', 'alice');
  assert.equal(first.status, 200);
  assert.deepEqual(first.body, { deleted: true });
  assert.ok(!(await exists('alice/scratch')));
  assert.equal((await call('GET', '/v1/lora/alice/scratch', 'alice')).status, 404);
  const again = await call('DELETE', '/v1/lora?lora_id=alice%2Fscratch', 'alice');
  assert.equal(again.status, 200);
  assert.deepEqual(again.body, { deleted: false });
  assert.equal((await call('DELETE', '/v1/lora', 'alice')).status, 400, 'lora_id is required');
});

test('a percent-encoded id works in GET, rollback, export and DELETE paths', async () => {
  const id = 'alice/coder-v1';
  const plain = await call('GET', `/v1/lora/${id}`, 'alice');
  for (const encoded of ['alice%2Fcoder-v1', 'alice%2fcoder-v1']) {
    const got = await call('GET', `/v1/lora/${encoded}`, 'alice');
    assert.equal(got.status, 200, JSON.stringify(got.body));
    assert.deepEqual(got.body, plain.body);
  }

  // A second version with other weights, to roll forward to.
  const registry = orchestrator.registry;
  const lease = await registry.lease(id);
  const current = lease.adapter;
  const s = current.state();
  lease.release();
  const params = s.params.map((x, i) => x + 0.01 * ((i % 5) - 2));
  const next = service.engine.restoreAdapter(current.shape, { params, ema: params.slice(), m: new Float32Array(params.length), v: new Float32Array(params.length).fill(1e-6), step: 3 });
  assert.equal(await registry.addVersion(id, next, { parent: 1, status: 'candidate' }), 2);
  // A job's assigned version is written once: an existing version, of no job or another, is refused.
  await assert.rejects(registry.addVersion(id, next, { parent: 1, status: 'candidate', jobId: 'job-late' }, 2), /already has version 2; not written again/);
  const rolled = await call('POST', '/v1/lora/alice%2Fcoder-v1/rollback', 'alice', { version: 2 });
  assert.equal(rolled.status, 200, JSON.stringify(rolled.body));
  assert.equal(rolled.body.current_version, 2);
  assert.equal((await registry.get(id)).currentVersion, 2);

  const tarRes = await raw('GET', '/v1/lora/alice%2Fcoder-v1/export', 'alice');
  assert.equal(tarRes.status, 200);
  assert.equal(tarRes.headers.get('content-type'), 'application/gzip');
  assert.match(tarRes.headers.get('content-disposition') ?? '', /alice-coder-v1-v0002\.tar\.gz/);
  const gz = Buffer.from(await tarRes.arrayBuffer());
  assert.deepEqual([gz[0], gz[1]], [0x1f, 0x8b]);
  const v1 = await raw('GET', '/v1/lora/alice%2Fcoder-v1/export?version=1', 'alice');
  assert.match(v1.headers.get('content-disposition') ?? '', /v0001\.tar\.gz/);
  await v1.arrayBuffer();

  assert.equal((await call('POST', '/v1/lora/init', 'alice', { lora_id: 'alice/scratch2', lora_r: 4, lora_alpha: 8 })).status, 201);
  const deleted = await call('DELETE', '/v1/lora/alice%2Fscratch2', 'alice');
  assert.equal(deleted.status, 200);
  assert.deepEqual(deleted.body, { lora_id: 'alice/scratch2', deleted: true });
  assert.ok(!(await exists('alice/scratch2')));
  assert.equal((await call('DELETE', '/v1/lora/alice%2Fscratch2', 'alice')).status, 404, 'as the unencoded path answers');
  assert.equal((await call('GET', '/v1/lora/alice%2Fscratch2', 'alice')).status, 404);

  // An adapter named "export" is still read at its unencoded address.
  assert.equal((await call('POST', '/v1/lora/init', 'alice', { lora_id: 'alice/export', lora_r: 4, lora_alpha: 8 })).status, 201);
  const named = await call('GET', '/v1/lora/alice/export', 'alice');
  assert.equal(named.status, 200, JSON.stringify(named.body));
  assert.equal(named.body.lora_id, 'alice/export');
});

test("GET /v1/lora/export?lora_id= is a ZIP of the current version's folder that Python's zipfile unpacks byte for byte", async () => {
  const id = 'alice/coder-v1';
  const version = (await orchestrator.registry.get(id)).currentVersion;
  assert.equal(version, 2, 'the previous test rolled it forward');
  const res = await raw('GET', `/v1/lora/export?lora_id=${encodeURIComponent(id)}`, 'alice');
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'application/zip');
  assert.equal(res.headers.get('content-disposition'), 'attachment; filename="alice__coder-v1.zip"');
  const zip = Buffer.from(await res.arrayBuffer());
  const { files, methods } = unzipWithPython(zip);
  const expected = folderHashes(orchestrator.registry.dir(id, version));
  assert.deepEqual(Object.keys(expected).sort(), ['adapter_config.json', 'adapter_model.safetensors', 'ema_model.safetensors', 'optimizer.safetensors']);
  assert.deepEqual(files, expected);
  assert.ok(methods.every((m) => m === 8), 'deflated, as the original');
  // The current version, not the first one.
  assert.notEqual(files['adapter_model.safetensors'], folderHashes(orchestrator.registry.dir(id, 1))['adapter_model.safetensors']);

  // An older version on request, and a missing adapter or version is a 404, not an empty archive.
  const first = await raw('GET', `/v1/lora/export?lora_id=${id}&version=1`, 'alice');
  assert.equal(first.status, 200);
  assert.deepEqual(unzipWithPython(Buffer.from(await first.arrayBuffer())).files, folderHashes(orchestrator.registry.dir(id, 1)));
  assert.equal((await call('GET', '/v1/lora/export?lora_id=alice/nothing', 'alice')).status, 404);
  assert.equal((await call('GET', `/v1/lora/export?lora_id=${id}&version=9`, 'alice')).status, 404);
  assert.equal((await call('GET', '/v1/lora/export', 'alice')).status, 400, 'lora_id is required');

  // unzip, where installed, agrees.
  if (existsSync('/usr/bin/unzip')) {
    const file = join(dir, 'check.zip');
    writeFileSync(file, zip);
    assert.match(execFileSync('/usr/bin/unzip', ['-t', file], { encoding: 'utf8' }), /No errors detected/);
  }
});

test("bob cannot list, read, delete, export or roll back alice's adapter through any of these forms", async () => {
  const id = 'alice/coder-v1';
  const before = await orchestrator.registry.get(id);
  assert.deepEqual((await call('GET', '/v1/lora?prefix=alice/', 'bob')).body.loras, []);

  const refused: [string, string, unknown, number][] = [
    ['DELETE', `/v1/lora?lora_id=${id}`, undefined, 403],
    ['DELETE', '/v1/lora?lora_id=alice%2Fcoder-v1', undefined, 403],
    // Whether it exists or not: the answer tells bob nothing.
    ['DELETE', '/v1/lora?lora_id=alice/nothing', undefined, 403],
    ['GET', `/v1/lora/export?lora_id=${id}`, undefined, 403],
    ['GET', '/v1/lora/alice%2Fcoder-v1', undefined, 404],
    ['GET', '/v1/lora/alice%2fcoder-v1', undefined, 404],
    ['DELETE', '/v1/lora/alice%2Fcoder-v1', undefined, 404],
    ['GET', '/v1/lora/alice%2Fcoder-v1/export', undefined, 404],
    ['POST', '/v1/lora/alice%2Fcoder-v1/rollback', { version: 1 }, 404],
    ['GET', '/v1/lora/alice/export', undefined, 404],
    ['GET', `/v1/lora/${id}`, undefined, 404],
    ['DELETE', `/v1/lora/${id}`, undefined, 404],
    ['GET', `/v1/lora/${id}/export`, undefined, 404],
    // A tenant segment that decodes to bob's own name plus more is still not bob's.
    ['GET', '/v1/lora/bob%2F..%2Falice%2Fcoder-v1', undefined, 400],
  ];
  for (const [method, path, body, status] of refused) {
    const r = await call(method, path, 'bob', body);
    assert.equal(r.status, status, `${method} ${path}: ${JSON.stringify(r.body)}`);
    assert.ok(r.body.error, `${method} ${path} answers an error`);
    assert.equal(r.body.lora_id, undefined);
  }
  const after = await orchestrator.registry.get(id);
  assert.equal(after.currentVersion, before.currentVersion);
  assert.equal(after.versions.length, before.versions.length);
  assert.ok((await exists(id)) && (await exists('alice/export')));
  // bob's own adapter, by the same forms, works: the refusals above are about ownership.
  assert.equal((await call('GET', '/v1/lora/bob%2Fcoder-v1', 'bob')).status, 200);
  assert.equal(await raw('GET', '/v1/lora/export?lora_id=bob/coder-v1', 'bob').then(async (r) => { await r.arrayBuffer(); return r.status; }), 200);
  assert.deepEqual((await call('DELETE', '/v1/lora?lora_id=bob/coder-v1', 'bob')).body, { deleted: true });
});

test('the ZIP writer: entries read in many chunks, an empty entry and a non-ASCII name unpack exactly', async () => {
  const big = randomBytes(3 * 1024 * 1024 + 17);
  const text = Buffer.from('{"r": 8}\n'.repeat(50_000));
  const chunks = (b: Buffer, size: number) => Readable.from(Array.from({ length: Math.ceil(b.length / size) }, (_, i) => b.subarray(i * size, (i + 1) * size)));
  const modified = new Date(2024, 4, 6, 7, 8, 10);
  const zip = Buffer.concat(
    await zipStream([
      { name: 'adapter_model.safetensors', data: chunks(big, 65_536), modified },
      { name: 'empty.json', data: Readable.from([]), modified },
      { name: 'notes-é.txt', data: chunks(text, 1000), modified },
    ]).toArray(),
  );
  const { files, methods } = unzipWithPython(zip);
  assert.deepEqual(files, { 'adapter_model.safetensors': sha(big), 'empty.json': sha(Buffer.alloc(0)), 'notes-é.txt': sha(text) });
  assert.deepEqual(methods, [8, 8, 8]);
  assert.ok(zip.length < big.length + text.length / 10, 'the text was compressed');
});
