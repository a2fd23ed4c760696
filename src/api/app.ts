// The Fastify app: built separately from listen() so tests drive it through inject or a socket.
import { tmpdir } from 'node:os';
import { dirname } from 'node:path';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { Orchestrator } from '../orchestrator/orchestrator.js';
import type { InferenceService } from '../serve/inference.js';
import { feedbackRoutes } from './feedback.js';
import { loraRoutes } from './lora.js';
import { vllmAdminRoutes } from './vllm-admin.js';
import { chatRoutes } from './chat.js';
import { completionRoutes } from './completions.js';
import { completionRecordRoutes } from './completion-records.js';
import { compatLoraRoutes } from './compat-lora.js';
import { scoreRoutes } from './score.js';
import { registerErrorHandlers } from './errors.js';
import { healthRoutes, type RequestCounters } from './health.js';
import { modelRoutes } from './models.js';
import { adminRoutes } from './admin.js';
import { evalRunRoutes } from './eval-runs.js';
import { dashboardRoutes } from './dashboard.js';
import { registerAccess } from './access.js';
import { ApiKeys } from '../auth/keys.js';
import { RateLimiter, type RateLimit } from '../auth/rate-limit.js';

export interface AppOptions {
  logger?: FastifyServerOptions['logger'];
  /** Largest accepted request body in bytes (default 4 MiB; OpenClaw's turns are ~50 KB). */
  bodyLimit?: number;
  /** Adapters and feedback routes (the learning loop), when given. */
  orchestrator?: Orchestrator;
  /** Require API keys even when none exists (set when listening beyond loopback). */
  requireKeys?: boolean;
  /** Per-key rate limits (default: none). */
  rateLimits?: { chat?: RateLimit; feedback?: RateLimit };
  /** How long a client may take to send a whole request, headers and body (default 30 s). */
  requestTimeoutMs?: number;
}

export async function buildApp(service: InferenceService, options: AppOptions = {}): Promise<FastifyInstance> {
  // Logged requests carry the path without its query string (a dashboard key may travel there).
  const logger =
    options.logger && typeof options.logger === 'object'
      ? { ...options.logger, serializers: { req: (r: { method: string; url: string; ip?: string }) => ({ method: r.method, url: r.url.split('?')[0], remoteAddress: r.ip }) } }
      : (options.logger ?? false);
  const requestTimeout = options.requestTimeoutMs ?? 30_000;
  const app = Fastify({
    logger,
    bodyLimit: options.bodyLimit ?? 4 * 1024 * 1024,
    // A client that stalls while sending its request is cut off; the reply (a long generation, a
    // stream) is not limited by this.
    requestTimeout,
    // Node enforces the request timeout only with the headers timeout at or below it, and looks for
    // expired requests every connectionsCheckingInterval (its 30 s default would double the wait).
    http: { requestTimeout, headersTimeout: requestTimeout, connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(requestTimeout / 3))) },
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
  });
  registerErrorHandlers(app, [service.engine.modelDir, tmpdir(), ...(options.orchestrator ? [dirname(options.orchestrator.registry.root)] : [])]);
  const keys = new ApiKeys(service.store.apiKeys);
  registerAccess(app, { keys, requireKeys: options.requireKeys ?? false, rates: new RateLimiter({ ...options.rateLimits }) }, service, options.orchestrator);
  const counters: RequestCounters = { requests: new Map() };
  app.addHook('onResponse', async (request, reply) => {
    const key = `${request.routeOptions.url ?? 'unknown'} ${reply.statusCode}`;
    counters.requests.set(key, (counters.requests.get(key) ?? 0) + 1);
  });
  await app.register(swagger, {
    openapi: { info: { title: 'CLaaS', description: 'OpenAI-compatible serving of a continually learning assistant.', version: '0.1.0' } },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  await app.register(adminRoutes(keys, service.store.completions, options.orchestrator?.jobs ?? null));
  await app.register(evalRunRoutes(service.store.evalRuns));
  await app.register(chatRoutes(service));
  await app.register(completionRoutes(service));
  await app.register(completionRecordRoutes(service.store.completions));
  await app.register(modelRoutes(service, options.orchestrator));
  await app.register(healthRoutes(service, counters));
  await app.register(vllmAdminRoutes(service));
  await app.register(scoreRoutes(service));
  if (options.orchestrator) {
    await app.register(loraRoutes(options.orchestrator.registry));
    await app.register(compatLoraRoutes(options.orchestrator.registry));
    await app.register(feedbackRoutes(options.orchestrator));
    await app.register(dashboardRoutes(service, options.orchestrator));
  }
  return app;
}
