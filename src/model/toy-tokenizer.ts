// Writes a small but real Qwen3-style tokenizer folder (tokenizer.json, tokenizer_config.json with a chat template,
// generation_config.json): byte-level BPE whose merges are learned here, deterministically, from a built-in text.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Qwen3's added tokens in Qwen3's order; only the first three are "special" (dropped by skipSpecialTokens). */
export const TOY_ADDED_TOKENS: readonly { content: string; special: boolean }[] = [
  { content: '<|endoftext|>', special: true },
  { content: '<|im_start|>', special: true },
  { content: '<|im_end|>', special: true },
  { content: '<tool_call>', special: false },
  { content: '</tool_call>', special: false },
  { content: '<tool_response>', special: false },
  { content: '</tool_response>', special: false },
  { content: '<think>', special: false },
  { content: '</think>', special: false },
];

/** The split pattern of Qwen2/Qwen3's tokenizer.json (contractions, letter runs, single digits, punctuation, spaces). */
const QWEN_SPLIT_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** The same pattern in JavaScript syntax (no inline (?i:) groups before Node 23), for splitting the training text. */
const SPLIT_FOR_TRAINING =
  /'(?:[sStTmMdD]|[rR][eE]|[vV][eE]|[lL][lL])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+/gu;

/**
 * The merges are learned from this text, so words an assistant says often (and the JSON of tool calls) become one or
 * two tokens. Changing it changes every toy token id.
 */
const TRAINING_TEXT = `
You are a helpful assistant. The user asks a question and the assistant answers it in a short, clear and friendly way.
Hello! How can I help you today? I would like to know the weather in Paris, please. Thank you for asking.
The weather in Paris is sunny and warm today, with a light wind from the west. It will rain tomorrow in the evening.
What is the capital of France? The capital of France is Paris. What is the capital of Italy? It is Rome.
Please write a short answer. Here is the answer you asked for. I think that this is the right answer to the question.
The assistant can call a function to get information. The function returns a result, and the assistant reads the
result before it writes the final answer for the user. If the user gives feedback, the next answer should follow it.
Feedback: please be brief. Feedback: answer in capital letters. Feedback: end every answer with a friendly sign-off.
The answer was too long. The answer was good, thank you. Could you say that again in fewer words? Yes, of course.
{"name": "get_weather", "arguments": {"location": "Paris", "unit": "celsius"}}
{"name": "get_time", "arguments": {"city": "London"}}
{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a given location",
"parameters": {"type": "object", "properties": {"location": {"type": "string", "description": "The city name"}},
"required": ["location"]}}}
The temperature is 21 degrees and the time is 10:30 in the morning. There are 7 days in a week and 12 months in a year.
Let me think about this step by step. First, read the question. Then find the facts. Finally, write the answer.
I don't know the answer, but I can look it up. We're happy to help, and you'll get a reply soon. It's a good day.
The model learns from the feedback of the user, one small step at a time, and the next reply is better than the last.
Good morning! Good evening! Have a nice day. See you soon. Best wishes, your assistant.

The user wrote a message to the assistant, and the assistant wrote a reply. The system message tells the assistant
who it is. When the user asks for the time, the assistant calls the function get_time with the name of the city.
When the user asks about the weather, the assistant calls get_weather with the location and the unit.

Here are three things to remember: keep the answer short, answer the question that was asked, and be kind.
Sure! Here is a list: one, two, three. Is there anything else I can help you with? No, that is all. Thanks!
This is a test. This is only a test. The quick brown fox jumps over the lazy dog. The dog was not happy.
`;

/** How many merges the toy tokenizer learns (fewer if the text runs out of pairs seen at least twice). */
const MERGES = 320;

/**
 * GPT-2's byte-to-character table, which byte-level BPE uses so every byte is a printable character: printable
 * Latin-1 bytes stand for themselves, the rest are moved to U+0100 and up in byte order.
 */
function byteToChar(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const table: string[] = [];
  let shifted = 0;
  for (let b = 0; b < 256; b++) table.push(String.fromCodePoint(printable(b) ? b : 256 + shifted++));
  return table;
}

interface Learned {
  vocab: Map<string, number>;
  merges: [string, string][];
}

/** Classic BPE training on the pre-split words: repeatedly merge the most frequent adjacent pair (ties: smallest pair). */
function learnMerges(text: string, count: number): Learned {
  const chars = byteToChar();
  const encoder = new TextEncoder();
  const vocab = new Map<string, number>(chars.map((c, i) => [c, i]));
  const wordCounts = new Map<string, number>();
  for (const piece of text.match(SPLIT_FOR_TRAINING) ?? []) {
    const mapped = Array.from(encoder.encode(piece), (b) => chars[b]!).join('');
    wordCounts.set(mapped, (wordCounts.get(mapped) ?? 0) + 1);
  }
  const words = [...wordCounts].map(([w, n]) => ({ symbols: Array.from(w), n }));
  const merges: [string, string][] = [];
  while (merges.length < count) {
    const pairs = new Map<string, number>();
    for (const { symbols, n } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        // Byte-level symbols never contain a space, so "a b" names the pair unambiguously.
        const key = `${symbols[i]} ${symbols[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + n);
      }
    }
    let best: string | undefined;
    let bestCount = 1; // a pair seen once is memorization, not a merge worth having
    for (const [key, n] of pairs) {
      if (n > bestCount || (n === bestCount && best !== undefined && key < best)) {
        best = key;
        bestCount = n;
      }
    }
    if (best === undefined) break;
    const [a, b] = best.split(' ') as [string, string];
    const joined = a + b;
    merges.push([a, b]);
    if (!vocab.has(joined)) vocab.set(joined, vocab.size);
    for (const word of words) {
      const out: string[] = [];
      const s = word.symbols;
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          out.push(joined);
          i++;
        } else out.push(s[i]!);
      }
      word.symbols = out;
    }
  }
  return { vocab, merges };
}

/**
 * A chat template written for the toy tokenizer that renders exactly what Qwen3's published template renders: the
 * tools block in the system turn, thinking shown only for assistant turns after the last real user query, tool calls
 * as <tool_call> JSON lines, consecutive tool results grouped in one user turn, and an empty think block after the
 * generation prompt when enable_thinking is false.
 */
export const TOY_CHAT_TEMPLATE = `{#- Toy Qwen3-style chat template (see src/model/toy-tokenizer.ts). -#}
{%- set first_is_system = messages | length > 0 and messages[0].role == 'system' %}
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if first_is_system %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n' }}
    {{- 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}
    {%- for tool in tools %}
        {{- '\\n' + (tool | tojson) }}
    {%- endfor %}
    {{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within ' }}
    {{- '<tool_call></tool_call> XML tags:\\n<tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}' }}
    {{- '\\n</tool_call><|im_end|>\\n' }}
{%- elif first_is_system %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{#- The last user turn that is a real query (not tool results pasted as user text); thinking before it is dropped. #}
{%- set state = namespace(query=messages | length - 1) %}
{%- for message in messages %}
    {%- if message.role == 'user' and message.content is string
        and not (message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set state.query = loop.index0 %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- set text = message.content if message.content is string else '' %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + text + '<|im_end|>\\n' }}
    {%- elif message.role == 'assistant' %}
        {%- set thought = '' %}
        {%- if message.reasoning_content is string %}
            {%- set thought = message.reasoning_content %}
        {%- elif '</think>' in text %}
            {%- set thought = text.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
            {%- set text = text.split('</think>')[-1].lstrip('\\n') %}
        {%- endif %}
        {{- '<|im_start|>assistant\\n' }}
        {%- if loop.index0 > state.query and (loop.last or thought) %}
            {{- '<think>\\n' + thought.strip('\\n') + '\\n</think>\\n\\n' + text.lstrip('\\n') }}
        {%- else %}
            {{- text }}
        {%- endif %}
        {%- for call in (message.tool_calls or []) %}
            {%- if text or not loop.first %}
                {{- '\\n' }}
            {%- endif %}
            {%- set fn = call.function if call.function else call %}
            {{- '<tool_call>\\n{"name": "' + fn.name + '", "arguments": ' }}
            {{- fn.arguments if fn.arguments is string else (fn.arguments | tojson) }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' + text + '\\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}
`;

/**
 * What the toy assistant reads of a user turn: the user's words, without the envelope a client puts
 * around them (OpenClaw: a "[Wed 2026-12-02 17:43 UTC] " timestamp before, a "Runtime: agent=… |
 * channel=…" paragraph after); a hindsight block after the envelope stays.
 */
const USER_TEXT = `{%- set parts = namespace(kept=[]) %}
        {%- for part in text.split('\\n\\n') %}
            {%- if not part.startswith('Runtime: ') %}
                {%- set parts.kept = parts.kept + [part] %}
            {%- endif %}
        {%- endfor %}
        {%- set text = parts.kept | join('\\n\\n') %}
        {%- if text.startswith('[') and '] ' in text and text.split('] ')[0] | length < 40 and text.split('] ')[0].endswith('UTC') %}
            {%- set text = text.split('] ')[1:] | join('] ') %}
        {%- endif %}
        {{- '<|im_start|>user\\n' + text + '<|im_end|>\\n' }}`;

/**
 * The toy assistant's template: the conversation's turns only — no system message, no tool
 * definitions, no client envelope. A 0.9 M-parameter model trained on short chats cannot read past a
 * long system prompt (OpenClaw's is about 2.5k tokens even with --small-prompt; 200 tokens of system
 * text already derailed the toy's replies), so it is never shown one.
 */
export const TOY_ASSISTANT_TEMPLATE = `{#- Toy assistant chat template: conversation turns only, no system prompt or client envelope (see src/model/toy-tokenizer.ts). -#}\n${TOY_CHAT_TEMPLATE.slice(TOY_CHAT_TEMPLATE.indexOf('{#- The last user turn'))
  .replace("{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}\n        {{- '<|im_start|>' + message.role + '\\n' + text + '<|im_end|>\\n' }}", `{%- if message.role == 'user' %}\n        ${USER_TEXT}`)}`;

/**
 * Writes tokenizer.json, tokenizer_config.json and generation_config.json into `dir` (created if needed) and returns
 * the vocabulary size (learned tokens + added tokens), so a random model can be written with a matching vocab_size.
 * The merges are learned from `text` (default: the built-in text).
 */
export function writeTokenizerFiles(dir: string, options: { text?: string; merges?: number; chatTemplate?: string } = {}): number {
  const { vocab, merges } = learnMerges(options.text ?? TRAINING_TEXT, options.merges ?? MERGES);
  const added = TOY_ADDED_TOKENS.map((t, i) => ({
    id: vocab.size + i,
    content: t.content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: t.special,
  }));
  const idOf = (content: string) => added.find((t) => t.content === content)!.id;
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: 'NFC' },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: QWEN_SPLIT_PATTERN }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      ],
    },
    post_processor: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(vocab),
      merges,
    },
  };
  const config = {
    add_bos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: Object.fromEntries(added.map(({ id, ...rest }) => [String(id), rest])),
    additional_special_tokens: ['<|im_start|>', '<|im_end|>'],
    bos_token: null,
    chat_template: options.chatTemplate ?? TOY_CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: '<|im_end|>',
    errors: 'replace',
    model_max_length: 32768,
    pad_token: '<|endoftext|>',
    split_special_tokens: false,
    tokenizer_class: 'Qwen2Tokenizer',
    unk_token: null,
  };
  // Qwen3's sampling defaults for thinking mode; both end-of-turn and end-of-text stop generation.
  const generation = {
    bos_token_id: idOf('<|endoftext|>'),
    do_sample: true,
    eos_token_id: [idOf('<|im_end|>'), idOf('<|endoftext|>')],
    pad_token_id: idOf('<|endoftext|>'),
    temperature: 0.6,
    top_k: 20,
    top_p: 0.95,
    max_new_tokens: 512,
  };
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer, null, 2));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config, null, 2));
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify(generation, null, 2));
  return vocab.size + added.length;
}
