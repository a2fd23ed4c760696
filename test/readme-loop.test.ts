// The README's copy-paste loop works on the path a new user takes: its shell block runs against a fresh
// `claas serve` started as `npm start` starts it (the toy model, its training profile, default
// batching) and prints what the README says it prints — the profile, versions 2 and 3 after two
// batches of four "Please answer in upper case.", the alias on v0003, then a reply to a new question in
// capitals that still answers it (the replies before the feedback were not), and rollback to 1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { tempDir } from '../src/model/random-model.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = join(root, 'dist/src/cli.js');

test('the README loop runs as written', async () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const block = readme.match(/<!-- loop:begin -->\s*```sh\n([\s\S]*?)```\s*<!-- loop:end -->/)?.[1];
  assert.ok(block, 'the README has the loop block');
  const dir = tempDir();
  const server = spawn(process.execPath, [cli, 'serve', '--data', join(dir, 'data'), '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn' } });
  let log = '';
  server.stderr.on('data', (d) => (log += d));
  try {
    const address = await new Promise<string>((resolve, reject) => {
      server.stdout.on('data', (d: Buffer) => {
        log += d;
        const m = log.match(/serving "[^"]+" at (\S+)\/v1/);
        if (m) resolve(m[1]!);
      });
      server.on('exit', (code) => reject(new Error(`server exited (${code}):\n${log}`)));
    });
    const shell = spawn('bash', ['-euo', 'pipefail', '-c', block], { cwd: dir, env: { ...process.env, CLAAS: address }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    shell.stdout.on('data', (d) => (out += d));
    shell.stderr.on('data', (d) => (err += d));
    const code = await new Promise<number | null>((resolve) => shell.on('exit', resolve));
    assert.equal(code, 0, `the block failed:\n${out}\n${err}\n${log}`);
    const lines = out.trim().split('\n');
    assert.match(lines[0]!, /training_profile\.json/, 'the toy ships its training profile');
    assert.equal(lines[1], 'ana/assistant@v0001');
    assert.equal(lines[2], '2', `the first batch of four feedback items made version 2:\n${out}`);
    assert.equal(lines[3], '3', `the second made version 3:\n${out}`);
    assert.equal(lines[4], 'ana/assistant@v0003');
    // The reply to "What number comes after 41?" after the updates.
    const reply = lines.slice(5, lines.findIndex((l) => l.startsWith('['))).join('\n');
    assert.match(reply, /[A-Z]/);
    assert.equal(reply, reply.toUpperCase(), `the assistant now answers in capitals:\n${out}`);
    assert.match(reply, /\b42\b/, `and still answers the question:\n${out}`);
    assert.equal(lines.at(-1), '1', out);
    // What the four replies given feedback looked like: the default style, not capitals.
    const db = new Database(join(dir, 'data', 'claas.db'), { readonly: true });
    const before = (db.prepare("SELECT c.text FROM completion_choices c JOIN completions r ON r.id = c.completion_id WHERE r.adapter = 'ana/assistant' AND r.adapter_version = 'v0001'").all() as { text: string }[]).map((r) => r.text);
    db.close();
    assert.equal(before.length, 4, 'the first four chats were answered by version 1');
    for (const t of before) assert.notEqual(t, t.toUpperCase(), `before the feedback: ${JSON.stringify(t)}`);
    const archive = join(dir, 'ana-assistant-v0003.tar.gz');
    assert.ok(statSync(archive).size > 0);
    assert.ok(gunzipSync(readFileSync(archive)).includes('adapter_config.json'));
  } finally {
    server.kill('SIGTERM');
  }
});
