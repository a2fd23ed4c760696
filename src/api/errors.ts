// Every error the API returns, in OpenAI's shape: {error: {message, type, param, code}}.
import { basename } from 'node:path';
import type { FastifyError, FastifyInstance } from 'fastify';
import { BusyError, ClaasError, InputError, NotFoundError, AdapterError, ShapeError, UpstreamError } from '../errors.js';

export interface OpenAiError {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export function openAiError(message: string, type = 'invalid_request_error', param: string | null = null, code: string | null = null): OpenAiError {
  return { error: { message, type, param, code } };
}

/** Status and body for anything thrown inside a route. */
export function toHttpError(err: unknown): { status: number; body: OpenAiError } {
  const e = err as FastifyError & { validation?: unknown; validationContext?: string };
  if (e?.validation) {
    const field = e.message.match(/^body\/([\w/]+)/)?.[1]?.replaceAll('/', '.') ?? null;
    // Ajv does not name an unexpected property in its message; the client needs to know which one.
    const errors = (Array.isArray(e.validation) ? e.validation : []) as { keyword?: string; params?: { additionalProperty?: string } }[];
    const unexpected = errors.find((v) => v.keyword === 'additionalProperties' && v.params?.additionalProperty)?.params?.additionalProperty;
    const extra = unexpected ? ` (unexpected property ${JSON.stringify(unexpected)})` : '';
    return { status: 400, body: openAiError(`Invalid request: ${e.message}${extra}`, 'invalid_request_error', field) };
  }
  if (e?.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return { status: 413, body: openAiError('Request body is too large.', 'invalid_request_error', null, 'request_too_large') };
  if (e?.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return { status: 415, body: openAiError('Content-Type must be application/json.') };
  if (e?.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || e?.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || e instanceof SyntaxError) {
    return { status: 400, body: openAiError(`We could not parse the JSON body of your request: ${e.message}`) };
  }
  if (err instanceof NotFoundError) {
    const model = /^The model /.test(err.message);
    return { status: 404, body: openAiError(err.message, 'invalid_request_error', model ? 'model' : null, model ? 'model_not_found' : 'not_found') };
  }
  if (err instanceof InputError || err instanceof AdapterError || err instanceof ShapeError) return { status: 400, body: openAiError(err.message) };
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) return { status: e.statusCode, body: openAiError(e.message) };
  if (err instanceof BusyError) return { status: 429, body: openAiError(err.message, 'rate_limit_error', null, 'queue_full') };
  if (err instanceof UpstreamError) return { status: 502, body: openAiError(err.message, 'server_error', null, 'upstream_error') };
  const code = err instanceof ClaasError ? err.code : null;
  return { status: 500, body: openAiError('The server had an error while processing your request.', 'server_error', null, code) };
}

/**
 * A message with every path under one of `roots` cut to its last part: a client learns which file was
 * wrong, not where the server keeps its data, model or temp files.
 */
export function withoutServerPaths(message: string, roots: readonly string[]): string {
  let out = message;
  for (const root of [...roots].filter((r) => r.length > 1).sort((a, b) => b.length - a.length)) {
    const escaped = root.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    out = out.replace(new RegExp(`${escaped}(?:/[^\\s:'"]*)?`, 'g'), (path) => basename(path));
  }
  return out;
}

export function registerErrorHandlers(app: FastifyInstance, serverPaths: readonly string[] = []): void {
  app.setErrorHandler((err, request, reply) => {
    const { status, body } = toHttpError(err);
    body.error.message = withoutServerPaths(body.error.message, serverPaths);
    if (err instanceof BusyError) void reply.header('retry-after', String(err.retryAfter));
    if (status >= 500) request.log.error({ err }, 'request failed');
    else request.log.info({ status, message: body.error.message }, 'request rejected');
    void reply.status(status).send(body);
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send(openAiError(`Unknown route: ${request.method} ${request.url.split('?')[0]}`, 'invalid_request_error', null, 'not_found'));
  });
}
