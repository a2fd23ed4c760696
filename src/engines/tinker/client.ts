// A typed client for Tinker, Thinking Machines' hosted training and sampling service, speaking the
// protocol of its Python SDK (see wire.ts): a session kept alive by heartbeats, LoRA training
// models, forward_backward (protobuf) and optim_step, saved states and sampler weights, sampling
// sessions and sampling. Training calls are queued on Tinker's side and answered through futures
// (futures.ts). Each model's requests are numbered (seq_id, from 1) and sent one after another in
// call order, as the SDK's turn-taking does, because Tinker runs a model's requests in seq_id order;
// their results are awaited concurrently.
import { InputError } from '../../errors.js';
import { TinkerError } from './errors.js';
import { awaitFuture, type FutureResult } from './futures.js';
import { TinkerHttp } from './http.js';
import { decodeForwardBackwardOutput, decodeSampleResponse, encodeForwardBackwardRequest, ProtobufError } from './protobuf.js';
import {
  DEFAULT_BASE_URL,
  HEADER,
  HEARTBEAT_MS,
  LOSS_FNS,
  ROUTES,
  SDK_VERSION,
  type AuthTokenResponse,
  type ClientConfigResponse,
  type CreateModelRequest,
  type CreateModelResponse,
  type CreateSamplingSessionRequest,
  type CreateSamplingSessionResponse,
  type CreateSessionRequest,
  type CreateSessionResponse,
  type ForwardBackwardOutputJson,
  type GetServerCapabilitiesResponse,
  type LoadWeightsRequest,
  type LossFn,
  type OptimStepRequest,
  type OptimStepResponse,
  type SampleRequest,
  type SampleResponseJson,
  type SaveWeightsForSamplerRequest,
  type SaveWeightsForSamplerResponse,
  type SaveWeightsRequest,
  type SaveWeightsResponse,
  type SessionHeartbeatRequest,
  type UntypedAPIFuture,
} from './wire.js';

export { TinkerError, type TinkerFailure } from './errors.js';
export type { LossFn } from './wire.js';

export interface TinkerClientOptions {
  /** Default: Tinker's production service. */
  baseUrl?: string;
  /** 'tml-…' (or a Tinker-issued JWT). */
  apiKey: string;
  /** One HTTP call (default 60 s). */
  requestTimeoutMs?: number;
  /** A whole future including polling (default 10 min). */
  futureTimeoutMs?: number;
  /** First wait between polls, and between retries (default 250 ms); doubles up to maxPollIntervalMs (default 5 s), with jitter. */
  pollIntervalMs?: number;
  maxPollIntervalMs?: number;
  /** Session heartbeat period (default 10 s, the SDK's). */
  heartbeatMs?: number;
  /** Retries of one call after connection failures, timeouts, 408, 409, 429 or 5xx, with the same X-Idempotency-Key (default 5). */
  retries?: number;
  /** Queue-state lines while waiting ("queued: …"), retries, heartbeat trouble. */
  log?: (line: string) => void;
}

export interface TensorData {
  data: number[];
  dtype: 'int64' | 'float32';
  shape?: number[];
}

export interface TinkerDatum {
  model_input: { chunks: { type: 'encoded_text'; tokens: number[] }[] };
  loss_fn_inputs: Record<string, TensorData>;
}

export interface ForwardBackwardResult {
  /** Tinker's metrics; the suffix names the reduction over datums ('loss:sum'). */
  metrics: Record<string, number>;
  /** Per datum, the loss function's outputs (e.g. `logprobs` of the target tokens). */
  lossFnOutputs: Record<string, TensorData>[];
}

export interface AdamOptions {
  learningRate: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Decoupled weight decay (default 0). */
  weightDecay?: number;
  /** Largest global gradient norm; 0 (the default) does not clip. */
  gradClipNorm?: number;
}

export interface SampleOptions {
  samplingSessionId: string;
  prompt: number[];
  /** Default 1. */
  numSamples?: number;
  maxTokens: number;
  /** Default 1. */
  temperature?: number;
  /** Default 1. */
  topP?: number;
  /** Default: no top-k cut. */
  topK?: number;
  stopTokens?: number[];
  seed?: number;
  /** The log-probability of each prompt token (the first has none). */
  promptLogprobs?: boolean;
  /** The k most likely tokens at each prompt position. */
  topkPromptLogprobs?: number;
}

export interface SampleResult {
  sequences: { tokens: number[]; logprobs: number[] | null; stopReason: string }[];
  promptLogprobs: (number | null)[] | null;
  topkPromptLogprobs: ({ id: number; logprob: number }[] | null)[] | null;
}

interface ModelState {
  /** The seq_id the model's next request gets. */
  nextSeqId: number;
  /** Settles when the previous request has been handed to Tinker (or failed to be). */
  turn: Promise<void>;
}

const isInt = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x);

/** When a JWT expires (ms since the epoch), from its `exp` claim; null when it has none. */
function jwtExpiry(jwt: string): number | null {
  try {
    const claims = JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof claims.exp === 'number' ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

function protocolError(what: string, detail: string): TinkerError {
  return new TinkerError(`Tinker's answer to ${what} is not what the protocol says: ${detail}`, null, 'protocol');
}

function checkTokens(tokens: unknown, what: string): void {
  if (!Array.isArray(tokens) || !tokens.every((t) => isInt(t) && t >= 0 && t <= 0x7fffffff)) throw new InputError(`${what} must be an array of token ids`);
}

function checkData(data: TinkerDatum[], lossFn: LossFn, config: Record<string, number> | undefined): void {
  if (!LOSS_FNS.includes(lossFn)) throw new InputError(`unknown Tinker loss function ${JSON.stringify(lossFn)} (one of ${LOSS_FNS.join(', ')})`);
  if (!Array.isArray(data) || data.length === 0) throw new InputError('forward_backward needs at least one datum');
  data.forEach((d, i) => {
    const chunks = d?.model_input?.chunks;
    if (!Array.isArray(chunks) || chunks.length === 0) throw new InputError(`datum ${i} has no model_input chunks`);
    chunks.forEach((c, j) => {
      if (c.type !== 'encoded_text') throw new InputError(`datum ${i} chunk ${j}: only encoded_text chunks are supported`);
      checkTokens(c.tokens, `datum ${i} chunk ${j} tokens`);
    });
    for (const [name, t] of Object.entries(d.loss_fn_inputs ?? {})) {
      if (t.dtype !== 'int64' && t.dtype !== 'float32') throw new InputError(`datum ${i} ${name}: dtype must be int64 or float32`);
      if (!Array.isArray(t.data) || !t.data.every((x) => typeof x === 'number' && (t.dtype === 'float32' || Number.isSafeInteger(x)))) {
        throw new InputError(`datum ${i} ${name}: data must be ${t.dtype === 'int64' ? 'integers' : 'numbers'}`);
      }
      if (t.shape !== undefined) {
        if (!Array.isArray(t.shape) || !t.shape.every((s) => isInt(s) && s >= 0)) throw new InputError(`datum ${i} ${name}: shape must be non-negative integers`);
        const size = t.shape.reduce((a, b) => a * b, 1);
        if (size !== t.data.length) throw new InputError(`datum ${i} ${name}: shape [${t.shape.join(', ')}] holds ${size} values but data has ${t.data.length}`);
      }
    }
  });
  for (const [k, v] of Object.entries(config ?? {})) {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new InputError(`loss_fn_config.${k} must be a finite number`);
  }
}

export class TinkerClient {
  readonly baseUrl: string;
  private readonly http: TinkerHttp;
  private readonly apiKey: string;
  private readonly futureTimeoutMs: number;
  private readonly pollIntervalMs: number;
  private readonly maxPollIntervalMs: number;
  private readonly heartbeatMs: number;
  private readonly retries: number;
  private readonly log: (line: string) => void;

  private session: Promise<string> | null = null;
  private sessionId: string | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private lastHeartbeatOk = 0;
  private heartbeatTrouble = false;
  private closed = false;
  private modelSeq = 0;
  private samplingSessionSeq = 0;
  private readonly models = new Map<string, ModelState>();
  private readonly samplers = new Map<string, { nextSeqId: number }>();
  private config: Promise<ClientConfigResponse> | null = null;
  private jwt: { token: string; refreshAt: number } | null = null;
  private jwtPending: Promise<string> | null = null;

  constructor(opts: TinkerClientOptions) {
    if (typeof opts.apiKey !== 'string' || !(opts.apiKey.startsWith('tml-') || opts.apiKey.startsWith('eyJ'))) {
      throw new InputError("a Tinker API key starts with 'tml-'");
    }
    this.apiKey = opts.apiKey;
    this.futureTimeoutMs = opts.futureTimeoutMs ?? 600_000;
    this.pollIntervalMs = opts.pollIntervalMs ?? 250;
    this.maxPollIntervalMs = Math.max(this.pollIntervalMs, opts.maxPollIntervalMs ?? 5_000);
    this.heartbeatMs = opts.heartbeatMs ?? HEARTBEAT_MS;
    this.retries = opts.retries ?? 5;
    this.log = opts.log ?? (() => {});
    this.http = new TinkerHttp({
      baseUrl: opts.baseUrl ?? DEFAULT_BASE_URL,
      apiKey: opts.apiKey,
      requestTimeoutMs: opts.requestTimeoutMs ?? 60_000,
      retries: this.retries,
      backoffMs: this.pollIntervalMs,
      maxBackoffMs: this.maxPollIntervalMs,
      log: this.log,
      credential: () => this.credential(),
    });
    this.baseUrl = this.http.baseUrl;
  }

  // ---- credentials ------------------------------------------------------------------------------

  /** The server's feature flags, fetched once (with the API key) before anything else, as the SDK does. */
  private clientConfig(): Promise<ClientConfigResponse> {
    this.config ??= this.http
      .json<ClientConfigResponse>(ROUTES.clientConfig, { what: 'client/config', body: { sdk_version: SDK_VERSION }, rawKey: true })
      .catch((err: unknown) => {
        // A server that predates the endpoint has no flags to give.
        if (err instanceof TinkerError && err.status === 404) return {};
        this.config = null;
        throw err;
      });
    return this.config;
  }

  /**
   * What X-API-Key carries: the key itself, or, where the server enables pjwt_auth, a short-lived
   * JWT it exchanges the key for, renewed a minute before it expires.
   */
  private async credential(): Promise<string> {
    const config = await this.clientConfig();
    if (!config.pjwt_auth_enabled) return this.apiKey;
    if (this.jwt && Date.now() < this.jwt.refreshAt) return this.jwt.token;
    this.jwtPending ??= this.http
      .json<AuthTokenResponse>(ROUTES.authToken, { what: 'auth/token', body: {}, rawKey: true })
      .then((res) => {
        if (typeof res?.jwt !== 'string') throw protocolError('auth/token', 'no jwt');
        const expiry = jwtExpiry(res.jwt);
        this.jwt = { token: res.jwt, refreshAt: expiry ? expiry - 60_000 : Date.now() + 300_000 };
        return res.jwt;
      })
      .finally(() => (this.jwtPending = null));
    return this.jwtPending;
  }

  // ---- session ----------------------------------------------------------------------------------

  async serverCapabilities(): Promise<{ modelName: string; maxContextLength: number | null }[]> {
    const res = await this.http.json<GetServerCapabilitiesResponse>(ROUTES.serverCapabilities, { what: 'get_server_capabilities', method: 'GET' });
    if (!Array.isArray(res?.supported_models)) throw protocolError('get_server_capabilities', 'no supported_models');
    return res.supported_models.map((m) => ({ modelName: m.model_name ?? '', maxContextLength: m.max_context_length ?? null }));
  }

  /**
   * Opens the session that models and sampling sessions belong to, and starts its heartbeat. Once
   * per client: later calls (and createModel or createSamplingSession before any) get the same one.
   */
  createSession(opts: { tags?: string[]; userMetadata?: Record<string, string>; projectId?: string } = {}): Promise<string> {
    if (this.closed) return Promise.reject(new InputError('this Tinker client is closed'));
    this.session ??= (async () => {
      const body: CreateSessionRequest = { tags: opts.tags ?? [], user_metadata: opts.userMetadata ?? {}, sdk_version: SDK_VERSION, type: 'create_session' };
      if (opts.projectId !== undefined) body.project_id = opts.projectId;
      const res = await this.http.json<CreateSessionResponse>(ROUTES.createSession, { what: 'create_session', body });
      if (typeof res?.session_id !== 'string') throw protocolError('create_session', 'no session_id');
      for (const m of [res.info_message, res.warning_message, res.error_message]) if (m) this.log(`tinker: ${m}`);
      this.sessionId = res.session_id;
      this.lastHeartbeatOk = Date.now();
      if (!this.closed) this.scheduleHeartbeat();
      return res.session_id;
    })().catch((err: unknown) => {
      this.session = null;
      throw err;
    });
    return this.session;
  }

  private scheduleHeartbeat(): void {
    this.heartbeatTimer = setTimeout(() => void this.heartbeat(), this.heartbeatMs);
    this.heartbeatTimer.unref();
  }

  /** Like the SDK's: one try per period, failures only logged; Tinker ends a session that stays silent. */
  private async heartbeat(): Promise<void> {
    const body: SessionHeartbeatRequest = { session_id: this.sessionId!, type: 'session_heartbeat' };
    try {
      await this.http.json(ROUTES.sessionHeartbeat, { what: 'session_heartbeat', body, retries: 0, timeoutMs: Math.min(10_000, this.http.requestTimeoutMs) });
      this.lastHeartbeatOk = Date.now();
      if (this.heartbeatTrouble) this.log(`tinker: session ${this.sessionId} heartbeats are answered again`);
      this.heartbeatTrouble = false;
    } catch (err) {
      if (!this.heartbeatTrouble) this.log(`tinker: heartbeat of session ${this.sessionId} failed: ${(err as Error).message}`);
      this.heartbeatTrouble = true;
      const silent = Date.now() - this.lastHeartbeatOk;
      if (silent > 120_000) this.log(`tinker: no heartbeat of session ${this.sessionId} has gone through for ${Math.round(silent / 1000)} s; Tinker may end the session`);
    } finally {
      if (!this.closed) this.scheduleHeartbeat();
    }
  }

  /** Stops the heartbeats; Tinker ends the session once it misses them. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }

  private ensureSession(): Promise<string> {
    return this.sessionId !== null ? Promise.resolve(this.sessionId) : this.createSession();
  }

  // ---- queued requests --------------------------------------------------------------------------

  private async submit(path: string, what: string, body: unknown, headers?: Record<string, string>): Promise<UntypedAPIFuture> {
    const fut = await this.http.json<UntypedAPIFuture>(path, { what, body, headers });
    if (typeof fut?.request_id !== 'string') throw protocolError(what, 'no request_id');
    return fut;
  }

  private result(fut: UntypedAPIFuture, what: string, requestType: string, protobuf: boolean): Promise<FutureResult> {
    return awaitFuture(this.http, {
      requestId: fut.request_id,
      requestType,
      what,
      protobuf,
      timeoutMs: this.futureTimeoutMs,
      pollIntervalMs: this.pollIntervalMs,
      maxPollIntervalMs: this.maxPollIntervalMs,
      log: this.log,
    });
  }

  /**
   * Sends a request of a model in its turn with the next seq_id, then waits for its result. Must be
   * called without an await before it, so that turns follow call order.
   */
  private async modelCall(modelId: string, path: string, what: string, requestType: string, protobuf: boolean, build: (seqId: number) => unknown): Promise<FutureResult> {
    const model = this.models.get(modelId);
    if (!model) {
      throw new InputError(`Tinker model ${modelId} was not created by this client: a model belongs to the session that created it and numbers its requests from there; create a model and load the saved state into it`);
    }
    const previous = model.turn;
    let release!: () => void;
    model.turn = new Promise((resolve) => (release = resolve));
    let fut: UntypedAPIFuture;
    try {
      await previous;
      const seqId = model.nextSeqId;
      const body = build(seqId);
      try {
        fut = await this.submit(path, what, body);
        model.nextSeqId++;
      } catch (err) {
        // A refused request did not take its seq_id; one whose fate is unknown may have.
        if (!(err instanceof TinkerError && (err.failure === 'rejected' || err.failure === 'auth'))) model.nextSeqId++;
        throw err;
      }
    } finally {
      release();
    }
    return this.result(fut, what, requestType, protobuf);
  }

  private json<T>(result: FutureResult, what: string): T {
    if (result.kind !== 'json') throw protocolError(what, 'a protobuf result where JSON was expected');
    return result.body as T;
  }

  // ---- training ---------------------------------------------------------------------------------

  /** A LoRA training model on `baseModel`, in this client's session (opened if need be). */
  async createModel(req: { baseModel: string; loraRank: number; trainMlp?: boolean; trainAttn?: boolean; trainUnembed?: boolean; seed?: number; userMetadata?: Record<string, string> }): Promise<string> {
    if (typeof req.baseModel !== 'string' || req.baseModel === '') throw new InputError('createModel needs a base model name');
    if (!isInt(req.loraRank) || req.loraRank < 1) throw new InputError(`LoRA rank must be a positive integer, got ${req.loraRank}`);
    const sessionId = await this.ensureSession();
    const body: CreateModelRequest = {
      session_id: sessionId,
      model_seq_id: this.modelSeq++,
      base_model: req.baseModel,
      lora_config: { rank: req.loraRank, train_unembed: req.trainUnembed ?? true, train_mlp: req.trainMlp ?? true, train_attn: req.trainAttn ?? true },
      type: 'create_model',
    };
    if (req.seed !== undefined) body.lora_config!.seed = req.seed;
    if (req.userMetadata !== undefined) body.user_metadata = req.userMetadata;
    const fut = await this.submit(ROUTES.createModel, 'create_model', body);
    const res = this.json<CreateModelResponse>(await this.result(fut, `create_model of ${req.baseModel}`, 'CreateModel', false), 'create_model');
    if (typeof res?.model_id !== 'string') throw protocolError('create_model', 'no model_id');
    this.models.set(res.model_id, { nextSeqId: 1, turn: Promise.resolve() });
    return res.model_id;
  }

  forwardBackward(modelId: string, data: TinkerDatum[], lossFn: LossFn, lossFnConfig?: Record<string, number>): Promise<ForwardBackwardResult> {
    return this.runForward(modelId, data, lossFn, lossFnConfig, false);
  }

  /** The loss function's outputs (e.g. the targets' log-probs) without a backward pass. */
  forward(modelId: string, data: TinkerDatum[], lossFn: LossFn, lossFnConfig?: Record<string, number>): Promise<ForwardBackwardResult> {
    return this.runForward(modelId, data, lossFn, lossFnConfig, true);
  }

  private async runForward(modelId: string, data: TinkerDatum[], lossFn: LossFn, lossFnConfig: Record<string, number> | undefined, forwardOnly: boolean): Promise<ForwardBackwardResult> {
    checkData(data, lossFn, lossFnConfig);
    const what = forwardOnly ? 'forward' : 'forward_backward';
    const result = await this.modelCall(modelId, ROUTES.forwardBackward, what, forwardOnly ? 'Forward' : 'ForwardBackward', true, (seqId) => {
      try {
        return encodeForwardBackwardRequest({ model_id: modelId, seq_id: seqId, data, loss_fn: lossFn, loss_fn_config: lossFnConfig ?? {}, forward_only: forwardOnly });
      } catch (err) {
        if (err instanceof ProtobufError) throw new InputError(`${what}: ${err.message}`);
        throw err;
      }
    });
    let out: ForwardBackwardOutputJson;
    if (result.kind === 'protobuf') {
      try {
        out = decodeForwardBackwardOutput(result.bytes);
      } catch (err) {
        if (err instanceof ProtobufError) throw protocolError(what, err.message);
        throw err;
      }
    } else {
      out = result.body as unknown as ForwardBackwardOutputJson;
      if (!Array.isArray(out.loss_fn_outputs)) throw protocolError(what, 'no loss_fn_outputs');
    }
    return { metrics: out.metrics ?? {}, lossFnOutputs: out.loss_fn_outputs };
  }

  async optimStep(modelId: string, adam: AdamOptions): Promise<{ metrics: Record<string, number> }> {
    for (const k of ['learningRate', 'beta1', 'beta2', 'eps'] as const) {
      if (!Number.isFinite(adam[k])) throw new InputError(`Adam ${k} must be a finite number`);
    }
    const result = await this.modelCall(modelId, ROUTES.optimStep, 'optim_step', 'OptimStep', false, (seqId): OptimStepRequest => ({
      adam_params: { learning_rate: adam.learningRate, beta1: adam.beta1, beta2: adam.beta2, eps: adam.eps, weight_decay: adam.weightDecay ?? 0, grad_clip_norm: adam.gradClipNorm ?? 0 },
      model_id: modelId,
      seq_id: seqId,
      type: 'optim_step',
    }));
    return { metrics: this.json<OptimStepResponse>(result, 'optim_step').metrics ?? {} };
  }

  /** Saves the training state (weights and optimizer) under `name`; the tinker:// path to load it from. */
  async saveWeights(modelId: string, name: string, opts: { ttlSeconds?: number; overwrite?: boolean } = {}): Promise<string> {
    const result = await this.modelCall(modelId, ROUTES.saveWeights, 'save_weights', 'SaveWeights', false, (seqId) => {
      const body: SaveWeightsRequest = { model_id: modelId, path: name, seq_id: seqId, overwrite: opts.overwrite ?? false, type: 'save_weights' };
      if (opts.ttlSeconds !== undefined) body.ttl_seconds = opts.ttlSeconds;
      return body;
    });
    const res = this.json<SaveWeightsResponse>(result, 'save_weights');
    if (typeof res?.path !== 'string') throw protocolError('save_weights', 'no path');
    return res.path;
  }

  /** Loads a saved training state into the model: the weights, and with `optimizer` the Adam moments too. */
  async loadWeights(modelId: string, path: string, opts: { optimizer?: boolean } = {}): Promise<void> {
    if (typeof path !== 'string' || !path.startsWith('tinker://')) throw new InputError(`a Tinker weights path starts with tinker://, got ${JSON.stringify(path)}`);
    const result = await this.modelCall(modelId, ROUTES.loadWeights, 'load_weights', 'LoadWeights', false, (seqId): LoadWeightsRequest => ({
      model_id: modelId,
      seq_id: seqId,
      path,
      optimizer: opts.optimizer ?? false,
      type: 'load_weights',
    }));
    this.json(result, 'load_weights');
  }

  /** Saves the weights for sampling under `name`; the tinker:// path a sampling session can use. */
  async saveWeightsForSampler(modelId: string, name: string, opts: { ttlSeconds?: number } = {}): Promise<string> {
    const result = await this.modelCall(modelId, ROUTES.saveWeightsForSampler, 'save_weights_for_sampler', 'SaveWeightsForSampler', false, (seqId) => {
      const body: SaveWeightsForSamplerRequest = { model_id: modelId, path: name, seq_id: seqId, type: 'save_weights_for_sampler' };
      if (opts.ttlSeconds !== undefined) body.ttl_seconds = opts.ttlSeconds;
      return body;
    });
    const res = this.json<SaveWeightsForSamplerResponse>(result, 'save_weights_for_sampler');
    if (typeof res?.path !== 'string') throw protocolError('save_weights_for_sampler', 'no path');
    return res.path;
  }

  // ---- sampling ---------------------------------------------------------------------------------

  /** A sampling session on saved sampler weights (`modelPath`) or on a base model. */
  async createSamplingSession(req: { modelPath?: string; baseModel?: string }): Promise<string> {
    if (req.modelPath === undefined && req.baseModel === undefined) throw new InputError('a sampling session needs a modelPath or a baseModel');
    if (req.modelPath !== undefined && !req.modelPath.startsWith('tinker://')) throw new InputError(`modelPath must start with tinker://, got ${JSON.stringify(req.modelPath)}`);
    const sessionId = await this.ensureSession();
    const body: CreateSamplingSessionRequest = { session_id: sessionId, sampling_session_seq_id: this.samplingSessionSeq++, type: 'create_sampling_session' };
    if (req.baseModel !== undefined) body.base_model = req.baseModel;
    if (req.modelPath !== undefined) body.model_path = req.modelPath;
    const res = await this.http.json<CreateSamplingSessionResponse>(ROUTES.createSamplingSession, { what: 'create_sampling_session', body });
    if (typeof res?.sampling_session_id !== 'string') throw protocolError('create_sampling_session', 'no sampling_session_id');
    this.samplers.set(res.sampling_session_id, { nextSeqId: 0 });
    return res.sampling_session_id;
  }

  /**
   * Samples from a sampling session. A future that expires (410) is sent again (with a new seq_id),
   * up to `retries` times, as the SDK's sampling retry handler does: sampling changes nothing.
   */
  async sample(req: SampleOptions): Promise<SampleResult> {
    checkTokens(req.prompt, 'the prompt');
    if (req.prompt.length === 0) throw new InputError('the prompt is empty');
    if (!isInt(req.maxTokens) || req.maxTokens < 1) throw new InputError(`maxTokens must be a positive integer, got ${req.maxTokens}`);
    if (req.stopTokens !== undefined) checkTokens(req.stopTokens, 'stopTokens');
    const topk = req.topkPromptLogprobs ?? 0;
    if (!isInt(topk) || topk < 0) throw new InputError(`topkPromptLogprobs must be a non-negative integer, got ${topk}`);
    let sampler = this.samplers.get(req.samplingSessionId);
    if (!sampler) {
      // A session another client made: start numbering far from its own, as the SDK's shadow clients do.
      // (The SDK's range reaches 1e18; this one stays below 2^53 so JSON carries it exactly.)
      sampler = { nextSeqId: 1_000_000_000 * (1 + Math.floor(Math.random() * 1_000_000)) };
      this.samplers.set(req.samplingSessionId, sampler);
    }
    for (let attempt = 0; ; attempt++) {
      const body: SampleRequest = {
        num_samples: req.numSamples ?? 1,
        prompt: { chunks: [{ tokens: req.prompt, type: 'encoded_text' }] },
        sampling_params: { max_tokens: req.maxTokens, temperature: req.temperature ?? 1, top_k: req.topK ?? -1, top_p: req.topP ?? 1 },
        sampling_session_id: req.samplingSessionId,
        seq_id: sampler.nextSeqId++,
        prompt_logprobs: req.promptLogprobs ?? false,
        topk_prompt_logprobs: topk,
        type: 'sample',
      };
      if (req.seed !== undefined) body.sampling_params.seed = req.seed;
      if (req.stopTokens !== undefined && req.stopTokens.length > 0) body.sampling_params.stop = req.stopTokens;
      const fut = await this.submit(ROUTES.asample, 'asample', body, { [HEADER.samplingBackpressure]: '1' });
      let result: FutureResult;
      try {
        result = await this.result(fut, 'sample', 'Sample', true);
      } catch (err) {
        if (err instanceof TinkerError && err.failure === 'expired' && attempt < this.retries) {
          this.log(`tinker: ${err.message}; sending the sample again (${attempt + 1}/${this.retries})`);
          continue;
        }
        throw err;
      }
      return this.sampleResult(result);
    }
  }

  private sampleResult(result: FutureResult): SampleResult {
    let res: SampleResponseJson;
    if (result.kind === 'protobuf') {
      try {
        res = decodeSampleResponse(result.bytes);
      } catch (err) {
        if (err instanceof ProtobufError) throw protocolError('sample', err.message);
        throw err;
      }
    } else {
      res = result.body as unknown as SampleResponseJson;
      if (!Array.isArray(res.sequences)) throw protocolError('sample', 'no sequences');
    }
    return {
      sequences: res.sequences.map((s) => ({ tokens: s.tokens, logprobs: s.logprobs ?? null, stopReason: s.stop_reason })),
      promptLogprobs: res.prompt_logprobs ?? null,
      topkPromptLogprobs: res.topk_prompt_logprobs?.map((row) => (row ? row.map(([id, logprob]) => ({ id, logprob })) : null)) ?? null,
    };
  }
}
