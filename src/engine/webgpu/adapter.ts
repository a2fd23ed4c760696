// A LoRA adapter resident on the GPU: flat params / EMA / AdamW moments / gradient buffers laid out
// exactly like the CPU engine's (native/engine/model.cc make_lora_layout), per-tensor mirrors that the
// projection kernels bind, and a host copy of the state refreshed after each update (state() is
// synchronous). Also the use counting behind dispose() that adapters, sequences and the model share.
import { EngineError, InputError, ShapeError } from '../../errors.js';
import type { NativeAdapter, NativeAdapterState, NativeConfig, NativeLayoutEntry } from '../native.js';
import type { Gpu } from './device.js';
import { Mt19937_64, uniformFloat } from './mt19937-64.js';

export const MODULES = 7;
export const O_PROJ = 3;

export function moduleIn(c: NativeConfig, m: number): number {
  if (m === O_PROJ) return c.heads * c.headDim;
  if (m === 6) return c.intermediate;
  return c.hidden;
}

export function moduleOut(c: NativeConfig, m: number): number {
  if (m === 0) return c.heads * c.headDim;
  if (m === 1 || m === 2) return c.kvHeads * c.headDim;
  if (m === 4 || m === 5) return c.intermediate;
  return c.hidden;
}

export interface LoraLayout {
  rank: number;
  alpha: number;
  scale: number;
  targets: boolean[];
  /** Indexed by layer * 7 + module; null where the module is not targeted. */
  entries: (NativeLayoutEntry | null)[];
  total: number;
}

export function makeLayout(c: NativeConfig, rank: number, alpha: number, targets: boolean[]): LoraLayout {
  const entries: (NativeLayoutEntry | null)[] = [];
  let total = 0;
  for (let l = 0; l < c.layers; l++) {
    for (let m = 0; m < MODULES; m++) {
      if (!targets[m]) {
        entries.push(null);
        continue;
      }
      const inFeatures = moduleIn(c, m), outFeatures = moduleOut(c, m);
      const aOffset = total;
      total += rank * inFeatures;
      const bOffset = total;
      total += outFeatures * rank;
      entries.push({ layer: l, module: m, aOffset, bOffset, inFeatures, outFeatures });
    }
  }
  // Float32 alpha / rank, as the engine's float arithmetic gives it.
  return { rank, alpha: Math.fround(alpha), scale: Math.fround(Math.fround(alpha) / rank), targets, entries, total };
}

/** PEFT's default init as init_lora does it: A ~ U(-1/sqrt(in), 1/sqrt(in)) from mt19937_64(seed), B = 0. */
export function initParams(c: NativeConfig, L: LoraLayout, seed: number): Float32Array {
  const rng = new Mt19937_64(BigInt(Math.trunc(seed)));
  const p = new Float32Array(L.total);
  for (const e of L.entries) {
    if (!e) continue;
    const bound = Math.fround(1 / Math.fround(Math.sqrt(e.inFeatures)));
    for (let i = 0; i < L.rank * e.inFeatures; i++) p[e.aOffset + i] = uniformFloat(rng, -bound, bound);
  }
  return p;
}

/** The A and B buffers of each targeted projection (layer * 7 + module), as the kernels bind them. */
export interface LoraView {
  rank: number;
  scale: number;
  slots: ({ A: GPUBuffer; B: GPUBuffer } | null)[];
}

/**
 * The lifetime of something holding GPU memory (an adapter, a sequence, the model), which dispose()
 * frees ahead of garbage collection. Each call holds what
 * it uses from its start to its end (acquire / release), so a dispose() during a call frees the memory
 * when that call ends instead of under its recorded commands; any use after dispose() fails with
 * E_DISPOSED.
 */
export class Lifetime {
  private users = 0;
  private isDisposed = false;
  private isFreed = false;

  /** `free` releases the memory; it runs once, at dispose() or when the last holder lets go after it. */
  constructor(
    private readonly what: string,
    private readonly free: () => void,
  ) {}

  get disposed(): boolean {
    return this.isDisposed;
  }

  /** Whether the memory is gone (dispose() and no call left holding it). */
  get freed(): boolean {
    return this.isFreed;
  }

  /** Throws E_DISPOSED once dispose() has been called. */
  checkLive(): void {
    if (this.isDisposed) throw new EngineError('E_DISPOSED', `the ${this.what} has been disposed`);
  }

  acquire(): void {
    this.checkLive();
    this.users += 1;
  }

  release(): void {
    this.users -= 1;
    if (this.users === 0 && this.isDisposed) this.freeOnce();
  }

  dispose(): void {
    if (this.isDisposed) return;
    this.isDisposed = true;
    if (this.users === 0) this.freeOnce();
  }

  private freeOnce(): void {
    if (this.isFreed) return;
    this.isFreed = true;
    this.free();
  }
}

/**
 * Destroys buffers that commands recorded but not yet submitted may still name (after a call that
 * failed midway): those are submitted first, since a submit naming a destroyed buffer is an error.
 */
export function destroyBuffers(gpu: Gpu, buffers: readonly GPUBuffer[]): void {
  try {
    gpu.flush();
  } catch {
    // A device error already seen; the next call on the model reports it.
  }
  for (const b of buffers) b.destroy();
}

type Flat = 'params' | 'ema' | 'm' | 'v' | 'grads';
const FLAT: readonly Flat[] = ['params', 'ema', 'm', 'v', 'grads'];

export class GpuAdapter implements NativeAdapter {
  readonly life = new Lifetime('adapter', () => destroyBuffers(this.gpu, this.buffers()));
  readonly flat: Record<Flat, GPUBuffer>;
  /** Mirrors of params (kept in sync after every update) and gradient accumulators per tensor. */
  readonly params: LoraView;
  readonly grads: LoraView;
  private emaView: LoraView | null = null;
  step: number;
  private host: NativeAdapterState;

  constructor(
    readonly gpu: Gpu,
    readonly owner: { readonly life: Lifetime },
    readonly config: NativeConfig,
    readonly L: LoraLayout,
    state: NativeAdapterState,
  ) {
    this.step = state.step;
    this.host = state;
    const bytes = L.total * 4;
    this.flat = {
      params: gpu.upload(state.params, 'lora.params'),
      ema: gpu.upload(state.ema, 'lora.ema'),
      m: gpu.upload(state.m, 'lora.m'),
      v: gpu.upload(state.v, 'lora.v'),
      grads: gpu.buffer(bytes, 'lora.grads'),
    };
    if (state.grads.some((g) => g !== 0)) gpu.write(this.flat.grads, state.grads);
    this.params = this.mirror('lora.p');
    this.grads = this.mirror('lora.g');
    this.syncMirror(this.params, this.flat.params);
  }

  static create(gpu: Gpu, owner: { readonly life: Lifetime }, config: NativeConfig, options: Parameters<import('../native.js').NativeModel['createAdapter']>[0]): GpuAdapter {
    const { rank, alpha, targets } = options;
    if (!Number.isInteger(rank) || rank <= 0) throw new InputError('LoRA rank must be positive');
    if (!Array.isArray(targets) || targets.length !== MODULES) throw new InputError('targets must be 7 booleans');
    const L = makeLayout(config, rank, alpha, targets.map(Boolean));
    if (L.total === 0) throw new InputError('the adapter targets no projection');
    const sized = (key: string, a: Float32Array | undefined, fallback: () => Float32Array): Float32Array => {
      if (a === undefined) return fallback();
      if (!(a instanceof Float32Array)) throw new InputError(`${key} must be a Float32Array`);
      if (a.length !== L.total) throw new ShapeError(`${key} has ${a.length} values, expected ${L.total}`);
      return a.slice();
    };
    let params: Float32Array;
    if (options.params !== undefined) {
      params = sized('params', options.params, () => new Float32Array(0));
    } else {
      if (typeof options.seed !== 'number') throw new InputError("expected a number for 'seed'");
      params = initParams(config, L, options.seed);
    }
    const state: NativeAdapterState = {
      params,
      ema: sized('ema', options.ema, () => params.slice()),
      m: sized('m', options.m, () => new Float32Array(L.total)),
      v: sized('v', options.v, () => new Float32Array(L.total)),
      grads: new Float32Array(L.total),
      step: options.step ?? 0,
    };
    return new GpuAdapter(gpu, owner, config, L, state);
  }

  private mirror(label: string): LoraView {
    return {
      rank: this.L.rank,
      scale: this.L.scale,
      slots: this.L.entries.map((e) =>
        e ? { A: this.gpu.buffer(this.L.rank * e.inFeatures * 4, `${label}.A`), B: this.gpu.buffer(e.outFeatures * this.L.rank * 4, `${label}.B`) } : null,
      ),
    };
  }

  /** Copies a flat buffer into per-tensor buffers (encoded in order with the kernels). */
  syncMirror(view: LoraView, flat: GPUBuffer): void {
    this.L.entries.forEach((e, i) => {
      const s = view.slots[i];
      if (!e || !s) return;
      this.gpu.copy(flat, e.aOffset * 4, s.A, 0, this.L.rank * e.inFeatures * 4);
      this.gpu.copy(flat, e.bOffset * 4, s.B, 0, e.outFeatures * this.L.rank * 4);
    });
  }

  /** Gathers per-tensor buffers into a flat buffer. */
  gather(view: LoraView, flat: GPUBuffer): void {
    this.L.entries.forEach((e, i) => {
      const s = view.slots[i];
      if (!e || !s) return;
      this.gpu.copy(s.A, 0, flat, e.aOffset * 4, this.L.rank * e.inFeatures * 4);
      this.gpu.copy(s.B, 0, flat, e.bOffset * 4, e.outFeatures * this.L.rank * 4);
    });
  }

  /** The EMA copy as per-tensor buffers, refreshed from the flat EMA buffer. */
  ema(): LoraView {
    if (!this.emaView) this.emaView = this.mirror('lora.ema');
    this.syncMirror(this.emaView, this.flat.ema);
    return this.emaView;
  }

  /** Reads the state back into the host copy (after an update). */
  async refreshHost(): Promise<void> {
    const [params, ema, m, v, grads] = await Promise.all(FLAT.map(async (k) => new Float32Array(await this.gpu.read(this.flat[k], this.L.total * 4))));
    this.host = { params: params!, ema: ema!, m: m!, v: v!, grads: grads!, step: this.step };
  }

  /** Every buffer the adapter holds: the flat state and the per-tensor mirrors. */
  private buffers(): GPUBuffer[] {
    const views = [this.params, this.grads, ...(this.emaView ? [this.emaView] : [])];
    return [...FLAT.map((k) => this.flat[k]), ...views.flatMap((v) => v.slots.flatMap((s) => (s ? [s.A, s.B] : [])))];
  }

  get bytes(): number {
    return this.life.freed ? 0 : this.buffers().reduce((n, b) => n + b.size, 0);
  }

  dispose(): void {
    this.life.dispose();
  }

  layout(): { rank: number; alpha: number; total: number; entries: NativeLayoutEntry[] } {
    this.life.checkLive();
    return { rank: this.L.rank, alpha: this.L.alpha, total: this.L.total, entries: this.L.entries.filter((e): e is NativeLayoutEntry => e !== null).map((e) => ({ ...e })) };
  }

  state(): NativeAdapterState {
    this.life.checkLive();
    const h = this.host;
    return { params: h.params.slice(), ema: h.ema.slice(), m: h.m.slice(), v: h.v.slice(), grads: h.grads.slice(), step: this.step };
  }

  clone(): NativeAdapter {
    this.owner.life.checkLive();
    return new GpuAdapter(this.gpu, this.owner, this.config, this.L, this.state());
  }
}
