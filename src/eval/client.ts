// The eval's view of a CLaaS server: plain HTTP calls, exactly as any client would make them.
export interface ChatReply {
  id: string;
  text: string;
  /**
   * The reply's entropy (nats): the sum over its positions of each position's entropy over its top-20
   * alternatives. For a sampled reply this estimates the entropy of the whole reply, whatever its
   * length or tokenization (capitals are spelled in more tokens, yet choose among as many replies).
   */
  entropy: number;
}

function replyEntropy(content: { top_logprobs: { logprob: number }[] }[]): number {
  let sum = 0;
  for (const c of content) {
    const p = c.top_logprobs.map((a) => Math.exp(a.logprob));
    const z = p.reduce((a, b) => a + b, 0);
    sum += -p.reduce((a, q) => a + (q > 0 ? (q / z) * Math.log(q / z) : 0), 0);
  }
  return sum;
}

export class EvalClient {
  constructor(
    readonly url: string,
    private readonly key?: string,
  ) {}

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = this.key ? { authorization: `Bearer ${this.key}` } : {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${this.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path} answered ${res.status}: ${text.slice(0, 300)}`);
    return JSON.parse(text) as T;
  }

  async baseModel(): Promise<string> {
    const models = await this.call<{ data: { id: string; parent: string | null }[] }>('GET', '/v1/models');
    return models.data.find((m) => m.parent === null)!.id;
  }

  /** A chat reply, greedy unless a temperature is given; `'served'` sends none (the model's own sampling settings). */
  async chat(model: string, prompt: string, opts: { temperature?: number | 'served'; seed?: number; maxTokens?: number } = {}): Promise<ChatReply> {
    const r = await this.call<{ id: string; choices: { message: { content: string | null }; logprobs: { content: { top_logprobs: { logprob: number }[] }[] } | null }[] }>('POST', '/v1/chat/completions', {
      model,
      messages: [{ role: 'user', content: prompt }],
      max_tokens: opts.maxTokens ?? 48,
      temperature: opts.temperature === 'served' ? undefined : (opts.temperature ?? 0),
      seed: opts.seed,
      logprobs: true,
      top_logprobs: 20,
    });
    const c = r.choices[0]!;
    return { id: r.id, text: c.message.content ?? '', entropy: replyEntropy(c.logprobs?.content ?? []) };
  }

  /**
   * For each reply, the sum of its log-probs after the Qwen3 chat rendering of `prompt`
   * (prompt_logprobs scoring); the rendered prompt's length is asked once.
   */
  async replyLogprobs(model: string, prompt: string, replies: string[]): Promise<number[]> {
    const head = `<|im_start|>user\n${prompt}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n`;
    const alone = await this.call<{ usage: { prompt_tokens: number } }>('POST', '/v1/completions', { model, prompt: head, max_tokens: 1, temperature: 0 });
    const out: number[] = [];
    for (const reply of replies) {
      const full = await this.call<{ prompt_logprobs: (Record<string, { logprob: number; rank: number }> | null)[] }>('POST', '/v1/completions', {
        model,
        prompt: `${head}${reply}<|im_end|>`,
        max_tokens: 1,
        temperature: 0,
        prompt_logprobs: 0,
      });
      // Each row holds the scored prompt token (rank given) and no alternatives (k = 0).
      out.push(full.prompt_logprobs.slice(alone.usage.prompt_tokens).reduce((s, row) => s + Math.min(...Object.values(row ?? {}).map((e) => e.logprob)), 0));
    }
    return out;
  }

  /** A new adapter; rank, alpha and target modules are sent only when given (else the server's defaults). */
  async createAdapter(id: string, seed: number, lora: { rank?: number; alpha?: number; targetModules?: string[] } = {}): Promise<void> {
    const alpha = lora.alpha ?? (lora.rank !== undefined ? 2 * lora.rank : undefined);
    await this.call('POST', '/v1/lora/init', { lora_id: id, seed, ...(lora.rank !== undefined ? { rank: lora.rank } : {}), ...(alpha !== undefined ? { alpha } : {}), ...(lora.targetModules ? { target_modules: lora.targetModules } : {}) });
  }

  async deleteAdapter(id: string): Promise<void> {
    await this.call('DELETE', `/v1/lora/${id}`).catch(() => undefined);
  }

  /** Gives feedback on a reply and waits for its update; returns the job's result. */
  async feedback(adapter: string, completionId: string, text: string, training: Record<string, unknown>): Promise<Record<string, unknown>> {
    const { job_id: job } = await this.call<{ job_id: string }>('POST', '/v1/feedback', { lora_id: adapter, completion_id: completionId, feedback: text, training });
    for (let i = 0; i < 6000; i++) {
      const r = await this.call<{ status: string; result: Record<string, unknown> | null; error: string | null }>('GET', `/v1/feedback/jobs/${job}`);
      if (r.status === 'done') return r.result ?? {};
      if (r.status === 'failed') throw new Error(`feedback job ${job} failed: ${r.error}`);
      await new Promise((res) => setTimeout(res, 25));
    }
    throw new Error(`feedback job ${job} did not finish`);
  }
}
