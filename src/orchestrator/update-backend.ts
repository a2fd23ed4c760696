// What an update asks of the serving backend around the SDPO step. Embedded serving needs nothing:
// version N keeps serving from the same engine while N+1 trains. vLLM must stop admitting, drain,
// sleep (freeing the GPU), then wake, load the new version under its own name and drop the old one.
import type { ServedVersion } from '../serve/token-generator.js';

export interface UpdateBackend {
  /** Stop admitting (requests wait), let in-flight ones finish, free the accelerator. */
  drain(): Promise<void>;
  /** Take the accelerator back. */
  wake(): Promise<void>;
  /** Make a version servable before the alias moves to it. */
  load(version: ServedVersion): Promise<void>;
  /** Drop an adapter's versions other than `keep` once unused. */
  unloadStale(adapter: string, keep: string | null): Promise<void>;
  /** Admit requests again (waiting ones first). */
  admit(): void;
}

export const EMBEDDED_UPDATES: UpdateBackend = {
  drain: async () => {},
  wake: async () => {},
  load: async () => {},
  unloadStale: async () => {},
  admit: () => {},
};
