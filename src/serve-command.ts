// `claas serve`: load the model (with progress), open the state directory, listen, and shut down
// cleanly on SIGINT / SIGTERM: stop accepting, let in-flight requests finish, close the database.
import { existsSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join, resolve } from 'node:path';
import { buildApp } from './api/app.js';
import { BACKEND_REQUESTS, describeChoice, type BackendRequest } from './engine/backend.js';
import { WEIGHT_STORAGE_REQUESTS, type WeightStorageRequest } from './engine/webgpu/weight-storage.js';
import { ClaasError } from './errors.js';
import { weightFiles } from './model/weights.js';
import { openServer, writeRandomChatModel } from './serve/open.js';
import { VllmGenerator } from './serve/vllm-generator.js';
import { ApiKeys } from './auth/keys.js';
import { isSharedDatabase, openStore, resolveDatabase } from './store/store.js';
import { startRetention } from './store/retention.js';
import { openObjectStore } from './store/objects/object-store.js';
import type { Orchestrator } from './orchestrator/orchestrator.js';
import { untilStopped } from './shutdown.js';

export interface ServeOptions {
  model?: string;
  data: string;
  /** A SQLite file or a postgres:// URL (default: <data>/claas.db). */
  database?: string;
  port: number;
  host: string;
  threads?: number;
  /** auto (default), cpu, webgpu or cuda. */
  backend?: string;
  webgpuWeights?: string;
  /** Feedback batching; unset: the model's training profile. */
  batchSize?: number;
  batchWaitMs?: number;
  vllmUrl?: string;
  teacher?: string;
  teacherUrl?: string;
  teacherModel?: string;
  retentionDays: number;
  /** Requests per minute per key (0: unlimited). */
  rateChat: number;
  rateFeedback: number;
  maxQueuedJobs: number;
  /** Seconds a request (headers and body) may take to arrive. */
  requestTimeoutS?: number;
  maxPromptTokens?: number;
  /** Ceiling of max_tokens. */
  maxTokens: number;
  /** Collapse guard's bound on one update's KL to the version it replaces (0: guard off). */
  guardMaxKl?: number;
  /** Most bytes resident adapters hold, as given (512MiB, 2GiB; a bare number is MiB). */
  adapterMemory?: string;
  /** Object store that versions are published to (a folder or s3://bucket/prefix). */
  objects?: string;
  /** Serve only: feedback is stored for `claas train-worker` processes sharing the Postgres queue. */
  noTrain?: boolean;
  /** How long a claimed batch stays this process's without a heartbeat. */
  leaseMs?: number;
  /** This trainer's name in job leases (kept across restarts, it takes its own interrupted jobs back at once). */
  workerName?: string;
}

/** Checks the job-lease flags shared by serve and train-worker. */
export function checkLeaseFlags(opts: { leaseMs?: number; workerName?: string }): void {
  if (opts.leaseMs !== undefined && (!Number.isInteger(opts.leaseMs) || opts.leaseMs < 1000 || opts.leaseMs > 3_600_000)) throw new ClaasError('E_USAGE', `--lease-ms must be an integer in [1000, 3600000] (got ${opts.leaseMs})`);
  if (opts.workerName !== undefined && !/^[\w.:@-]{1,128}$/.test(opts.workerName)) throw new ClaasError('E_USAGE', `--worker-name must be 1-128 letters, digits or . _ : @ - (got ${JSON.stringify(opts.workerName)})`);
}

/** The start-up line that says what feedback without options does. */
export function describeTrainingDefaults(d: ReturnType<Orchestrator['effectiveDefaults']>, source: string): string {
  return `training defaults (${source}): lr ${d.learning_rate}, alpha ${d.alpha}, ${d.steps} step(s), top-K ${d.top_k}, teacher ${d.teacher}, memory ${d.memory}; new adapters rank ${d.lora.rank}, alpha ${d.lora.alpha}; feedback batches of ${d.feedback_batch.size} or ${d.feedback_batch.wait_ms} ms`;
}

const SIZE_UNITS: Record<string, number> = { b: 1, kb: 1e3, kib: 2 ** 10, mb: 1e6, mib: 2 ** 20, gb: 1e9, gib: 2 ** 30 };

/** Bytes in a size such as 512MiB, 1.5GB or 300 (MiB); null when it is not one. */
export function parseSize(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  if (!m) return null;
  const unit = m[2]!.toLowerCase() || 'mib';
  const scale = SIZE_UNITS[unit];
  if (scale === undefined) return null;
  const bytes = Math.floor(Number(m[1]) * scale);
  return bytes > 0 ? bytes : null;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

const TEACHERS = ['base', 'current', 'ema', 'remote'] as const;

/** The shipped toy assistant (models/toy), if this checkout has its weights. */
export const TOY_MODEL = fileURLToPath(new URL('../../models/toy', import.meta.url));

/**
 * --model as given; "random" for a small random model written to the state directory; without
 * --model the toy assistant shipped in models/toy (or, if its weights are missing, the random model).
 */
export function resolveModel(model: string | undefined, data: string): string {
  if (model && model !== 'random') return resolve(model);
  if (!model && existsSync(join(TOY_MODEL, 'model.safetensors'))) {
    console.log(`no --model given: serving the toy assistant in ${TOY_MODEL} (a tiny model trained here: simple tasks, styles set by feedback)`);
    return TOY_MODEL;
  }
  const dir = join(data, 'models', 'random-tiny');
  if (!existsSync(join(dir, 'config.json'))) {
    console.log(`writing a small random Qwen3 chat model to ${dir} (it replies with random words)`);
    return writeRandomChatModel(dir);
  }
  console.log(`serving the small random Qwen3 chat model in ${dir}`);
  return dir;
}

export async function serve(opts: ServeOptions): Promise<void> {
  // Everything the server writes (database, WAL, adapter versions, imports) is its user's alone.
  process.umask(0o077);
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) throw new ClaasError('E_USAGE', `--port must be 0-65535 (got ${opts.port})`);
  if (opts.batchSize !== undefined && (!Number.isInteger(opts.batchSize) || opts.batchSize < 1)) throw new ClaasError('E_USAGE', `--batch-size must be a positive integer (got ${opts.batchSize})`);
  if (opts.batchWaitMs !== undefined && (!Number.isFinite(opts.batchWaitMs) || opts.batchWaitMs < 0)) throw new ClaasError('E_USAGE', `--batch-wait-ms must be >= 0 (got ${opts.batchWaitMs})`);
  if (opts.teacher !== undefined && !(TEACHERS as readonly string[]).includes(opts.teacher)) throw new ClaasError('E_USAGE', `--teacher must be one of ${TEACHERS.join(', ')} (got ${opts.teacher})`);
  if (opts.teacher === 'remote' && !opts.teacherUrl && !opts.vllmUrl) throw new ClaasError('E_USAGE', '--teacher remote needs --teacher-url or --vllm-url');
  for (const [flag, url] of [['--vllm-url', opts.vllmUrl], ['--teacher-url', opts.teacherUrl]] as const) {
    if (url !== undefined && !/^https?:\/\/[^/]/.test(url)) throw new ClaasError('E_USAGE', `${flag} must be an http(s) URL (got ${url})`);
  }
  for (const [flag, v] of [['--retention-days', opts.retentionDays], ['--rate-chat', opts.rateChat], ['--rate-feedback', opts.rateFeedback]] as const) {
    if (!Number.isFinite(v) || v < 0) throw new ClaasError('E_USAGE', `${flag} must be a number >= 0 (got ${v})`);
  }
  for (const [flag, v] of [['--max-prompt-tokens', opts.maxPromptTokens ?? 1], ['--max-tokens', opts.maxTokens]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new ClaasError('E_USAGE', `${flag} must be a positive integer (got ${v})`);
  }
  if (opts.guardMaxKl !== undefined && (!Number.isFinite(opts.guardMaxKl) || opts.guardMaxKl < 0)) throw new ClaasError('E_USAGE', `--guard-max-kl must be a number >= 0 (got ${opts.guardMaxKl})`);
  if (opts.webgpuWeights !== undefined && !(WEIGHT_STORAGE_REQUESTS as readonly string[]).includes(opts.webgpuWeights)) throw new ClaasError('E_USAGE', `--webgpu-weights must be one of ${WEIGHT_STORAGE_REQUESTS.join(', ')} (got ${opts.webgpuWeights})`);
  if (opts.backend !== undefined && !(BACKEND_REQUESTS as readonly string[]).includes(opts.backend)) throw new ClaasError('E_USAGE', `--backend must be one of ${BACKEND_REQUESTS.join(', ')} (got ${opts.backend})`);
  const adapterMemoryBytes = opts.adapterMemory === undefined ? undefined : parseSize(opts.adapterMemory);
  if (adapterMemoryBytes === null) throw new ClaasError('E_USAGE', `--adapter-memory must be a size such as 512MiB or 2GiB (got ${opts.adapterMemory})`);
  let objectsAt: string | undefined;
  try {
    objectsAt = opts.objects === undefined ? undefined : openObjectStore(opts.objects).description;
  } catch (err) {
    throw new ClaasError('E_USAGE', `--objects: ${(err as Error).message}`);
  }
  checkLeaseFlags(opts);
  const requestTimeoutS = opts.requestTimeoutS ?? 30;
  if (!Number.isFinite(requestTimeoutS) || requestTimeoutS <= 0 || requestTimeoutS > 3600) throw new ClaasError('E_USAGE', `--request-timeout-s must be a number in (0, 3600] (got ${opts.requestTimeoutS})`);
  if (!Number.isInteger(opts.maxQueuedJobs) || opts.maxQueuedJobs < 1) throw new ClaasError('E_USAGE', `--max-queued-jobs must be a positive integer (got ${opts.maxQueuedJobs})`);
  const data = resolve(opts.data);
  const loopback = isLoopback(opts.host);
  const database = resolveDatabase(opts.database, data);
  if (opts.noTrain && !isSharedDatabase(database)) throw new ClaasError('E_USAGE', '--no-train leaves feedback to claas train-worker processes, which need a queue they share: give --database postgres://…');
  {
    // Opened first: an unreachable database fails the start before the model loads.
    const store = await openStore(database);
    const hasKeys = await new ApiKeys(store.apiKeys).hasActive().finally(() => store.close());
    if (!loopback && !hasKeys) {
      const where = opts.database === undefined ? `--data ${opts.data}` : `--database ${opts.database}`;
      throw new ClaasError('E_USAGE', `refusing to listen on ${opts.host} without API keys: anyone who reaches it could train and read every adapter. Create one first: claas keys create --tenant <tenant> --role admin ${where}`);
    }
    console.log(`state: ${store.sql.description}`);
    console.log(hasKeys ? 'API keys required (Authorization: Bearer <key>)' : 'no API keys: listening on loopback only, without authentication (claas keys create adds keys)');
  }
  const modelDir = resolveModel(opts.model, data);
  const files = [...new Set(weightFiles(modelDir).values())];
  const bytes = files.reduce((s, f) => s + statSync(f).size, 0);
  process.stdout.write(`loading ${modelDir}: ${files.length} weight file(s), ${(bytes / 2 ** 20).toFixed(1)} MiB … `);
  const t0 = performance.now();
  const { service, orchestrator, profile } = await openServer(modelDir, {
    dataDir: data,
    database,
    threads: opts.threads,
    backend: (opts.backend ?? 'auto') as BackendRequest,
    webgpuWeights: opts.webgpuWeights as WeightStorageRequest | undefined,
    maxPromptTokens: opts.maxPromptTokens,
    adapterMemoryBytes,
    objects: opts.objects,
    guard: opts.guardMaxKl === undefined ? {} : opts.guardMaxKl === 0 ? { enabled: false } : { maxUpdateKl: opts.guardMaxKl },
    maxTokensLimit: opts.maxTokens,
    vllm: opts.vllmUrl ? { url: opts.vllmUrl, apiKey: process.env.VLLM_API_KEY } : undefined,
    teacher: opts.teacherUrl ? { url: opts.teacherUrl, apiKey: process.env.TEACHER_API_KEY, model: opts.teacherModel } : undefined,
    orchestrator: {
      batchSize: opts.batchSize,
      maxWaitMs: opts.batchWaitMs,
      maxQueuedJobs: opts.maxQueuedJobs,
      defaults: opts.teacher ? { teacher: opts.teacher as (typeof TEACHERS)[number] } : {},
      train: !opts.noTrain,
      ...(opts.leaseMs !== undefined ? { leaseMs: opts.leaseMs } : {}),
      ...(opts.workerName !== undefined ? { worker: opts.workerName } : {}),
      log: (line) => console.log(line),
    },
  });
  const c = service.engine.config;
  const e = service.engine;
  console.log(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s (${c.modelType}, ${c.numLayers} layers, ${e.backend}${e.backend === 'cpu' ? `, ${e.threads} threads` : ''})`);
  console.log(describeChoice(e.backendChoice));
  console.log(describeTrainingDefaults(orchestrator.effectiveDefaults(), `${profile.source}${opts.teacher || opts.batchSize !== undefined || opts.batchWaitMs !== undefined ? ', with the flags given' : ''}`));
  if (opts.noTrain) console.log('training: none here (--no-train); feedback is queued in Postgres for claas train-worker processes');
  else if (isSharedDatabase(database)) console.log(`training: here, as worker ${orchestrator.worker}, sharing the Postgres queue with any other trainer`);
  const r = service.adapters.stats();
  console.log(`adapters: ${r.adapters} served, loaded on first use; resident memory ${r.budgetBytes === null ? 'unbounded (--adapter-memory bounds it)' : `bounded to ${(r.budgetBytes / 2 ** 20).toFixed(1)} MiB, least recently used freed first`}`);
  if (objectsAt) console.log(`adapter versions: also published to the object store (${objectsAt}), and fetched from it when this node lacks one`);
  const g = orchestrator.guardConfig;
  console.log(g.enabled ? `collapse guard: ${g.probes.length} probes, update KL to the replaced version <= ${g.maxUpdateKl} nats/token, no looping or endless replies` : 'collapse guard: off');
  if (service.generator instanceof VllmGenerator) console.log(`serving through vLLM at ${service.generator.client.baseUrl} (base model "${service.generator.baseModel}"); training here`);

  const rate = (perMinute: number) => ({ perMinute, burst: Math.max(1, Math.ceil(perMinute / 15)) });
  const app = await buildApp(service, {
    logger: { level: process.env.LOG_LEVEL ?? 'info' },
    orchestrator,
    requireKeys: !loopback,
    rateLimits: { chat: rate(opts.rateChat), feedback: rate(opts.rateFeedback) },
    requestTimeoutMs: Math.round(requestTimeoutS * 1000),
  });
  const stopRetention = opts.retentionDays > 0
    ? startRetention(service.store.completions, orchestrator.jobs, opts.retentionDays * 86_400_000, (r) => {
        if (r.completions + r.feedbackItems > 0) app.log.info({ ...r }, 'retention: expired records deleted');
      })
    : () => {};
  const address = await app.listen({ host: opts.host, port: opts.port });
  console.log(`serving "${service.modelName}" at ${address}/v1 (OpenAPI docs at ${address}/docs)`);

  await untilStopped((signal) => {
    console.log(`${signal}: no new requests; finishing ${service.generator.size} generation(s) in flight`);
    // Fastify's close waits for in-flight requests, streamed ones included. Their keep-alive
    // connections would then hold the exit until they time out: close each once it goes idle.
    stopRetention();
    const idle = setInterval(() => app.server.closeIdleConnections(), 50);
    return app
      .close()
      .finally(() => clearInterval(idle))
      .then(() => orchestrator.close())
      .then(() => service.close());
  });
}
