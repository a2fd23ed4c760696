// What a request may make the server compute, derived from the model: checked before the work
// starts, so that one request cannot hold the engine (and every tenant's chat) for minutes or fill
// the process's memory. Feedback items are bounded by the prompt limit and the context
// (Orchestrator.checkSize); chat and completions by the prompt limit and max_tokens.
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
