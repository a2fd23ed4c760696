// A typed client for a vLLM server (or anything speaking its API, such as `claas serve`): token-id
// completions with exact sampled ids and log-probs (streamed), prompt_logprobs scoring, LoRA
// load/unload, and sleep/wake. Expects vLLM started with --enable-lora, --enable-sleep-mode,
// --max-logprobs >= the teacher's K, and VLLM_ALLOW_RUNTIME_LORA_UPDATING=1 (see README).
import { UpstreamError } from '../errors.js';

export interface VllmTokenRequest {
  model: string;
  promptIds: readonly number[];
  maxTokens: number;
  temperature: number;
  topP: number;
  /** 0: no top-k cut. */
  topK: number;
  seed: number;
  /** Alternatives per token (0: only the sampled token's log-prob). */
  topLogprobs: number;
  stopTokenIds: readonly number[];
}

export interface VllmToken {
  id: number;
  logprob: number;
  top: { id: number; logprob: number }[];
}

export interface PromptLogprobRow {
  /** The prompt token at this position and its log-probability and rank. */
  id: number;
  logprob: number;
  rank: number;
  /** The k most likely tokens, best first. */
  top: { id: number; logprob: number }[];
}

export interface VllmModel {
  id: string;
  root?: string;
  parent?: string | null;
}

const TOKEN_ID = /^token_id:(\d+)$/;

function tokenId(s: string): number {
  const m = TOKEN_ID.exec(s);
  if (!m) throw new UpstreamError(`expected a token as "token_id:N" (return_tokens_as_token_ids), got ${JSON.stringify(s)}`);
  return Number(m[1]);
}

interface LegacyLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[] | null;
}

function tokensOf(lp: LegacyLogprobs | null | undefined): VllmToken[] {
  if (!lp) return [];
  return lp.tokens.map((t, i) => {
    const top = Object.entries(lp.top_logprobs?.[i] ?? {})
      .map(([k, v]) => ({ id: tokenId(k), logprob: v }))
      .sort((a, b) => b.logprob - a.logprob);
    return { id: tokenId(t), logprob: lp.token_logprobs[i] ?? -Infinity, top };
  });
}

export class VllmClient {
  readonly baseUrl: string;
  private readonly headers: Record<string, string>;

  constructor(
    baseUrl: string,
    private readonly options: { apiKey?: string; timeoutMs?: number } = {},
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, '').replace(/\/v1$/, '');
    this.headers = options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {};
  }

  private async call(method: 'GET' | 'POST', path: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
    const timeout = AbortSignal.timeout(this.options.timeoutMs ?? 600_000);
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers: body === undefined ? this.headers : { ...this.headers, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new UpstreamError(`vLLM at ${this.baseUrl} could not be reached (${method} ${path}): ${(err as Error).message}`);
    }
    if (!res.ok) {
      const text = await res.text();
      let message = text;
      try {
        const j = JSON.parse(text) as { error?: { message?: string } | string; message?: string; detail?: unknown };
        message = (typeof j.error === 'string' ? j.error : j.error?.message) ?? j.message ?? (j.detail !== undefined ? JSON.stringify(j.detail) : text);
      } catch {
        // not JSON: keep the text
      }
      throw new UpstreamError(`vLLM ${method} ${path} answered ${res.status}: ${message}`, res.status);
    }
    return res;
  }

  private async json<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    return (await (await this.call(method, path, body)).json()) as T;
  }

  async models(): Promise<VllmModel[]> {
    return (await this.json<{ data: VllmModel[] }>('GET', '/v1/models')).data;
  }

  /** The base model's name: the entry that is not an adapter. */
  async baseModel(): Promise<string> {
    const base = (await this.models()).find((m) => m.parent === null || m.parent === undefined);
    if (!base) throw new UpstreamError(`vLLM at ${this.baseUrl} lists no base model`);
    return base.id;
  }

  async loadLoraAdapter(name: string, path: string): Promise<void> {
    await this.call('POST', '/v1/load_lora_adapter', { lora_name: name, lora_path: path });
  }

  async unloadLoraAdapter(name: string): Promise<void> {
    await this.call('POST', '/v1/unload_lora_adapter', { lora_name: name });
  }

  /** Level 1 offloads the weights to host memory and drops the KV cache, freeing the accelerator. */
  async sleep(level: 1 | 2 = 1): Promise<void> {
    await this.call('POST', `/sleep?level=${level}`);
  }

  async wakeUp(): Promise<void> {
    await this.call('POST', '/wake_up');
  }

  async isSleeping(): Promise<boolean> {
    return (await this.json<{ is_sleeping: boolean }>('GET', '/is_sleeping')).is_sleeping;
  }

  private completionBody(req: VllmTokenRequest, stream: boolean): Record<string, unknown> {
    return {
      model: req.model,
      prompt: req.promptIds,
      max_tokens: req.maxTokens,
      temperature: req.temperature,
      top_p: req.topP,
      top_k: req.topK > 0 ? req.topK : -1,
      seed: req.seed,
      logprobs: req.topLogprobs,
      return_tokens_as_token_ids: true,
      stop_token_ids: req.stopTokenIds,
      skip_special_tokens: false,
      stream,
    };
  }

  /**
   * Generates from token ids, yielding each sampled token with its log-prob as it arrives. Breaking
   * out of the loop (or aborting `signal`) cancels the request upstream.
   */
  async *streamTokens(req: VllmTokenRequest, signal?: AbortSignal): AsyncGenerator<VllmToken, 'stop' | 'length', void> {
    const ac = new AbortController();
    const both = signal ? AbortSignal.any([signal, ac.signal]) : ac.signal;
    const res = await this.call('POST', '/v1/completions', this.completionBody(req, true), both);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let finish: 'stop' | 'length' = 'stop';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let nl: number;
        while ((nl = buffer.indexOf('\n\n')) >= 0) {
          const event = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 2);
          const data = event
            .split('\n')
            .filter((l) => l.startsWith('data:'))
            .map((l) => l.slice(5).trim())
            .join('');
          if (data === '' || data === '[DONE]') continue;
          const chunk = JSON.parse(data) as { error?: { message?: string }; choices?: { logprobs?: LegacyLogprobs | null; finish_reason?: string | null }[] };
          if (chunk.error) throw new UpstreamError(`vLLM stream failed: ${chunk.error.message ?? JSON.stringify(chunk.error)}`);
          for (const c of chunk.choices ?? []) {
            for (const t of tokensOf(c.logprobs)) yield t;
            if (c.finish_reason === 'length') finish = 'length';
          }
        }
      }
    } finally {
      ac.abort();
      reader.releaseLock();
    }
    return finish;
  }

  /**
   * vLLM's prompt_logprobs: for each prompt position after the first, the prompt token's log-prob
   * and rank and the k most likely tokens (the remote teacher's scoring call).
   */
  async promptLogprobs(model: string, ids: readonly number[], k: number): Promise<PromptLogprobRow[]> {
    const body = { model, prompt: ids, max_tokens: 1, temperature: 0, prompt_logprobs: k };
    const out = await this.json<{ prompt_logprobs?: (Record<string, { logprob: number; rank: number | null }> | null)[] }>('POST', '/v1/completions', body);
    const rows = out.prompt_logprobs;
    if (!Array.isArray(rows) || rows.length !== ids.length) throw new UpstreamError(`vLLM returned ${Array.isArray(rows) ? rows.length : 'no'} prompt_logprobs rows for ${ids.length} prompt tokens`);
    return rows.slice(1).map((row, i) => {
      if (!row) throw new UpstreamError(`vLLM returned no prompt_logprobs at position ${i + 1}`);
      const id = ids[i + 1]!;
      const own = row[String(id)];
      if (!own) throw new UpstreamError(`vLLM's prompt_logprobs at position ${i + 1} lack the prompt token ${id}`);
      const top = Object.entries(row)
        .filter(([, v]) => v.rank !== null && v.rank <= k)
        .map(([key, v]) => ({ id: Number(key), logprob: v.logprob, rank: v.rank! }))
        .sort((a, b) => a.rank - b.rank)
        .map(({ id: t, logprob }) => ({ id: t, logprob }));
      return { id, logprob: own.logprob, rank: own.rank ?? k + 1, top };
    });
  }
}
