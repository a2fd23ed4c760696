// Waiting for a queued Tinker request: polls retrieve_future until the result comes, with
// backoff. Follows the SDK's APIFuture loop (lib/api_future_impl.py): `{type: "try_again"}` and
// HTTP 408 mean "still queued" and carry the queue state; `{status: "complete_metadata"}` means the
// result is ready but large, and is fetched again without allow_metadata_only; `{error, category}`
// is the request's own failure; 410 means the future is gone and only sending the request again
// helps; connection failures, 429 and 5xx are waited out, and a bare 400 (which proxies inject) is
// retried three times. Unlike the SDK, every wait backs off, so an outage or a long queue costs a
// request every few seconds rather than a tight loop, and the whole wait has a deadline.
import { TinkerError } from './errors.js';
import { backoff, errorDetail, newIdempotencyKey, parseJson, sleep, statusError, TransportFailure, type TinkerHttp } from './http.js';
import { HEADER, PROTOBUF, ROUTES, type ErrorCategory, type FutureRetrieveRequest } from './wire.js';

export interface FutureOptions {
  requestId: string;
  /** X-Tinker-Request-Type, as the SDK names them: 'CreateModel', 'ForwardBackward', 'Sample', … */
  requestType: string;
  /** Names the call in errors and log lines. */
  what: string;
  /** Ask for the protobuf form of the result (forward_backward and sample results have one). */
  protobuf: boolean;
  timeoutMs: number;
  pollIntervalMs: number;
  maxPollIntervalMs: number;
  log: (line: string) => void;
}

export type FutureResult = { kind: 'json'; body: Record<string, unknown> } | { kind: 'protobuf'; bytes: Uint8Array };

const MAX_BAD_REQUESTS = 3;
/** A queue state that has not changed is logged again after this long. */
const RELOG_MS = 30_000;
const CATEGORIES: readonly ErrorCategory[] = ['unknown', 'server', 'user'];

export async function awaitFuture(http: TinkerHttp, o: FutureOptions): Promise<FutureResult> {
  const start = Date.now();
  const deadline = start + o.timeoutMs;
  let waits = 0;
  let iteration = 0;
  let allowMetadataOnly = true;
  let badRequests = 0;
  let queueState: string | null = null;
  let lastProblem: string | null = null;
  let logged = '';
  let loggedAt = 0;

  const note = (line: string) => {
    const now = Date.now();
    if (line === logged && now - loggedAt < RELOG_MS) return;
    logged = line;
    loggedAt = now;
    o.log(line);
  };
  const wait = async () => {
    const ms = Math.min(backoff(waits++, o.pollIntervalMs, o.maxPollIntervalMs), Math.max(0, deadline - Date.now()));
    await sleep(ms);
  };
  const queued = (body: unknown) => {
    const b = (body ?? {}) as { queue_state?: unknown; queue_state_reason?: unknown };
    const state = typeof b.queue_state === 'string' && b.queue_state ? b.queue_state : 'unknown';
    const reason = typeof b.queue_state_reason === 'string' && b.queue_state_reason ? `: ${b.queue_state_reason}` : '';
    queueState = `${state}${reason}`;
    lastProblem = null;
    note(`queued: ${o.what} ${o.requestId} (${queueState})`);
  };

  for (;;) {
    if (Date.now() >= deadline) {
      const secs = Math.round((Date.now() - start) / 1000);
      const last = queueState ? `last queue state ${queueState}` : lastProblem ? `last problem: ${lastProblem}` : 'no answer yet';
      throw new TinkerError(`Tinker's ${o.what} (request ${o.requestId}) still queued after ${secs} s (${last})`, null, 'timeout', null, o.requestId);
    }
    const body: FutureRetrieveRequest = { request_id: o.requestId, allow_metadata_only: allowMetadataOnly };
    const headers: Record<string, string> = { [HEADER.requestIteration]: String(iteration++), [HEADER.requestType]: o.requestType };
    let res;
    try {
      res = await http.send(
        ROUTES.retrieveFuture,
        { what: `retrieve_future for ${o.what}`, body, accept: o.protobuf ? PROTOBUF : undefined, headers, timeoutMs: Math.min(http.requestTimeoutMs, Math.max(1, deadline - Date.now())) },
        newIdempotencyKey(),
      );
    } catch (err) {
      if (!(err instanceof TransportFailure)) throw err;
      lastProblem = err.message;
      note(`tinker: polling ${o.what} ${o.requestId}: ${err.message}; still trying`);
      await wait();
      continue;
    }

    if (res.status === 200) {
      if (res.contentType.includes(PROTOBUF)) return { kind: 'protobuf', bytes: res.bytes };
      let json: Record<string, unknown>;
      try {
        json = parseJson(res.bytes) as Record<string, unknown>;
      } catch {
        throw new TinkerError(`Tinker answered retrieve_future for ${o.what} with a body that is neither JSON nor protobuf (${res.contentType || 'no content type'})`, 200, 'protocol', null, o.requestId);
      }
      if (json?.type === 'try_again') {
        queued(json);
        await wait();
        continue;
      }
      if (json?.status === 'complete_metadata') {
        if (!allowMetadataOnly) throw new TinkerError(`Tinker answered retrieve_future for ${o.what} with metadata only although it was not allowed to`, 200, 'protocol', null, o.requestId);
        // The result is ready but was too large to inline; the next retrieve carries it.
        allowMetadataOnly = false;
        continue;
      }
      if (json && 'error' in json) {
        const category = CATEGORIES.includes(json.category as ErrorCategory) ? (json.category as ErrorCategory) : 'unknown';
        const whose = category === 'user' ? 'a user error' : category === 'server' ? 'a server error' : 'an error of unknown category';
        throw new TinkerError(`Tinker's ${o.what} (request ${o.requestId}) failed with ${whose}: ${String(json.error)}`, null, 'failed', category, o.requestId);
      }
      return { kind: 'json', body: json };
    }
    if (res.status === 408) {
      // A try_again dressed as an HTTP error; its body has the queue state.
      let b: unknown = null;
      try {
        b = parseJson(res.bytes);
      } catch {
        // no state to report
      }
      badRequests = 0;
      queued(b);
      await wait();
      continue;
    }
    if (res.status === 410) {
      throw new TinkerError(
        `the future for ${o.what} (request ${o.requestId}) expired on the Tinker side (410); the request must be sent again: ${errorDetail(res)}`,
        410,
        'expired',
        null,
        o.requestId,
      );
    }
    if (res.status === 429 || res.status >= 500 || (res.status === 400 && badRequests++ < MAX_BAD_REQUESTS)) {
      lastProblem = `${res.status}: ${errorDetail(res).slice(0, 200)}`;
      note(`tinker: polling ${o.what} ${o.requestId} answered ${lastProblem}; still trying`);
      await wait();
      continue;
    }
    throw statusError(`retrieve_future for ${o.what}`, res, o.requestId);
  }
}
