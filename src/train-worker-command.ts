// `claas train-worker`: a trainer process of a cluster. It serves no API: it takes feedback batches
// from the Postgres queue that `claas serve` nodes fill (under leases it renews), trains them, writes
// each version to the object store before its row, runs the collapse guard and promotes; the serving
// nodes follow the promotion (NOTIFY). Any number of workers may share one queue: one adapter trains
// on one worker at a time, and a dead worker's batch is taken up again with the version it was
// assigned. An optional health port answers GET /healthz for probes.
import { resolve } from 'node:path';
import Fastify from 'fastify';
import { BACKEND_REQUESTS, describeChoice, type BackendRequest } from './engine/backend.js';
import { ClaasError } from './errors.js';
import { openServer } from './serve/open.js';
import { untilStopped } from './shutdown.js';
import { openObjectStore } from './store/objects/object-store.js';
import { isSharedDatabase, resolveDatabase } from './store/store.js';
import { checkLeaseFlags, describeTrainingDefaults, parseSize, resolveModel } from './serve-command.js';

export interface TrainWorkerOptions {
  model?: string;
  data: string;
  /** The shared queue: a postgres:// URL. */
  database?: string;
  /** The object store versions go to (every serving node reads them there). */
  objects?: string;
  threads?: number;
  backend?: string;
  batchSize?: number;
  batchWaitMs?: number;
  teacher?: string;
  teacherUrl?: string;
  teacherModel?: string;
  guardMaxKl?: number;
  adapterMemory?: string;
  leaseMs?: number;
  workerName?: string;
  /** Loopback or any address: GET /healthz only (unset: no port). */
  healthPort?: number;
  host: string;
}

const TEACHERS = ['base', 'current', 'ema', 'remote'] as const;

export async function trainWorker(opts: TrainWorkerOptions): Promise<void> {
  process.umask(0o077);
  const data = resolve(opts.data);
  if (opts.database === undefined) throw new ClaasError('E_USAGE', 'train-worker needs --database postgres://… (the queue the serving nodes fill)');
  const database = resolveDatabase(opts.database, data);
  if (!isSharedDatabase(database)) throw new ClaasError('E_USAGE', `train-worker needs a Postgres --database that the serving nodes share (got ${opts.database})`);
  if (opts.objects === undefined) throw new ClaasError('E_USAGE', 'train-worker needs --objects <folder or s3://bucket/prefix> (where serving nodes fetch the versions it writes)');
  let objectsAt: string;
  try {
    objectsAt = openObjectStore(opts.objects).description;
  } catch (err) {
    throw new ClaasError('E_USAGE', `--objects: ${(err as Error).message}`);
  }
  checkLeaseFlags(opts);
  if (opts.batchSize !== undefined && (!Number.isInteger(opts.batchSize) || opts.batchSize < 1)) throw new ClaasError('E_USAGE', `--batch-size must be a positive integer (got ${opts.batchSize})`);
  if (opts.batchWaitMs !== undefined && (!Number.isFinite(opts.batchWaitMs) || opts.batchWaitMs < 0)) throw new ClaasError('E_USAGE', `--batch-wait-ms must be >= 0 (got ${opts.batchWaitMs})`);
  if (opts.teacher !== undefined && !(TEACHERS as readonly string[]).includes(opts.teacher)) throw new ClaasError('E_USAGE', `--teacher must be one of ${TEACHERS.join(', ')} (got ${opts.teacher})`);
  if (opts.teacher === 'remote' && !opts.teacherUrl) throw new ClaasError('E_USAGE', '--teacher remote needs --teacher-url');
  if (opts.teacherUrl !== undefined && !/^https?:\/\/[^/]/.test(opts.teacherUrl)) throw new ClaasError('E_USAGE', `--teacher-url must be an http(s) URL (got ${opts.teacherUrl})`);
  if (opts.guardMaxKl !== undefined && (!Number.isFinite(opts.guardMaxKl) || opts.guardMaxKl < 0)) throw new ClaasError('E_USAGE', `--guard-max-kl must be a number >= 0 (got ${opts.guardMaxKl})`);
  if (opts.backend !== undefined && !(BACKEND_REQUESTS as readonly string[]).includes(opts.backend)) throw new ClaasError('E_USAGE', `--backend must be one of ${BACKEND_REQUESTS.join(', ')} (got ${opts.backend})`);
  if (opts.healthPort !== undefined && (!Number.isInteger(opts.healthPort) || opts.healthPort < 0 || opts.healthPort > 65535)) throw new ClaasError('E_USAGE', `--health-port must be 0-65535 (got ${opts.healthPort})`);
  const adapterMemoryBytes = opts.adapterMemory === undefined ? undefined : parseSize(opts.adapterMemory);
  if (adapterMemoryBytes === null) throw new ClaasError('E_USAGE', `--adapter-memory must be a size such as 512MiB or 2GiB (got ${opts.adapterMemory})`);

  const modelDir = resolveModel(opts.model, data);
  const t0 = performance.now();
  process.stdout.write(`loading ${modelDir} … `);
  const { service, orchestrator, profile } = await openServer(modelDir, {
    dataDir: data,
    database,
    threads: opts.threads,
    backend: (opts.backend ?? 'auto') as BackendRequest,
    adapterMemoryBytes,
    objects: opts.objects,
    guard: opts.guardMaxKl === undefined ? {} : opts.guardMaxKl === 0 ? { enabled: false } : { maxUpdateKl: opts.guardMaxKl },
    teacher: opts.teacherUrl ? { url: opts.teacherUrl, apiKey: process.env.TEACHER_API_KEY, model: opts.teacherModel } : undefined,
    orchestrator: {
      batchSize: opts.batchSize,
      maxWaitMs: opts.batchWaitMs,
      defaults: opts.teacher ? { teacher: opts.teacher as (typeof TEACHERS)[number] } : {},
      ...(opts.leaseMs !== undefined ? { leaseMs: opts.leaseMs } : {}),
      ...(opts.workerName !== undefined ? { worker: opts.workerName } : {}),
      log: (line) => console.log(line),
    },
  });
  const e = service.engine;
  console.log(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s (${e.backend}${e.backend === 'cpu' ? `, ${e.threads} threads` : ''})`);
  console.log(describeChoice(e.backendChoice));
  console.log(`state: ${service.store.sql.description}; versions published to ${objectsAt}`);
  console.log(describeTrainingDefaults(orchestrator.effectiveDefaults(), profile.source));
  let health: ReturnType<typeof Fastify> | null = null;
  if (opts.healthPort !== undefined) {
    health = Fastify();
    const schema = { response: { 200: { type: 'object', properties: { status: { type: 'string' }, role: { type: 'string' }, worker: { type: 'string' } } } } };
    health.get('/healthz', { schema }, async () => ({ status: 'ok', role: 'train-worker', worker: orchestrator.worker }));
    const address = await health.listen({ host: opts.host, port: opts.healthPort });
    console.log(`health at ${address}/healthz`);
  }
  console.log(`training as worker ${orchestrator.worker}: taking feedback from the shared queue`);

  await untilStopped((signal) => {
    // The running update finishes (its lease would otherwise wait out its expiry before another
    // worker takes it up); nothing new is claimed.
    console.log(`${signal}: finishing the update in progress, claiming no more`);
    return orchestrator
      .close()
      .then(() => health?.close())
      .then(() => service.close());
  });
}
