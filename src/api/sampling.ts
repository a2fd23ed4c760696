// Maps the sampling fields shared by chat and text completions onto the service's request.
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
}

export function samplingFromBody(body: SamplingBody, maxTokens: number | undefined): SamplingRequest {
  return {
    model: body.model,
    n: body.n ?? 1,
    maxTokens,
    temperature: body.temperature ?? undefined,
    topP: body.top_p ?? undefined,
    topK: body.top_k === null || body.top_k === undefined || body.top_k < 0 ? undefined : body.top_k,
    seed: body.seed ?? undefined,
    stop: body.stop === null || body.stop === undefined ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop,
  };
}
