// Who may do what. With API keys (or when bound beyond loopback) every non-public route needs a key:
// a user key reaches only its own tenant's adapters ("tenant/name"), completions and jobs; admin
// routes (keys, metrics, vLLM admin) need an admin key. Without keys, on loopback, the local operator
// may do everything. Rate limits are per key (per address without keys).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { KeyStore } from '../auth/keys.js';
import type { RateLimiter } from '../auth/rate-limit.js';
import type { Orchestrator } from '../orchestrator/orchestrator.js';
import type { InferenceService } from '../serve/inference.js';
import { openAiError } from './errors.js';

export interface Principal {
  keyId: string | null;
  /** The key's tenant; null for the local operator. */
  tenant: string | null;
  admin: boolean;
}

export type Access = 'public' | 'user' | 'admin';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal;
  }
  interface FastifyContextConfig {
    access?: Access;
    /** Which rate limit the route counts against. */
    rate?: 'chat' | 'feedback';
  }
}

const LOCAL: Principal = { keyId: null, tenant: null, admin: true };
const ANONYMOUS: Principal = { keyId: null, tenant: null, admin: false };

export interface AccessOptions {
  keys: KeyStore;
  /** Keys are required even when none exists (the server is reachable beyond loopback). */
  requireKeys: boolean;
  rates: RateLimiter;
}

/** Whether `p` may use the adapter `id` ("tenant/name"). */
export function mayUseAdapter(p: Principal, id: string): boolean {
  return p.admin || (p.tenant !== null && id.startsWith(`${p.tenant}/`));
}

function presentedKey(request: FastifyRequest): string | undefined {
  const auth = request.headers.authorization;
  if (typeof auth === 'string' && /^bearer\s+/i.test(auth)) return auth.replace(/^bearer\s+/i, '').trim();
  const x = request.headers['x-api-key'];
  if (typeof x === 'string') return x.trim();
  // A browser opening the dashboard cannot send a header; the page drops the key from its address.
  const q = (request.query as { key?: unknown } | undefined)?.key;
  return request.routeOptions.url === '/v1/dashboard' && typeof q === 'string' ? q : undefined;
}

function deny(reply: FastifyReply, status: number, message: string, code: string) {
  if (status === 401) void reply.header('www-authenticate', 'Bearer');
  return reply.status(status).send(openAiError(message, status === 429 ? 'rate_limit_error' : 'invalid_request_error', null, code));
}

export function registerAccess(app: FastifyInstance, opts: AccessOptions, service: InferenceService, orchestrator?: Orchestrator): void {
  app.decorateRequest('principal', null as unknown as Principal);

  app.addHook('onRequest', async (request, reply) => {
    const config = request.routeOptions.config as { access?: Access; rate?: string } | undefined;
    const url = request.routeOptions.url;
    const access = url === undefined || url.startsWith('/docs') ? 'public' : (config?.access ?? 'user');
    if (access === 'public') {
      request.principal = ANONYMOUS;
      return;
    }
    if (!opts.requireKeys && !opts.keys.hasActive()) {
      request.principal = LOCAL;
    } else {
      const key = presentedKey(request);
      if (!key) return deny(reply, 401, 'This server needs an API key: send "Authorization: Bearer <key>".', 'missing_api_key');
      const info = opts.keys.verify(key);
      if (!info) return deny(reply, 401, 'The API key is not valid (unknown or revoked).', 'invalid_api_key');
      request.principal = { keyId: info.id, tenant: info.tenant, admin: info.role === 'admin' };
    }
    if (access === 'admin' && !request.principal.admin) return deny(reply, 403, 'This route needs an admin key.', 'forbidden');
    if (config?.rate) {
      const wait = opts.rates.take(config.rate, request.principal.keyId ?? request.ip);
      if (wait > 0) {
        void reply.header('retry-after', String(wait));
        return deny(reply, 429, `Too many ${config.rate} requests for this key; retry in ${wait} s.`, 'rate_limited');
      }
    }
  });

  // Ownership, once the body is parsed and validated. Others' resources read as missing (404), so a
  // key cannot learn what other tenants have; creating under another tenant is refused (403).
  app.addHook('preHandler', async (request, reply) => {
    const p = request.principal;
    if (!p || p.admin) return;
    const body = (request.body ?? {}) as Record<string, unknown>;
    const params = (request.params ?? {}) as Record<string, unknown>;
    const query = (request.query ?? {}) as Record<string, unknown>;
    const mine = (id: string) => mayUseAdapter(p, id);
    const model = body.model;
    if (typeof model === 'string' && model !== service.modelName && !mine(model)) {
      return reply.status(404).send(openAiError(`The model \`${model}\` does not exist.`, 'invalid_request_error', 'model', 'model_not_found'));
    }
    if (typeof params.tenant === 'string' && params.tenant !== p.tenant) {
      return reply.status(404).send(openAiError(`adapter ${params.tenant}/${String(params.name ?? '')} does not exist`, 'invalid_request_error', null, 'not_found'));
    }
    const items = Array.isArray(body.requests) ? (body.requests as unknown[]) : [body];
    for (const it of [...items, query] as Record<string, unknown>[]) {
      // Fail closed: an id this check cannot read is refused, never waved through.
      if (it === null || typeof it !== 'object') {
        if (it === body || it === query) continue;
        return reply.status(400).send(openAiError('each item must be a JSON object', 'invalid_request_error', null, 'invalid_body'));
      }
      for (const field of ['lora_id', 'completion_id'] as const) {
        if (it[field] !== undefined && typeof it[field] !== 'string') return reply.status(400).send(openAiError(`${field} must be a string`, 'invalid_request_error', field, 'invalid_body'));
      }
      if (typeof it.lora_id === 'string' && !mine(it.lora_id)) {
        return reply.status(403).send(openAiError(`This key belongs to tenant "${p.tenant}": lora_id must be "${p.tenant}/<name>" (got ${JSON.stringify(it.lora_id)}).`, 'invalid_request_error', 'lora_id', 'forbidden'));
      }
      if (typeof it.completion_id === 'string') {
        const record = service.store.get(it.completion_id);
        if (record && record.tenant !== p.tenant) return reply.status(404).send(openAiError(`completion ${it.completion_id} does not exist`, 'invalid_request_error', null, 'not_found'));
      }
    }
    const url = request.routeOptions.url;
    if (url === '/v1/feedback/jobs/:id' && orchestrator) {
      const job = orchestrator.jobs.get(String(params.id));
      if (job && !mine(job.adapterId)) return reply.status(404).send(openAiError(`job ${String(params.id)} does not exist`, 'invalid_request_error', null, 'not_found'));
    }
    if (url === '/v1/completions/:id' && typeof params.id === 'string') {
      const record = service.store.get(params.id);
      if (record && record.tenant !== p.tenant) return reply.status(404).send(openAiError(`completion ${params.id} does not exist`, 'invalid_request_error', null, 'not_found'));
    }
  });
}
