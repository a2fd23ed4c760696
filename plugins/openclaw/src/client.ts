// The CLaaS HTTP calls the plugin makes: POST /v1/feedback (a batch, with an idempotency key so a
// retried request is not trained twice) and GET /v1/feedback/jobs/:id. Failures are classified:
// a 4xx other than 408/425/429 is permanent (retrying cannot help); anything else is transient.

export class ServerError extends Error {
  constructor(
    message: string,
    /** HTTP status, or null when no response came. */
    readonly status: number | null,
  ) {
    super(message);
  }

  get permanent(): boolean {
    return this.status !== null && this.status >= 400 && this.status < 500 && ![408, 425, 429].includes(this.status);
  }
}

export interface FeedbackRequest {
  completionId: string;
  feedback: string;
}

export interface JobState {
  id: string;
  status: 'queued' | 'running' | 'done' | 'failed';
  /** On done: { version, parent_version, promoted, guard, metrics, ... }. */
  result: { version?: number; parent_version?: number; promoted?: boolean; guard?: { reason?: string | null } } | null;
  error: string | null;
}

export type Fetch = (url: string, init: { method: string; headers: Record<string, string>; body?: string; signal?: AbortSignal }) => Promise<{ status: number; text(): Promise<string> }>;

export class ClaasClient {
  constructor(
    private readonly baseUrl: string,
    private readonly apiKey: string | undefined,
    private readonly fetchFn: Fetch = (url, init) => fetch(url, init),
    private readonly timeoutMs = 30_000,
  ) {}

  private async call(method: string, path: string, body?: unknown, extra: Record<string, string> = {}): Promise<unknown> {
    const headers: Record<string, string> = { accept: 'application/json', ...extra };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
    let res: { status: number; text(): Promise<string> };
    try {
      res = await this.fetchFn(`${this.baseUrl}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(this.timeoutMs) });
    } catch (err) {
      throw new ServerError(`cannot reach ${this.baseUrl}: ${(err as Error).message}`, null);
    }
    const text = await res.text();
    let json: unknown = undefined;
    try {
      json = text === '' ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (res.status >= 400) {
      const msg = (json as { error?: { message?: unknown } } | undefined)?.error?.message;
      throw new ServerError(`${typeof msg === 'string' ? msg : text.slice(0, 200) || 'no message'} (HTTP ${res.status})`, res.status);
    }
    return json;
  }

  /** Submits items for one adapter; returns their job ids in order. */
  async submit(adapter: string, items: readonly FeedbackRequest[], idempotencyKey: string): Promise<string[]> {
    const body = { requests: items.map((i) => ({ lora_id: adapter, completion_id: i.completionId, feedback: i.feedback })) };
    const out = (await this.call('POST', '/v1/feedback', body, { 'idempotency-key': idempotencyKey })) as { jobs?: { job_id?: unknown }[] } | undefined;
    const ids = out?.jobs?.map((j) => j.job_id);
    if (!ids || ids.length !== items.length || !ids.every((x): x is string => typeof x === 'string')) throw new ServerError('the server answered POST /v1/feedback without a job id per item', null);
    return ids;
  }

  async job(id: string): Promise<JobState> {
    const j = (await this.call('GET', `/v1/feedback/jobs/${encodeURIComponent(id)}`)) as { job_id: string; status: JobState['status']; result: JobState['result']; error: string | null };
    return { id: j.job_id, status: j.status, result: j.result ?? null, error: j.error ?? null };
  }
}
