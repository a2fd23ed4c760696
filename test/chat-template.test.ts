// Chat template rendering (expected strings follow Qwen3's published template) and Qwen3 reply parsing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, InputError } from '../src/errors.js';
import { ChatTemplate, type ChatMessage, type ToolDefinition } from '../src/model/chat-template.js';
import { tempDir } from '../src/model/random-model.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { writeTokenizerFiles } from '../src/model/toy-tokenizer.js';
import { parseAssistantReply, parseToolCalls, splitReasoning } from '../src/serve/tool-calls.js';

function toyFolder(): string {
  const dir = join(tempDir(), 'tok');
  writeTokenizerFiles(dir);
  return dir;
}

function editConfig(dir: string, edit: (c: Record<string, unknown>) => void): void {
  const path = join(dir, 'tokenizer_config.json');
  const c = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  edit(c);
  writeFileSync(path, JSON.stringify(c));
}

const conversation: ChatMessage[] = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'Hi' },
  { role: 'assistant', content: 'Hello! How can I help?' },
  { role: 'user', content: 'What is the weather in Paris?' },
];

const TURNS =
  '<|im_start|>user\nHi<|im_end|>\n' +
  '<|im_start|>assistant\nHello! How can I help?<|im_end|>\n' +
  '<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n';

const weatherTool: ToolDefinition = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Get the weather',
    parameters: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'] },
  },
};

// Qwen3 lists each tool as Python's json.dumps writes it (", " and ": " separators, keys in the given order).
const TOOLS_SYSTEM =
  '<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' +
  'You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n' +
  '{"type": "function", "function": {"name": "get_weather", "description": "Get the weather", "parameters": ' +
  '{"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}\n</tools>\n\n' +
  'For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n' +
  '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n';

test('system + user + assistant + user, with and without thinking', () => {
  const tpl = ChatTemplate.fromDir(toyFolder());
  const head = '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n';
  assert.equal(tpl.render(conversation), head + TURNS);
  assert.equal(tpl.render(conversation, { addGenerationPrompt: true }), head + TURNS + '<|im_start|>assistant\n');
  assert.equal(tpl.render(conversation, { addGenerationPrompt: true, enableThinking: true }), head + TURNS + '<|im_start|>assistant\n');
  assert.equal(
    tpl.render(conversation, { addGenerationPrompt: true, enableThinking: false }),
    head + TURNS + '<|im_start|>assistant\n<think>\n\n</think>\n\n',
  );
  // Text parts are flattened; the template sees plain strings.
  const parts: ChatMessage[] = [{ role: 'user', content: [{ type: 'text', text: 'Hello' }, { type: 'text', text: 'there' }] }];
  assert.equal(tpl.render(parts), '<|im_start|>user\nHello\nthere<|im_end|>\n');
});

test('tools go into the system turn', () => {
  const tpl = ChatTemplate.fromDir(toyFolder());
  assert.equal(tpl.render(conversation, { tools: [weatherTool], addGenerationPrompt: true }), TOOLS_SYSTEM + TURNS + '<|im_start|>assistant\n');
  // Without a system message the tools block stands alone; an empty tool list is no tools.
  const noSystem = conversation.slice(1);
  assert.equal(
    tpl.render(noSystem, { tools: [weatherTool] }),
    TOOLS_SYSTEM.replace('You are a helpful assistant.\n\n', '') + TURNS,
  );
  assert.equal(tpl.render(noSystem, { tools: [] }), TURNS);
});

test('assistant tool calls and tool results', () => {
  const tpl = ChatTemplate.fromDir(toyFolder());
  const messages: ChatMessage[] = [
    { role: 'user', content: 'Weather and time in Paris?' },
    {
      role: 'assistant',
      content: null,
      tool_calls: [
        { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Paris"}' } },
        { id: 'call_2', type: 'function', function: { name: 'get_time', arguments: { city: 'Paris' } } },
      ],
    },
    { role: 'tool', tool_call_id: 'call_1', content: '{"temp": 21}' },
    { role: 'tool', tool_call_id: 'call_2', content: '10:30' },
    { role: 'assistant', content: 'Sunny, 21 degrees, and it is 10:30.' },
  ];
  // Arguments given as a JSON string are re-serialized like an object; consecutive tool results share one user
  // turn; the final assistant turn (after the last user query) gets Qwen3's empty think block.
  const expected =
    '<|im_start|>user\nWeather and time in Paris?<|im_end|>\n' +
    '<|im_start|>assistant\n' +
    '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n</tool_call>\n' +
    '<tool_call>\n{"name": "get_time", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n' +
    '<|im_start|>user\n<tool_response>\n{"temp": 21}\n</tool_response>\n<tool_response>\n10:30\n</tool_response><|im_end|>\n' +
    '<|im_start|>assistant\n<think>\n\n</think>\n\nSunny, 21 degrees, and it is 10:30.<|im_end|>\n';
  assert.equal(tpl.render(messages), expected);

  // Text before a call is kept, followed by a newline.
  const withText: ChatMessage[] = [
    { role: 'user', content: 'Weather?' },
    { role: 'assistant', content: 'Let me check.', tool_calls: [{ function: { name: 'get_weather', arguments: '{}' } }] },
  ];
  assert.equal(
    tpl.render(withText),
    '<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nLet me check.\n' +
      '<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call><|im_end|>\n',
  );
});

test('reasoning is kept only after the last user query', () => {
  const tpl = ChatTemplate.fromDir(toyFolder());
  const messages: ChatMessage[] = [
    { role: 'user', content: 'Q1' },
    { role: 'assistant', content: '<think>\nold thoughts\n</think>\n\nA1' },
    { role: 'user', content: 'Q2' },
    { role: 'assistant', content: 'A2', reasoning_content: 'new thoughts' },
  ];
  assert.equal(
    tpl.render(messages),
    '<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n' +
      '<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n<think>\nnew thoughts\n</think>\n\nA2<|im_end|>\n',
  );
});

test('the rendered prompt tokenizes with single-id turn markers', () => {
  const dir = toyFolder();
  const tok = Tokenizer.fromDir(dir);
  const ids = tok.encode(ChatTemplate.fromDir(dir).render(conversation, { addGenerationPrompt: true }));
  const imStart = tok.tokenToId('<|im_start|>')!;
  assert.equal(ids.filter((id) => id === imStart).length, 5);
  assert.equal(ids.filter((id) => id === tok.eosTokenId).length, 4);
});

test('named templates, chat_template.jinja, and special token variables', () => {
  const dir = toyFolder();
  editConfig(dir, (c) => {
    c.chat_template = [
      { name: 'default', template: 'D:{{ messages[0].content }}{{ eos_token }}' },
      { name: 'tool_use', template: 'T:{{ tools[0].function.name }}' },
    ];
  });
  const tpl = ChatTemplate.fromDir(dir);
  assert.equal(tpl.render([{ role: 'user', content: 'x' }]), 'D:x<|im_end|>');
  assert.equal(tpl.render([{ role: 'user', content: 'x' }], { tools: [weatherTool] }), 'T:get_weather');
  // Extra variables reach the template under their own names.
  editConfig(dir, (c) => (c.chat_template = '{{ greeting }} {{ messages | length }}'));
  assert.equal(ChatTemplate.fromDir(dir).render([{ role: 'user', content: 'x' }], { greeting: 'hey' }), 'hey 1');
  // A chat_template.jinja file wins over tokenizer_config.json.
  writeFileSync(join(dir, 'chat_template.jinja'), 'J:{{ messages[0].role }}');
  assert.equal(ChatTemplate.fromDir(dir).render([{ role: 'user', content: 'x' }]), 'J:user');
});

test('bad messages, bad templates and missing templates give typed errors', () => {
  const dir = toyFolder();
  const tpl = ChatTemplate.fromDir(dir);
  const rejects = (messages: unknown, message: RegExp) =>
    assert.throws(() => tpl.render(messages as ChatMessage[]), (e: unknown) => e instanceof InputError && message.test(e.message), String(message));
  rejects([{ role: 'wizard', content: 'x' }], /messages\[0\]: unknown role "wizard" \(expected one of system, user, assistant, tool\)/);
  rejects([{ content: 'x' }], /unknown role undefined/);
  rejects([], /non-empty array/);
  rejects([{ role: 'user' }], /messages\[0\]: content is required/);
  rejects([{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }], /content\[0\] is a "image_url" part; only text parts/);
  rejects([{ role: 'user', content: 42 }], /content must be a string or an array of text parts/);
  rejects(
    [{ role: 'assistant', content: '', tool_calls: [{ function: { name: 'f', arguments: '{not json' } }] }],
    /tool_calls\[0\]: function.arguments is not valid JSON/,
  );
  rejects([{ role: 'assistant', content: '', tool_calls: [{ function: { arguments: '{}' } }] }], /function.name must be a non-empty string/);
  rejects([{ role: 'user', content: 'x', tool_calls: [] }], /only assistant messages may carry tool_calls/);
  assert.throws(() => tpl.render([{ role: 'user', content: 'x' }], { tools: [{ name: 'f' } as unknown as ToolDefinition] }), InputError);

  // A template that refuses the conversation at render time.
  editConfig(dir, (c) => (c.chat_template = "{% if messages[0].role != 'system' %}{{ raise_exception('System message must come first') }}{% endif %}ok"));
  const strict = ChatTemplate.fromDir(dir);
  assert.equal(strict.render([{ role: 'system', content: 's' }]), 'ok');
  assert.throws(
    () => strict.render([{ role: 'user', content: 'x' }]),
    (e: unknown) => e instanceof InputError && /failed to render the messages: System message must come first/.test(e.message),
  );
  // One that fails on the data (calling a method that does not exist).
  editConfig(dir, (c) => (c.chat_template = '{{ messages[0].content.no_such_method() }}'));
  assert.throws(() => ChatTemplate.fromDir(dir).render([{ role: 'user', content: 'x' }]), (e: unknown) => e instanceof InputError && /failed to render/.test(e.message));

  // A template that does not parse is the folder's fault, found when it is loaded.
  editConfig(dir, (c) => (c.chat_template = '{% for m in messages %}{{ m.content }}'));
  assert.throws(() => ChatTemplate.fromDir(dir), (e: unknown) => e instanceof ConfigError && /does not parse/.test(e.message));
  editConfig(dir, (c) => delete c.chat_template);
  assert.throws(() => ChatTemplate.fromDir(dir), (e: unknown) => e instanceof ConfigError && /no chat_template/.test(e.message));
  editConfig(dir, (c) => (c.chat_template = [{ name: 'default' }]));
  assert.throws(() => ChatTemplate.fromDir(dir), (e: unknown) => e instanceof ConfigError && /chat_template\[0\] must be \{name: string, template: string\}/.test(e.message));
});

test('tool-call parsing: one, two, malformed, and with a think block', () => {
  const ids = (i: number) => `call_${i}`;
  const one = parseToolCalls('<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n</tool_call>', { makeId: ids });
  assert.deepEqual(one, {
    content: '',
    toolCalls: [{ id: 'call_0', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Paris"}' } }],
  });

  const two = parseToolCalls(
    'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n</tool_call>\n' +
      '<tool_call>\n{"name": "get_time", "arguments": {"city": "Paris"}}\n</tool_call>',
    { makeId: ids },
  );
  assert.equal(two.content, 'Let me check.');
  assert.deepEqual(
    two.toolCalls.map((c) => [c.id, c.function.name, JSON.parse(c.function.arguments)]),
    [
      ['call_0', 'get_weather', { location: 'Paris' }],
      ['call_1', 'get_time', { city: 'Paris' }],
    ],
  );

  // Bad JSON, a missing name, or an unclosed block stay in the content; a good block next to them is still a call.
  const broken = '<tool_call>\n{"name": "get_weather", "arguments": {"location": \n</tool_call>';
  const noName = '<tool_call>\n{"arguments": {}}\n</tool_call>';
  const mixed = parseToolCalls(`${broken}\n<tool_call>\n{"name": "ping"}\n</tool_call>\n${noName}`, { makeId: ids });
  assert.equal(mixed.content, `${broken}\n\n${noName}`);
  assert.deepEqual(mixed.toolCalls, [{ id: 'call_0', type: 'function', function: { name: 'ping', arguments: '{}' } }]);
  const unclosed = 'Sure <tool_call>\n{"name": "ping", "arguments": {}}';
  assert.deepEqual(parseToolCalls(unclosed), { content: unclosed, toolCalls: [] });
  // Plain text comes back untouched, whitespace included.
  assert.deepEqual(parseToolCalls('  plain\n'), { content: '  plain\n', toolCalls: [] });

  const reply = parseAssistantReply(
    '<think>\nThe user wants the weather. <tool_call>{"name": "not_this"}</tool_call>\n</think>\n\n' +
      '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n</tool_call>',
    { makeId: ids },
  );
  assert.equal(reply.reasoning, 'The user wants the weather. <tool_call>{"name": "not_this"}</tool_call>');
  assert.equal(reply.content, '');
  assert.deepEqual(reply.toolCalls.map((c) => c.function.name), ['get_weather']);
  assert.match(parseAssistantReply('<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>').toolCalls[0]!.id, /^call_[0-9a-f]{24}$/);
});

test('reasoning split: think block, pre-filled opening tag, cut-off thoughts, none', () => {
  assert.deepEqual(splitReasoning('<think>\nStep one.\nStep two.\n</think>\n\nThe answer.'), { reasoning: 'Step one.\nStep two.', content: 'The answer.' });
  assert.deepEqual(splitReasoning('<think>\n\n</think>\n\nQuick answer.'), { reasoning: '', content: 'Quick answer.' });
  assert.deepEqual(splitReasoning('Thinking.\n</think>\n\nAnswer.'), { reasoning: 'Thinking.', content: 'Answer.' });
  assert.deepEqual(splitReasoning('<think>\nStill thinking'), { reasoning: 'Still thinking', content: '' });
  assert.deepEqual(splitReasoning('No thoughts here.'), { reasoning: null, content: 'No thoughts here.' });
});

test('a rendered tool call parses back into the same call', () => {
  const tpl = ChatTemplate.fromDir(toyFolder());
  const prompt = tpl.render([{ role: 'user', content: 'Weather?' }], { addGenerationPrompt: true, enableThinking: false });
  const full = tpl.render([
    { role: 'user', content: 'Weather?' },
    { role: 'assistant', content: '', tool_calls: [{ function: { name: 'get_weather', arguments: '{"location": "Paris", "unit": "celsius"}' } }] },
  ]);
  // Qwen3 renders a finished non-thinking turn as exactly the prompt plus what the model generated.
  assert.ok(full.startsWith(prompt));
  const generated = full.slice(prompt.length).replace(/<\|im_end\|>\n$/, '');
  const parsed = parseAssistantReply(generated, { makeId: () => 'call_x' });
  assert.equal(parsed.reasoning, null);
  assert.deepEqual(parsed.toolCalls, [
    { id: 'call_x', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Paris","unit":"celsius"}' } },
  ]);
});
