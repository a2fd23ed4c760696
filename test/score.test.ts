// POST /v1/score on a tiny random chat model: the original CLaaS's request and response shape, each
// token's log-probability against a log-softmax of the engine's full logits, scoring through a trained
// adapter, refusals of bad input with a message that says what was wrong, and tenancy.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/api/app.js';
import { ApiKeys } from '../src/auth/keys.js';
import type { Adapter } from '../src/engine/engine.js';
import type { ChatMessage } from '../src/model/chat-template.js';
import { tempDir } from '../src/model/random-model.js';
import type { InferenceService } from '../src/serve/inference.js';
import { openInference, writeRandomChatModel } from '../src/serve/open.js';

// JSON replies are read field by field and checked by the assertions below.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

let app: FastifyInstance;
let service: InferenceService;
let trained: Adapter;
const key: Record<'alice' | 'bob', string> = { alice: '', bob: '' };
const model = 'random-tiny';
const adapterId = 'alice/style';
const maxPromptTokens = 200;
// As the original's eval sends it: the default system prompt, then the conversation.
const messages: ChatMessage[] = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'Name three colours.' },
];
const completion = 'Red, green and blue.';

async function score(who: 'alice' | 'bob', body: unknown) {
  const res = await app.inject({ method: 'POST', url: '/v1/score', headers: { authorization: `Bearer ${key[who]}`, 'content-type': 'application/json' }, payload: JSON.stringify(body) });
  return { status: res.statusCode, body: res.json() as Json };
}

/** The ids the route should score: the conversation with the generation prompt (thinking off, the
 * server's default), then the completion. */
function expectedIds(): { prompt: number[]; completion: number[] } {
  const rendered = service.template.render(messages, { addGenerationPrompt: true, enableThinking: false });
  return { prompt: service.tokenizer.encode(rendered, { addSpecialTokens: false }), completion: service.tokenizer.encode(completion, { addSpecialTokens: false }) };
}

/** log p(completion token | everything before it) from the full logits, log-softmax in float64. */
async function referenceLogprobs(adapter: Adapter | null): Promise<number[]> {
  const ids = expectedIds();
  const all = [...ids.prompt, ...ids.completion];
  const logits = await service.engine.logits(all, adapter);
  const V = service.engine.config.vocabSize;
  return ids.completion.map((id, i) => {
    const row = logits.subarray((ids.prompt.length + i - 1) * V, (ids.prompt.length + i) * V);
    let m = -Infinity;
    for (const x of row) m = Math.max(m, x);
    let sum = 0;
    for (const x of row) sum += Math.exp(x - m);
    return row[id]! - (m + Math.log(sum));
  });
}

// The route's values come from the engine's token-log-prob pass, the reference from the full-logit
// forward in float32 with a float64 log-softmax here: the two differ only by float32 rounding of sums
// over the vocabulary, far below 1e-4, while a wrong position or token shifts them by whole nats.
const TOLERANCE = 1e-4;

function assertClose(actual: number[], expected: number[], what: string) {
  assert.equal(actual.length, expected.length, `${what}: one value per completion token`);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i]! - expected[i]!) <= TOLERANCE, `${what}: token ${i}: ${actual[i]} vs ${expected[i]}`);
  }
}

before(async () => {
  const dir = tempDir();
  service = await openInference(writeRandomChatModel(join(dir, 'random-tiny')), { dataDir: join(dir, 'data'), threads: 2, maxPromptTokens });
  const keys = new ApiKeys(service.store.apiKeys);
  key.alice = (await keys.create({ tenant: 'alice', role: 'user' })).key;
  key.bob = (await keys.create({ tenant: 'bob', role: 'user' })).key;
  // One SDPO step on this very completion, so the adapter's scores differ from the base model's.
  trained = service.engine.createAdapter({ rank: 4, alpha: 8, seed: 3 });
  const ids = expectedIds();
  const teacher = service.template.render([messages[0]!, { role: 'user', content: 'Name three colours. Answer in capital letters.' }], { addGenerationPrompt: true, enableThinking: false });
  await service.engine.sdpoStep(trained, [{ promptIds: ids.prompt, teacherPromptIds: service.tokenizer.encode(teacher, { addSpecialTokens: false }), responseIds: ids.completion }], { learningRate: 2e-2, topK: 8 });
  service.setAdapter(adapterId, 'v0002', trained);
  app = await buildApp(service);
});

after(async () => {
  await app.close();
  await service.close();
});

test("the original's request gets logprobs, tokens, counts and their sum", async () => {
  const r = await score('alice', { model, messages, completion });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual(Object.keys(r.body).sort(), ['completion_tokens', 'logprob_sum', 'logprobs', 'prompt_tokens', 'tokens']);
  const ids = expectedIds();
  assert.equal(r.body.prompt_tokens, ids.prompt.length, 'the prompt is the conversation with the generation prompt, thinking off');
  assert.equal(r.body.completion_tokens, ids.completion.length);
  assert.equal(r.body.logprobs.length, r.body.completion_tokens);
  assert.equal(r.body.tokens.length, r.body.completion_tokens);
  assert.equal(r.body.tokens.join(''), completion, 'the tokens decode back to the completion');
  assert.ok(r.body.logprobs.every((x: unknown) => typeof x === 'number' && Number.isFinite(x) && x <= 0), 'log-probabilities are finite and at most 0');
  const sum = r.body.logprobs.reduce((s: number, x: number) => s + x, 0);
  assert.ok(Math.abs(r.body.logprob_sum - sum) <= 1e-9, `logprob_sum ${r.body.logprob_sum} is the sum ${sum}`);
});

test('each logprob is the base model’s teacher-forced log-probability of that token', async () => {
  const r = await score('alice', { model, messages, completion });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assertClose(r.body.logprobs, await referenceLogprobs(null), 'base');
});

test("an adapter's score is its own, and differs from the base model's", async () => {
  const base = await score('alice', { model, messages, completion });
  const tuned = await score('alice', { model: adapterId, messages, completion });
  assert.equal(tuned.status, 200, JSON.stringify(tuned.body));
  assertClose(tuned.body.logprobs, await referenceLogprobs(trained), 'adapter');
  const gap = Math.max(...tuned.body.logprobs.map((x: number, i: number) => Math.abs(x - base.body.logprobs[i])));
  assert.ok(gap > 1e-3, `the trained adapter scores the completion differently (largest difference ${gap})`);
  assert.notEqual(tuned.body.logprob_sum, base.body.logprob_sum);
});

test('bad input is refused with a message naming the problem', async () => {
  const missing = await score('alice', { model, messages });
  assert.equal(missing.status, 400);
  assert.match(missing.body.error.message, /completion/);

  const unknown = await score('alice', { model, messages, completion, temperature: 0 });
  assert.equal(unknown.status, 400);
  assert.match(unknown.body.error.message, /unexpected property "temperature"/);

  const empty = await score('alice', { model, messages, completion: '' });
  assert.equal(empty.status, 400);
  assert.match(empty.body.error.message, /completion/);

  const noMessages = await score('alice', { model, messages: [], completion });
  assert.equal(noMessages.status, 400);
  assert.match(noMessages.body.error.message, /messages/);

  const nowhere = await score('alice', { model: 'alice/nope', messages, completion });
  assert.equal(nowhere.status, 404);
  assert.match(nowhere.body.error.message, /alice\/nope.*does not exist/);

  const longPrompt = await score('alice', { model, messages: [{ role: 'user', content: Array.from({ length: maxPromptTokens }, (_, i) => `w${i}`).join(' ') }], completion });
  assert.equal(longPrompt.status, 400);
  assert.match(longPrompt.body.error.message, new RegExp(`the prompt has \\d+ tokens; this server accepts at most ${maxPromptTokens}`));

  // A short prompt but a completion that, with it, runs past the model's context.
  const context = service.engine.config.maxPositionEmbeddings;
  const longCompletion = Array.from({ length: 8000 }, (_, i) => `w${i}`).join(' ');
  assert.ok(service.tokenizer.encode(longCompletion, { addSpecialTokens: false }).length > context, 'the completion alone is longer than the context');
  const overContext = await score('alice', { model, messages, completion: longCompletion });
  assert.equal(overContext.status, 400);
  assert.match(overContext.body.error.message, new RegExp(`the model's context is ${context}`));
});

test("bob cannot score on alice's adapter, though he may score on the base model", async () => {
  const own = await score('bob', { model, messages, completion });
  assert.equal(own.status, 200, JSON.stringify(own.body));
  const theirs = await score('bob', { model: adapterId, messages, completion });
  assert.equal(theirs.status, 404);
  assert.match(theirs.body.error.message, /does not exist/);
  assert.equal(JSON.stringify(theirs.body).includes('logprob'), false, 'no score leaks');
});
