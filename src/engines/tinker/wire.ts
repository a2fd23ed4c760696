// The Tinker protocol as it travels: routes, headers, defaults and the JSON bodies in their wire
// spelling (snake_case). Checked against the Apache-2.0 Python SDK `tinker` 0.25.0 (its
// src/tinker/resources/*.py, types/*.py, lib/api_future_impl.py, lib/internal_client_holder.py).
// Request bodies there are pydantic models with extra="forbid", dumped with exclude_none and
// without exclude_unset: optional fields are left out rather than sent as null, while fields that
// have a default (temperature, top_k, overwrite, weight_decay, …) are always sent. forward_backward
// is the exception: it goes as protobuf (see protobuf.ts), and its result and sample's come back
// as protobuf when asked for with Accept.

export const DEFAULT_BASE_URL = 'https://tinker.thinkingmachines.dev/services/tinker-prod';

/** The SDK release this protocol was read from; the server resolves feature flags from it. */
export const SDK_VERSION = '0.25.0';

/** The SDK's session heartbeat period (SESSION_HEARTBEAT_PERIOD_SEC). */
export const HEARTBEAT_MS = 10_000;

export const ROUTES = {
  clientConfig: '/api/v1/client/config',
  authToken: '/api/v1/auth/token',
  serverCapabilities: '/api/v1/get_server_capabilities',
  createSession: '/api/v1/create_session',
  sessionHeartbeat: '/api/v1/session_heartbeat',
  createModel: '/api/v1/create_model',
  forwardBackward: '/api/v1/forward_backward',
  optimStep: '/api/v1/optim_step',
  saveWeights: '/api/v1/save_weights',
  loadWeights: '/api/v1/load_weights',
  saveWeightsForSampler: '/api/v1/save_weights_for_sampler',
  createSamplingSession: '/api/v1/create_sampling_session',
  asample: '/api/v1/asample',
  retrieveFuture: '/api/v1/retrieve_future',
} as const;

export const HEADER = {
  apiKey: 'X-API-Key',
  /** Set on every non-GET request and kept across that request's retries. */
  idempotencyKey: 'X-Idempotency-Key',
  requestIteration: 'X-Tinker-Request-Iteration',
  requestType: 'X-Tinker-Request-Type',
  /** Lets the sampler answer 429 instead of queueing without bound; the SDK sets it on asample. */
  samplingBackpressure: 'X-Tinker-Sampling-Backpressure',
} as const;

export const PROTOBUF = 'application/x-protobuf';

export type Dtype = 'int64' | 'float32';
export type LossFn = 'cross_entropy' | 'importance_sampling' | 'ppo' | 'cispo' | 'dro';
export const LOSS_FNS: readonly LossFn[] = ['cross_entropy', 'importance_sampling', 'ppo', 'cispo', 'dro'];
/** RequestErrorCategory: a StrEnum with auto(), so the lower-cased member names. */
export type ErrorCategory = 'unknown' | 'server' | 'user';
export type QueueState = 'active' | 'paused_capacity' | 'paused_rate_limit';
export type StopReason = 'stop' | 'length';

export interface WireTensorData {
  data: number[];
  dtype: Dtype;
  shape?: number[];
}
export interface WireEncodedTextChunk {
  tokens: number[];
  type: 'encoded_text';
}
export interface WireModelInput {
  chunks: WireEncodedTextChunk[];
}
export interface WireDatum {
  model_input: WireModelInput;
  loss_fn_inputs: Record<string, WireTensorData>;
}

/** FastAPI's error body, which the SDK folds into its status errors. */
export interface ErrorBody {
  detail: unknown;
}

export interface ClientConfigRequest {
  sdk_version: string;
}
/** Server feature flags (ClientConfigResponse); only the ones this client acts on are named. */
export interface ClientConfigResponse {
  pjwt_auth_enabled?: boolean;
  proto_compress_fwdbwd?: boolean;
  fwdbwd_max_chunk_len?: number;
  [flag: string]: unknown;
}
export interface AuthTokenResponse {
  jwt: string;
}
export interface GetServerCapabilitiesResponse {
  supported_models: { model_name?: string | null; max_context_length?: number | null }[];
}

export interface CreateSessionRequest {
  tags: string[];
  user_metadata: Record<string, unknown>;
  sdk_version: string;
  project_id?: string;
  type: 'create_session';
}
export interface CreateSessionResponse {
  type?: 'create_session';
  session_id: string;
  info_message?: string | null;
  warning_message?: string | null;
  error_message?: string | null;
}
export interface SessionHeartbeatRequest {
  session_id: string;
  type: 'session_heartbeat';
}
export interface SessionHeartbeatResponse {
  type?: 'session_heartbeat';
}

export interface LoraConfig {
  rank: number;
  seed?: number;
  train_unembed: boolean;
  train_mlp: boolean;
  train_attn: boolean;
}
export interface CreateModelRequest {
  session_id: string;
  /** Which training client of the session this is; the server names the model `<session>:train:<n>`. */
  model_seq_id: number;
  base_model: string;
  user_metadata?: Record<string, unknown>;
  lora_config?: LoraConfig;
  type: 'create_model';
}
export interface CreateModelResponse {
  model_id: string;
  type?: 'create_model';
}

/** What every queued call answers at once: the handle to poll retrieve_future with. */
export interface UntypedAPIFuture {
  request_id: string;
  model_id?: string | null;
}

export interface AdamParams {
  learning_rate: number;
  beta1: number;
  beta2: number;
  eps: number;
  weight_decay: number;
  /** 0: no clipping. */
  grad_clip_norm: number;
}
export interface OptimStepRequest {
  adam_params: AdamParams;
  model_id: string;
  seq_id: number;
  type: 'optim_step';
}
export interface OptimStepResponse {
  metrics?: Record<string, number> | null;
}

export interface SaveWeightsRequest {
  model_id: string;
  path: string;
  seq_id: number;
  ttl_seconds?: number;
  overwrite: boolean;
  type: 'save_weights';
}
export interface SaveWeightsResponse {
  path: string;
  type?: 'save_weights' | null;
}
export interface LoadWeightsRequest {
  model_id: string;
  seq_id: number;
  path: string;
  optimizer: boolean;
  weights_access_token?: string;
  type: 'load_weights';
}
export interface LoadWeightsResponse {
  path?: string | null;
  model_id?: string | null;
  type?: 'load_weights' | null;
}
export interface SaveWeightsForSamplerRequest {
  model_id: string;
  path: string;
  seq_id: number;
  ttl_seconds?: number;
  type: 'save_weights_for_sampler';
}
export interface SaveWeightsForSamplerResponse {
  path?: string | null;
  sampling_session_id?: string | null;
  type?: 'save_weights_for_sampler' | null;
}

export interface CreateSamplingSessionRequest {
  session_id: string;
  sampling_session_seq_id: number;
  base_model?: string;
  model_path?: string;
  type: 'create_sampling_session';
}
export interface CreateSamplingSessionResponse {
  type?: 'create_sampling_session';
  sampling_session_id: string;
}

export interface SamplingParams {
  max_tokens?: number;
  seed?: number;
  /** Stop strings or stop token ids. */
  stop?: string | string[] | number[];
  temperature: number;
  /** -1: no top-k cut. */
  top_k: number;
  top_p: number;
}
export interface SampleRequest {
  num_samples: number;
  prompt: WireModelInput;
  sampling_params: SamplingParams;
  sampling_session_id: string;
  /** Orders (and names) the requests of one sampling session. */
  seq_id: number;
  prompt_logprobs: boolean;
  topk_prompt_logprobs: number;
  type: 'sample';
}

export interface FutureRetrieveRequest {
  request_id: string;
  /** Lets the server answer with only the result's size first when it is too large to inline. */
  allow_metadata_only: boolean;
}
export interface TryAgainResponse {
  type: 'try_again';
  request_id: string;
  queue_state: QueueState;
  queue_state_reason?: string | null;
}
export interface RequestFailedResponse {
  error: string;
  category: ErrorCategory;
}
export interface MetadataOnlyResponse {
  status: 'complete_metadata';
  response_payload_size: number;
}

/** The JSON forms of the two results that normally come back as protobuf (servers before proto). */
export interface ForwardBackwardOutputJson {
  loss_fn_output_type: string;
  loss_fn_outputs: Record<string, WireTensorData>[];
  metrics: Record<string, number>;
}
export interface SampleResponseJson {
  type?: 'sample';
  sequences: { stop_reason: StopReason; tokens: number[]; logprobs?: number[] | null }[];
  prompt_logprobs?: (number | null)[] | null;
  topk_prompt_logprobs?: ([number, number][] | null)[] | null;
}
