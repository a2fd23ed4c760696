// A fake Tinker server for tests: node:http on loopback, speaking the wire protocol of Tinker's
// Python SDK 0.25.0 (JSON bodies, forward_backward as protobuf, forward_backward and sample results
// as protobuf when the Accept header asks). It is stricter than a lenient server: every field the
// SDK always sends is required, unknown fields and wrong types are refused with 400 and a FastAPI
// style {detail}, POSTs must carry an X-Idempotency-Key, and a key that comes again is answered
// with the first answer instead of running the request twice. Everything it receives is recorded
// for tests to assert field by field.
//
// It is deterministic so tests can see learning: a model counts its optimizer steps, sampler
// weights remember the count at saving, a loaded state restores it, and sampling asks a
// test-supplied function for the tokens. Knobs make futures slow, expire, or fail, answer 408,
// stall or drop responses, and restart the listener on the same port.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeForwardBackwardRequest, encodeForwardBackwardOutput, encodeSampleResponse, ProtobufError, type ForwardBackwardRequestPb } from '../src/engines/tinker/protobuf.js';
import { LOSS_FNS, PROTOBUF, ROUTES, type ErrorCategory, type ForwardBackwardOutputJson, type QueueState, type SampleResponseJson, type WireTensorData } from '../src/engines/tinker/wire.js';

export interface SamplerInfo {
  /** The sampler weights the session samples from (null: the base model). */
  modelPath: string | null;
  baseModel: string;
  /** Optimizer steps the weights had taken when saved. */
  steps: number;
}

export interface FakeTinkerOptions {
  apiKey?: string;
  /** Tokens a sample produces (default: 11, 12, 13, … up to maxTokens). */
  sampler?: (info: SamplerInfo, prompt: number[], maxTokens: number) => number[];
  /** Log-prob of sampled token i (default -0.5). */
  logprob?: (info: SamplerInfo, prompt: number[], tokens: number[], i: number) => number;
  /** Log-prob of prompt token i >= 1 (default -1). */
  promptLogprob?: (info: SamplerInfo, prompt: number[], i: number) => number;
  /** Log-prob forward_backward reports for target token i of a datum (default -0.5). */
  targetLogprob?: (modelSteps: number, tokens: number[], i: number) => number;
  /** Exchange the key for a JWT first (client/config says pjwt_auth_enabled). */
  jwtAuth?: boolean;
}

export interface Received {
  path: string;
  method: string;
  /** Parsed JSON, or the decoded protobuf request; null when unreadable. */
  body: unknown;
  headers: Record<string, string>;
  /** The status answered (0 until answered or when the response was dropped). */
  status: number;
}

interface ModelState {
  sessionId: string;
  baseModel: string;
  lora: unknown;
  steps: number;
  lastSeqId: number;
  gradients: number;
  lastAdam: unknown;
}

interface Checkpoint {
  kind: 'state' | 'sampler';
  modelId: string;
  baseModel: string;
  steps: number;
}

type Outcome = { kind: 'json'; body: unknown } | { kind: 'fwdbwd'; out: ForwardBackwardOutputJson } | { kind: 'sample'; out: SampleResponseJson } | { kind: 'error'; category: ErrorCategory; message: string };

interface Future {
  id: string;
  route: string;
  outcome: Outcome;
  tryAgainLeft: number;
  expired: boolean;
  metadataSent: boolean;
}

interface Answer {
  status: number;
  body: unknown;
  contentType?: string;
}

/** A refusal a handler throws; becomes the HTTP answer. */
class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

// ---- strict validation of JSON bodies -----------------------------------------------------------

type Check = (v: unknown, at: string) => void;
const bad = (message: string): never => {
  throw new Refusal(400, message);
};
const str: Check = (v, at) => void (typeof v === 'string' || bad(`${at} must be a string`));
const int: Check = (v, at) => void ((typeof v === 'number' && Number.isSafeInteger(v)) || bad(`${at} must be an integer`));
const num: Check = (v, at) => void ((typeof v === 'number' && Number.isFinite(v)) || bad(`${at} must be a number`));
const bool: Check = (v, at) => void (typeof v === 'boolean' || bad(`${at} must be a boolean`));
const lit =
  (want: string): Check =>
  (v, at) =>
    void (v === want || bad(`${at} must be ${JSON.stringify(want)}`));
const arr =
  (of: Check): Check =>
  (v, at) => {
    if (!Array.isArray(v)) bad(`${at} must be an array`);
    (v as unknown[]).forEach((x, i) => of(x, `${at}[${i}]`));
  };
const dict =
  (of: Check): Check =>
  (v, at) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(`${at} must be an object`);
    for (const [k, x] of Object.entries(v as object)) of(x, `${at}.${k}`);
  };
const any: Check = () => {};
const either =
  (...checks: Check[]): Check =>
  (v, at) => {
    const problems: string[] = [];
    for (const c of checks) {
      try {
        c(v, at);
        return;
      } catch (err) {
        problems.push((err as Error).message);
      }
    }
    bad(problems.join(' or '));
  };
/** An object with exactly these fields; `?` marks the optional ones (which the SDK leaves out when None). */
const obj =
  (name: string, fields: Record<string, Check>): Check =>
  (v, at) => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(`${at} must be a ${name} object`);
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!(k in fields) && !(`${k}?` in fields)) bad(`${at}.${k} is not a field of ${name}`);
    for (const [key, check] of Object.entries(fields)) {
      const optional = key.endsWith('?');
      const k = optional ? key.slice(0, -1) : key;
      if (!(k in o)) {
        if (!optional) bad(`${at}.${k} is required (${name})`);
        continue;
      }
      if (o[k] === null) bad(`${at}.${k} is null; the SDK leaves out fields it has no value for`);
      check(o[k], `${at}.${k}`);
    }
  };

const encodedText = obj('EncodedTextChunk', { tokens: arr(int), type: lit('encoded_text') });
const SCHEMAS: Record<string, Check> = {
  [ROUTES.clientConfig]: obj('ClientConfigRequest', { sdk_version: str }),
  [ROUTES.authToken]: obj('AuthTokenRequest', {}),
  [ROUTES.createSession]: obj('CreateSessionRequest', { tags: arr(str), user_metadata: dict(any), sdk_version: str, 'project_id?': str, type: lit('create_session') }),
  [ROUTES.sessionHeartbeat]: obj('SessionHeartbeatRequest', { session_id: str, type: lit('session_heartbeat') }),
  [ROUTES.createModel]: obj('CreateModelRequest', {
    session_id: str,
    model_seq_id: int,
    base_model: str,
    'user_metadata?': dict(any),
    'lora_config?': obj('LoraConfig', { rank: int, 'seed?': int, train_unembed: bool, train_mlp: bool, train_attn: bool }),
    type: lit('create_model'),
  }),
  [ROUTES.optimStep]: obj('OptimStepRequest', {
    adam_params: obj('AdamParams', { learning_rate: num, beta1: num, beta2: num, eps: num, weight_decay: num, grad_clip_norm: num }),
    model_id: str,
    seq_id: int,
    type: lit('optim_step'),
  }),
  [ROUTES.saveWeights]: obj('SaveWeightsRequest', { model_id: str, path: str, seq_id: int, 'ttl_seconds?': int, overwrite: bool, type: lit('save_weights') }),
  [ROUTES.loadWeights]: obj('LoadWeightsRequest', { model_id: str, seq_id: int, path: str, optimizer: bool, 'weights_access_token?': str, type: lit('load_weights') }),
  [ROUTES.saveWeightsForSampler]: obj('SaveWeightsForSamplerRequest', { model_id: str, path: str, seq_id: int, 'ttl_seconds?': int, type: lit('save_weights_for_sampler') }),
  [ROUTES.createSamplingSession]: obj('CreateSamplingSessionRequest', { session_id: str, sampling_session_seq_id: int, 'base_model?': str, 'model_path?': str, type: lit('create_sampling_session') }),
  [ROUTES.asample]: obj('SampleRequest', {
    num_samples: int,
    prompt: obj('ModelInput', { chunks: arr(encodedText) }),
    sampling_params: obj('SamplingParams', { 'max_tokens?': int, 'seed?': int, 'stop?': either(str, arr(str), arr(int)), temperature: num, top_k: int, top_p: num }),
    sampling_session_id: str,
    seq_id: int,
    prompt_logprobs: bool,
    topk_prompt_logprobs: int,
    type: lit('sample'),
  }),
  [ROUTES.retrieveFuture]: obj('FutureRetrieveRequest', { request_id: str, allow_metadata_only: bool }),
};

/** Which loss_fn_inputs each loss takes, and their dtypes (the SDK's _key_to_type). */
const LOSS_INPUTS: Record<string, { required: string[]; optional: string[] }> = {
  cross_entropy: { required: ['target_tokens'], optional: ['weights'] },
  importance_sampling: { required: ['target_tokens', 'logprobs', 'advantages'], optional: [] },
  ppo: { required: ['target_tokens', 'logprobs', 'advantages'], optional: ['clip_low_threshold', 'clip_high_threshold'] },
  cispo: { required: ['target_tokens', 'logprobs', 'advantages'], optional: ['clip_low_threshold', 'clip_high_threshold'] },
  dro: { required: ['target_tokens', 'logprobs', 'advantages'], optional: [] },
};
const INPUT_DTYPE: Record<string, string> = { target_tokens: 'int64', weights: 'float32', advantages: 'float32', logprobs: 'float32', clip_low_threshold: 'float32', clip_high_threshold: 'float32' };

function checkForwardBackward(req: ForwardBackwardRequestPb): void {
  if (!req.model_id) bad('model_id is required');
  if (req.seq_id < 1) bad(`seq_id must be >= 1, got ${req.seq_id}`);
  if (!(LOSS_FNS as readonly string[]).includes(req.loss_fn)) bad(`unknown loss_fn ${JSON.stringify(req.loss_fn)}`);
  if (req.data.length === 0) bad('data is empty');
  const spec = LOSS_INPUTS[req.loss_fn]!;
  req.data.forEach((d, i) => {
    const n = d.model_input.chunks.reduce((a, c) => a + c.tokens.length, 0);
    if (n === 0) bad(`data[${i}].model_input has no tokens`);
    for (const name of spec.required) if (!(name in d.loss_fn_inputs)) bad(`data[${i}].loss_fn_inputs.${name} is required for ${req.loss_fn}`);
    for (const [name, t] of Object.entries(d.loss_fn_inputs)) {
      if (!spec.required.includes(name) && !spec.optional.includes(name)) bad(`data[${i}].loss_fn_inputs.${name} is not an input of ${req.loss_fn}`);
      if (t.dtype !== INPUT_DTYPE[name]) bad(`data[${i}].loss_fn_inputs.${name} must be ${INPUT_DTYPE[name]}, got ${t.dtype}`);
      const shape = t.shape ?? [t.data.length];
      if (shape.length !== 1 || shape[0] !== n || t.data.length !== n) {
        bad(`data[${i}].loss_fn_inputs.${name} has shape [${shape.join(', ')}] and ${t.data.length} values; the model input has ${n} tokens`);
      }
    }
  });
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function b64url(x: unknown): string {
  return Buffer.from(JSON.stringify(x)).toString('base64url');
}

export class FakeTinker {
  readonly apiKey: string;
  readonly received: Received[] = [];
  /** How many times each route's action ran (replays of an idempotency key do not count). */
  readonly executed: Record<string, number> = {};
  readonly heartbeats = new Map<string, number>();
  readonly models = new Map<string, ModelState>();
  readonly checkpoints = new Map<string, Checkpoint>();

  /** Futures created from now on answer try_again this many times before their result. */
  slowFutures = 0;
  /** While true, every future answers try_again. */
  holdFutures = false;
  queueState: QueueState = 'paused_capacity';
  queueStateReason: string | null = null;
  /** Answer try_again as HTTP 408 (the body still carries the queue state). */
  tryAgainAs408 = false;
  /** Answer results as JSON even when protobuf is accepted (a server before protobuf results). */
  jsonResults = false;
  /** When allow_metadata_only, answer {status: "complete_metadata"} before the result. */
  metadataFirst = false;

  port = 0;
  private server: Server;
  private readonly opts: FakeTinkerOptions;
  private nextId = 1;
  private readonly sessions = new Map<string, { modelSeqIds: Set<number>; samplingSeqIds: Set<number> }>();
  private readonly samplingSessions = new Map<string, SamplerInfo & { seqIds: Set<number> }>();
  private readonly futures = new Map<string, Future>();
  private readonly lostFutures = new Set<string>();
  private readonly idempotent = new Map<string, { route: string; bodyKey: string; answer: Answer }>();
  private expireNextCount = 0;
  private failures: { category: ErrorCategory; message: string; route?: string }[] = [];
  private httpFailures: { route: string; status: number; times: number }[] = [];
  private stalls: { route: string; ms: number; times: number }[] = [];
  private drops: { route: string; restartMs: number | null }[] = [];
  private jwts = new Set<string>();

  private constructor(opts: FakeTinkerOptions) {
    this.opts = opts;
    this.apiKey = opts.apiKey ?? 'tml-fake-key';
    this.server = this.makeServer();
  }

  static async start(opts: FakeTinkerOptions = {}): Promise<FakeTinker> {
    const fake = new FakeTinker(opts);
    await fake.listen(0);
    return fake;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  // ---- knobs ------------------------------------------------------------------------------------

  /** The future answers 410 from now on. */
  expire(requestId: string): void {
    const f = this.futures.get(requestId);
    if (f) f.expired = true;
    else this.lostFutures.add(requestId);
  }

  /** The next `n` futures created answer 410. */
  expireNext(n = 1): void {
    this.expireNextCount += n;
  }

  /** The next future created (of `route`, if given) fails with this category and message. */
  failNext(category: ErrorCategory, message: string, route?: string): void {
    this.failures.push({ category, message, route });
  }

  /** The next `times` requests to `route` are answered `status` before anything runs. */
  failHttp(route: string, status: number, times = 1): void {
    this.httpFailures.push({ route, status, times });
  }

  /** The next `times` requests to `route` run, but their answer is held back `ms`. */
  stallNext(route: string, ms: number, times = 1): void {
    this.stalls.push({ route, ms, times });
  }

  /** The next request to `route` runs, but its connection is cut instead of answered; then maybe a restart. */
  dropNextResponse(route: string, opts: { restartMs?: number } = {}): void {
    this.drops.push({ route, restartMs: opts.restartMs ?? null });
  }

  /**
   * Closes the listening socket and every connection, stays down `downMs`, and listens again on the
   * same port. Pending futures survive with `keepFutures` (the default); otherwise they are lost and
   * answer 410, as after a crash. Models and checkpoints always survive.
   */
  async restart(opts: { downMs: number; keepFutures?: boolean }): Promise<void> {
    await this.shutdown();
    if (opts.keepFutures === false) {
      for (const id of this.futures.keys()) this.lostFutures.add(id);
      this.futures.clear();
    }
    await sleep(opts.downMs);
    this.server = this.makeServer();
    await this.listen(this.port);
  }

  async close(): Promise<void> {
    await this.shutdown();
  }

  requests(path: string): Received[] {
    return this.received.filter((r) => r.path === path);
  }

  // ---- plumbing ---------------------------------------------------------------------------------

  private makeServer(): Server {
    return createServer((req, res) => void this.handle(req, res));
  }

  private listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => {
        this.port = (this.server.address() as AddressInfo).port;
        resolve();
      });
    });
  }

  private shutdown(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      await this.answer(req, res);
    } catch {
      // The client went away mid-request, or the fake was closed under it.
      req.socket.destroy();
    }
  }

  private async answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks);
    const path = (req.url ?? '').split('?')[0]!;
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
    const entry: Received = { path, method: req.method ?? '', body: null, headers, status: 0 };
    this.received.push(entry);

    let answer: Answer;
    try {
      answer = this.dispatch(req.method ?? '', path, headers, raw, entry);
    } catch (err) {
      if (!(err instanceof Refusal)) throw err;
      answer = { status: err.status, body: { detail: err.message } };
    }

    const drop = this.drops.findIndex((d) => d.route === path);
    if (drop >= 0) {
      const { restartMs } = this.drops.splice(drop, 1)[0]!;
      req.socket.destroy();
      if (restartMs !== null) void this.restart({ downMs: restartMs });
      return;
    }
    const stall = this.stalls.find((s) => s.route === path && s.times > 0);
    if (stall) {
      stall.times--;
      await sleep(stall.ms);
      if (res.destroyed || req.socket.destroyed) return;
    }
    entry.status = answer.status;
    const body = answer.body instanceof Uint8Array ? Buffer.from(answer.body) : Buffer.from(JSON.stringify(answer.body));
    res.writeHead(answer.status, { 'content-type': answer.contentType ?? 'application/json', 'content-length': body.length });
    res.end(body);
  }

  private authorized(path: string, headers: Record<string, string>): boolean {
    const key = headers['x-api-key'];
    if (!this.opts.jwtAuth || path === ROUTES.clientConfig || path === ROUTES.authToken) return key === this.apiKey;
    return key !== undefined && this.jwts.has(key);
  }

  private dispatch(method: string, path: string, headers: Record<string, string>, raw: Buffer, entry: Received): Answer {
    const isProto = path === ROUTES.forwardBackward;
    if (isProto) {
      try {
        entry.body = decodeForwardBackwardRequest(raw);
      } catch (err) {
        entry.body = null;
        if (!(err instanceof ProtobufError)) throw err;
        if (this.authorized(path, headers)) throw new Refusal(400, `bad ForwardBackwardRequest: ${err.message}`);
      }
    } else if (raw.length > 0) {
      try {
        entry.body = JSON.parse(raw.toString('utf8'));
      } catch {
        entry.body = null;
      }
    }

    if (!this.authorized(path, headers)) throw new Refusal(401, this.opts.jwtAuth && headers['x-api-key'] === this.apiKey ? 'Invalid JWT' : 'Invalid API key');

    const failure = this.httpFailures.find((f) => f.route === path && f.times > 0);
    if (failure) {
      failure.times--;
      throw new Refusal(failure.status, `injected ${failure.status}`);
    }

    if (path === ROUTES.serverCapabilities) {
      if (method !== 'GET') throw new Refusal(405, 'Method Not Allowed');
      return { status: 200, body: { supported_models: [{ model_name: 'Qwen/Qwen3-8B', max_context_length: 32768 }] } };
    }
    const schema = SCHEMAS[path];
    if (!schema && !isProto) throw new Refusal(404, 'Not Found');
    if (method !== 'POST') throw new Refusal(405, 'Method Not Allowed');
    if (headers['content-encoding']) throw new Refusal(415, `the fake does not decode Content-Encoding ${headers['content-encoding']}`);
    const contentType = headers['content-type'] ?? '';
    if (isProto ? !contentType.startsWith(PROTOBUF) : !contentType.startsWith('application/json')) {
      throw new Refusal(415, `${path} takes ${isProto ? PROTOBUF : 'application/json'}, got ${contentType || 'no content type'}`);
    }
    if (entry.body === null) throw new Refusal(400, 'the body is not valid JSON');
    if (schema) schema(entry.body, 'body');
    else checkForwardBackward(entry.body as ForwardBackwardRequestPb);

    if (path === ROUTES.retrieveFuture) return this.retrieve(entry.body as { request_id: string; allow_metadata_only: boolean }, headers);

    const key = headers['x-idempotency-key'];
    if (!key) throw new Refusal(400, 'X-Idempotency-Key is missing');
    const bodyKey = isProto ? raw.toString('base64') : JSON.stringify(entry.body);
    const seen = this.idempotent.get(key);
    if (seen) {
      if (seen.route !== path || seen.bodyKey !== bodyKey) throw new Refusal(422, 'X-Idempotency-Key reused for a different request');
      return seen.answer;
    }
    let answer: Answer;
    try {
      answer = this.run(path, entry.body);
    } catch (err) {
      if (!(err instanceof Refusal)) throw err;
      answer = { status: err.status, body: { detail: err.message } };
    }
    // Only what was done is remembered: a refused request may be corrected and sent again.
    if (answer.status < 400) this.idempotent.set(key, { route: path, bodyKey, answer });
    return answer;
  }

  private run(path: string, body: unknown): Answer {
    const b = body as Record<string, unknown>;
    const count = () => (this.executed[path] = (this.executed[path] ?? 0) + 1);
    switch (path) {
      case ROUTES.clientConfig:
        return { status: 200, body: { pjwt_auth_enabled: this.opts.jwtAuth ?? false, proto_compress_fwdbwd: false, parallel_fwdbwd_chunks: true } };
      case ROUTES.authToken: {
        const jwt = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ exp: Math.floor(Date.now() / 1000) + 3600, sub: 'fake' })}.sig${this.nextId++}`;
        this.jwts.add(jwt);
        return { status: 200, body: { jwt } };
      }
      case ROUTES.createSession: {
        count();
        const id = `session-${this.nextId++}`;
        this.sessions.set(id, { modelSeqIds: new Set(), samplingSeqIds: new Set() });
        this.heartbeats.set(id, 0);
        return { status: 200, body: { type: 'create_session', session_id: id, info_message: null, warning_message: null, error_message: null } };
      }
      case ROUTES.sessionHeartbeat: {
        const id = b.session_id as string;
        if (!this.sessions.has(id)) throw new Refusal(404, `session ${id} not found`);
        this.heartbeats.set(id, (this.heartbeats.get(id) ?? 0) + 1);
        return { status: 200, body: { type: 'session_heartbeat' } };
      }
      case ROUTES.createModel: {
        const session = this.session(b.session_id);
        const seq = b.model_seq_id as number;
        if (session.modelSeqIds.has(seq)) throw new Refusal(400, `model_seq_id ${seq} is already used in this session`);
        const lora = b.lora_config as { rank: number } | undefined;
        if (lora && lora.rank < 1) throw new Refusal(400, 'lora_config.rank must be >= 1');
        count();
        session.modelSeqIds.add(seq);
        const modelId = `${b.session_id as string}:train:${seq}`;
        this.models.set(modelId, { sessionId: b.session_id as string, baseModel: b.base_model as string, lora: lora ?? null, steps: 0, lastSeqId: 0, gradients: 0, lastAdam: null });
        return this.future(path, { kind: 'json', body: { model_id: modelId, type: 'create_model' } }, modelId);
      }
      case ROUTES.forwardBackward: {
        const req = body as ForwardBackwardRequestPb;
        const model = this.model(req.model_id, req.seq_id);
        count();
        if (!req.forward_only) model.gradients++;
        return this.future(path, { kind: 'fwdbwd', out: this.forwardBackward(model, req) }, req.model_id);
      }
      case ROUTES.optimStep: {
        const model = this.model(b.model_id, b.seq_id);
        count();
        model.steps++;
        model.gradients = 0;
        model.lastAdam = b.adam_params;
        return this.future(path, { kind: 'json', body: { metrics: { 'steps:unique': model.steps } } }, b.model_id as string);
      }
      case ROUTES.saveWeights:
      case ROUTES.saveWeightsForSampler: {
        const model = this.model(b.model_id, b.seq_id);
        count();
        const kind = path === ROUTES.saveWeights ? 'state' : 'sampler';
        const ckpt = `tinker://${b.model_id as string}/${kind === 'state' ? 'weights' : 'sampler_weights'}/${b.path as string}`;
        let outcome: Outcome;
        if (this.checkpoints.has(ckpt) && !(kind === 'state' && b.overwrite === true)) {
          outcome = { kind: 'error', category: 'user', message: `checkpoint ${ckpt} already exists` };
        } else {
          this.checkpoints.set(ckpt, { kind, modelId: b.model_id as string, baseModel: model.baseModel, steps: model.steps });
          outcome = { kind: 'json', body: { path: ckpt, type: kind === 'state' ? 'save_weights' : 'save_weights_for_sampler' } };
        }
        return this.future(path, outcome, b.model_id as string);
      }
      case ROUTES.loadWeights: {
        const model = this.model(b.model_id, b.seq_id);
        count();
        const ckpt = this.checkpoints.get(b.path as string);
        let outcome: Outcome;
        if (!ckpt || ckpt.kind !== 'state') outcome = { kind: 'error', category: 'user', message: `no training state at ${b.path as string}` };
        else {
          model.steps = ckpt.steps;
          outcome = { kind: 'json', body: { path: b.path, type: 'load_weights' } };
        }
        return this.future(path, outcome, b.model_id as string);
      }
      case ROUTES.createSamplingSession: {
        const session = this.session(b.session_id);
        const seq = b.sampling_session_seq_id as number;
        if (session.samplingSeqIds.has(seq)) throw new Refusal(400, `sampling_session_seq_id ${seq} is already used in this session`);
        let info: SamplerInfo;
        if (typeof b.model_path === 'string') {
          const ckpt = this.checkpoints.get(b.model_path);
          if (!ckpt || ckpt.kind !== 'sampler') throw new Refusal(400, `no sampler weights at ${b.model_path}`);
          info = { modelPath: b.model_path, baseModel: ckpt.baseModel, steps: ckpt.steps };
        } else if (typeof b.base_model === 'string') info = { modelPath: null, baseModel: b.base_model, steps: 0 };
        else throw new Refusal(400, 'either model_path or base_model is required');
        count();
        session.samplingSeqIds.add(seq);
        const id = `${b.session_id as string}:sample:${seq}`;
        this.samplingSessions.set(id, { ...info, seqIds: new Set() });
        return { status: 200, body: { type: 'create_sampling_session', sampling_session_id: id } };
      }
      case ROUTES.asample: {
        const s = this.samplingSessions.get(b.sampling_session_id as string);
        if (!s) throw new Refusal(404, `sampling session ${b.sampling_session_id as string} not found`);
        const seq = b.seq_id as number;
        if (s.seqIds.has(seq)) throw new Refusal(400, `seq_id ${seq} is already used in this sampling session`);
        s.seqIds.add(seq);
        count();
        return this.future(path, { kind: 'sample', out: this.sample(s, b) });
      }
    }
    throw new Refusal(404, 'Not Found');
  }

  private session(id: unknown): { modelSeqIds: Set<number>; samplingSeqIds: Set<number> } {
    const s = this.sessions.get(id as string);
    if (!s) throw new Refusal(404, `session ${String(id)} not found`);
    return s;
  }

  /** The model, checking that its requests come in seq_id order (gaps allowed, repeats and going back not). */
  private model(id: unknown, seqId: unknown): ModelState {
    const m = this.models.get(id as string);
    if (!m) throw new Refusal(404, `model ${String(id)} not found`);
    const seq = seqId as number;
    if (seq <= m.lastSeqId) throw new Refusal(400, `seq_id ${seq} of model ${String(id)} is out of order (last was ${m.lastSeqId})`);
    m.lastSeqId = seq;
    return m;
  }

  private future(route: string, outcome: Outcome, modelId?: string): Answer {
    const id = `future-${this.nextId++}`;
    const failure = this.failures.findIndex((f) => f.route === undefined || f.route === route);
    if (failure >= 0) {
      const f = this.failures.splice(failure, 1)[0]!;
      outcome = { kind: 'error', category: f.category, message: f.message };
    }
    const expired = this.expireNextCount > 0;
    if (expired) this.expireNextCount--;
    this.futures.set(id, { id, route, outcome, tryAgainLeft: this.slowFutures, expired, metadataSent: false });
    return { status: 200, body: modelId === undefined ? { request_id: id } : { request_id: id, model_id: modelId } };
  }

  private retrieve(body: { request_id: string; allow_metadata_only: boolean }, headers: Record<string, string>): Answer {
    const f = this.futures.get(body.request_id);
    if (!f) {
      if (this.lostFutures.has(body.request_id)) throw new Refusal(410, `promise ${body.request_id} expired`);
      throw new Refusal(404, `no request ${body.request_id}`);
    }
    if (f.expired) throw new Refusal(410, `promise ${body.request_id} expired`);
    if (this.holdFutures || f.tryAgainLeft > 0) {
      if (!this.holdFutures) f.tryAgainLeft--;
      const tryAgain: Record<string, unknown> = { type: 'try_again', request_id: f.id, queue_state: this.queueState };
      if (this.queueStateReason !== null) tryAgain.queue_state_reason = this.queueStateReason;
      return { status: this.tryAgainAs408 ? 408 : 200, body: tryAgain };
    }
    if (this.metadataFirst && body.allow_metadata_only && !f.metadataSent) {
      f.metadataSent = true;
      return { status: 200, body: { status: 'complete_metadata', response_payload_size: 1024 } };
    }
    const o = f.outcome;
    if (o.kind === 'error') return { status: 200, body: { error: o.message, category: o.category } };
    if (o.kind === 'json') return { status: 200, body: o.body };
    const proto = (headers.accept ?? '').includes(PROTOBUF) && !this.jsonResults;
    if (o.kind === 'fwdbwd') return proto ? { status: 200, body: encodeForwardBackwardOutput(o.out), contentType: PROTOBUF } : { status: 200, body: o.out };
    return proto ? { status: 200, body: encodeSampleResponse(o.out), contentType: PROTOBUF } : { status: 200, body: { ...o.out, type: 'sample' } };
  }

  private forwardBackward(model: ModelState, req: ForwardBackwardRequestPb): ForwardBackwardOutputJson {
    const lp = this.opts.targetLogprob ?? (() => -0.5);
    let loss = 0;
    const outputs = req.data.map((d) => {
      const tokens = d.model_input.chunks.flatMap((c) => c.tokens);
      const logprobs = tokens.map((_, i) => Math.fround(lp(model.steps, tokens, i)));
      const inputs = d.loss_fn_inputs;
      logprobs.forEach((x, i) => {
        if (req.loss_fn === 'cross_entropy') loss -= (inputs.weights?.data[i] ?? 1) * x;
        else loss -= (inputs.advantages?.data[i] ?? 0) * Math.exp(x - (inputs.logprobs?.data[i] ?? 0));
      });
      const out: WireTensorData = { data: logprobs, dtype: 'float32', shape: [logprobs.length] };
      return { logprobs: out };
    });
    return { loss_fn_output_type: 'ArrayRecord', loss_fn_outputs: outputs, metrics: { 'loss:sum': loss } };
  }

  private sample(s: SamplerInfo, b: Record<string, unknown>): SampleResponseJson {
    const prompt = (b.prompt as { chunks: { tokens: number[] }[] }).chunks.flatMap((c) => c.tokens);
    const params = b.sampling_params as { max_tokens?: number; stop?: unknown };
    const maxTokens = params.max_tokens ?? 16;
    const info: SamplerInfo = { modelPath: s.modelPath, baseModel: s.baseModel, steps: s.steps };
    let tokens = (this.opts.sampler ?? ((_i, _p, n) => Array.from({ length: n }, (_, k) => 11 + k)))(info, prompt, maxTokens);
    let stopReason: 'stop' | 'length' = 'stop';
    const stops = Array.isArray(params.stop) && params.stop.every((x) => typeof x === 'number') ? (params.stop as number[]) : [];
    const at = tokens.findIndex((t) => stops.includes(t));
    if (at >= 0) tokens = tokens.slice(0, at + 1);
    else if (tokens.length >= maxTokens) {
      tokens = tokens.slice(0, maxTokens);
      stopReason = 'length';
    }
    const logprob = this.opts.logprob ?? (() => -0.5);
    const seq = { stop_reason: stopReason, tokens, logprobs: tokens.map((_, i) => logprob(info, prompt, tokens, i)) };
    const out: SampleResponseJson = { sequences: Array.from({ length: b.num_samples as number }, () => ({ ...seq })) };
    const promptLp = this.opts.promptLogprob ?? (() => -1);
    const k = b.topk_prompt_logprobs as number;
    if (b.prompt_logprobs === true) out.prompt_logprobs = prompt.map((_, i) => (i === 0 ? null : promptLp(info, prompt, i)));
    if (k > 0) {
      out.topk_prompt_logprobs = prompt.map((t, i) => {
        if (i === 0) return null;
        const lp = promptLp(info, prompt, i);
        return Array.from({ length: k }, (_, j): [number, number] => [t + j, lp - j]);
      });
    }
    return out;
  }
}
