// One HTTP exchange with Tinker, and the retry policy around it. Every POST carries an
// X-Idempotency-Key that stays the same across that request's retries (as the SDK's request loop
// does), so a request whose answer was lost in transit is recognised by the server when it comes
// again instead of running twice. What is retried follows the SDK's _should_retry: connection
// failures and timeouts, 408, 409 (lock timeout), 429 and 5xx, unless the server says otherwise
// with x-should-retry; Retry-After of up to a minute is honoured.
import { randomUUID } from 'node:crypto';
import { TinkerError } from './errors.js';
import { HEADER, PROTOBUF, type ErrorBody } from './wire.js';

export interface TinkerHttpOptions {
  baseUrl: string;
  apiKey: string;
  requestTimeoutMs: number;
  retries: number;
  /** First retry delay, doubled per retry up to maxBackoffMs, less up to a quarter (jitter). */
  backoffMs: number;
  maxBackoffMs: number;
  log: (line: string) => void;
  /** The credential for X-API-Key: the key itself, or the JWT Tinker exchanged it for. */
  credential: () => Promise<string>;
}

export interface CallOptions {
  /** Names the call in errors and log lines. */
  what: string;
  method?: 'GET' | 'POST';
  /** A JSON value, or protobuf bytes. */
  body?: unknown;
  accept?: string;
  headers?: Record<string, string>;
  /** Reused on every retry of this call; a fresh one when not given. */
  idempotencyKey?: string;
  retries?: number;
  timeoutMs?: number;
  /** Send the API key itself even when requests normally carry a JWT (the config and token exchange). */
  rawKey?: boolean;
}

export interface RawResponse {
  status: number;
  contentType: string;
  headers: Headers;
  bytes: Uint8Array;
}

/** A request that got no HTTP answer: refused, reset, or timed out. */
export class TransportFailure extends Error {
  constructor(
    message: string,
    readonly timedOut: boolean,
  ) {
    super(message);
  }
}

export const newIdempotencyKey = (): string => `claas-${randomUUID()}`;

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The SDK's backoff shape: doubling from `first`, capped, scaled down by up to 25%. */
export function backoff(attempt: number, first: number, max: number): number {
  return Math.min(first * 2 ** Math.min(attempt, 30), max) * (1 - 0.25 * Math.random());
}

function describeFailure(err: unknown, timeoutMs: number): TransportFailure {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.name === 'TimeoutError') return new TransportFailure(`no answer within ${timeoutMs} ms`, true);
  const code = e?.cause?.code;
  const detail = e?.cause?.message ?? e?.message ?? String(err);
  if (code === 'ECONNREFUSED') return new TransportFailure('connection refused', false);
  if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET') return new TransportFailure(`connection reset (${detail})`, false);
  return new TransportFailure(code ? `${code}: ${detail}` : detail, false);
}

export function parseJson(bytes: Uint8Array): unknown {
  return JSON.parse(Buffer.from(bytes).toString('utf8')) as unknown;
}

/** Tinker's own words from an error answer: FastAPI's `detail`, or the text. */
export function errorDetail(res: RawResponse): string {
  const text = Buffer.from(res.bytes).toString('utf8').trim();
  try {
    const body = JSON.parse(text) as Partial<ErrorBody>;
    if (body && typeof body === 'object' && 'detail' in body) return typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail);
  } catch {
    // not JSON: the text is the message
  }
  return text || '(empty body)';
}

/** The error for an answer that will not get better by retrying. */
export function statusError(what: string, res: RawResponse, requestId: string | null = null): TinkerError {
  const detail = errorDetail(res);
  if (res.status === 401) return new TinkerError(`Tinker refused the API key (401) on ${what}: ${detail}`, 401, 'auth', null, requestId);
  if (res.status === 403) return new TinkerError(`Tinker refused access (403) on ${what}: ${detail}`, 403, 'auth', null, requestId);
  if (res.status >= 500) return new TinkerError(`Tinker failed ${what} (${res.status}): ${detail}`, res.status, 'unreachable', null, requestId);
  return new TinkerError(`Tinker rejected ${what} (${res.status}): ${detail}`, res.status, 'rejected', null, requestId);
}

function retryable(res: RawResponse): boolean {
  const says = res.headers.get('x-should-retry');
  if (says === 'true') return true;
  if (says === 'false') return false;
  return res.status === 408 || res.status === 409 || res.status === 429 || res.status >= 500;
}

/** Retry-After(-Ms) in ms when the server gave a usable one (0 < t <= 60 s), as the SDK honours it. */
function retryAfterMs(res: RawResponse): number | null {
  const ms = Number(res.headers.get('retry-after-ms'));
  if (ms > 0 && ms <= 60_000) return ms;
  const s = Number(res.headers.get('retry-after'));
  if (s > 0 && s <= 60) return s * 1000;
  return null;
}

export class TinkerHttp {
  readonly baseUrl: string;

  constructor(private readonly opts: TinkerHttpOptions) {
    this.baseUrl = opts.baseUrl.replace(/\/+$/, '');
  }

  get requestTimeoutMs(): number {
    return this.opts.requestTimeoutMs;
  }

  /** One attempt. Any HTTP answer comes back as it is; no answer throws TransportFailure. */
  async send(path: string, call: CallOptions, idempotencyKey: string | null): Promise<RawResponse> {
    const method = call.method ?? 'POST';
    const isBytes = call.body instanceof Uint8Array;
    const headers: Record<string, string> = {
      [HEADER.apiKey]: call.rawKey ? this.opts.apiKey : await this.opts.credential(),
      ...(call.body === undefined ? {} : { 'Content-Type': isBytes ? PROTOBUF : 'application/json' }),
      Accept: call.accept ?? 'application/json',
      ...(idempotencyKey ? { [HEADER.idempotencyKey]: idempotencyKey } : {}),
      ...call.headers,
    };
    const timeoutMs = call.timeoutMs ?? this.opts.requestTimeoutMs;
    try {
      const res = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers,
        body: call.body === undefined ? undefined : isBytes ? new Uint8Array(call.body as Uint8Array) : JSON.stringify(call.body),
        signal: AbortSignal.timeout(timeoutMs),
      });
      const bytes = new Uint8Array(await res.arrayBuffer());
      return { status: res.status, contentType: res.headers.get('content-type') ?? '', headers: res.headers, bytes };
    } catch (err) {
      throw describeFailure(err, timeoutMs);
    }
  }

  /** A call with retries; the 2xx answer's bytes, or a TinkerError saying why there is none. */
  async raw(path: string, call: CallOptions): Promise<RawResponse> {
    const method = call.method ?? 'POST';
    const key = method === 'GET' ? null : (call.idempotencyKey ?? newIdempotencyKey());
    const retries = call.retries ?? this.opts.retries;
    for (let attempt = 0; ; attempt++) {
      let res: RawResponse;
      try {
        res = await this.send(path, call, key);
      } catch (err) {
        if (!(err instanceof TransportFailure)) throw err;
        if (attempt >= retries) {
          const how = err.timedOut ? `did not answer ${call.what}` : `could not be reached for ${call.what}`;
          throw new TinkerError(`Tinker at ${this.baseUrl} ${how} (${err.message}; ${attempt + 1} attempt${attempt ? 's' : ''})`, null, 'unreachable');
        }
        const wait = backoff(attempt, this.opts.backoffMs, this.opts.maxBackoffMs);
        this.opts.log(`tinker: ${call.what} failed (${err.message}); retry ${attempt + 1}/${retries} in ${Math.round(wait)} ms`);
        await sleep(wait);
        continue;
      }
      if (res.status >= 200 && res.status < 300) return res;
      if (attempt >= retries || !retryable(res)) {
        const e = statusError(call.what, res);
        if (attempt > 0 && e.failure === 'unreachable') e.message += ` (after ${attempt + 1} attempts)`;
        throw e;
      }
      const wait = retryAfterMs(res) ?? backoff(attempt, this.opts.backoffMs, this.opts.maxBackoffMs);
      this.opts.log(`tinker: ${call.what} answered ${res.status} (${errorDetail(res).slice(0, 200)}); retry ${attempt + 1}/${retries} in ${Math.round(wait)} ms`);
      await sleep(wait);
    }
  }

  async json<T>(path: string, call: CallOptions): Promise<T> {
    const res = await this.raw(path, call);
    try {
      return parseJson(res.bytes) as T;
    } catch {
      throw new TinkerError(`Tinker answered ${call.what} with a body that is not JSON (${res.contentType || 'no content type'})`, res.status, 'protocol');
    }
  }
}
