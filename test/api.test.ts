// The OpenAI-compatible API on a live socket, driven by the official `openai` client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import OpenAI from 'openai';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/api/app.js';
import { tempDir } from '../src/model/random-model.js';
import { openInference, writeRandomChatModel } from '../src/serve/open.js';
import type { InferenceService } from '../src/serve/inference.js';

let app: FastifyInstance;
let service: InferenceService;
let client: OpenAI;
let base: string;
const model = 'random-tiny';
const messages = [
  { role: 'system' as const, content: 'You are terse.' },
  { role: 'user' as const, content: 'Name three colours.' },
];

before(async () => {
  const dir = tempDir();
  const modelDir = writeRandomChatModel(join(dir, 'random-tiny'));
  service = await openInference(modelDir, { dataDir: join(dir, 'data'), threads: 2 });
  app = await buildApp(service, { bodyLimit: 256 * 1024 });
  base = await app.listen({ host: '127.0.0.1', port: 0 });
  client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0 });
});

after(async () => {
  await app.close();
  await service.close();
});

test('chat: non-streamed and streamed replies agree under the same seed, and the record is stored', async () => {
  const plain = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0.9, seed: 7 });
  assert.equal(plain.object, 'chat.completion');
  assert.ok(plain.id.startsWith('chatcmpl-'));
  const choice = plain.choices[0]!;
  assert.ok(['stop', 'length'].includes(choice.finish_reason));
  assert.equal(plain.usage?.completion_tokens, (await service.store.completions.get(plain.id))?.choices[0]?.outputIds.length);

  const stream = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0.9, seed: 7, stream: true, stream_options: { include_usage: true } });
  let text = '';
  const ids = new Set<string>();
  let chunks = 0;
  let usage;
  let finish;
  for await (const c of stream) {
    ids.add(c.id);
    chunks++;
    text += c.choices[0]?.delta.content ?? '';
    finish = c.choices[0]?.finish_reason ?? finish;
    if (c.usage) usage = c.usage;
  }
  assert.equal(text, choice.message.content);
  assert.equal(finish, choice.finish_reason);
  assert.equal(ids.size, 1, 'every chunk carries the same completion id');
  assert.ok(chunks > 3, `tokens arrive as separate chunks (${chunks})`);
  assert.deepEqual(usage, plain.usage);
  const record = await service.store.completions.get([...ids][0]!);
  assert.ok(record, 'the streamed completion is stored under the id the client saw');
  assert.deepEqual(record.choices[0]!.outputIds, (await service.store.completions.get(plain.id))!.choices[0]!.outputIds);
});

test('greedy generation through the API equals the engine greedy tokens', async () => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: 16, temperature: 0 });
  const record = (await service.store.completions.get(r.id))!;
  const engine = service.engine;
  const seq = engine.createSequence(0);
  const greedy = { temperature: 0, topP: 1, topK: 0, topLogprobs: 0 };
  let t = (await engine.decode([{ sequence: seq, ids: record.promptIds, sampling: greedy }]))[0]!;
  const expected = [t.id];
  while (expected.length < record.choices[0]!.outputIds.length) {
    t = (await engine.decode([{ sequence: seq, ids: [t.id], sampling: greedy }]))[0]!;
    expected.push(t.id);
  }
  assert.deepEqual(record.choices[0]!.outputIds, expected);
  assert.equal(record.promptIds.length, r.usage!.prompt_tokens);
});

test('n=2, logprobs with top_logprobs, and a stop sequence', async () => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 1, seed: 3, n: 2, logprobs: true, top_logprobs: 3 });
  assert.equal(r.choices.length, 2);
  for (const c of r.choices) {
    const lp = c.logprobs!.content!;
    assert.equal(lp.length, (await service.store.completions.get(r.id))!.choices[c.index]!.outputIds.length);
    for (const t of lp) {
      assert.ok(t.logprob <= 0);
      assert.equal(t.top_logprobs.length, 3);
      assert.ok(t.top_logprobs[0]!.logprob >= t.logprob - 1e-6);
    }
  }
  const full = await client.chat.completions.create({ model, messages, max_tokens: 30, temperature: 0 });
  const text = full.choices[0]!.message.content!;
  const stop = text.slice(6, 9);
  assert.ok(stop.trim().length > 0, `usable stop string from ${JSON.stringify(text)}`);
  const cut = await client.chat.completions.create({ model, messages, max_tokens: 30, temperature: 0, stop: [stop] });
  assert.equal(cut.choices[0]!.message.content, text.slice(0, text.indexOf(stop)));
  assert.equal(cut.choices[0]!.finish_reason, 'stop');
});

test('tools are rendered through the chat template', async () => {
  const r = await client.chat.completions.create({
    model,
    messages,
    max_tokens: 4,
    tools: [{ type: 'function', function: { name: 'get_weather', description: 'Weather for a city', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }],
  });
  const record = (await service.store.completions.get(r.id))!;
  const prompt = service.tokenizer.decode(record.promptIds);
  assert.match(prompt, /<tools>[\s\S]*get_weather[\s\S]*<\/tools>/);
});

test('completions and models', async () => {
  const c = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 8, temperature: 0, logprobs: 2 });
  assert.equal(c.object, 'text_completion');
  assert.equal(c.choices[0]!.logprobs!.tokens!.length, c.usage!.completion_tokens);
  let streamed = '';
  for await (const chunk of await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 8, temperature: 0, stream: true })) streamed += chunk.choices[0]?.text ?? '';
  assert.equal(streamed, c.choices[0]!.text);

  const adapter = service.engine.createAdapter({ rank: 2, alpha: 4, seed: 1 });
  service.setAdapter('ana/style', 'v1', adapter);
  const list = await client.models.list();
  assert.deepEqual(list.data.map((m) => m.id), [model, 'ana/style']);
  const viaAdapter = await client.chat.completions.create({ model: 'ana/style', messages, max_tokens: 4, temperature: 0 });
  assert.equal((await service.store.completions.get(viaAdapter.id))!.adapter, 'ana/style');
  assert.equal((await client.models.retrieve('ana/style')).id, 'ana/style');
  service.removeAdapter('ana/style');
});

test('bad requests get 4xx errors in OpenAI shape', async () => {
  const post = async (body: string, path = '/v1/chat/completions') => {
    const res = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    return { status: res.status, body: (await res.json()) as { error: { message: string; type: string; param: string | null; code: string | null } } };
  };
  const cases: [string, number, RegExp][] = [
    [JSON.stringify({ model: 'nope', messages }), 404, /does not exist/],
    [JSON.stringify({ model, messages, max_tokens: -1 }), 400, /max_tokens/],
    [JSON.stringify({ model, messages, temperature: 3 }), 400, /temperature/],
    ['{"model": "x", "messages": [', 400, /JSON/],
    [JSON.stringify({ model, messages: 'hello' }), 400, /messages/],
    [JSON.stringify({ model, messages: [{ role: 'robot', content: 'x' }] }), 400, /role/],
    [JSON.stringify({ model, messages, pad: 'x'.repeat(300 * 1024) }), 413, /too large/],
    // Nothing is accepted and then ignored: an unknown field, or a value the server would not honour.
    [JSON.stringify({ model, messages, response_format: { type: 'json_object' } }), 400, /unexpected property "response_format"/],
    [JSON.stringify({ model, messages: [{ role: 'user', content: 'x', mood: 'happy' }] }), 400, /unexpected property "mood"/],
    [JSON.stringify({ model, messages, presence_penalty: 0.5 }), 400, /presence_penalty is not supported/],
    [JSON.stringify({ model, messages, frequency_penalty: -1 }), 400, /frequency_penalty is not supported/],
    [JSON.stringify({ model, messages, tool_choice: 'required' }), 400, /tool_choice/],
    [JSON.stringify({ model, prompt: 'x', best_of: 2 }) + '\u0000completions', 400, /unexpected property "best_of"/],
  ];
  for (const [raw, status, message] of cases) {
    const [body, path] = raw.split('\u0000');
    const r = await post(body!, path ? `/v1/${path}` : undefined);
    assert.equal(r.status, status, `${raw.slice(0, 60)} -> ${JSON.stringify(r.body)}`);
    assert.match(r.body.error.message, message);
    assert.equal(typeof r.body.error.type, 'string');
    assert.ok('param' in r.body.error && 'code' in r.body.error);
  }
  // The values that change nothing are accepted; the end-user id is kept with the record.
  const ok = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, messages, max_tokens: 2, presence_penalty: 0, frequency_penalty: null, tool_choice: 'auto', user: 'end-user-7' }) });
  assert.equal(ok.status, 200);
  assert.equal(((await service.store.completions.get(((await ok.json()) as { id: string }).id))!.request as { user?: string }).user, 'end-user-7');
  const unknown = await fetch(`${base}/v1/nothing`);
  assert.equal(unknown.status, 404);
  assert.equal(((await unknown.json()) as { error: { code: string } }).error.code, 'not_found');
  const health = await fetch(`${base}/healthz`);
  assert.deepEqual([health.status, await health.json()], [200, { status: 'ok', ready: true }], 'the public health check names nothing served');
  const status = (await (await fetch(`${base}/v1/admin/status`)).json()) as { serving: string; active_generations: number };
  assert.equal(status.serving, 'embedded');
  const metrics = await (await fetch(`${base}/metrics`)).text();
  assert.match(metrics, /claas_generated_tokens_total \d+/);
  const docs = await fetch(`${base}/docs/json`);
  assert.equal(docs.status, 200);
  assert.ok(((await docs.json()) as { paths: Record<string, unknown> }).paths['/v1/chat/completions']);
});

test('a client that goes away mid-stream stops its generation', async () => {
  const controller = new AbortController();
  const res = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages, max_tokens: 4000, stream: true }),
    signal: controller.signal,
  });
  const reader = res.body!.getReader();
  await reader.read();
  assert.equal(service.generator.size, 1, 'the generation is running');
  controller.abort();
  const t0 = Date.now();
  while (service.generator.size > 0 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 10));
  assert.equal(service.generator.size, 0, 'the generation stopped when the client left');
  const after = await client.chat.completions.create({ model, messages, max_tokens: 2 });
  assert.equal(after.choices.length, 1);
});
