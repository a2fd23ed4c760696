#!/usr/bin/env node
// The claas command line: engine utilities (model info, a random test model, a learning demo).
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Engine } from './engine/engine.js';
import { ClaasError } from './errors.js';
import { writeRandomModel } from './model/random-model.js';
import { serve } from './serve-command.js';
import { trainWorker } from './train-worker-command.js';
import { ApiKeys, type Role } from './auth/keys.js';
import { openStore, resolveDatabase } from './store/store.js';
import { adherenceSvg } from './eval/plot.js';
import { runEval } from './eval/run.js';
import { STYLES, type StyleName } from './toy/styles.js';
import { openClawConfig } from './openclaw-config.js';

const USAGE = `usage: claas <command> [options]

commands:
  serve         the OpenAI-compatible server with the learning loop (embedded engine, or vLLM)
                  --model <dir>   model folder (default: the toy assistant in models/toy; "random": a
                                  small random Qwen3 chat model written to --data)
                  --data <dir>    state directory: adapters, and the SQLite database (default: ./data)
                  --database <db> the database: a SQLite file, or a postgres://user:password@host/db URL
                                  (default: <data>/claas.db; the schema is created and migrated on start)
                  --port <n> (8000)  --host <addr> (127.0.0.1)  --threads <n>
                  --backend <b>   auto (default: CUDA, then a hardware WebGPU adapter, then the CPU), cpu,
                                  webgpu (also a software adapter such as llvmpipe) or cuda
                  --webgpu-weights <s>  auto (default: f16 when the adapter offers shader-f16 and the
                                  checkpoint is 16-bit), f16 or f32: how WebGPU stores the frozen weights
                  --batch-size <n>  --batch-wait-ms <n>: feedback items per update, longest wait (default:
                                  the model's training profile; the toy's: 4 items, 2000 ms)
                  --vllm-url <url>      serve through this vLLM server (same base model; key: VLLM_API_KEY)
                  --teacher <mode>      default teacher: base, current (default), ema, remote
                  --teacher-url <url>   scorer of the remote teacher (default: the vLLM server)
                  --teacher-model <name> model the remote teacher scores with (default: the adapter's
                                         current version, as served by --vllm-url)
                  --retention-days <n> (30)   completion records and finished feedback expire
                  --rate-chat <n> (6000) --rate-feedback <n> (600): requests per minute per key (0: off)
                  --max-queued-jobs <n> (256): feedback jobs waiting per adapter before 429
                  --max-prompt-tokens <n> (the model's context)  --max-tokens <n> (8192): per request
                  --request-timeout-s <n> (30): a request (headers and body) must arrive within it
                                  (408 and the connection closed otherwise; replies are not limited)
                  --adapter-memory <size>  most memory resident adapters hold (e.g. 512MiB, 2GiB; a
                                  bare number is MiB; default: no bound); the least recently used
                                  are freed and loaded again from their version folder when asked for
                  --objects <location>  also publish every adapter version to an object store (a folder,
                                  e.g. a volume every node mounts, or s3://bucket/prefix?endpoint=…),
                                  and fetch versions this node lacks from it
                  --guard-max-kl <x> (1.0): collapse guard's bound on one update's KL to the
                                  version it replaces, nats per token on the probes (0 turns the guard off)
                  --no-train      serve only: feedback is queued in the Postgres --database for
                                  claas train-worker processes (default: this process trains too)
                  --lease-ms <n> (30000)  --worker-name <name>: this trainer's job leases (see train-worker)
                  Without API keys the server listens on loopback only; beyond it, keys are required.
  train-worker  a trainer of a cluster: takes feedback batches from the Postgres queue the serving
                nodes fill, trains, publishes each version to the object store and promotes it
                  --database postgres://…  (required) the queue and adapters the serving nodes share
                  --objects <location>     (required) where versions go: a folder every node mounts or
                                  s3://bucket/prefix?endpoint=…
                  --model <dir> --data <dir> --threads <n> --backend <b> --batch-size <n> --batch-wait-ms <n>
                  --teacher <mode> --teacher-url <url> --teacher-model <name> --guard-max-kl <x>
                  --adapter-memory <size>: as for serve
                  --lease-ms <n> (30000)  a claimed batch is this worker's for that long without a
                                  heartbeat (heartbeats every third of it); then another worker takes it up
                  --worker-name <name>    its name in leases (default: host:pid:random); kept across
                                  restarts, a restarted worker takes its own interrupted batch back at once
                  --health-port <n>  --host <addr>: answer GET /healthz there (default: no port)
  keys          API keys (shown once when created; only a hash is stored)
                  keys create --tenant <t> [--role user|admin] [--name <label>]
                  keys list
                  keys revoke <id>
                  --data <dir>    state directory (default: ./data)   --database <db>: as for serve
  eval          teach a running server each style through /v1/feedback and measure it on held-out probes
                  --url <url> (http://127.0.0.1:8000)  --key <api key>  --styles caps,oneline,name,signoff
                  --events <n> (8)  --every <k> (2)  --probes <n> (20)  --open-probes <n> (2 × probes)  --seed <n> (1)
                  --rank <n>  --lr <x>  --train-steps <n>  --alpha <x>  --memory <n>  --teacher <mode>: sent
                                  only when given (default: the server's training defaults, what users get)
                  --all-events  --out <dir>  --json
  openclaw-config  the OpenClaw config that chats through this server and loads the /feedback plugin
                  --adapter <tenant/name>  (required) the model OpenClaw uses and /feedback trains
                  --url <url> (http://127.0.0.1:8000)  --key <api key> (default: $CLAAS_API_KEY)
                  --allow <ids>   senders who may train, comma-separated: id, channel:id, or *
                  --batch-size <n> (4)  --flush-ms <n> (60000)  --reply-wait-ms <n> (60000)
                  --context-window <n> (32768)  --max-tokens <n> (8192)  --small-prompt
                  --telegram      turn on the Telegram channel (the bot token: TELEGRAM_BOT_TOKEN)
                  --plugin-path <dir> (this package's plugins/openclaw)  --state-file <file>
                  --out <file>    write it there (default: print it)
  demo          learn from one piece of feedback on a model and show the metrics of each SDPO step
                  --model <dir>   model folder (default: a small random Qwen3 model in --data)
                  --data <dir>    state directory (default: ./data)
                  --steps <n>     SDPO steps (default: 5)   --threads <n>
  info          print a model folder's configuration and parameter counts
                  --model <dir>
  random-model  write a small random Qwen3-shaped model folder
                  --out <dir> [--seed <n>]
`;

async function demo(opts: { model?: string; data: string; steps: number; threads?: number }): Promise<void> {
  let modelDir = opts.model;
  if (!modelDir) {
    modelDir = join(resolve(opts.data), 'models', 'random-tiny');
    if (!existsSync(join(modelDir, 'config.json'))) {
      console.log(`writing a small random Qwen3 model to ${modelDir} (no model was given)`);
      writeRandomModel({ vocab: 512, hidden: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 16, intermediate: 128, seed: 1 }, modelDir);
    }
  }
  console.log(`loading ${modelDir} …`);
  const engine = await Engine.open(modelDir, { threads: opts.threads });
  const c = engine.config;
  console.log(`loaded ${c.modelType}: ${c.numLayers} layers, hidden ${c.hiddenSize}, vocab ${c.vocabSize}; backend ${engine.backend}, ${engine.threads} threads`);
  const adapter = engine.createAdapter({ rank: 8, alpha: 16, seed: 1 });
  const V = c.vocabSize;
  const tok = (i: number) => (i * 7919) % V;
  const prompt = Array.from({ length: 24 }, (_, i) => tok(i + 1));
  const feedback = Array.from({ length: 8 }, (_, i) => tok(i + 101));
  const sample = {
    promptIds: prompt,
    teacherPromptIds: [...prompt.slice(0, 20), ...feedback, ...prompt.slice(20)],
    responseIds: Array.from({ length: 12 }, (_, i) => tok(i + 201)),
  };
  for (let s = 1; s <= opts.steps; s++) {
    const r = await engine.sdpoStep(adapter, [sample], { learningRate: 1e-3, topK: Math.min(100, V) });
    console.log(
      `step ${s}/${opts.steps}: loss ${r.loss.toFixed(5)}  teacher-student KL ${r.teacherStudentKl.toFixed(5)}  KL to base ${r.klToBase.toExponential(2)}  grad norm ${r.gradNorm.toFixed(4)}  ${r.timings.totalMs.toFixed(1)} ms`,
    );
  }
  const out = join(resolve(opts.data), 'adapters', 'demo', `v${Date.now()}`);
  await engine.saveAdapter(adapter, out);
  console.log(`adapter saved in PEFT format: ${out}`);
}

async function keysCommand(database: string, args: string[], opts: { tenant?: string; role: string; name?: string }): Promise<void> {
  const [action, id] = args;
  if (action !== 'create' && action !== 'list' && action !== 'revoke') throw new ClaasError('E_USAGE', 'keys needs create, list or revoke');
  const store = await openStore(database);
  try {
    const keys = new ApiKeys(store.apiKeys);
    if (action === 'create') {
      if (!opts.tenant) throw new ClaasError('E_USAGE', 'keys create needs --tenant <tenant>');
      const { key, info } = await keys.create({ tenant: opts.tenant, role: opts.role as Role, name: opts.name });
      console.log(`created key ${info.id} for tenant "${info.tenant}" (${info.role}); it is shown only now:\n${key}`);
    } else if (action === 'list') {
      for (const k of await keys.list()) console.log(`${k.id}  ${k.tenant.padEnd(16)} ${k.role.padEnd(5)} ${new Date(k.createdAt).toISOString()}  ${k.revokedAt ? `revoked ${new Date(k.revokedAt).toISOString()}` : 'active'}  ${k.name ?? ''}`);
    } else {
      if (!id) throw new ClaasError('E_USAGE', 'keys revoke needs the key id (see keys list)');
      await keys.revoke(id);
      console.log(`revoked key ${id}`);
    }
  } finally {
    await store.close();
  }
}

const optionalNumber = (v: string | undefined) => (v === undefined ? undefined : Number(v));

/** The training options `claas eval` sends: only those given, so by default it measures the server's defaults. */
function evalTraining(v: { lr?: string; 'train-steps'?: string; alpha?: string; memory?: string; teacher?: string }): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [flag, key] of [['lr', 'learning_rate'], ['train-steps', 'steps'], ['alpha', 'alpha'], ['memory', 'memory']] as const) {
    const raw = v[flag];
    if (raw === undefined) continue;
    const x = Number(raw);
    if (!Number.isFinite(x)) throw new ClaasError('E_USAGE', `--${flag} must be a number (got ${raw})`);
    out[key] = x;
  }
  if (v.teacher !== undefined) out.teacher = v.teacher;
  return out;
}

/** A command line parseArgs refuses (unknown option, missing value): a usage error, not a crash. */
function parseOrUsage<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) throw new ClaasError('E_USAGE', `${(err as Error).message.split('. ')[0]!}; \`claas help\` lists the options`);
    throw err;
  }
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(USAGE);
    return 0;
  }
  const { values, positionals } = parseOrUsage(() => parseArgs({
    args: rest,
    options: {
      model: { type: 'string' },
      data: { type: 'string', default: './data' },
      database: { type: 'string' },
      steps: { type: 'string', default: '5' },
      threads: { type: 'string' },
      backend: { type: 'string' },
      'webgpu-weights': { type: 'string' },
      out: { type: 'string' },
      port: { type: 'string', default: '8000' },
      host: { type: 'string', default: '127.0.0.1' },
      'batch-size': { type: 'string' },
      'batch-wait-ms': { type: 'string' },
      seed: { type: 'string', default: '1' },
      'vllm-url': { type: 'string' },
      teacher: { type: 'string' },
      'teacher-url': { type: 'string' },
      'teacher-model': { type: 'string' },
      'retention-days': { type: 'string', default: '30' },
      'rate-chat': { type: 'string', default: '6000' },
      'rate-feedback': { type: 'string', default: '600' },
      'max-queued-jobs': { type: 'string', default: '256' },
      'max-prompt-tokens': { type: 'string' },
      'request-timeout-s': { type: 'string', default: '30' },
      'max-tokens': { type: 'string', default: '8192' },
      'guard-max-kl': { type: 'string' },
      'adapter-memory': { type: 'string' },
      objects: { type: 'string' },
      'no-train': { type: 'boolean', default: false },
      'lease-ms': { type: 'string' },
      'worker-name': { type: 'string' },
      'health-port': { type: 'string' },
      tenant: { type: 'string' },
      role: { type: 'string', default: 'user' },
      name: { type: 'string' },
      url: { type: 'string', default: 'http://127.0.0.1:8000' },
      key: { type: 'string' },
      styles: { type: 'string', default: 'caps,oneline,name,signoff' },
      events: { type: 'string', default: '8' },
      every: { type: 'string', default: '2' },
      probes: { type: 'string', default: '20' },
      'open-probes': { type: 'string' },
      rank: { type: 'string' },
      lr: { type: 'string' },
      'train-steps': { type: 'string' },
      memory: { type: 'string' },
      alpha: { type: 'string' },
      json: { type: 'boolean', default: false },
      'all-events': { type: 'boolean', default: false },
      adapter: { type: 'string' },
      allow: { type: 'string', multiple: true },
      'flush-ms': { type: 'string', default: '60000' },
      'reply-wait-ms': { type: 'string', default: '60000' },
      'context-window': { type: 'string', default: '32768' },
      'plugin-path': { type: 'string' },
      'state-file': { type: 'string' },
      'small-prompt': { type: 'boolean', default: false },
      telegram: { type: 'boolean', default: false },
    },
    allowPositionals: true,
  }));
  const threads = values.threads === undefined ? undefined : Number(values.threads);
  switch (command) {
    case 'serve':
      await serve({
        model: values.model,
        data: values.data!,
        database: values.database,
        port: Number(values.port),
        host: values.host!,
        threads,
        backend: values.backend,
        webgpuWeights: values['webgpu-weights'],
        batchSize: values['batch-size'] === undefined ? undefined : Number(values['batch-size']),
        batchWaitMs: values['batch-wait-ms'] === undefined ? undefined : Number(values['batch-wait-ms']),
        vllmUrl: values['vllm-url'],
        teacher: values.teacher,
        teacherUrl: values['teacher-url'],
        teacherModel: values['teacher-model'],
        retentionDays: Number(values['retention-days']),
        rateChat: Number(values['rate-chat']),
        rateFeedback: Number(values['rate-feedback']),
        maxQueuedJobs: Number(values['max-queued-jobs']),
        maxPromptTokens: values['max-prompt-tokens'] === undefined ? undefined : Number(values['max-prompt-tokens']),
        maxTokens: Number(values['max-tokens']),
        requestTimeoutS: Number(values['request-timeout-s']),
        guardMaxKl: values['guard-max-kl'] === undefined ? undefined : Number(values['guard-max-kl']),
        adapterMemory: values['adapter-memory'],
        objects: values.objects,
        noTrain: values['no-train'],
        leaseMs: optionalNumber(values['lease-ms']),
        workerName: values['worker-name'],
      });
      return 0;
    case 'train-worker':
      await trainWorker({
        model: values.model,
        data: values.data!,
        database: values.database,
        objects: values.objects,
        threads,
        backend: values.backend,
        batchSize: optionalNumber(values['batch-size']),
        batchWaitMs: optionalNumber(values['batch-wait-ms']),
        teacher: values.teacher,
        teacherUrl: values['teacher-url'],
        teacherModel: values['teacher-model'],
        guardMaxKl: optionalNumber(values['guard-max-kl']),
        adapterMemory: values['adapter-memory'],
        leaseMs: optionalNumber(values['lease-ms']),
        workerName: values['worker-name'],
        healthPort: optionalNumber(values['health-port']),
        host: values.host!,
      });
      return 0;
    case 'keys':
      await keysCommand(resolveDatabase(values.database, values.data!), positionals, { tenant: values.tenant, role: values.role!, name: values.name });
      return 0;
    case 'eval': {
      const styles = values.styles!.split(',').map((x) => x.trim()) as StyleName[];
      for (const st of styles) if (!(st in STYLES)) throw new ClaasError('E_USAGE', `unknown style ${st}; styles: ${Object.keys(STYLES).join(', ')}`);
      const log = values.json ? (line: string) => process.stderr.write(`${line}\n`) : (line: string) => console.log(line);
      const summary = await runEval({
        url: values.url!,
        key: values.key ?? process.env.CLAAS_API_KEY,
        styles,
        events: Number(values.events),
        every: Number(values.every),
        allEvents: values['all-events'],
        probes: Number(values.probes),
        openProbes: values['open-probes'] === undefined ? undefined : Number(values['open-probes']),
        target: 0.95,
        seed: Number(values.seed),
        rank: values.rank === undefined ? undefined : Number(values.rank),
        training: evalTraining(values),
        log,
      });
      if (values.out) {
        mkdirSync(values.out, { recursive: true });
        writeFileSync(join(values.out, `eval-seed${summary.seed}.json`), JSON.stringify(summary, null, 2));
        writeFileSync(join(values.out, `eval-seed${summary.seed}.svg`), adherenceSvg(summary));
        log(`wrote ${join(values.out, `eval-seed${summary.seed}.json`)} and .svg`);
      }
      const compact = {
        ...Object.fromEntries(Object.entries(summary.styles).map(([k, r]) => [k, { before: r!.before, after: r!.after, events: r!.events }])),
        retention_delta: summary.retention_delta,
        control_delta: summary.control_delta,
        distinct2_ratio: summary.distinct2_ratio,
        entropy_ratio: summary.entropy_ratio,
        max_kl_to_base: summary.max_kl_to_base,
        sequence_first_after_all: summary.sequence?.first_after_all ?? null,
        seconds: summary.seconds,
      };
      console.log(JSON.stringify(compact));
      return 0;
    }
    case 'openclaw-config': {
      if (!values.adapter) throw new ClaasError('E_USAGE', 'openclaw-config needs --adapter <tenant/name> (create it with POST /v1/lora/init)');
      const config = openClawConfig({
        url: values.url!,
        key: values.key ?? process.env.CLAAS_API_KEY,
        adapter: values.adapter,
        allow: (values.allow ?? []).flatMap((a) => a.split(',')).map((a) => a.trim()).filter((a) => a !== ''),
        batchSize: Number(values['batch-size'] ?? '4'),
        flushIntervalMs: Number(values['flush-ms']),
        replyWaitMs: Number(values['reply-wait-ms']),
        contextWindow: Number(values['context-window']),
        maxTokens: Number(values['max-tokens']),
        pluginPath: values['plugin-path'],
        stateFile: values['state-file'],
        smallPrompt: values['small-prompt']!,
        telegram: values.telegram!,
      });
      const text = `${JSON.stringify(config, null, 2)}\n`;
      if (values.out) {
        mkdirSync(dirname(resolve(values.out)), { recursive: true });
        writeFileSync(values.out, text, { mode: 0o600 });
        console.error(`wrote ${values.out}; point OpenClaw at it with OPENCLAW_STATE_DIR=${dirname(resolve(values.out))} (file name openclaw.json) or OPENCLAW_CONFIG_PATH=${resolve(values.out)}`);
      } else {
        process.stdout.write(text);
      }
      return 0;
    }
    case 'demo':
      await demo({ model: values.model, data: values.data!, steps: Number(values.steps), threads });
      return 0;
    case 'info': {
      if (!values.model) throw new ClaasError('E_USAGE', 'info needs --model <dir>');
      const engine = await Engine.open(values.model, { threads: 1 });
      console.log(JSON.stringify(engine.config, null, 2));
      return 0;
    }
    case 'random-model': {
      if (!values.out) throw new ClaasError('E_USAGE', 'random-model needs --out <dir>');
      console.log(writeRandomModel({ seed: Number(values.seed) }, resolve(values.out)));
      return 0;
    }
    default:
      process.stdout.write(USAGE);
      return command === undefined || command === 'help' || command === '--help' ? 0 : 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof ClaasError ? `claas: ${err.message} (${err.code})` : err);
    process.exit(err instanceof ClaasError && err.code === 'E_USAGE' ? 2 : 1);
  },
);
