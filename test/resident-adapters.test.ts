// The served set's memory rules, on the CPU engine: a replaced version stays until its last user
// lets go; the least recently used unleased adapters go first when over the budget, leased ones
// never; an evicted adapter comes back from its folder with the same weights.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Engine } from '../src/engine/engine.js';
import { tempDir, writeRandomModel } from '../src/model/random-model.js';
import { ResidentAdapters } from '../src/serve/resident-adapters.js';

async function setup() {
  const engine = await Engine.open(writeRandomModel({ seed: 91 }), { backend: 'cpu', threads: 1 });
  const dir = tempDir();
  const make = async (name: string, seed: number) => {
    const a = engine.createAdapter({ rank: 4, alpha: 8, seed });
    const path = join(dir, name);
    await engine.saveAdapter(a, path);
    return { adapter: a, path };
  };
  return { engine, make };
}

test('a replaced version is freed when its last lease is released, not before', async () => {
  const { engine, make } = await setup();
  const served = new ResidentAdapters(engine);
  const v1 = await make('v1', 1);
  const v2 = await make('v2', 2);
  served.set('ana', 'v0001', v1.adapter, v1.path);
  const lease = await served.acquire('ana');
  assert.equal(lease.adapter, v1.adapter);
  served.set('ana', 'v0002', v2.adapter, v2.path);
  assert.equal(v1.adapter.disposed, false, 'still in use by a reply');
  assert.equal((await served.acquire('ana')).adapter, v2.adapter, 'new uses get the new version');
  lease.release();
  assert.equal(v1.adapter.disposed, true);
  assert.equal(v1.adapter.bytes, 0);
  lease.release(); // idempotent
  assert.equal(v2.adapter.disposed, false);
});

test('over the budget, least recently used unleased adapters are evicted and load again unchanged', async () => {
  const { engine, make } = await setup();
  const a = await make('a', 1);
  const b = await make('b', 2);
  const c = await make('c', 3);
  const per = a.adapter.bytes;
  const served = new ResidentAdapters(engine, 2.5 * per);
  const before = a.adapter.state().params;
  served.set('a', 'v1', a.adapter, a.path);
  served.set('b', 'v1', b.adapter, b.path);
  const holdB = await served.acquire('b');
  (await served.acquire('a')).release(); // a used after b: b is now the least recently used
  served.set('c', 'v1', c.adapter, c.path); // three do not fit: b is leased, so a goes
  assert.equal(a.adapter.disposed, true);
  assert.equal(b.adapter.disposed, false, 'a leased adapter is never evicted');
  assert.ok(served.stats().residentBytes <= 2.5 * per);
  holdB.release(); // over nothing now: b stays
  const again = await served.acquire('a'); // loads a from its folder, evicting the least recently used (b)
  assert.deepEqual([...again.adapter.state().params], [...before]);
  assert.equal(b.adapter.disposed, true);
  const s = served.stats();
  assert.deepEqual([s.adapters, s.resident, s.loads, s.evictions], [3, 2, 1, 2]);
  again.release();
  // Without a folder an adapter cannot come back, so it is never evicted.
  const d = engine.createAdapter({ rank: 4, alpha: 8, seed: 4 });
  served.set('d', 'external', d);
  assert.equal(d.disposed, false);
  assert.throws(() => new ResidentAdapters(engine, 0), /budget must be positive/);
});
