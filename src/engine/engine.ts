// The engine facade: open a model folder, create / load / save LoRA adapters, score sequences and run
// SDPO steps. Every heavy call runs in the addon off the event loop, in one of two lanes: decoding for
// the people waiting on replies, and everything else (training, scoring). On every backend the lanes
// run at once (CPU: threads; CUDA: a stream each; WebGPU: the step in chunks, decoding in between), so
// a training step does not stall decoding; calls within a lane run in order,
// and an adapter is never read while a step updates it.
import { availableParallelism } from 'node:os';
import { basename, resolve } from 'node:path';
import { fromNative, InputError, ShapeError } from '../errors.js';
import { readModelConfig, type ModelConfig } from '../model/config.js';
import { weightSpecs } from '../model/weights.js';
import { pickBackend, type BackendChoice, type BackendName, type BackendRequest } from './backend.js';
import { cudaAddon } from './cuda.js';
import { LORA_MODULES, peftKey, type LoraModule } from './lora-modules.js';
import { nativeAddon, type NativeAdapter, type NativeConfig, type NativeModel, type NativeSample, type NativeSampled, type NativeSequence } from './native.js';
import { loadAdapterFiles, MAX_LORA_ALPHA, MAX_LORA_RANK, readAdapterConfig, saveAdapterFiles, validateTargets, type AdapterFileState, type LoraShape, type LoraTensorSlot } from './peft.js';
import { resolveSdpoOptions, type SdpoOptions } from './sdpo-options.js';
import { checkWeightStorageRequest, type WeightStorageRequest } from './webgpu/weight-storage.js';

export interface EngineOpenOptions {
  backend?: BackendRequest;
  /**
   * WebGPU backend only: storage of the frozen weight matrices, 'auto' (default: f16 when the adapter
   * offers shader-f16 and the checkpoint is 16-bit), 'f16' or 'f32' (src/engine/webgpu/weight-storage.ts).
   */
  webgpuWeights?: WeightStorageRequest;
  /** Worker threads for GEMMs and kernels (default: defaultThreads). */
  threads?: number;
}

/**
 * Threads a CPU engine uses unless told: all cores, except for models so narrow that waking a second
 * thread costs more than it saves. Measured on two cores (docs/learning.md, "Feedback to live"): the
 * toy (hidden 128) ran an 8-step SDPO update in 65 ms on one thread and 100 ms on two; a hidden-256
 * model was already faster on two (56 against 64 ms for 2 steps).
 */
export function defaultThreads(hiddenSize: number, cores = availableParallelism()): number {
  return hiddenSize < 256 ? 1 : cores;
}

export interface CreateAdapterOptions {
  rank?: number;
  alpha?: number;
  targetModules?: readonly string[];
  /** Seed of the A initialization (default: random). */
  seed?: number;
}

export interface SdpoSample {
  /** Student prompt x: chat template of the conversation with the generation prompt. */
  promptIds: ArrayLike<number>;
  /** Teacher prompt x~: the same with the hindsight block in the last user message. */
  teacherPromptIds: ArrayLike<number>;
  /** Sampled response ids, including the end-of-turn token. */
  responseIds: ArrayLike<number>;
  /** Sampling-time log-probabilities of the response ids, when recorded. */
  oldLogprobs?: ArrayLike<number> | null;
  /** Teacher targets scored elsewhere (the remote teacher) instead of scoring teacherPromptIds here. */
  teacherTargets?: TeacherTargets | null;
}

/** Per response position: the teacher's top-k ids and log-probs (best first) and the sampled token's log-prob. */
export interface TeacherTargets {
  k: number;
  /** responseIds.length * k ids. */
  topIds: ArrayLike<number>;
  topLogprobs: ArrayLike<number>;
  /** responseIds.length values. */
  tokenLogprobs: ArrayLike<number>;
}

export interface SdpoStepResult {
  loss: number;
  distillLoss: number;
  klToBase: number;
  meanIsWeight: number;
  clipFraction: number;
  gradNorm: number;
  teacherStudentKl: number;
  tokens: number;
  stepLosses: number[];
  timings: { teacherMs: number; baseMs: number; studentForwardMs: number; backwardMs: number; optimizerMs: number; totalMs: number };
  options: SdpoOptions;
}

/** Slots of every LoRA tensor in the flat buffer, in the engine's layer-major, module order. */
/** The model config in the addons' form. */
export function toNativeConfig(c: ModelConfig): NativeConfig {
  return {
    vocab: c.vocabSize,
    hidden: c.hiddenSize,
    layers: c.numLayers,
    heads: c.numHeads,
    kvHeads: c.numKvHeads,
    headDim: c.headDim,
    intermediate: c.intermediateSize,
    ropeTheta: c.ropeTheta,
    rmsEps: c.rmsNormEps,
    tieEmbeddings: c.tieWordEmbeddings,
    qkNorm: c.qkNorm,
    bias: [c.bias.q, c.bias.k, c.bias.v, c.bias.o],
  };
}

export function loraSlots(config: ModelConfig, shape: LoraShape): { slots: LoraTensorSlot[]; total: number } {
  const dims: Record<LoraModule, [number, number]> = {
    q_proj: [config.hiddenSize, config.numHeads * config.headDim],
    k_proj: [config.hiddenSize, config.numKvHeads * config.headDim],
    v_proj: [config.hiddenSize, config.numKvHeads * config.headDim],
    o_proj: [config.numHeads * config.headDim, config.hiddenSize],
    gate_proj: [config.hiddenSize, config.intermediateSize],
    up_proj: [config.hiddenSize, config.intermediateSize],
    down_proj: [config.intermediateSize, config.hiddenSize],
  };
  const slots: LoraTensorSlot[] = [];
  let total = 0;
  for (let l = 0; l < config.numLayers; l++) {
    for (const m of LORA_MODULES) {
      if (!shape.targetModules.includes(m)) continue;
      const [inF, outF] = dims[m];
      slots.push({ key: peftKey(l, m, 'A'), offset: total, shape: [shape.rank, inF] });
      total += shape.rank * inF;
      slots.push({ key: peftKey(l, m, 'B'), offset: total, shape: [outF, shape.rank] });
      total += outF * shape.rank;
    }
  }
  return { slots, total };
}

export interface SamplingParams {
  /** 0 = greedy. */
  temperature: number;
  topP: number;
  /** 0 = no limit. */
  topK: number;
  /** Alternatives to report per token (0-20). */
  topLogprobs: number;
  /** Only ids below this are sampled (the tokenizer's size; model vocabularies are often padded). */
  vocabLimit?: number;
}

/** A generation in progress: its KV cache and sampling RNG live in the engine. */
export class Sequence implements Disposable {
  constructor(readonly native: NativeSequence) {}
  /** Tokens in the cache. */
  get length(): number {
    return this.native.length;
  }
  /** Bytes its KV cache holds. */
  get bytes(): number {
    return this.native.bytes;
  }
  /** Frees the KV cache now (a decode already running keeps it until it ends). Idempotent. */
  dispose(): void {
    this.native.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}

export interface DecodeEntry {
  sequence: Sequence;
  /** The adapter this sequence decodes with (null: the base model); when absent, the call's adapter. */
  adapter?: Adapter | null;
  /** New tokens: the prompt (or a chunk of it) first, then each sampled token. */
  ids: ArrayLike<number>;
  sampling: SamplingParams;
}

export type SampledToken = NativeSampled;

/** A LoRA adapter resident in the engine, with its optimizer state and EMA copy. */
export class Adapter implements Disposable {
  private released = false;

  constructor(
    readonly native: NativeAdapter,
    readonly shape: LoraShape,
    readonly slots: readonly LoraTensorSlot[],
  ) {}

  /** Bytes it holds in the engine (weights, EMA, AdamW moments, gradients); 0 once disposed. */
  get bytes(): number {
    return this.native.bytes;
  }

  get disposed(): boolean {
    return this.released;
  }

  /**
   * Frees its memory now: a call already running keeps it until it ends, and any later use fails
   * (E_DISPOSED). Idempotent.
   */
  dispose(): void {
    this.released = true;
    this.native.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  get rank(): number {
    return this.shape.rank;
  }
  get alpha(): number {
    return this.shape.alpha;
  }
  get targetModules(): readonly LoraModule[] {
    return this.shape.targetModules;
  }

  /** Copies of the weights, EMA, AdamW moments, last gradient and step count. */
  state() {
    return this.native.state();
  }

  /** The first weight that is NaN or infinite, or null: such an adapter must never serve. */
  firstNonFinite(): { index: number; value: number; of: number } | null {
    const { params } = this.native.state();
    const index = params.findIndex((x) => !Number.isFinite(x));
    return index < 0 ? null : { index, value: params[index]!, of: params.length };
  }

  /** Named copies (PEFT keys) of one of the flat buffers. */
  tensors(which: 'params' | 'ema' | 'grads' = 'params'): Map<string, Float32Array> {
    const flat = this.native.state()[which];
    return new Map(this.slots.map((s) => [s.key, flat.slice(s.offset, s.offset + s.shape[0] * s.shape[1])]));
  }
}

function ids(name: string, values: ArrayLike<number>, vocab: number, allowEmpty = false): Int32Array {
  if (!values || typeof values.length !== 'number') throw new InputError(`${name} must be an array of token ids`);
  if (values.length === 0 && !allowEmpty) throw new InputError(`${name} is empty`);
  const out = new Int32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (!Number.isInteger(v) || v < 0 || v >= vocab) throw new InputError(`${name}[${i}] = ${String(v)} is not a token id in [0, ${vocab})`);
    out[i] = v;
  }
  return out;
}

/**
 * Which queue an engine call waits in: `interactive` (decoding replies) or `background` (training,
 * scoring, saving). The backends run the two at once (CPU: threads; CUDA: a stream each; WebGPU: the
 * step submitted layer by layer, decoding in between); a backend without NativeModel.concurrentLanes
 * would have one queue.
 */
export type Lane = 'interactive' | 'background';

/** The calls in flight that use one adapter: the last that writes it and the reads since. */
interface AdapterUse {
  write: Promise<unknown>;
  reads: Set<Promise<unknown>>;
}

export class Engine implements Disposable {
  private readonly tails: Record<Lane, Promise<unknown>> = { interactive: Promise.resolve(), background: Promise.resolve() };
  private readonly uses = new WeakMap<NativeAdapter, AdapterUse>();

  private constructor(
    readonly modelDir: string,
    readonly config: ModelConfig,
    readonly backendChoice: BackendChoice,
    readonly threads: number,
    private readonly model: NativeModel,
  ) {}

  get backend(): BackendName {
    return this.backendChoice.backend;
  }

  /** Opens a Hugging Face model folder (config.json + safetensors, fp32 / fp16 / bf16). */
  static async open(modelDir: string, options: EngineOpenOptions = {}): Promise<Engine> {
    const dir = resolve(modelDir);
    const webgpuWeights = checkWeightStorageRequest(options.webgpuWeights);
    const choice = await pickBackend(options.backend ?? 'auto');
    const config = readModelConfig(dir);
    const threads = options.threads ?? defaultThreads(config.hiddenSize);
    if (!Number.isInteger(threads) || threads < 1) throw new InputError(`threads must be a positive integer (got ${String(threads)})`);
    const tensors = weightSpecs(dir, config);
    const native = toNativeConfig(config);
    try {
      let model: NativeModel;
      if (choice.backend === 'webgpu') {
        const gpuModel = await (await import('./webgpu/model.js')).WebGpuModel.load({ config: native, tensors }, { weights: webgpuWeights });
        choice.weights = gpuModel.weightStorage;
        model = gpuModel;
      } else {
        model = await (choice.backend === 'cuda' ? cudaAddon() : nativeAddon()).loadModel({ config: native, threads, tensors });
      }
      return new Engine(dir, config, choice, threads, model);
    } catch (err) {
      throw fromNative(err);
    }
  }

  /**
   * Frees the weights (and, on the GPU, the device). Adapters and sequences of this engine are
   * unusable afterwards; calls already running finish first.
   */
  dispose(): void {
    this.model.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /**
   * Whether the two lanes run at once: the CPU addon's calls share only read-only weights; a GPU
   * backend says whether it can (NativeModel.concurrentLanes).
   */
  get concurrentLanes(): boolean {
    return this.backend === 'cpu' || this.model.concurrentLanes === true;
  }

  private useOf(adapter: Adapter): AdapterUse {
    let u = this.uses.get(adapter.native);
    if (!u) this.uses.set(adapter.native, (u = { write: Promise.resolve(), reads: new Set() }));
    return u;
  }

  /**
   * Runs `fn` after the calls before it in its lane, after any call that writes an adapter it reads,
   * and (when it writes one) after every call that uses that adapter.
   */
  private run<T>(fn: () => Promise<T>, lane: Lane = 'background', use: { reads?: readonly (Adapter | null)[]; writes?: readonly Adapter[] } = {}): Promise<T> {
    const l: Lane = this.concurrentLanes ? lane : 'interactive';
    const reads = (use.reads ?? []).filter((a): a is Adapter => a !== null);
    const writes = use.writes ?? [];
    const after: Promise<unknown>[] = [this.tails[l]];
    for (const a of reads) after.push(this.useOf(a).write);
    for (const a of writes) after.push(this.useOf(a).write, ...this.useOf(a).reads);
    const next = Promise.all(after).then(fn);
    const settled = next.then(
      () => undefined,
      () => undefined,
    );
    this.tails[l] = settled;
    for (const a of reads) {
      const u = this.useOf(a);
      u.reads.add(settled);
      void settled.then(() => u.reads.delete(settled));
    }
    for (const a of writes) {
      const u = this.useOf(a);
      u.write = settled;
      u.reads.clear();
    }
    return next.catch((err: unknown) => {
      throw fromNative(err);
    });
  }

  private checkAdapter(adapter: Adapter | null | undefined): void {
    if (adapter && !(adapter instanceof Adapter)) throw new InputError('adapter must be an Adapter of this engine');
  }

  /** A fresh adapter: A Kaiming-uniform like PEFT, B = 0 (so it starts as the base model). */
  createAdapter(options: CreateAdapterOptions = {}): Adapter {
    const rank = options.rank ?? 32;
    const alpha = options.alpha ?? 64;
    if (!Number.isInteger(rank) || rank < 1 || rank > MAX_LORA_RANK) throw new InputError(`rank must be an integer in [1, ${MAX_LORA_RANK}] (got ${String(rank)})`);
    if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha <= 0 || alpha > MAX_LORA_ALPHA) throw new InputError(`alpha must be a number in (0, ${MAX_LORA_ALPHA}] (got ${String(alpha)})`);
    const shape: LoraShape = { rank, alpha, targetModules: validateTargets(options.targetModules ?? [...LORA_MODULES]) };
    const seed = options.seed ?? Math.floor(Math.random() * 2 ** 32);
    const native = this.model.createAdapter({ rank, alpha, targets: LORA_MODULES.map((m) => shape.targetModules.includes(m)), seed });
    return new Adapter(native, shape, loraSlots(this.config, shape).slots);
  }

  /** An adapter from explicit state (weights, optionally EMA copy, AdamW moments and step count). */
  restoreAdapter(shape: LoraShape, state: AdapterFileState): Adapter {
    const checked: LoraShape = { rank: shape.rank, alpha: shape.alpha, targetModules: validateTargets(shape.targetModules) };
    const { slots, total } = loraSlots(this.config, checked);
    for (const key of ['params', 'ema', 'm', 'v'] as const) {
      const a = state[key];
      if (a !== undefined && a.length !== total) throw new ShapeError(`adapter ${key} has ${a.length} values, the layout needs ${total}`);
    }
    try {
      const native = this.model.createAdapter({
        rank: checked.rank,
        alpha: checked.alpha,
        targets: LORA_MODULES.map((m) => checked.targetModules.includes(m)),
        params: state.params,
        ema: state.ema,
        m: state.m,
        v: state.v,
        step: state.step,
      });
      return new Adapter(native, checked, slots);
    } catch (err) {
      throw fromNative(err);
    }
  }

  /**
   * An independent copy (weights, optimizer state, EMA): train it while the original keeps serving.
   * With `freshOptimizer` the copy keeps the weights and EMA but starts AdamW anew (zero moments,
   * step 0), so its steps do not depend on gradients of earlier, unrelated updates.
   */
  async cloneAdapter(adapter: Adapter, opts: { freshOptimizer?: boolean } = {}): Promise<Adapter> {
    this.checkAdapter(adapter);
    if (opts.freshOptimizer) {
      return this.run(
        async () => {
          const { params, ema } = adapter.state();
          return this.restoreAdapter(adapter.shape, { params, ema, step: 0 });
        },
        'background',
        { reads: [adapter] },
      );
    }
    return this.run(async () => new Adapter(adapter.native.clone(), adapter.shape, adapter.slots), 'background', { reads: [adapter] });
  }

  /** Loads a PEFT adapter folder (with optimizer and EMA state when saved by CLaaS). */
  async loadAdapter(dir: string): Promise<Adapter> {
    const shape = readAdapterConfig(dir);
    const { slots, total } = loraSlots(this.config, shape);
    return this.restoreAdapter(shape, loadAdapterFiles(dir, slots, total));
  }

  /** Writes the adapter to a new directory (temp path, then rename); never overwrites. */
  async saveAdapter(adapter: Adapter, dir: string): Promise<void> {
    this.checkAdapter(adapter);
    return this.run(async () => {
      const s = adapter.native.state();
      // The base model's folder name, not the server's path: versions are exported.
      saveAdapterFiles(resolve(dir), adapter.shape, adapter.slots, { params: s.params, ema: s.ema, m: s.m, v: s.v, step: s.step }, basename(resolve(this.modelDir)));
    }, 'background', { reads: [adapter] });
  }

  /** Logits [T, V] (row-major) of every position, with the adapter (or its EMA copy) or the base model. */
  async logits(tokenIds: ArrayLike<number>, adapter: Adapter | null = null, options: { ema?: boolean; lane?: Lane } = {}): Promise<Float32Array> {
    this.checkAdapter(adapter);
    const input = ids('tokenIds', tokenIds, this.config.vocabSize);
    return this.run(() => this.model.forward(input, adapter?.native ?? null, options.ema === true), options.lane, { reads: [adapter] });
  }

  /** log p(ids[t] | ids[<t]) for t in [start, ids.length). */
  async logprobs(tokenIds: ArrayLike<number>, adapter: Adapter | null, start: number): Promise<Float32Array> {
    this.checkAdapter(adapter);
    const input = ids('tokenIds', tokenIds, this.config.vocabSize);
    if (!Number.isInteger(start) || start < 1 || start >= input.length) throw new InputError(`start must be an integer in [1, ${input.length})`);
    return this.run(() => this.model.tokenLogprobs(input, adapter?.native ?? null, start), 'background', { reads: [adapter] });
  }

  /** A new, empty sequence for generation; `seed` fixes its sampling. */
  createSequence(seed = Math.floor(Math.random() * 2 ** 32)): Sequence {
    if (!Number.isInteger(seed) || seed < 0) throw new InputError(`seed must be a non-negative integer (got ${String(seed)})`);
    return new Sequence(this.model.createSequence(seed));
  }

  /**
   * Appends each entry's new tokens to its sequence in one batched pass and samples each sequence's
   * next token. Entries may use different adapters (`entry.adapter`, else the call's `adapter`): the
   * base model runs once over every row and each adapter's LoRA branch over its own rows.
   * Log-probabilities are the model's own (before temperature).
   */
  async decode(entries: readonly DecodeEntry[], adapter: Adapter | null = null, options: { lane?: Lane } = {}): Promise<SampledToken[]> {
    this.checkAdapter(adapter);
    if (entries.length === 0) return [];
    const V = this.config.vocabSize;
    const used = new Set<Adapter>();
    const native = entries.map((e, i) => {
      if (!(e.sequence instanceof Sequence)) throw new InputError(`entries[${i}].sequence must be a Sequence`);
      const own = e.adapter === undefined ? adapter : e.adapter;
      if (own !== null && !(own instanceof Adapter)) throw new InputError(`entries[${i}].adapter must be an Adapter of this engine or null`);
      if (own) used.add(own);
      const s = e.sampling;
      if (!(s.temperature >= 0 && s.temperature <= 100)) throw new InputError(`temperature must be in [0, 100] (got ${String(s.temperature)})`);
      if (!(s.topP > 0 && s.topP <= 1)) throw new InputError(`topP must be in (0, 1] (got ${String(s.topP)})`);
      if (!Number.isInteger(s.topK) || s.topK < 0) throw new InputError(`topK must be a non-negative integer (got ${String(s.topK)})`);
      if (!Number.isInteger(s.topLogprobs) || s.topLogprobs < 0 || s.topLogprobs > 20) throw new InputError(`topLogprobs must be an integer in [0, 20]`);
      const newIds = ids(`entries[${i}].ids`, e.ids, V);
      if (e.sequence.length + newIds.length > this.config.maxPositionEmbeddings) {
        throw new InputError(`sequence would exceed the model's ${this.config.maxPositionEmbeddings} positions`);
      }
      if (s.vocabLimit !== undefined && !(Number.isInteger(s.vocabLimit) && s.vocabLimit >= 1)) throw new InputError('vocabLimit must be a positive integer');
      return { seq: e.sequence.native, adapter: own?.native ?? null, ids: newIds, temperature: s.temperature, topP: s.topP, topK: s.topK, topLogprobs: s.topLogprobs, vocabLimit: s.vocabLimit ?? 0 };
    });
    return this.run(() => this.model.decode(native), options.lane ?? 'interactive', { reads: [...used] });
  }

  /** One SDPO update of the adapter over a batch (docs/learning.md), in place. */
  async sdpoStep(adapter: Adapter, batch: readonly SdpoSample[], options: Partial<SdpoOptions> = {}): Promise<SdpoStepResult> {
    if (!(adapter instanceof Adapter)) throw new InputError('sdpoStep needs an Adapter of this engine');
    if (!Array.isArray(batch) || batch.length === 0) throw new InputError('the batch is empty');
    const resolved = resolveSdpoOptions(options, this.config.vocabSize);
    const V = this.config.vocabSize;
    const samples: NativeSample[] = batch.map((s, i) => {
      const sample: NativeSample = {
        prompt: ids(`batch[${i}].promptIds`, s.promptIds, V),
        teacherPrompt: ids(`batch[${i}].teacherPromptIds`, s.teacherPromptIds, V),
        response: ids(`batch[${i}].responseIds`, s.responseIds, V),
      };
      if (s.oldLogprobs !== undefined && s.oldLogprobs !== null) {
        if (s.oldLogprobs.length !== sample.response.length) throw new InputError(`batch[${i}].oldLogprobs has ${s.oldLogprobs.length} values for ${sample.response.length} response tokens`);
        const old = Float32Array.from(s.oldLogprobs);
        if (!old.every((x) => Number.isFinite(x) && x <= 0)) throw new InputError(`batch[${i}].oldLogprobs must be finite log-probabilities (<= 0)`);
        sample.oldLogprobs = old;
      }
      const tt = s.teacherTargets;
      if (tt) {
        const T = sample.response.length;
        if (!Number.isInteger(tt.k) || tt.k < 1 || tt.k > V) throw new InputError(`batch[${i}].teacherTargets.k must be an integer in [1, ${V}]`);
        if (tt.topIds.length !== T * tt.k || tt.topLogprobs.length !== T * tt.k || tt.tokenLogprobs.length !== T) {
          throw new InputError(`batch[${i}].teacherTargets must have ${T}*${tt.k} top entries and ${T} token log-probs`);
        }
        const top = Float32Array.from(tt.topLogprobs);
        const token = Float32Array.from(tt.tokenLogprobs);
        if (![...top, ...token].every((x) => Number.isFinite(x) && x <= 0)) throw new InputError(`batch[${i}].teacherTargets must hold finite log-probabilities (<= 0)`);
        Object.assign(sample, { teacherK: tt.k, teacherTopIds: ids(`batch[${i}].teacherTargets.topIds`, tt.topIds, V), teacherTopLogprobs: top, teacherTokenLogprobs: token });
      } else if (resolved.options.teacher === 'remote') {
        throw new InputError(`batch[${i}] has no teacherTargets; the remote teacher scores samples before the step`);
      }
      return sample;
    });
    return this.run(async () => {
      const t0 = performance.now();
      const r = await this.model.sdpoStep(adapter.native, samples, resolved.native);
      return { ...r, timings: { ...r.timings, totalMs: performance.now() - t0 }, options: resolved.options };
    }, 'background', { writes: [adapter] });
  }
}
