// The original CLaaS service's adapter and health routes, on top of this server's own (see README,
// "Coming from CLaaS").
import type { FastifyPluginAsync } from 'fastify';
import type { AdapterRegistry } from '../orchestrator/adapters.js';

export const compatLoraRoutes = (_registry: AdapterRegistry): FastifyPluginAsync =>
  async () => {};
