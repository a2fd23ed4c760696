// What a request may make the server compute or write, derived from the model and the flags: checked
// before the work starts, so that one request cannot hold the engine (and every tenant's chat) for
// minutes, fill the process's memory or the disk: prompts of chat and completions, feedback items,
// prompt_logprobs and imports. Texts over a few thousand characters are tokenized off the event loop
// (Tokenizer.encodeAsync) before they are measured here.
import { InputError } from '../errors.js';

/** Top-k entries one prompt_logprobs answer may hold (about 60 bytes of JSON each). */
export const MAX_PROMPT_LOGPROB_ENTRIES = 1_000_000;
/** Bytes of full-vocabulary logits one prompt_logprobs call may allocate. */
export const MAX_PROMPT_LOGITS_BYTES = 2 * 1024 ** 3;

/** Refuses a prompt_logprobs request over either bound, saying what to shorten. */
export function checkPromptLogprobs(promptTokens: number, k: number, vocabSize: number): void {
  const entries = Math.max(0, promptTokens - 1) * (k + 1);
  if (entries > MAX_PROMPT_LOGPROB_ENTRIES) {
    throw new InputError(`prompt_logprobs ${k} over ${promptTokens} prompt tokens would return ${entries} entries; at most ${MAX_PROMPT_LOGPROB_ENTRIES} (ask for fewer alternatives or a shorter prompt)`);
  }
  const bytes = promptTokens * vocabSize * 4;
  if (bytes > MAX_PROMPT_LOGITS_BYTES) {
    throw new InputError(`prompt_logprobs over ${promptTokens} prompt tokens needs ${Math.ceil(bytes / 1024 ** 2)} MiB of logits; at most ${MAX_PROMPT_LOGITS_BYTES / 1024 ** 2} MiB (at most ${Math.floor(MAX_PROMPT_LOGITS_BYTES / (vocabSize * 4))} prompt tokens with this model)`);
  }
}

/** A chat or completion prompt: within the server's prompt limit (the model's context by default). */
export function checkPromptTokens(promptTokens: number, maxPromptTokens: number, context: number): void {
  if (promptTokens > maxPromptTokens) throw new InputError(`the prompt has ${promptTokens} tokens; this server accepts at most ${maxPromptTokens} (the model's context is ${context})`);
}

/** A feedback item: its prompt within the server's prompt limit (as for chat), and the longer of the
 * student's and the teacher's prompt (which adds the feedback) plus the response within the context. */
export function checkFeedbackSize(where: string, t: { prompt: number; teacherPrompt: number; response: number }, maxPromptTokens: number, context: number): void {
  if (t.prompt > maxPromptTokens) throw new InputError(`${where}: the prompt has ${t.prompt} tokens; this server accepts at most ${maxPromptTokens}`);
  const longest = Math.max(t.prompt, t.teacherPrompt) + t.response;
  if (longest > context) throw new InputError(`${where}: prompt (with the feedback, for the teacher) and response come to ${longest} tokens; the model's context is ${context}`);
}

/** Largest header of an imported safetensors file. */
const IMPORT_HEADER_BYTES = 1024 * 1024;
/** An adapter_config.json is a few hundred bytes. */
export const MAX_ADAPTER_CONFIG_BYTES = 64 * 1024;

/** The largest each file of an imported adapter may be, from the parameter count its config declares:
 * weights and EMA one float32 per parameter, the optimizer two, each with a header. */
export function importFileLimits(params: number): Record<'config' | 'weights' | 'ema' | 'optimizer', number> {
  return { config: MAX_ADAPTER_CONFIG_BYTES, weights: params * 4 + IMPORT_HEADER_BYTES, ema: params * 4 + IMPORT_HEADER_BYTES, optimizer: params * 8 + IMPORT_HEADER_BYTES };
}
