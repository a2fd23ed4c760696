// Serving on the embedded engine: resolves the model name (base model or a resident adapter),
// renders the conversation, generates n choices through the generation backend (embedded scheduler or vLLM) with stop sequences and
// log-probabilities, parses the reply, and stores the completion record before returning.
import { randomUUID } from 'node:crypto';
import { basename } from 'node:path';
import type { Adapter, Engine, SampledToken } from '../engine/engine.js';
import { InputError, NotFoundError } from '../errors.js';
import type { ChatMessage, ChatTemplate, ToolDefinition } from '../model/chat-template.js';
import type { GenerationDefaults } from '../model/generation-config.js';
import type { Tokenizer } from '../model/tokenizer.js';
import type { Store } from '../store/store.js';
import { parseReply, ReplyStream, type ReplyDelta } from './reply-stream.js';
import { ResidentAdapters, type AdapterLease } from './resident-adapters.js';
import type { TokenGenerator } from './token-generator.js';
import type { ParsedToolCall } from './tool-calls.js';
import { checkPromptLogprobs, checkPromptTokens } from './work-bounds.js';

export interface SamplingRequest {
  model: string;
  n: number;
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  seed?: number;
  stop: string[];
  /** Alternatives per token, or undefined when log-probabilities were not asked for. */
  logprobs?: number;
  /** Aborts the generation (the client went away). */
  signal?: AbortSignal;
  /** The completion id to use (streaming sends it before the record exists). */
  id?: string;
  /** Token ids that end a choice besides the model's own end tokens. */
  stopTokenIds?: number[];
  /** Keep special tokens in the text (text completions; default: drop them). */
  keepSpecialTokens?: boolean;
  /** The client's end-user id, kept with the record. */
  user?: string;
  /** The tenant of the API key that asked, stored with the record. */
  tenant?: string | null;
}

export interface ChatRequest extends SamplingRequest {
  messages: ChatMessage[];
  tools?: ToolDefinition[];
  enableThinking?: boolean;
}

export interface CompletionRequest extends SamplingRequest {
  prompt: string | number[];
}

export interface TokenLogprob {
  id: number;
  token: string;
  logprob: number;
  top: { id: number; token: string; logprob: number }[];
}

export interface ChoiceResult {
  index: number;
  text: string;
  reasoning: string | null;
  content: string;
  toolCalls: ParsedToolCall[];
  finishReason: 'stop' | 'length' | 'tool_calls';
  tokens: TokenLogprob[];
}

export interface GenerationOutcome {
  id: string;
  created: number;
  model: string;
  choices: ChoiceResult[];
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}

/** Receives streamed deltas per choice; `tokens` are those the delta came from. */
export type DeltaSink = (index: number, delta: ReplyDelta, tokens: TokenLogprob[]) => void;

export interface ServedAdapter {
  name: string;
  version: string;
  adapter: Adapter;
  /** The version's folder, when it has one on disk. */
  path?: string;
}

export interface InferenceOptions {
  /** Name the base model is served under (default: the model folder's name). */
  modelName?: string;
  /** Default for Qwen3's enable_thinking when a request does not say (default false). */
  enableThinking?: boolean;
  /** Default and ceiling of max_tokens. */
  defaultMaxTokens?: number;
  maxTokensLimit?: number;
  /** Longest prompt accepted, in tokens (default: the model's context). */
  maxPromptTokens?: number;
  /** The most bytes resident adapters may hold (default: no bound); the least recently used go first. */
  adapterMemoryBytes?: number;
}

export function newCompletionId(prefix: 'chatcmpl' | 'cmpl'): string {
  return `${prefix}-${randomUUID().replaceAll('-', '')}`;
}

export class InferenceService {
  readonly modelName: string;
  readonly created = Math.floor(Date.now() / 1000);
  /** Which version each adapter name serves, and which are resident in the engine. */
  readonly adapters: ResidentAdapters;
  readonly stopTokenIds: number[];
  /** Whether chat renders with thinking on when a request does not say. */
  readonly enableThinking: boolean;
  readonly defaultMaxTokens: number;
  readonly maxTokensLimit: number;
  readonly maxPromptTokens: number;

  constructor(
    readonly engine: Engine,
    readonly tokenizer: Tokenizer,
    readonly template: ChatTemplate,
    readonly defaults: GenerationDefaults,
    readonly generator: TokenGenerator,
    /** The server's state (owned: closed with the service). */
    readonly store: Store,
    options: InferenceOptions = {},
  ) {
    this.modelName = options.modelName ?? basename(engine.modelDir);
    this.stopTokenIds = [...new Set([...tokenizer.eosTokenIds, ...(defaults.eosTokenIds ?? []), ...engine.config.eosTokenIds])];
    this.enableThinking = options.enableThinking ?? false;
    this.defaultMaxTokens = options.defaultMaxTokens ?? defaults.maxNewTokens ?? 512;
    this.maxTokensLimit = options.maxTokensLimit ?? 8192;
    this.maxPromptTokens = Math.min(options.maxPromptTokens ?? Infinity, engine.config.maxPositionEmbeddings - 1);
    this.adapters = new ResidentAdapters(engine, options.adapterMemoryBytes ?? Infinity);
  }

  private sleeping: { level: number; woken: Promise<void>; wake: () => void } | null = null;

  /** vLLM semantics: while asleep, new generations wait for wake_up (none is dropped). */
  sleep(level: number): void {
    if (this.sleeping) return;
    let wake!: () => void;
    const woken = new Promise<void>((resolve) => (wake = resolve));
    this.sleeping = { level, woken, wake };
  }

  wakeUp(): void {
    this.sleeping?.wake();
    this.sleeping = null;
  }

  get isSleeping(): boolean {
    return this.sleeping !== null;
  }

  /** Waits while asleep, and while the backend is updating (so the request gets the new version). */
  async awake(): Promise<void> {
    while (this.sleeping) await this.sleeping.woken;
    await this.generator.ready();
  }

  /**
   * vLLM's prompt_logprobs: for each prompt position after the first, the log-probability of the
   * prompt token and the top-k alternatives (the remote-teacher scoring call).
   */
  async promptLogprobs(model: string, ids: number[], k: number): Promise<({ id: number; logprob: number; rank: number; top: { id: number; logprob: number }[] } | null)[]> {
    checkPromptLogprobs(ids.length, k, this.engine.config.vocabSize);
    await this.awake();
    const lease = await this.lease(model);
    let logits: Float32Array;
    try {
      logits = await this.engine.logits(ids, lease?.adapter ?? null);
    } finally {
      lease?.release();
    }
    const V = this.engine.config.vocabSize;
    const out: ({ id: number; logprob: number; rank: number; top: { id: number; logprob: number }[] } | null)[] = [null];
    const better = (row: Float32Array, a: number, b: number) => row[a]! > row[b]! || (row[a] === row[b] && a < b);
    for (let t = 1; t < ids.length; t++) {
      const row = logits.subarray((t - 1) * V, t * V);
      let m = -Infinity;
      for (const x of row) m = Math.max(m, x);
      let sum = 0;
      for (const x of row) sum += Math.exp(x - m);
      const lse = m + Math.log(sum);
      const id = ids[t]!;
      // One pass: the rank of the prompt token and the k best ids (kept sorted, best first).
      let rank = 1;
      const top: number[] = [];
      for (let v = 0; v < V; v++) {
        if (v !== id && better(row, v, id)) rank++;
        if (k === 0 || (top.length === k && !better(row, v, top[k - 1]!))) continue;
        let at = top.length;
        while (at > 0 && better(row, v, top[at - 1]!)) at--;
        top.splice(at, 0, v);
        if (top.length > k) top.pop();
      }
      out.push({ id, logprob: row[id]! - lse, rank, top: top.map((v) => ({ id: v, logprob: row[v]! - lse })) });
    }
    return out;
  }

  /** Closes the state database (after the last request). */
  close(): Promise<void> {
    return this.store.close();
  }

  /** Makes an adapter servable under `name` (replacing an earlier version atomically). */
  setAdapter(name: string, version: string, adapter: Adapter, path?: string, managed = false): void {
    this.adapters.set(name, version, adapter, path, managed);
  }

  removeAdapter(name: string): boolean {
    return this.adapters.remove(name);
  }

  listModels(): { id: string; created: number; owned_by: string; root: string; parent: string | null }[] {
    return [
      { id: this.modelName, created: this.created, owned_by: 'claas', root: this.modelName, parent: null },
      ...this.adapters.names().map((a) => ({ id: a.name, created: this.created, owned_by: 'claas', root: `${a.name}@${a.version}`, parent: this.modelName })),
    ];
  }

  /** The adapter a model name serves (null: the base model), leased until released; 404 when unknown. */
  async lease(model: string): Promise<AdapterLease | null> {
    if (model === this.modelName) return null;
    if (!(await this.adapters.ensure(model))) throw new NotFoundError(`The model \`${model}\` does not exist.`);
    return this.adapters.acquire(model);
  }

  private tokenText(id: number): string {
    return this.tokenizer.decode([id]);
  }

  private logprobEntry(t: SampledToken, top: number): TokenLogprob {
    return {
      id: t.id,
      token: this.tokenText(t.id),
      logprob: t.logprob,
      top: Array.from(t.topIds.slice(0, top), (id, i) => ({ id, token: this.tokenText(id), logprob: t.topLogprobs[i]! })),
    };
  }

  async chat(req: ChatRequest, sink?: DeltaSink): Promise<GenerationOutcome> {
    await this.awake();
    if (req.model !== this.modelName && !(await this.adapters.ensure(req.model))) throw new NotFoundError(`The model \`${req.model}\` does not exist.`);
    const enableThinking = req.enableThinking ?? this.enableThinking;
    const prompt = this.template.render(req.messages, { tools: req.tools, addGenerationPrompt: true, enableThinking });
    const promptIds = await this.tokenizer.encodeAsync(prompt, { addSpecialTokens: false });
    return this.leased(req.model, (served) => this.run(req, promptIds, served, (req.tools?.length ?? 0) > 0, sink, { messages: req.messages, tools: req.tools }, enableThinking));
  }

  async complete(req: CompletionRequest, sink?: DeltaSink): Promise<GenerationOutcome> {
    await this.awake();
    if (req.model !== this.modelName && !(await this.adapters.ensure(req.model))) throw new NotFoundError(`The model \`${req.model}\` does not exist.`);
    const promptIds = typeof req.prompt === 'string' ? await this.tokenizer.encodeAsync(req.prompt, { addSpecialTokens: false }) : req.prompt;
    if (promptIds.length === 0) throw new InputError('prompt is empty');
    return this.leased(req.model, (served) => this.run(req, promptIds, served, false, sink, { prompt: req.prompt }, false, true));
  }

  /** Runs `fn` with the model's adapter leased (so it is not evicted or freed meanwhile). */
  private async leased<T>(model: string, fn: (served: ServedAdapter | null) => Promise<T>): Promise<T> {
    const lease = await this.lease(model);
    try {
      return await fn(lease && { name: lease.name, version: lease.version, adapter: lease.adapter, path: lease.path });
    } finally {
      lease?.release();
    }
  }

  private async run(
    req: SamplingRequest,
    promptIds: number[],
    served: ServedAdapter | null,
    tools: boolean,
    sink: DeltaSink | undefined,
    recordRequest: Record<string, unknown>,
    enableThinking: boolean,
    raw = false,
  ): Promise<GenerationOutcome> {
    const limit = this.engine.config.maxPositionEmbeddings;
    checkPromptTokens(promptIds.length, this.maxPromptTokens, limit);
    const maxTokens = Math.min(req.maxTokens ?? this.defaultMaxTokens, this.maxTokensLimit, limit - promptIds.length);
    const temperature = req.temperature ?? this.defaults.temperature ?? 1;
    const sampling = {
      temperature,
      topP: req.topP ?? this.defaults.topP ?? 1,
      topK: req.topK ?? this.defaults.topK ?? 0,
      topLogprobs: req.logprobs ?? 0,
      vocabLimit: Math.min(this.tokenizer.vocabSize, this.engine.config.vocabSize),
    };
    const baseSeed = req.seed ?? Math.floor(Math.random() * 2 ** 31);
    const maxStop = Math.max(0, ...req.stop.map((s) => s.length));

    const choice = async (index: number): Promise<{ result: ChoiceResult; ids: number[]; logprobs: number[] }> => {
      const decoder = this.tokenizer.createStreamDecoder({ skipSpecialTokens: req.keepSpecialTokens !== true });
      const stream = raw ? undefined : new ReplyStream(tools);
      let text = '';
      let shown = 0; // characters of `text` passed on (the rest may still turn into a stop sequence)
      let stopped = false;
      let pendingTokens: TokenLogprob[] = [];
      const emit = (upTo: number) => {
        if (!sink || upTo <= shown) return;
        const piece = text.slice(shown, upTo);
        shown = upTo;
        const delta = stream ? stream.push(piece) : { content: piece };
        if (delta.content !== undefined || delta.reasoning !== undefined) {
          sink(index, delta, pendingTokens);
          pendingTokens = [];
        }
      };
      const result = await this.generator.generate({
        promptIds,
        adapter: served?.adapter ?? null,
        served: served ? { name: served.name, version: served.version, path: served.path } : null,
        tenant: req.tenant ?? null,
        maxTokens,
        sampling,
        seed: baseSeed + index,
        stopTokenIds: req.stopTokenIds?.length ? [...this.stopTokenIds, ...req.stopTokenIds] : this.stopTokenIds,
        signal: req.signal,
        onToken: (t) => {
          if (sink && req.logprobs !== undefined) pendingTokens.push(this.logprobEntry(t, req.logprobs));
          text += decoder.push(t.id);
          for (const s of req.stop) {
            const at = text.indexOf(s, Math.max(0, shown - s.length));
            if (at >= 0) {
              text = text.slice(0, at);
              stopped = true;
              return false;
            }
          }
          emit(text.length - Math.max(0, maxStop - 1));
          return true;
        },
      });
      if (!stopped) text += decoder.flush();
      if (sink) {
        emit(text.length);
        const last = stream ? stream.end() : {};
        if (last.content !== undefined || last.reasoning !== undefined || last.toolCalls || pendingTokens.length > 0) sink(index, last, pendingTokens);
      }
      const parsed = raw ? { content: text, reasoning: null, toolCalls: [] } : parseReply(text, tools);
      const toolCalls = parsed.toolCalls;
      const finishReason = toolCalls.length > 0 ? 'tool_calls' : result.finishReason === 'length' ? 'length' : 'stop';
      return {
        result: {
          index,
          text,
          reasoning: parsed.reasoning,
          content: parsed.content,
          toolCalls,
          finishReason,
          tokens: req.logprobs !== undefined ? result.tokens.map((t) => this.logprobEntry(t, req.logprobs!)) : [],
        },
        ids: result.tokens.map((t) => t.id),
        logprobs: result.tokens.map((t) => t.logprob),
      };
    };

    const created = Math.floor(Date.now() / 1000);
    const id = req.id ?? newCompletionId(raw ? 'cmpl' : 'chatcmpl');
    const choices = await Promise.all(Array.from({ length: req.n }, (_, i) => choice(i)));
    await this.store.completions.save({
      id,
      createdAt: Date.now(),
      model: req.model,
      adapter: served?.name ?? null,
      adapterVersion: served?.version ?? null,
      tenant: req.tenant ?? null,
      request: { ...recordRequest, model: req.model, n: req.n, max_tokens: req.maxTokens, temperature, top_p: sampling.topP, seed: req.seed, stop: req.stop, ...(req.user !== undefined ? { user: req.user } : {}) },
      promptIds,
      enableThinking,
      choices: choices.map((c) => ({ index: c.result.index, outputIds: c.ids, outputLogprobs: c.logprobs, text: c.result.text, finishReason: c.result.finishReason })),
    });
    const completionTokens = choices.reduce((s, c) => s + c.ids.length, 0);
    return {
      id,
      created,
      model: req.model,
      choices: choices.map((c) => c.result),
      usage: { prompt_tokens: promptIds.length, completion_tokens: completionTokens, total_tokens: promptIds.length + completionTokens },
    };
  }
}
