// A whole server in the test's process (openServer + the API on a loopback port) with a JSON caller,
// for tests that run more than one of them or restart one over the same state.
import { buildApp } from '../src/api/app.js';
import type { InferenceService } from '../src/serve/inference.js';
import { openServer, type OpenServerOptions } from '../src/serve/open.js';

// JSON replies are read field by field by the tests' assertions.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = Record<string, any>;

export interface AppNode {
  call(method: string, path: string, body?: unknown): Promise<{ status: number; body: Json }>;
  service: InferenceService;
  close(): Promise<void>;
}

/** A server on `model` with feedback trained at once (batch size 1) and the guard off, unless `options` say otherwise. */
export async function startAppNode(model: string, options: OpenServerOptions): Promise<AppNode> {
  const { service, orchestrator } = await openServer(model, { threads: 1, orchestrator: { batchSize: 1, maxWaitMs: 10 }, guard: { enabled: false }, ...options });
  const app = await buildApp(service, { orchestrator });
  const base = await app.listen({ host: '127.0.0.1', port: 0 });
  return {
    service,
    call: async (method, path, body) => {
      const res = await fetch(`${base}${path}`, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
      return { status: res.status, body: (await res.json()) as Json };
    },
    close: async () => {
      await app.close();
      await orchestrator.close();
      await service.close();
    },
  };
}
