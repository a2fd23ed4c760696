// POST /v1/score: the log-probability of a given assistant reply after a conversation.
import type { FastifyPluginAsync } from 'fastify';
import type { InferenceService } from '../serve/inference.js';

export const scoreRoutes = (_service: InferenceService): FastifyPluginAsync =>
  async () => {};
