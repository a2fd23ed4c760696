// The model folder's tokenizer and generation config, on the toy byte-level BPE tokenizer each test writes itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, InputError } from '../src/errors.js';
import { readGenerationConfig } from '../src/model/generation-config.js';
import { tempDir } from '../src/model/random-model.js';
import { ASYNC_ENCODE_CHARS, Tokenizer } from '../src/model/tokenizer.js';
import { TOY_ADDED_TOKENS, writeTokenizerFiles } from '../src/model/toy-tokenizer.js';

function toyFolder(): { dir: string; vocab: number } {
  const dir = join(tempDir(), 'tok');
  const vocab = writeTokenizerFiles(dir);
  return { dir, vocab };
}

const utf8 = (s: string) => Buffer.byteLength(s, 'utf8');

test('the toy tokenizer is deterministic and reports its vocabulary size', () => {
  const a = toyFolder();
  const b = toyFolder();
  assert.equal(a.vocab, b.vocab);
  const tok = Tokenizer.fromDir(a.dir);
  assert.equal(tok.vocabSize, a.vocab);
  // 256 byte tokens + a few hundred merges + the 9 added tokens.
  assert.ok(a.vocab > 256 + 200 + TOY_ADDED_TOKENS.length, `vocab ${a.vocab}`);
  assert.deepEqual(Tokenizer.fromDir(b.dir).encode('The weather in Paris'), tok.encode('The weather in Paris'));
});

test('encode/decode round trip on ASCII, multi-byte UTF-8 and emoji', () => {
  const tok = Tokenizer.fromDir(toyFolder().dir);
  const texts = [
    'Hello! How can I help you today?',
    'The weather in Paris is sunny.\n\nSee you soon.',
    '  leading and trailing spaces  \t\n',
    'naïve café, Ærøskøbing, Straße',
    '日本語のテキスト and 中文',
    'emoji 😀 👍🏽 👨‍👩‍👧 🇫🇷 done',
    '{"name": "get_weather", "arguments": {"location": "Paris"}}',
  ];
  for (const text of texts) {
    const ids = tok.encode(text);
    assert.equal(tok.decode(ids), text, JSON.stringify(text));
    for (const id of ids) assert.ok(Number.isInteger(id) && id >= 0 && id < tok.vocabSize);
  }
  // The learned merges make common words one token each (with their leading space).
  assert.ok(tok.encode('The weather in Paris').length <= 4, 'common words should be single tokens');
  assert.ok(tok.encode('Hello! How can I help you today?').length < utf8('Hello! How can I help you today?') / 2);
  assert.equal(tok.decode([]), '');
});

test('special tokens encode to single ids and are named in the config', () => {
  const tok = Tokenizer.fromDir(toyFolder().dir);
  for (const { content, special } of TOY_ADDED_TOKENS) {
    const id = tok.tokenToId(content);
    assert.ok(id !== undefined, content);
    assert.deepEqual(tok.encode(content), [id], content);
    assert.equal(tok.idToToken(id), content);
    assert.equal(tok.isSpecial(id), special, content);
  }
  const imStart = tok.tokenToId('<|im_start|>')!;
  const imEnd = tok.tokenToId('<|im_end|>')!;
  assert.equal(tok.eosTokenId, imEnd);
  assert.deepEqual(tok.eosTokenIds, [imEnd]);
  assert.equal(tok.padTokenId, tok.tokenToId('<|endoftext|>'));
  assert.equal(tok.bosTokenId, undefined);
  assert.deepEqual(tok.specialTokens, { eos_token: '<|im_end|>', pad_token: '<|endoftext|>' });

  const ids = tok.encode('<|im_start|>user\nHi<|im_end|>\n');
  assert.equal(ids[0], imStart);
  assert.equal(ids.filter((id) => id === imEnd).length, 1);
  // Special text typed by hand inside a word is still the special token, as in HF.
  assert.ok(tok.encode('a<|im_end|>b').includes(imEnd));

  // skipSpecialTokens drops the turn markers but keeps <think> and <tool_call>, which Qwen3 marks non-special.
  const reply = tok.encode('<think>\nhmm\n</think>\n\nHi<|im_end|>');
  assert.equal(tok.decode(reply, { skipSpecialTokens: true }), '<think>\nhmm\n</think>\n\nHi');
  assert.equal(tok.decode(reply), '<think>\nhmm\n</think>\n\nHi<|im_end|>');
});

test('the stream decoder holds back split characters and matches decode', () => {
  const tok = Tokenizer.fromDir(toyFolder().dir);
  const text = 'Hi 😀! Ça va? 👨‍👩‍👧 日本<|im_end|>';
  const ids = tok.encode(text);
  const emoji = tok.encode('😀');
  assert.ok(emoji.length > 1, 'the emoji must be split across byte tokens for this test to mean anything');

  for (const skipSpecialTokens of [false, true]) {
    const stream = tok.createStreamDecoder({ skipSpecialTokens });
    const deltas = ids.map((id) => stream.push(id));
    deltas.push(stream.flush());
    for (const d of deltas) {
      assert.ok(!d.includes('\uFFFD'), `delta ${JSON.stringify(d)} has a replacement character`);
      assert.ok(!/\p{Cs}/u.test(d), `delta ${JSON.stringify(d)} splits a surrogate pair`);
    }
    assert.equal(deltas.join(''), tok.decode(ids, { skipSpecialTokens }));
  }

  // Byte by byte: nothing comes out until the emoji's last byte arrives, then all of it at once.
  const stream = tok.createStreamDecoder();
  const got = emoji.map((id) => stream.push(id));
  assert.deepEqual(got.slice(0, -1), Array(emoji.length - 1).fill(''));
  assert.equal(got.at(-1), '😀');
  assert.equal(stream.flush(), '');

  // A reply cut off mid-character: flush gives what decode gives (U+FFFD), so the totals still agree.
  const cut = [...tok.encode('ok '), ...emoji.slice(0, -1)];
  const s2 = tok.createStreamDecoder();
  const out = cut.map((id) => s2.push(id)).join('') + s2.flush();
  assert.equal(out, tok.decode(cut));
  assert.ok(out.endsWith('\uFFFD'));
});

test('bad ids and bad folders give typed errors', () => {
  const { dir } = toyFolder();
  const tok = Tokenizer.fromDir(dir);
  assert.throws(() => tok.decode([tok.vocabSize]), (e: unknown) => e instanceof InputError && /not in the vocabulary/.test(e.message));
  assert.throws(() => tok.decode([1.5]), InputError);
  assert.throws(() => tok.createStreamDecoder().push(-1), InputError);

  const empty = join(tempDir(), 'empty');
  mkdirSync(empty);
  assert.throws(() => Tokenizer.fromDir(empty), (e: unknown) => e instanceof ConfigError && /tokenizer\.json not found/.test(e.message));

  writeFileSync(join(empty, 'tokenizer.json'), '{"model": ');
  assert.throws(() => Tokenizer.fromDir(empty), (e: unknown) => e instanceof ConfigError && /not valid JSON/.test(e.message));

  writeFileSync(join(empty, 'tokenizer.json'), '{"added_tokens": []}');
  assert.throws(() => Tokenizer.fromDir(empty), (e: unknown) => e instanceof ConfigError && /no "model" section/.test(e.message));

  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ eos_token: '<|nope|>' }));
  assert.throws(() => Tokenizer.fromDir(dir), (e: unknown) => e instanceof ConfigError && /eos_token "<\|nope\|>" is not in the vocabulary/.test(e.message));

  // tokenizer_config.json is optional: without it there are simply no named special tokens.
  rmSync(join(dir, 'tokenizer_config.json'));
  const bare = Tokenizer.fromDir(dir);
  assert.equal(bare.eosTokenId, undefined);
  assert.equal(bare.decode(bare.encode('Hello there')), 'Hello there');
});

test('generation config defaults, validation, and a missing file', () => {
  const { dir } = toyFolder();
  const tok = Tokenizer.fromDir(dir);
  assert.deepEqual(readGenerationConfig(dir), {
    temperature: 0.6,
    topP: 0.95,
    topK: 20,
    maxNewTokens: 512,
    eosTokenIds: [tok.tokenToId('<|im_end|>'), tok.tokenToId('<|endoftext|>')],
    doSample: true,
  });

  const path = join(dir, 'generation_config.json');
  writeFileSync(path, JSON.stringify({ eos_token_id: 7, temperature: null, do_sample: false }));
  assert.deepEqual(readGenerationConfig(dir), { eosTokenIds: [7], doSample: false });

  const bad: [Record<string, unknown>, RegExp][] = [
    [{ temperature: -1 }, /temperature must be a finite number >= 0/],
    [{ top_p: 0 }, /top_p must be a number in \(0, 1\]/],
    [{ top_k: 2.5 }, /top_k must be an integer >= 0/],
    [{ max_new_tokens: 0 }, /max_new_tokens must be a positive integer/],
    [{ eos_token_id: ['x'] }, /eos_token_id must be a token id or a list of token ids/],
    [{ do_sample: 'yes' }, /do_sample must be a boolean/],
  ];
  for (const [raw, message] of bad) {
    writeFileSync(path, JSON.stringify(raw));
    assert.throws(() => readGenerationConfig(dir), (e: unknown) => e instanceof ConfigError && message.test(e.message), JSON.stringify(raw));
  }

  rmSync(path);
  assert.deepEqual(readGenerationConfig(dir), {});
});

test('a long text tokenizes on a worker thread: the same ids, and the event loop goes on meanwhile', async () => {
  const tok = Tokenizer.fromDir(toyFolder().dir);
  const long = Array.from({ length: 40_000 }, (_, i) => ['weather', 'Paris', 'é', '🙂', '<|im_end|>', '\n'][i % 6]).join(' ');
  assert.ok(long.length > ASYNC_ENCODE_CHARS);
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const [asyncIds, shortIds] = await Promise.all([tok.encodeAsync(long, { addSpecialTokens: false }), tok.encodeAsync('short text')]);
  clearInterval(timer);
  assert.ok(ticks > 0, 'timers ran while the long text was tokenized');
  assert.deepEqual(asyncIds, tok.encode(long, { addSpecialTokens: false }));
  assert.deepEqual(shortIds, tok.encode('short text'));
});
