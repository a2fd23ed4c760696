// Serving through a vLLM server: prompts go as token ids and come back as exact sampled ids and
// log-probs (so feedback trains on what was really sampled). Each adapter version is loaded under
// its own name, `<adapter>@<version>`, loaded on first use and unloaded once nothing uses it. For an
// update, admission closes, in-flight requests finish, and vLLM sleeps; requests that arrive
// meanwhile wait and none is dropped.
import type { SampledToken } from '../engine/engine.js';
import { UpstreamError } from '../errors.js';
import type { GenerationRequest, GenerationResult, GenerationStats, ServedVersion, TokenGenerator } from './token-generator.js';
import type { VllmClient } from './vllm-client.js';

export function vllmModelName(v: { name: string; version: string }): string {
  return `${v.name}@${v.version}`;
}

export class VllmGenerator implements TokenGenerator {
  readonly kind = 'vllm';
  readonly stats: GenerationStats = { rounds: 0, generatedTokens: 0, promptTokens: 0, batchedSequences: 0 };
  private active = 0;
  private idle: (() => void)[] = [];
  private gate: { opened: Promise<void>; open: () => void } | null = null;
  /** vLLM names loaded (or loading) by this process. */
  private readonly loaded = new Map<string, Promise<void>>();
  private readonly uses = new Map<string, number>();
  /** Admin calls made, in order (shown in /v1/admin/status and checked by tests). */
  readonly events: { at: number; event: string }[] = [];

  constructor(
    readonly client: VllmClient,
    /** The base model's name on the vLLM server. */
    readonly baseModel: string,
  ) {}

  get size(): number {
    return this.active;
  }

  get admitting(): boolean {
    return this.gate === null;
  }

  private log(event: string): void {
    this.events.push({ at: Date.now(), event });
    if (this.events.length > 200) this.events.shift();
  }

  /** Loads a version under its versioned name unless this process already did. */
  async load(v: ServedVersion): Promise<void> {
    const name = vllmModelName(v);
    let p = this.loaded.get(name);
    if (!p) {
      if (!v.path) throw new UpstreamError(`adapter ${name} has no folder to load into vLLM`);
      const path = v.path;
      p = this.client.loadLoraAdapter(name, path).then(
        () => this.log(`load ${name}`),
        (err: unknown) => {
          this.loaded.delete(name);
          // Loaded by an earlier run of this process: vLLM already has it.
          if (err instanceof UpstreamError && err.status === 400 && /already been loaded/.test(err.message)) return;
          throw err;
        },
      );
      this.loaded.set(name, p);
    }
    await p;
  }

  /** Unloads the versions of `adapter` other than `keep` that no request is using. */
  async unloadStale(adapter: string, keep: string | null): Promise<void> {
    for (const name of [...this.loaded.keys()]) {
      if (!name.startsWith(`${adapter}@`) || name === (keep === null ? null : vllmModelName({ name: adapter, version: keep }))) continue;
      if ((this.uses.get(name) ?? 0) > 0) continue;
      this.loaded.delete(name);
      await this.client.unloadLoraAdapter(name);
      this.log(`unload ${name}`);
    }
  }

  /** Stops admitting, waits for in-flight generations, and puts vLLM to sleep (freeing the GPU). */
  async drain(): Promise<void> {
    if (!this.gate) {
      let open!: () => void;
      const opened = new Promise<void>((resolve) => (open = resolve));
      this.gate = { opened, open };
    }
    if (this.active > 0) await new Promise<void>((resolve) => this.idle.push(resolve));
    await this.client.sleep(1);
    this.log('sleep');
  }

  async wake(): Promise<void> {
    await this.client.wakeUp();
    this.log('wake_up');
  }

  /** Lets waiting and new requests through again. */
  admit(): void {
    this.gate?.open();
    this.gate = null;
  }

  async ready(): Promise<void> {
    while (this.gate) await this.gate.opened;
  }

  async generate(req: GenerationRequest): Promise<GenerationResult> {
    await this.ready();
    const name = req.served ? vllmModelName(req.served) : this.baseModel;
    this.active++;
    this.uses.set(name, (this.uses.get(name) ?? 0) + 1);
    this.stats.promptTokens += req.promptIds.length;
    try {
      if (req.served) {
        await this.load(req.served);
        // After a rollback or restore the alias names another version: drop the unused ones.
        const served = req.served;
        void this.unloadStale(served.name, served.version).catch((err: unknown) => this.log(`unload failed: ${(err as Error).message}`));
      }
      const tokens: SampledToken[] = [];
      const stream = this.client.streamTokens(
        {
          model: name,
          promptIds: req.promptIds,
          maxTokens: req.maxTokens,
          temperature: req.sampling.temperature,
          topP: req.sampling.topP,
          topK: req.sampling.topK,
          seed: req.seed,
          topLogprobs: req.sampling.topLogprobs,
          stopTokenIds: req.stopTokenIds,
        },
        req.signal,
      );
      let finishReason: GenerationResult['finishReason'] = 'stop';
      let stoppedHere = false;
      try {
        for (;;) {
          const next = await stream.next();
          if (next.done) {
            finishReason = next.value;
            break;
          }
          const t = next.value;
          const token: SampledToken = { id: t.id, logprob: t.logprob, topIds: Int32Array.from(t.top, (a) => a.id), topLogprobs: Float32Array.from(t.top, (a) => a.logprob) };
          tokens.push(token);
          this.stats.generatedTokens++;
          if (req.onToken?.(token, tokens.length - 1) === false) {
            stoppedHere = true;
            break;
          }
        }
      } catch (err) {
        if (!req.signal?.aborted) throw err;
      } finally {
        await stream.return(undefined as never);
      }
      if (req.signal?.aborted) finishReason = 'abort';
      else if (stoppedHere) finishReason = 'stop';
      return { tokens, finishReason, promptTokens: req.promptIds.length };
    } finally {
      this.uses.set(name, this.uses.get(name)! - 1);
      if (--this.active === 0) this.idle.splice(0).forEach((r) => r());
    }
  }
}
