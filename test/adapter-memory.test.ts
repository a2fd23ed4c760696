// `claas serve --adapter-memory`: a server with more adapters than its budget holds serves every one
// of them (the least recently used are freed and loaded again from their version folders), and its
// resident memory stays bounded; the same load without the budget grows with the number of adapters.
// The adapters (rank 64 on every projection of a hidden-256 model) hold 25.9 MB each.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../src/model/random-model.js';
import { writeRandomChatModel } from '../src/serve/open.js';
import { startServe } from './serve-child.js';

const ADAPTERS = 16;
const BUDGET_MIB = 64;

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

async function serveAndMeasure(model: string, flags: string[]): Promise<{ baseRss: number; peakRss: number; metrics: Map<string, number>; replies: string[] }> {
  const data = join(tempDir(), 'data');
  const server = await startServe(['--model', model, '--data', data, '--port', '0', '--threads', '1', ...flags]);
  const { proc, address } = server;
  try {
    const post = async (path: string, body: unknown) => {
      const r = await fetch(`${address}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      assert.ok(r.ok, `${path}: ${r.status} ${await r.clone().text()}`);
      return (await r.json()) as Record<string, unknown>;
    };
    // One chat on the base model first, so the baseline includes what serving itself allocates.
    await post('/v1/chat/completions', { model: 'model', messages: [{ role: 'user', content: 'hello' }], max_tokens: 4, temperature: 0 });
    const baseRss = rssBytes(proc.pid!);
    let peakRss = baseRss;
    const replies: string[] = [];
    for (let i = 0; i < ADAPTERS; i++) {
      await post('/v1/lora/init', { lora_id: `u/a${i}`, rank: 64, alpha: 64, seed: i });
      peakRss = Math.max(peakRss, rssBytes(proc.pid!));
    }
    // Two passes over every adapter: each chat needs its adapter resident.
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < ADAPTERS; i++) {
        const r = await post('/v1/chat/completions', { model: `u/a${i}`, messages: [{ role: 'user', content: `hello ${i}` }], max_tokens: 4, temperature: 0 });
        replies.push(((r.choices as { message: { content: string } }[])[0]!).message.content);
        peakRss = Math.max(peakRss, rssBytes(proc.pid!));
      }
    }
    const text = await (await fetch(`${address}/metrics`)).text();
    const metrics = new Map([...text.matchAll(/^(claas_\w+) (\S+)$/gm)].map((m) => [m[1]!, Number(m[2])]));
    return { baseRss, peakRss, metrics, replies };
  } finally {
    await server.stop();
  }
}

test('more adapters than --adapter-memory holds: all are served, resident memory stays bounded', async (t) => {
  const model = writeRandomChatModel(join(tempDir(), 'model'), 3, { hidden: 256, layers: 4, intermediate: 1024 });
  const bounded = await serveAndMeasure(model, ['--adapter-memory', `${BUDGET_MIB}MiB`]);
  const unbounded = await serveAndMeasure(model, []);
  const mib = (b: number) => Math.round(b / 2 ** 20);
  const grewBounded = bounded.peakRss - bounded.baseRss;
  const grewUnbounded = unbounded.peakRss - unbounded.baseRss;
  t.diagnostic(`RSS growth over ${ADAPTERS} adapters: ${mib(grewBounded)} MiB with a ${BUDGET_MIB} MiB budget, ${mib(grewUnbounded)} MiB without`);
  t.diagnostic(`bounded: ${bounded.metrics.get('claas_adapter_evictions_total')} evictions, ${bounded.metrics.get('claas_adapter_loads_total')} loads`);
  // Every adapter answered, and answered the same with and without the budget (an evicted adapter
  // comes back from its folder exactly).
  assert.equal(bounded.replies.length, 2 * ADAPTERS);
  assert.deepEqual(bounded.replies, unbounded.replies);
  // The resident set keeps to its budget, having evicted and reloaded adapters to do so.
  assert.ok(bounded.metrics.get('claas_adapters_resident_bytes')! <= BUDGET_MIB * 2 ** 20);
  assert.ok(bounded.metrics.get('claas_adapter_evictions_total')! >= ADAPTERS);
  assert.ok(bounded.metrics.get('claas_adapter_loads_total')! >= ADAPTERS);
  assert.equal(unbounded.metrics.get('claas_adapter_evictions_total'), 0);
  assert.ok(unbounded.metrics.get('claas_adapters_resident_bytes')! >= ADAPTERS * 25e6);
  // And the process's memory follows: bounded by the budget plus what loads need in passing (an
  // adapter being loaded is held twice, as the arrays read from its files and as the engine's copy,
  // and read arrays stay until the next collection), where without one it grows with every adapter.
  assert.ok(grewBounded < (BUDGET_MIB + 128) * 2 ** 20, `RSS grew ${mib(grewBounded)} MiB with the budget`);
  assert.ok(grewUnbounded > 2 * grewBounded, `RSS grew ${mib(grewUnbounded)} MiB without the budget, ${mib(grewBounded)} MiB with it`);
});
