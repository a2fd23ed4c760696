// The README's copy-paste loop works: its shell block runs against a fresh `claas serve` and prints
// what the README says it prints (version 2 after feedback, the alias on v0002, rollback to 1).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { tempDir } from '../src/model/random-model.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = join(root, 'dist/src/cli.js');

test('the README loop runs as written', async () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const block = readme.match(/<!-- loop:begin -->\s*```sh\n([\s\S]*?)```\s*<!-- loop:end -->/)?.[1];
  assert.ok(block, 'the README has the loop block');
  const dir = tempDir();
  const server = spawn(process.execPath, [cli, 'serve', '--data', join(dir, 'data'), '--port', '0', '--threads', '2', '--batch-wait-ms', '200'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn' } });
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
    assert.match(lines[0]!, /"lora_id":"ana\/assistant"/);
    assert.ok(lines.includes('2'), out);
    assert.ok(lines.includes('ana/assistant@v0002'), out);
    assert.equal(lines.at(-1), '1', out);
    const archive = join(dir, 'ana-assistant-v0002.tar.gz');
    assert.ok(statSync(archive).size > 0);
    assert.ok(gunzipSync(readFileSync(archive)).includes('adapter_config.json'));
  } finally {
    server.kill('SIGTERM');
  }
});
