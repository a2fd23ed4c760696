// The WebGPU engine model: the NativeModel interface (src/engine/native.ts) implemented with WGSL
// kernels. Weights and adapters live on the GPU; logits, log-probs, metrics and adapter state are
// the only readbacks. The model, its adapters and its sequences free their GPU memory on dispose(); each
// call holds what it uses until it ends.
//
// Decoding runs while a training or scoring call is in flight (concurrentLanes): the two share the
// device's one queue, which runs commands in the order they were submitted, so interleaving is safe
// as long as no buffer one call writes is touched by the other. Each call therefore works in its own
// workspace (WorkspacePool) and the step submits its work in chunks (sdpo-step.ts), so a decode's
// commands reach the queue between two chunks. Calls on one adapter never overlap a step writing it:
// the engine orders them (engine.ts). Device-level scratch (ops/rmsnorm.ts, ops/sdpo_loss.ts) is
// written and read within one synchronous stretch of recording, which no other call can split.
import { EngineError, InputError } from '../../errors.js';
import type { WeightSpec } from '../../model/weights.js';
import type {
  NativeAdapter,
  NativeConfig,
  NativeDecodeEntry,
  NativeModel,
  NativeSample,
  NativeSampled,
  NativeSequence,
  NativeStepOptions,
  NativeStepResult,
} from '../native.js';
import { GpuAdapter, Lifetime } from './adapter.js';
import { ModelContext } from './context.js';
import { Gpu } from './device.js';
import { forwardChunks, lmHead, runChunks } from './forward.js';
import { decodeStep, GpuSequence } from './generate.js';
import { ATTENTION_MAX_D } from './ops/attention.js';
import { log_softmax } from './ops/log_softmax.js';
import { SDPO_LOSS_MAX_K } from './ops/sdpo_loss.js';
import { TOPK_MAX_K } from './ops/topk.js';
import { token_logp } from './ops/token_logp.js';
import { SdpoStepRunner } from './sdpo-step.js';
import { logitChunks } from './vocab.js';
import { decideWeightStorage, type StorageDecision, type WeightStorageRequest } from './weight-storage.js';
import { WorkspacePool } from './workspace.js';

/** Which workspace a call takes: decode passes are a few rows, the others whole sequences. */
type CallKind = 'decode' | 'pass';

function checkIds(ids: Int32Array, vocab: number, what: string): void {
  if (!(ids instanceof Int32Array)) throw new InputError(`${what} must be an Int32Array`);
  for (const id of ids) if (id < 0 || id >= vocab) throw new InputError(`${what} has token id ${id} outside the vocabulary`);
}

export class WebGpuModel implements NativeModel {
  /** The device goes once no call is running; later calls fail with E_DISPOSED. */
  readonly life: Lifetime = new Lifetime('model', () => this.gpu.destroy());
  /** Decoding may run while a step (or scoring) is in flight; see the header. */
  readonly concurrentLanes = true;
  private readonly workspaces: WorkspacePool;

  private constructor(
    readonly gpu: Gpu,
    readonly ctx: ModelContext,
    readonly storage: StorageDecision,
  ) {
    this.workspaces = new WorkspacePool(gpu);
  }

  /**
   * Opens the GPU and uploads the model's weights, stored as weight-storage.ts decides for `weights`
   * (default 'auto'). `shaderF16: false` opens the device without shader-f16 even where offered.
   */
  static async load(spec: { config: NativeConfig; tensors: WeightSpec[] }, options: { weights?: WeightStorageRequest; shaderF16?: boolean } = {}): Promise<WebGpuModel> {
    const c = spec.config;
    if (c.heads % c.kvHeads !== 0 || c.headDim % 2 !== 0) throw new EngineError('E_CONFIG', 'invalid model dimensions');
    if (c.headDim > ATTENTION_MAX_D) throw new EngineError('E_CONFIG', `the WebGPU backend supports head_dim up to ${ATTENTION_MAX_D} (this model has ${c.headDim})`);
    const gpu = await Gpu.open(options.shaderF16 === false ? { shaderF16: false } : {});
    try {
      const storage = decideWeightStorage(options.weights ?? 'auto', gpu.f16, gpu.adapterName, spec.tensors);
      const ctx = ModelContext.load(gpu, c, spec.tensors, storage.storage);
      gpu.flush();
      return new WebGpuModel(gpu, ctx, storage);
    } catch (err) {
      gpu.destroy();
      throw err;
    }
  }

  get adapterName(): string {
    return this.gpu.adapterName;
  }

  /** The weight storage for logs, e.g. "weights f16 (checkpoint F16, adapter offers shader-f16), 1.2 MiB". */
  get weightStorage(): string {
    const w = this.ctx.weights;
    const kept = w.keptF32 > 0 ? `; ${w.keptF32} matrices kept f32: values beyond the f16 range` : '';
    return `weights ${this.storage.storage} (${this.storage.reason}${kept}), ${(w.bytes / 2 ** 20).toFixed(2)} MiB`;
  }

  private adapterArg(a: NativeAdapter | null | undefined, what = 'adapter'): GpuAdapter | null {
    if (a === null || a === undefined) return null;
    if (!(a instanceof GpuAdapter)) throw new InputError(`${what} must be an adapter of the WebGPU engine or null`);
    if (a.owner !== this) throw new InputError(`${what} belongs to another model`);
    return a;
  }

  /**
   * Runs `work` holding the model and `used` (acquired in order; E_DISPOSED for any already disposed),
   * so that a dispose() meanwhile frees them only once the work is done, in a context with a
   * workspace of its own for as long as it runs.
   */
  private async holding<T>(kind: CallKind, used: readonly ({ readonly life: Lifetime } | null)[], work: (ctx: ModelContext) => Promise<T>): Promise<T> {
    const held: Lifetime[] = [];
    try {
      for (const r of [this, ...new Set(used)]) {
        if (!r) continue;
        r.life.acquire();
        held.push(r.life);
      }
      const ws = this.workspaces.acquire(kind);
      try {
        return await work(this.ctx.withWorkspace(ws));
      } finally {
        this.workspaces.giveBack(ws);
      }
    } finally {
      for (const r of held.reverse()) r.release();
    }
  }

  /**
   * Submits what a pass recorded so far and waits for the GPU to run it, so that a decode arriving
   * meanwhile is queued next instead of behind the rest of the pass.
   */
  private async pause(): Promise<void> {
    this.gpu.flush();
    await this.gpu.device.queue.onSubmittedWorkDone();
  }

  createAdapter(options: Parameters<NativeModel['createAdapter']>[0]): NativeAdapter {
    this.life.checkLive();
    return GpuAdapter.create(this.gpu, this, this.ctx.cfg, options);
  }

  async forward(ids: Int32Array, adapter: NativeAdapter | null, useEma: boolean): Promise<Float32Array> {
    this.life.checkLive();
    checkIds(ids, this.ctx.cfg.vocab, 'ids');
    if (ids.length === 0) throw new InputError('ids must not be empty');
    const ad = this.adapterArg(adapter);
    return this.holding('pass', [ad], async (ctx) => {
      const lv = ad ? (useEma ? ad.ema() : ad.params) : null;
      const T = ids.length, V = ctx.cfg.vocab;
      const acts = await runChunks(forwardChunks(ctx, lv, ids, T, false, 'fw'), () => this.pause());
      const out = new Float32Array(T * V);
      for (const [r0, n] of logitChunks(ctx, T)) {
        const logits = ctx.ws.get('fwd.logits', n * V);
        lmHead(ctx, logits, acts.xf, r0, n, 'fw');
        out.set(new Float32Array(await this.gpu.read(logits, n * V * 4)), r0 * V);
      }
      return out;
    });
  }

  async tokenLogprobs(ids: Int32Array, adapter: NativeAdapter | null, start: number): Promise<Float32Array> {
    this.life.checkLive();
    checkIds(ids, this.ctx.cfg.vocab, 'ids');
    const T = ids.length;
    if (!Number.isInteger(start) || start < 1 || start >= T) throw new InputError('start must be in [1, ids.length)');
    const ad = this.adapterArg(adapter);
    return this.holding('pass', [ad], async (ctx) => {
      const lv = ad?.params ?? null;
      const R = T - start, V = ctx.cfg.vocab, ws = ctx.ws;
      const acts = await runChunks(forwardChunks(ctx, lv, ids, T, false, 'fw'), () => this.pause());
      const out = ws.get('lp.out', R);
      for (const [r0, n] of logitChunks(ctx, R)) {
        const logits = ws.get('lp.logits', n * V), logp = ws.get('lp.logp', n * V), lse = ws.get('lp.lse', n), part = ws.get('lp.part', n);
        const y = ws.get('lp.y', n);
        this.gpu.write(y, ids.subarray(start + r0, start + r0 + n));
        lmHead(ctx, logits, acts.xf, start - 1 + r0, n, 'fw');
        log_softmax(this.gpu, logp, lse, logits, n, V);
        token_logp(this.gpu, part, logp, y, n, V);
        this.gpu.copy(part, 0, out, r0 * 4, n * 4);
      }
      return new Float32Array(await this.gpu.read(out, R * 4));
    });
  }

  async sdpoStep(adapter: NativeAdapter, samples: NativeSample[], options: NativeStepOptions): Promise<NativeStepResult> {
    this.life.checkLive();
    const a = this.adapterArg(adapter);
    if (!a) throw new InputError('sdpoStep needs an adapter');
    if (!Array.isArray(samples) || samples.length === 0) throw new InputError('the batch is empty');
    const V = this.ctx.cfg.vocab;
    samples.forEach((s, i) => {
      checkIds(s.prompt, V, 'prompt');
      checkIds(s.teacherPrompt, V, 'teacherPrompt');
      checkIds(s.response, V, 'response');
      if (s.prompt.length === 0 || s.teacherPrompt.length === 0) throw new InputError(`sample ${i} has an empty prompt`);
      if (s.response.length === 0) throw new InputError(`sample ${i} has an empty response`);
      if (s.oldLogprobs && s.oldLogprobs.length !== s.response.length) throw new InputError(`sample ${i}: oldLogprobs must have one value per response token`);
      if (s.teacherK !== undefined && s.teacherK !== null) {
        const TK = s.response.length * s.teacherK;
        if (!(s.teacherK >= 1 && s.teacherK <= V)) throw new InputError('teacherK must be in [1, vocab]');
        if (s.teacherTopIds?.length !== TK || s.teacherTopLogprobs?.length !== TK || s.teacherTokenLogprobs?.length !== s.response.length) {
          throw new InputError('teacher targets must have response length * teacherK entries and one token log-prob per response token');
        }
        checkIds(s.teacherTopIds, V, 'teacherTopIds');
      }
    });
    if (!(options.topK >= 1 && options.topK <= V)) throw new InputError('topK must be in [1, vocab]');
    const maxK = Math.min(TOPK_MAX_K, SDPO_LOSS_MAX_K);
    if (options.topK > maxK || samples.some((s) => (s.teacherK ?? 0) > maxK)) throw new InputError(`the WebGPU backend keeps at most ${maxK} teacher top-K entries per position (use topK <= ${maxK})`);
    return this.holding('pass', [a], (ctx) => new SdpoStepRunner(ctx).run(a, samples, options));
  }

  createSequence(seed: number): NativeSequence {
    this.life.checkLive();
    if (typeof seed !== 'number') throw new InputError('createSequence expects a numeric seed');
    return new GpuSequence(this.gpu, this, seed);
  }

  async decode(entries: NativeDecodeEntry[]): Promise<NativeSampled[]> {
    this.life.checkLive();
    if (!Array.isArray(entries)) throw new InputError('decode expects an array of entries');
    const seqs = new Set<GpuSequence>();
    const adapters: (GpuAdapter | null)[] = [];
    entries.forEach((e, i) => {
      if (!(e.seq instanceof GpuSequence) || e.seq.owner !== this) throw new InputError('entry.seq must be a sequence of this model');
      if (seqs.has(e.seq)) throw new InputError('a sequence appears twice in one decode call');
      seqs.add(e.seq);
      adapters.push(this.adapterArg(e.adapter, `entries[${i}].adapter`));
      checkIds(e.ids, this.ctx.cfg.vocab, 'ids');
      if (e.ids.length === 0) throw new InputError('entry.ids is empty');
    });
    if (entries.length === 0) return [];
    return this.holding('decode', [...seqs, ...adapters], (ctx) => decodeStep(ctx, entries, adapters.map((a) => a?.params ?? null)));
  }

  dispose(): void {
    this.life.dispose();
  }

  /** dispose() under the name the tests of the WebGPU model use. */
  close(): void {
    this.dispose();
  }
}
