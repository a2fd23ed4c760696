// `claas serve` as a real process: 32 concurrent chats all succeed, and a SIGTERM sent while they run
// loses none of them (the server finishes in-flight requests, stores their records, then exits 0).
// Its database is 0600 and its data folder closed to others. And a mistyped command line is a usage error that names the option, not a stack trace.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { tempDir } from '../src/model/random-model.js';
import { openStore } from '../src/store/store.js';

const cli = fileURLToPath(new URL('../src/cli.js', import.meta.url));

test('32 concurrent chats succeed and SIGTERM during them loses none', async () => {
  const data = join(tempDir(), 'data');
  const proc = spawn(process.execPath, [cli, 'serve', '--model', 'random', '--data', data, '--port', '0', '--threads', '2'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn' } });
  let out = '';
  proc.stderr.on('data', (d) => (out += d));
  const address = await new Promise<string>((resolve, reject) => {
    proc.stdout.on('data', (d: Buffer) => {
      out += d;
      const m = out.match(/serving "[^"]+" at (\S+)\/v1/);
      if (m) resolve(m[1]!);
    });
    proc.on('exit', (code) => reject(new Error(`server exited early (${code}):\n${out}`)));
  });
  assert.match(out, /writing a small random Qwen3 chat model/);
  assert.match(out, /loading .*done in/);
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const client = new OpenAI({ baseURL: `${address}/v1`, apiKey: 'x', maxRetries: 0 });
  const requests = Array.from({ length: 32 }, async (_, i) => {
    const body = { model: 'random-tiny', messages: [{ role: 'user' as const, content: `request ${i}` }], max_tokens: 200, temperature: 0.7, seed: i };
    if (i % 2 === 0) {
      const r = await client.chat.completions.create(body);
      return { id: r.id, text: r.choices[0]!.message.content ?? '' };
    }
    let text = '';
    let id = '';
    for await (const c of await client.chat.completions.create({ ...body, stream: true })) {
      id = c.id;
      text += c.choices[0]?.delta.content ?? '';
    }
    return { id, text };
  });
  // Once every request is generating (however slow the machine), ask the server to stop.
  for (let t0 = Date.now(); Date.now() - t0 < 20_000; ) {
    const health = (await (await fetch(`${address}/v1/admin/status`)).json()) as { active_generations: number };
    if (health.active_generations >= 32) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  proc.kill('SIGTERM');
  const results = await Promise.all(requests);
  assert.equal(await exited, 0, out);
  const inFlight = Number(out.match(/SIGTERM: no new requests; finishing (\d+) generation/)?.[1]);
  assert.equal(inFlight, 32, 'SIGTERM arrived while all 32 generations were running');
  // What the server wrote is its user's alone: the database (prompts, replies, key hashes) and the data folder.
  assert.equal(statSync(join(data, 'claas.db')).mode & 0o777, 0o600);
  assert.equal(statSync(data).mode & 0o077, 0, 'the data folder is closed to others');
  const store = await openStore(join(data, 'claas.db'));
  for (const r of results) {
    assert.ok(r.text.length > 0);
    const record = await store.completions.get(r.id);
    assert.ok(record, `record ${r.id} was stored`);
    assert.ok(record.choices[0]!.outputIds.length > 0);
    assert.equal(record.choices[0]!.text.length > 0, true);
  }
  await store.close();
});

test('an unknown option is a usage error naming it (exit 2); --help prints the usage (exit 0)', () => {
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  const bad = run('eval', '--evnets', '3');
  assert.equal(bad.status, 2, bad.stderr);
  assert.match(bad.stderr, /^claas: Unknown option '--evnets'; `claas help` lists the options \(E_USAGE\)\n$/);
  const timeout = run('serve', '--request-timeout-s', '0', '--data', join(tempDir(), 'data'));
  assert.equal(timeout.status, 2, timeout.stderr);
  assert.match(timeout.stderr, /--request-timeout-s must be a number in \(0, 3600\] \(got 0\)/);
  const missing = run('serve', '--port');
  assert.equal(missing.status, 2, missing.stderr);
  assert.match(missing.stderr, /--port/);
  for (const args of [['eval', '--help'], ['serve', '-h'], ['help']]) {
    const help = run(...args);
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /^usage: claas <command>/);
  }
});
