// Maps the sampling fields shared by chat and text completions onto the service's request.
import { InputError } from '../errors.js';
import type { SamplingRequest } from '../serve/inference.js';

export interface SamplingBody {
  model: string;
  stream?: boolean;
  stream_options?: { include_usage?: boolean } | null;
  n?: number;
  max_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  user?: string;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
}

export function samplingFromBody(body: SamplingBody, maxTokens: number | undefined): SamplingRequest {
  for (const k of ['presence_penalty', 'frequency_penalty'] as const) {
    if ((body[k] ?? 0) !== 0) throw new InputError(`${k} is not supported by this server: send 0 or leave it out`);
  }
  return {
    model: body.model,
    n: body.n ?? 1,
    maxTokens,
    temperature: body.temperature ?? undefined,
    topP: body.top_p ?? undefined,
    topK: body.top_k === null || body.top_k === undefined || body.top_k < 0 ? undefined : body.top_k,
    seed: body.seed ?? undefined,
    stop: body.stop === null || body.stop === undefined ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop,
    ...(body.user !== undefined ? { user: body.user } : {}),
  };
}
