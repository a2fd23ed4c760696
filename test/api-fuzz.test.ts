// Schema-aware fuzzing of the API: random bodies built from the real field names with random values
// of every JSON type, plus raw garbage. No request may get a 5xx, and the server keeps answering.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import fc from 'fast-check';
import { buildApp } from '../src/api/app.js';
import { tempDir } from '../src/model/random-model.js';
import { openInference, writeRandomChatModel } from '../src/serve/open.js';

const model = 'random-tiny';

test('1,200 random request bodies: never a 5xx, and the server still answers', async (t) => {
  const dir = tempDir();
  const service = await openInference(writeRandomChatModel(join(dir, model)), { dataDir: ':memory:', threads: 2, defaultMaxTokens: 3, maxTokensLimit: 4 });
  const app = await buildApp(service, { bodyLimit: 64 * 1024 });
  const anyValue = fc.oneof(fc.constant(null), fc.boolean(), fc.integer({ min: -5, max: 40 }), fc.double({ noNaN: false }), fc.string({ maxLength: 12 }), fc.array(fc.string({ maxLength: 5 }), { maxLength: 3 }), fc.dictionary(fc.string({ maxLength: 6 }), fc.string({ maxLength: 6 }), { maxKeys: 3 }));
  // Mostly plausible values, sometimes anything: bodies reach deep into the handlers, not only the schema.
  const mostly = <T>(good: fc.Arbitrary<T>) => fc.oneof({ arbitrary: good, weight: 30 }, { arbitrary: anyValue, weight: 1 });
  const message = fc.record(
    { role: fc.oneof({ arbitrary: fc.constantFrom('system', 'user', 'assistant', 'tool', 'developer'), weight: 8 }, { arbitrary: fc.string({ maxLength: 8 }), weight: 1 }), content: fc.oneof({ arbitrary: fc.string({ maxLength: 30 }), weight: 6 }, { arbitrary: anyValue, weight: 1 }, { arbitrary: fc.constant([{ type: 'text', text: 'hi' }]), weight: 1 }), tool_calls: mostly(fc.constant([])), tool_call_id: mostly(fc.string({ maxLength: 6 })) },
    { requiredKeys: ['role'] },
  );
  const sampling = {
    model: mostly(fc.constantFrom(model, model, 'missing/adapter')),
    stream: mostly(fc.boolean()),
    n: mostly(fc.integer({ min: 1, max: 2 })),
    max_tokens: mostly(fc.integer({ min: 0, max: 4 })),
    temperature: mostly(fc.double({ min: 0, max: 2.1, noNaN: true })),
    top_p: mostly(fc.double({ min: 0, max: 1, noNaN: true })),
    top_k: mostly(fc.integer({ min: -1, max: 5 })),
    seed: mostly(fc.integer({ min: 0, max: 1000 })),
    stop: mostly(fc.oneof(fc.string({ maxLength: 3 }), fc.array(fc.string({ maxLength: 3 }), { maxLength: 10 }))),
    logprobs: anyValue,
    top_logprobs: mostly(fc.integer({ min: 0, max: 21 })),
  };
  const tool = fc.record({ type: mostly(fc.constant('function')), function: mostly(fc.record({ name: fc.string({ minLength: 1, maxLength: 8 }), parameters: fc.constant({ type: 'object' }) })) });
  const chatBody = fc.record(
    { ...sampling, messages: mostly(fc.array(message, { minLength: 1, maxLength: 4 })), tools: mostly(fc.array(tool, { maxLength: 2 })), tool_choice: anyValue, chat_template_kwargs: mostly(fc.record({ enable_thinking: fc.boolean() })) },
    { requiredKeys: ['model', 'messages'] },
  );
  const completionBody = fc.record(
    { ...sampling, prompt: mostly(fc.oneof(fc.string({ maxLength: 20 }), fc.array(fc.integer({ min: -3, max: 600 }), { maxLength: 6 }))), logprobs: mostly(fc.integer({ min: -1, max: 21 })), echo: anyValue },
    { requiredKeys: ['model', 'prompt'] },
  );
  const raw = fc.oneof(fc.string({ maxLength: 40 }), fc.constant('{"model":'), fc.constant('[]'), fc.constant('null'));

  const statuses = new Map<number, number>();
  const send = async (url: string, payload: string) => {
    const res = await app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload });
    statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
    assert.ok(res.statusCode < 500, `${url} ${payload.slice(0, 200)} -> ${res.statusCode} ${res.body.slice(0, 200)}`);
    if (res.statusCode >= 400 && process.env.FUZZ_DEBUG) console.log(res.body.slice(0, 160));
    if (res.statusCode >= 400) assert.equal(typeof (JSON.parse(res.body) as { error: { message: string } }).error.message, 'string');
  };
  await fc.assert(fc.asyncProperty(chatBody, async (b) => send('/v1/chat/completions', JSON.stringify(b))), { numRuns: 500, seed: 1 });
  await fc.assert(fc.asyncProperty(completionBody, async (b) => send('/v1/completions', JSON.stringify(b))), { numRuns: 500, seed: 2 });
  await fc.assert(fc.asyncProperty(raw, async (b) => send('/v1/chat/completions', b)), { numRuns: 200, seed: 3 });
  const total = [...statuses.values()].reduce((a, b) => a + b, 0);
  assert.equal(total, 1200);
  assert.ok((statuses.get(200) ?? 0) > 0, `some random bodies were valid: ${JSON.stringify([...statuses])}`);

  t.diagnostic(`status counts: ${JSON.stringify(Object.fromEntries([...statuses].sort()))}`);
  const ok = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload: { model, messages: [{ role: 'user', content: 'still there?' }], max_tokens: 2 } });
  assert.equal(ok.statusCode, 200);
  await app.close();
  await service.close();
});
