// Streamed reply deltas add up to the parse of the whole reply: reasoning, content and tool calls.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseReply, ReplyStream } from '../src/serve/reply-stream.js';

function streamed(text: string, tools: boolean, piece: number) {
  const s = new ReplyStream(tools);
  let reasoning = '', content = '';
  const take = (d: { reasoning?: string; content?: string }) => {
    reasoning += d.reasoning ?? '';
    content += d.content ?? '';
  };
  for (let i = 0; i < text.length; i += piece) {
    const d = s.push(text.slice(i, i + piece));
    assert.ok(!/<(t|th|thi|thin|think|\/think|tool|tool_c|tool_call)$/.test(content + (d.content ?? '')) || i + piece >= text.length, `no partial tag is shown: ${JSON.stringify(d)}`);
    take(d);
  }
  const last = s.end();
  take(last);
  return { reasoning, content, toolCalls: last.toolCalls ?? [] };
}

test('deltas add up to the whole-reply parse, whatever the chunking', () => {
  const replies: [string, boolean][] = [
    ['Plain answer with no tags.', false],
    ['<think>\nLet me think.\n</think>\n\nThe answer is 4.', false],
    ['Checking the weather.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>', true],
    ['<think>\nuse a tool\n</think>\n\n<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n<tool_call>\n{"name": "b", "arguments": {"x": 1}}\n</tool_call>', true],
    ['Text with a < sign and <tool_call> never closed', true],
  ];
  for (const [text, tools] of replies) {
    const whole = parseReply(text, tools);
    for (const piece of [1, 2, 3, 7, 100]) {
      const s = streamed(text, tools, piece);
      assert.equal(s.content, whole.content, `${JSON.stringify(text)} in pieces of ${piece}`);
      assert.equal(s.reasoning, whole.reasoning ?? '');
      assert.deepEqual(s.toolCalls.map((c) => c.function), whole.toolCalls.map((c) => c.function));
    }
  }
});
