// Opens everything serving needs from a model folder and a state directory.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Engine, type EngineOpenOptions } from '../engine/engine.js';
import { ChatTemplate } from '../model/chat-template.js';
import { readModelConfig } from '../model/config.js';
import { readGenerationConfig } from '../model/generation-config.js';
import { writeRandomModel } from '../model/random-model.js';
import { Tokenizer } from '../model/tokenizer.js';
import { writeTokenizerFiles } from '../model/toy-tokenizer.js';
import { defaultDatabase, openStore } from '../store/store.js';
import { AdapterRegistry } from '../orchestrator/adapters.js';
import { openObjectStore } from '../store/objects/object-store.js';
import { VersionStore } from '../store/objects/version-store.js';
import { CollapseGuard, DEFAULT_GUARD, type GuardConfig } from '../orchestrator/collapse-guard.js';
import { DEFAULT_ORCHESTRATOR, Orchestrator, type OrchestratorConfig } from '../orchestrator/orchestrator.js';
import { InferenceService, type InferenceOptions } from './inference.js';
import { EMBEDDED_UPDATES } from '../orchestrator/update-backend.js';
import { readTrainingProfile, type TrainingProfile } from '../model/training-profile.js';
import { Scheduler } from './scheduler.js';
import type { TokenGenerator } from './token-generator.js';
import { VllmClient } from './vllm-client.js';
import { VllmGenerator } from './vllm-generator.js';

export interface OpenInferenceOptions extends EngineOpenOptions, InferenceOptions {
  /** State directory (adapters; the SQLite database unless `database` names another); ':memory:' keeps the database in memory. */
  dataDir: string;
  /** The database: a SQLite file or a postgres:// URL (default: <dataDir>/claas.db). */
  database?: string;
  /** Serve through this vLLM server (same base model) instead of the embedded engine. */
  vllm?: { url: string; apiKey?: string };
}

export async function openInference(modelDir: string, options: OpenInferenceOptions): Promise<InferenceService> {
  const engine = await Engine.open(modelDir, options);
  const tokenizer = Tokenizer.fromDir(modelDir);
  const template = ChatTemplate.fromDir(modelDir);
  let generator: TokenGenerator = new Scheduler(engine);
  if (options.vllm) {
    const client = new VllmClient(options.vllm.url, { apiKey: options.vllm.apiKey });
    generator = new VllmGenerator(client, await client.baseModel());
  }
  const store = await openStore(options.database ?? (options.dataDir === ':memory:' ? ':memory:' : defaultDatabase(options.dataDir)));
  return new InferenceService(engine, tokenizer, template, readGenerationConfig(modelDir), generator, store, options);
}

export interface OpenServerOptions extends OpenInferenceOptions {
  guard?: Partial<GuardConfig>;
  orchestrator?: Partial<OrchestratorConfig>;
  /** Scorer of the `remote` teacher; defaults to the vLLM server in vLLM mode. */
  teacher?: { url: string; apiKey?: string; model?: string };
  /**
   * An object store every version is also published to, and fetched from when this node lacks its
   * folder (a folder path or s3://bucket/prefix; src/store/objects/object-store.ts).
   */
  objects?: string;
}

/**
 * Serving plus the learning loop: adapters and their versions under <dataDir>/adapters, durable
 * feedback jobs, the collapse guard and the orchestrator. Adapters are restored at their current
 * versions and interrupted jobs resume.
 */
export async function openServer(modelDir: string, options: OpenServerOptions): Promise<{ service: InferenceService; orchestrator: Orchestrator; profile: TrainingProfile }> {
  if (options.dataDir === ':memory:') throw new Error('the learning loop needs a data directory on disk');
  // Read before the weights load: a bad profile fails at once.
  const profile = readTrainingProfile(modelDir, readModelConfig(modelDir).hiddenSize);
  const service = await openInference(modelDir, options);
  const published = options.objects ? new VersionStore(openObjectStore(options.objects)) : null;
  const registry = new AdapterRegistry(service.store.adapters, service.engine, service, join(options.dataDir, 'adapters'), profile.lora, published);
  await registry.restore();
  await registry.watch();
  const fromProfile = { ...(profile.guardProbes.length > 0 ? { probes: profile.guardProbes } : {}), ...(profile.guardMaxUpdateKl !== undefined ? { maxUpdateKl: profile.guardMaxUpdateKl } : {}) };
  const guard = new CollapseGuard(service.engine, service.template, service.tokenizer, { ...DEFAULT_GUARD, ...fromProfile, ...options.guard }, service.stopTokenIds);
  const vllm = service.generator instanceof VllmGenerator ? service.generator : null;
  const teacher = options.teacher ? { client: new VllmClient(options.teacher.url, { apiKey: options.teacher.apiKey }), model: options.teacher.model } : vllm ? { client: vllm.client } : undefined;
  const o = options.orchestrator ?? {};
  const config: OrchestratorConfig = {
    ...DEFAULT_ORCHESTRATOR,
    ...(teacher ? { remoteTeacher: teacher } : {}),
    ...o,
    batchSize: o.batchSize ?? profile.feedback.batchSize,
    maxWaitMs: o.maxWaitMs ?? profile.feedback.batchWaitMs,
    defaults: { ...profile.training, ...o.defaults },
  };
  if (o.log) registry.log = o.log;
  const orchestrator = new Orchestrator(service.store.jobs, registry, service, guard, config, vllm ?? EMBEDDED_UPDATES, profile);
  await orchestrator.start();
  return { service, orchestrator, profile };
}

/**
 * A small random Qwen3 model with a real tokenizer and chat template: servable, but it knows nothing.
 * Its LM head only favours tokens of printable text (so replies stream as readable, if random, words);
 * it rarely ends a reply by itself.
 */
export function writeRandomChatModel(dir: string, seed = 1, size: { hidden?: number; layers?: number; intermediate?: number } = {}): string {
  if (existsSync(join(dir, 'config.json'))) return dir;
  const vocab = writeTokenizerFiles(dir);
  const tokenizer = Tokenizer.fromDir(dir);
  const printable = (id: number) => !tokenizer.isSpecial(id) && /^[\x20-\x7e]+$/.test(tokenizer.decode([id]));
  writeRandomModel(
    { vocab, hidden: size.hidden ?? 64, layers: size.layers ?? 2, heads: 4, kvHeads: 2, headDim: 16, intermediate: size.intermediate ?? 128, seed, std: 0.3, tied: false, lmHeadStd: 1, lmHeadRows: printable, eosTokenId: tokenizer.eosTokenId },
    dir,
  );
  return dir;
}
