// Who may do what. With API keys (or when bound beyond loopback) every non-public route needs a key:
// a user key reaches only its own tenant's adapters ("tenant/name"), completions and jobs; admin
// routes (keys, metrics, vLLM admin) need an admin key. Without keys, on loopback, the local operator
// may do everything. Rate limits are per key (per address without keys).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ApiKeys } from '../auth/keys.js';
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

/**
 * What a user route's request names that must be the caller's, checked once the request is validated.
 * Each route declares its own (config.owns); the server refuses to start with a user route that
 * declares nothing, so a new route cannot go unchecked because it names its ids differently.
 * - `model`: body.model is the base model or one of the caller's adapters (404 otherwise);
 * - `lora_id`: body.lora_id, query.lora_id and every requests[].lora_id are the caller's (403);
 * - `completion_id`: body.completion_id and every requests[].completion_id name the caller's records (404);
 * - `adapter`: the adapter in the path, `:tenant/:name` or one `:id` ("tenant/name", percent-encoded) (404);
 * - `tenant`: the path's `:tenant` is the caller's (404);
 * - `job`: the path's `:id` is one of the caller's feedback jobs (404);
 * - `record`: the path's `:id` is one of the caller's completion records (404);
 * - `own-data`: the route names no one's ids: it lists, or writes, only the caller's own.
 */
export type Owned = 'model' | 'lora_id' | 'completion_id' | 'adapter' | 'tenant' | 'job' | 'record' | 'own-data';

/** A registered route and what it declared. */
export interface RouteDeclaration {
  method: string;
  url: string;
  access: Access;
  owns: readonly Owned[];
}

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal;
  }
  interface FastifyInstance {
    /** Every route with its access and ownership, as registered. */
    routeDeclarations: RouteDeclaration[];
  }
  interface FastifyContextConfig {
    access?: Access;
    owns?: readonly Owned[];
    /** Which rate limit the route counts against. */
    rate?: 'chat' | 'feedback';
  }
}

const LOCAL: Principal = { keyId: null, tenant: null, admin: true };
const ANONYMOUS: Principal = { keyId: null, tenant: null, admin: false };

export interface AccessOptions {
  keys: ApiKeys;
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

/** A route's access: /docs (the OpenAPI pages) is public, anything undeclared is for users. */
function accessOf(url: string | undefined, config: { access?: Access } | undefined): Access {
  return url === undefined || url === '/docs' || url.startsWith('/docs/') ? 'public' : (config?.access ?? 'user');
}

export function registerAccess(app: FastifyInstance, opts: AccessOptions, service: InferenceService, orchestrator?: Orchestrator): void {
  app.decorateRequest('principal', null as unknown as Principal);
  const declared: RouteDeclaration[] = [];
  app.decorate('routeDeclarations', declared);
  app.addHook('onRoute', (route) => {
    const config = route.config as { access?: Access; owns?: readonly Owned[] } | undefined;
    const access = accessOf(route.url, config);
    const owns = config?.owns ?? [];
    if (access === 'user' && owns.length === 0) throw new Error(`route ${String(route.method)} ${route.url} is for users but declares nothing it owns (config.owns), nor access 'public' or 'admin'`);
    // A route that takes no query parameters says so: a misspelt one is a 400 naming it, not ignored.
    if (access !== 'public' && route.schema?.querystring === undefined) route.schema = { ...route.schema, querystring: { type: 'object', additionalProperties: false, properties: {} } };
    for (const method of [route.method].flat()) declared.push({ method, url: route.url, access, owns });
  });

  app.addHook('onRequest', async (request, reply) => {
    const config = request.routeOptions.config as { access?: Access; rate?: string } | undefined;
    const access = accessOf(request.routeOptions.url, config);
    if (access === 'public') {
      request.principal = ANONYMOUS;
      return;
    }
    if (!opts.requireKeys && !(await opts.keys.hasActive())) {
      request.principal = LOCAL;
    } else {
      const key = presentedKey(request);
      if (!key) return deny(reply, 401, 'This server needs an API key: send "Authorization: Bearer <key>".', 'missing_api_key');
      const info = await opts.keys.verify(key);
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

  // Ownership, once the body is parsed and validated, as each route declared it. Others' resources
  // read as missing (404), so a key cannot learn what other tenants have; creating under another
  // tenant is refused (403).
  app.addHook('preHandler', async (request, reply) => {
    const p = request.principal;
    if (!p || p.admin) return;
    const owns = (request.routeOptions.config as { owns?: readonly Owned[] } | undefined)?.owns ?? [];
    const body = (request.body ?? {}) as Record<string, unknown>;
    const params = (request.params ?? {}) as Record<string, unknown>;
    const query = (request.query ?? {}) as Record<string, unknown>;
    const mine = (id: string) => mayUseAdapter(p, id);
    const missing = (message: string, param: string | null = null) => reply.status(404).send(openAiError(message, 'invalid_request_error', param, param === 'model' ? 'model_not_found' : 'not_found'));
    const items = Array.isArray(body.requests) ? (body.requests as unknown[]) : [body];
    for (const owned of owns) {
      switch (owned) {
        case 'model': {
          const model = body.model;
          if (typeof model !== 'string') return reply.status(400).send(openAiError('model must be a string', 'invalid_request_error', 'model', 'invalid_body'));
          if (model !== service.modelName && !mine(model)) return missing(`The model \`${model}\` does not exist.`, 'model');
          break;
        }
        case 'lora_id':
        case 'completion_id':
          for (const it of owned === 'lora_id' ? [...items, query] : items) {
            // Fail closed: an id this check cannot read is refused, never waved through.
            if (it === null || typeof it !== 'object') return reply.status(400).send(openAiError('each item must be a JSON object', 'invalid_request_error', null, 'invalid_body'));
            const v = (it as Record<string, unknown>)[owned];
            if (v === undefined) continue;
            if (typeof v !== 'string') return reply.status(400).send(openAiError(`${owned} must be a string`, 'invalid_request_error', owned, 'invalid_body'));
            if (owned === 'lora_id' && !mine(v)) {
              return reply.status(403).send(openAiError(`This key belongs to tenant "${p.tenant}": lora_id must be "${p.tenant}/<name>" (got ${JSON.stringify(v)}).`, 'invalid_request_error', 'lora_id', 'forbidden'));
            }
            if (owned === 'completion_id') {
              const record = await service.store.completions.get(v);
              if (record && record.tenant !== p.tenant) return missing(`completion ${v} does not exist`);
            }
          }
          break;
        case 'adapter': {
          // "/v1/lora/ana/export" names the adapter "ana/export": the tenant is what precedes any "/".
          const id = typeof params.tenant === 'string' ? `${params.tenant}/${String(params.name ?? '')}` : String(params.id ?? '');
          const tenant = id.split('/')[0]!;
          if (tenant !== p.tenant) return missing(`adapter ${id} does not exist`);
          break;
        }
        case 'tenant':
          if (params.tenant !== p.tenant) return missing(`tenant ${String(params.tenant)} does not exist`);
          break;
        case 'job': {
          const job = await orchestrator?.jobs.get(String(params.id));
          if (job && !mine(job.adapterId)) return missing(`job ${String(params.id)} does not exist`);
          break;
        }
        case 'record': {
          const record = await service.store.completions.get(String(params.id));
          if (record && record.tenant !== p.tenant) return missing(`completion ${String(params.id)} does not exist`);
          break;
        }
        case 'own-data':
          break;
      }
    }
  });
}
