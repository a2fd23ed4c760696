// The object stores adapter versions live in, one suite run against each: a folder, and S3 as spoken
// to s3rver (an S3 emulator from npm, on loopback: the most S3-like server that runs here; no real S3
// or MinIO is reachable). Objects: write, read, list, delete, create-only writes. Versions: a real
// adapter folder published and fetched back byte for byte; invisible until its manifest is written;
// never replaced (another job's publish is a conflict, the same job's retry is not); a corrupted file
// refused; two racing publishers, one winner; leftovers of torn uploads swept.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { readdirSync, readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Engine } from '../src/engine/engine.js';
import { tempDir, writeRandomModel } from '../src/model/random-model.js';
import { openObjectStore, type ObjectStore } from '../src/store/objects/object-store.js';
import { VersionConflictError, VersionStore } from '../src/store/objects/version-store.js';

interface S3rverInstance {
  run(): Promise<unknown>;
  close(): Promise<void>;
  httpServer: { address(): AddressInfo };
}
type S3rverClass = new (options: Record<string, unknown>) => S3rverInstance;
const S3rver = createRequire(import.meta.url)('s3rver') as S3rverClass;

let s3: S3rverInstance;
let s3Url: string;
let adapterDir: string;

before(async () => {
  s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: tempDir('claas-s3-'), configureBuckets: [{ name: 'claas' }] });
  await s3.run();
  s3Url = `http://127.0.0.1:${s3.httpServer.address().port}`;
  // s3rver's own credentials.
  process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
  process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
  const engine = await Engine.open(writeRandomModel({ seed: 81 }), { backend: 'cpu', threads: 1 });
  adapterDir = join(tempDir(), 'v0001');
  await engine.saveAdapter(engine.createAdapter({ rank: 4, alpha: 8, seed: 1 }), adapterDir);
});

after(async () => {
  await s3.close();
});

const stores: [string, () => ObjectStore][] = [
  ['folder', () => openObjectStore(tempDir('claas-objects-'))],
  ['S3 (s3rver)', () => openObjectStore(`s3://claas/run-${Math.random().toString(36).slice(2)}?endpoint=${encodeURIComponent(s3Url)}`)],
];

for (const [name, open] of stores) {
  test(`${name}: objects are written, read, listed and deleted; create-only writes never replace`, async () => {
    const store = open();
    assert.equal(await store.get('a/b/c.bin'), null);
    assert.equal(await store.put('a/b/c.bin', Buffer.from('one')), true);
    assert.equal((await store.get('a/b/c.bin'))!.toString(), 'one');
    assert.equal(await store.put('a/b/c.bin', Buffer.from('two')), true, 'a plain write replaces');
    assert.equal((await store.get('a/b/c.bin'))!.toString(), 'two');
    assert.equal(await store.put('a/b/c.bin', Buffer.from('three'), { ifAbsent: true }), false);
    assert.equal((await store.get('a/b/c.bin'))!.toString(), 'two');
    assert.equal(await store.put('a/b/d.bin', Buffer.from('four'), { ifAbsent: true }), true);
    await store.put('a/x.bin', Buffer.alloc(3 * 2 ** 20, 7));
    assert.deepEqual(await store.list('a/b/'), ['a/b/c.bin', 'a/b/d.bin']);
    assert.deepEqual(await store.list('a/'), ['a/b/c.bin', 'a/b/d.bin', 'a/x.bin']);
    assert.equal((await store.get('a/x.bin'))!.length, 3 * 2 ** 20);
    await store.delete(['a/b/c.bin', 'a/missing.bin']);
    assert.deepEqual(await store.list('a/'), ['a/b/d.bin', 'a/x.bin']);
    await assert.rejects(store.put('../escape', Buffer.from('x')), /not an object key/);
    await assert.rejects(store.get('a//b'), /not an object key/);
  });

  test(`${name}: adapter versions are immutable, visible once whole, and checked when fetched`, async () => {
    const objects = open();
    const versions = new VersionStore(objects);
    assert.deepEqual(await versions.versions('ana/style'), []);
    assert.equal(await versions.publish('ana/style', 1, adapterDir, 'job-1'), 'published');
    assert.equal(await versions.publish('ana/style', 1, adapterDir, 'job-1'), 'exists', "the same job's retry");
    await assert.rejects(versions.publish('ana/style', 1, adapterDir, 'job-2'), VersionConflictError);
    assert.deepEqual(await versions.versions('ana/style'), [1]);

    const out = join(tempDir(), 'fetched', 'v0001');
    const m = await versions.fetch('ana/style', 1, out);
    assert.equal(m.jobId, 'job-1');
    assert.deepEqual(readdirSync(out).sort(), readdirSync(adapterDir).sort());
    for (const f of readdirSync(adapterDir)) assert.deepEqual(readFileSync(join(out, f)), readFileSync(join(adapterDir, f)), f);

    // A torn upload (files without a manifest) is not a version.
    await objects.put('adapters/ana/style/v0002.torn/adapter_model.safetensors', Buffer.from('half'));
    assert.deepEqual(await versions.versions('ana/style'), [1]);
    await assert.rejects(versions.fetch('ana/style', 2, join(tempDir(), 'v0002')), /not published/);

    // Two publishers racing for version 3: exactly one wins, the other is told so, where the store's
    // create-only writes are atomic. s3rver ignores If-None-Match (real S3 and MinIO honour it): there
    // the probe says so, and the race is left to the job queue's lease (one trainer per adapter).
    const atomic = await objects.atomicCreate();
    assert.equal(atomic, name === 'folder', `atomic create-only writes on ${name}`);
    if (atomic) {
      const race = await Promise.allSettled([versions.publish('ana/style', 3, adapterDir, 'job-a'), versions.publish('ana/style', 3, adapterDir, 'job-b')]);
      assert.equal(race.filter((r) => r.status === 'fulfilled').length, 1, JSON.stringify(race.map((r) => r.status)));
      assert.ok(race.some((r) => r.status === 'rejected' && r.reason instanceof VersionConflictError));
    } else {
      assert.equal(await versions.publish('ana/style', 3, adapterDir, 'job-a'), 'published');
      await assert.rejects(versions.publish('ana/style', 3, adapterDir, 'job-b'), VersionConflictError);
    }
    assert.deepEqual(await versions.versions('ana/style'), [1, 3]);

    // The torn v0002 upload lies below the newest version: swept; v0001's and v0003's files stay.
    const swept = await versions.sweep('ana/style');
    assert.ok(swept.includes('adapters/ana/style/v0002.torn/adapter_model.safetensors'), swept.join(', '));
    await versions.fetch('ana/style', 3, join(tempDir(), 'v0003'));

    // A file changed after publishing is refused, and nothing is left at the destination.
    const manifest = (await versions.manifest('ana/style', 1))!;
    await objects.put(`adapters/ana/style/${manifest.upload}/${manifest.files[0]!.name}`, Buffer.from('tampered'));
    const bad = join(tempDir(), 'bad', 'v0001');
    await assert.rejects(versions.fetch('ana/style', 1, bad), /does not match its manifest/);
    assert.throws(() => readdirSync(bad), /ENOENT/);
  });
}
