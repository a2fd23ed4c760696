// What serving needs from a generation backend: the embedded scheduler, or a vLLM server.
import type { Adapter, SampledToken, SamplingParams } from '../engine/engine.js';

/** The adapter version a request is served by. */
export interface ServedVersion {
  name: string;
  version: string;
  /** The version's PEFT folder (a remote backend loads it from there). */
  path?: string;
}

export interface GenerationRequest {
  promptIds: readonly number[];
  /** The adapter in this process's engine (embedded backend). */
  adapter: Adapter | null;
  /** The same adapter by name and version (remote backend). */
  served: ServedVersion | null;
  /** The tenant that asked: the embedded scheduler shares its rounds fairly between tenants. */
  tenant?: string | null;
  maxTokens: number;
  sampling: SamplingParams;
  seed: number;
  /** Token ids that end the generation (included in the output, like the end-of-turn token). */
  stopTokenIds: readonly number[];
  signal?: AbortSignal;
  /** Called for each sampled token; return false to stop (e.g. a stop sequence was seen). */
  onToken?: (token: SampledToken, index: number) => boolean | void;
}

export type FinishReason = 'stop' | 'length' | 'abort';

export interface GenerationResult {
  tokens: SampledToken[];
  finishReason: FinishReason;
  promptTokens: number;
}

export interface GenerationStats {
  /** Batched engine calls (embedded only). */
  rounds: number;
  generatedTokens: number;
  promptTokens: number;
  batchedSequences: number;
}

export interface TokenGenerator {
  readonly kind: 'embedded' | 'vllm';
  /** Resolves when a new request may pick its adapter version (vLLM: not during an update). */
  ready(): Promise<void>;
  generate(req: GenerationRequest): Promise<GenerationResult>;
  /** Generations in progress. */
  readonly size: number;
  readonly stats: GenerationStats;
}
