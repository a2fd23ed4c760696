// JSON schemas shared by the OpenAI-compatible routes. An unknown field is a 400 naming it: every field
// accepted here changes what the server does (or is refused when it asks for what the server cannot do).
export const errorSchema = {
  type: 'object',
  properties: {
    error: {
      type: 'object',
      properties: { message: { type: 'string' }, type: { type: 'string' }, param: { type: ['string', 'null'] }, code: { type: ['string', 'null'] } },
    },
  },
} as const;

export const samplingProperties = {
  model: { type: 'string', minLength: 1 },
  stream: { type: 'boolean' },
  stream_options: { type: ['object', 'null'], properties: { include_usage: { type: 'boolean' } } },
  n: { type: 'integer', minimum: 1, maximum: 16 },
  max_tokens: { type: ['integer', 'null'], minimum: 1 },
  temperature: { type: ['number', 'null'], minimum: 0, maximum: 2 },
  top_p: { type: ['number', 'null'], exclusiveMinimum: 0, maximum: 1 },
  top_k: { type: ['integer', 'null'], minimum: -1 },
  seed: { type: ['integer', 'null'], minimum: 0, maximum: 2147483647 },
  stop: {
    anyOf: [{ type: 'string', minLength: 1 }, { type: 'array', items: { type: 'string', minLength: 1 }, maxItems: 8 }, { type: 'null' }],
  },
  // Accepted so clients that always send them work; any value but 0 is refused (samplingFromBody).
  presence_penalty: { type: ['number', 'null'], minimum: -2, maximum: 2 },
  frequency_penalty: { type: ['number', 'null'], minimum: -2, maximum: 2 },
  // Kept with the reply's record.
  user: { type: 'string', maxLength: 256 },
} as const;

export const chatBodySchema = {
  type: 'object',
  required: ['model', 'messages'],
  additionalProperties: false,
  properties: {
    ...samplingProperties,
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['role'],
        additionalProperties: false,
        properties: {
          role: { type: 'string', enum: ['system', 'developer', 'user', 'assistant', 'tool'] },
          reasoning_content: { type: ['string', 'null'] },
          content: { anyOf: [{ type: 'string' }, { type: 'array' }, { type: 'null' }] },
          name: { type: 'string' },
          tool_calls: { type: 'array' },
          tool_call_id: { type: 'string' },
        },
      },
    },
    max_completion_tokens: { type: ['integer', 'null'], minimum: 1 },
    logprobs: { type: ['boolean', 'null'] },
    top_logprobs: { type: ['integer', 'null'], minimum: 0, maximum: 20 },
    tools: {
      type: ['array', 'null'],
      items: {
        type: 'object',
        required: ['type', 'function'],
        properties: {
          type: { const: 'function' },
          function: { type: 'object', required: ['name'], properties: { name: { type: 'string', minLength: 1 }, description: { type: 'string' }, parameters: { type: 'object' } } },
        },
      },
    },
    // 'required' and a named function would need constrained decoding, which the server does not do.
    tool_choice: { anyOf: [{ type: 'string', enum: ['none', 'auto'] }, { type: 'null' }] },
    chat_template_kwargs: { type: ['object', 'null'], properties: { enable_thinking: { type: 'boolean' } } },
  },
} as const;

export const completionBodySchema = {
  type: 'object',
  required: ['model', 'prompt'],
  additionalProperties: false,
  properties: {
    ...samplingProperties,
    prompt: { anyOf: [{ type: 'string', minLength: 1 }, { type: 'array', minItems: 1, items: { type: 'integer', minimum: 0 } }] },
    logprobs: { type: ['integer', 'null'], minimum: 0, maximum: 20 },
    prompt_logprobs: { type: ['integer', 'null'], minimum: 0, maximum: 1000 },
    // vLLM's extensions that its clients send (the vLLM client of vLLM mode among them).
    return_tokens_as_token_ids: { type: 'boolean' },
    stop_token_ids: { type: ['array', 'null'], maxItems: 64, items: { type: 'integer', minimum: 0 } },
    skip_special_tokens: { type: 'boolean' },
    echo: { type: 'boolean', const: false },
  },
} as const;
