// Generation on the GPU (native/engine/generate.cc): per-sequence KV caches (one buffer per layer for
// k and v, doubling as they fill) and one batched pass over the new tokens of several sequences, each
// with its own adapter or none; projections and MLP run once over all new rows (the LoRA branch once per
// adapter over its rows), attention per sequence against its cache. Only the last new row's logits of
// each sequence come back, and the token is sampled on the host.
import { InputError } from '../../errors.js';
import type { NativeDecodeEntry, NativeSampled, NativeSequence } from '../native.js';
import { destroyBuffers, Lifetime, type LoraView } from './adapter.js';
import { ropeTableData, type ModelContext } from './context.js';
import type { Gpu } from './device.js';
import { layerActs, layerForward, lmHead, type Attend, type LoraSegment } from './forward.js';
import { Mt19937_64 } from './mt19937-64.js';
import { attention } from './ops/attention.js';
import { rmsnorm } from './ops/rmsnorm.js';
import { sampleRow } from './sample.js';
import { embedTokens, logitChunks } from './vocab.js';

/** The cache buffers of one sequence, per layer. */
interface KvBuffers {
  k: GPUBuffer[];
  v: GPUBuffer[];
}

// Sequences that are dropped without dispose() free their GPU caches once they are collected.
const caches = new FinalizationRegistry<KvBuffers>((kv) => {
  for (const b of [...kv.k, ...kv.v]) b.destroy();
});

export class GpuSequence implements NativeSequence {
  readonly life = new Lifetime('sequence', () => this.free());
  length = 0;
  capacity = 0;
  private readonly kv: KvBuffers = { k: [], v: [] };
  readonly rng: Mt19937_64;

  constructor(
    readonly gpu: Gpu,
    readonly owner: object,
    seed: number,
  ) {
    this.rng = new Mt19937_64(BigInt(Math.trunc(seed)));
    caches.register(this, this.kv, this);
  }

  get k(): GPUBuffer[] {
    return this.kv.k;
  }

  get v(): GPUBuffer[] {
    return this.kv.v;
  }

  get bytes(): number {
    return [...this.kv.k, ...this.kv.v].reduce((n, b) => n + b.size, 0);
  }

  dispose(): void {
    this.life.dispose();
  }

  private free(): void {
    caches.unregister(this);
    destroyBuffers(this.gpu, [...this.kv.k, ...this.kv.v]);
    this.kv.k = [];
    this.kv.v = [];
    this.capacity = 0;
  }

  /** Grows (doubling, contents kept) so that `needed` tokens fit; old buffers go to `retired`. */
  ensure(ctx: ModelContext, needed: number, retired: GPUBuffer[]): void {
    if (needed <= this.capacity) return;
    let cap = Math.max(this.capacity, 64);
    while (cap < needed) cap *= 2;
    const row = ctx.cfg.kvHeads * ctx.cfg.headDim * 4;
    const grow = (old: GPUBuffer[], name: string) =>
      Array.from({ length: ctx.cfg.layers }, (_, l) => {
        const b = ctx.gpu.buffer(cap * row, `kv.${name}${l}`);
        if (old[l]) {
          if (this.length > 0) ctx.gpu.copy(old[l]!, 0, b, 0, this.length * row);
          retired.push(old[l]!);
        }
        return b;
      });
    this.kv.k = grow(this.kv.k, 'k');
    this.kv.v = grow(this.kv.v, 'v');
    this.capacity = cap;
  }
}

/**
 * Appends every entry's new tokens to its cache in one batched pass, entry b with the LoRA weights
 * views[b] (null: the base model), and samples each entry's next token from the logits of its last
 * new token.
 */
export async function decodeStep(ctx: ModelContext, entries: readonly NativeDecodeEntry[], views: readonly (LoraView | null)[]): Promise<NativeSampled[]> {
  const c = ctx.cfg, gpu = ctx.gpu, ws = ctx.ws;
  const H = c.hidden, N = c.heads, M = c.kvHeads, D = c.headDim, V = c.vocab;
  const kvRow = M * D * 4;
  const B = entries.length;
  const seqs = entries.map((e) => e.seq as GpuSequence);
  // Rows grouped by adapter (in order of first appearance) so that each adapter's LoRA branch covers
  // one contiguous range; rowStart maps each entry back to its rows.
  const groups = new Map<LoraView | null, number[]>();
  for (let b = 0; b < B; b++) {
    const view = views[b] ?? null;
    const members = groups.get(view);
    if (members) members.push(b);
    else groups.set(view, [b]);
  }
  const rowStart = new Array<number>(B).fill(0);
  const segments: LoraSegment[] = [];
  const ids: number[] = [], positions: number[] = [];
  const retired: GPUBuffer[] = [];
  for (const [view, members] of groups) {
    const row0 = ids.length;
    for (const b of members) {
      const e = entries[b]!, s = seqs[b]!;
      if (e.ids.length === 0) throw new InputError('a decode entry has no new tokens');
      rowStart[b] = ids.length;
      for (let i = 0; i < e.ids.length; i++) {
        positions.push(s.length + i);
        ids.push(e.ids[i]!);
      }
      s.ensure(ctx, s.length + e.ids.length, retired);
    }
    segments.push({ row0, rows: ids.length - row0, view });
  }
  const T = ids.length;
  const temps: GPUBuffer[] = [];
  const tables = ropeTableData(positions, D, c.ropeTheta);
  const cos = gpu.upload(tables.cos, 'dec.cos'), sin = gpu.upload(tables.sin, 'dec.sin');
  temps.push(cos, sin);
  const xs = [ws.get('dec.x0', T * H), ws.get('dec.x1', T * H)];
  embedTokens(ctx, xs[0]!, Int32Array.from(ids), T, 'dec');
  for (let l = 0; l < c.layers; l++) {
    const attend: Attend = (a) => {
      for (let b = 0; b < entries.length; b++) {
        const s = seqs[b]!, n = entries[b]!.ids.length, r0 = rowStart[b]!;
        gpu.copy(a.k, r0 * kvRow, s.k[l]!, s.length * kvRow, n * kvRow);
        gpu.copy(a.v, r0 * kvRow, s.v[l]!, s.length * kvRow, n * kvRow);
        const qb = ws.get('dec.qb', n * N * D), ob = ws.get('dec.ob', n * N * D), lse = ws.get('dec.lse', N * n);
        gpu.copy(a.q, r0 * N * D * 4, qb, 0, n * N * D * 4);
        attention(gpu, ob, lse, qb, s.k[l]!, s.v[l]!, n, N, M, D, s.length);
        gpu.copy(ob, 0, a.attn, r0 * N * D * 4, n * N * D * 4);
      }
    };
    const a = layerActs(ctx, 'dec.l', xs[l % 2]!, T, segments);
    layerForward(ctx, segments, l, xs[l % 2]!, xs[(l + 1) % 2]!, T, cos, sin, a, attend);
  }
  // Only the last new row of each sequence is scored.
  const x = xs[c.layers % 2]!;
  const last = ws.get('dec.last', B * H), normed = ws.get('dec.normed', B * H), rstd = ws.get('dec.rstd', B);
  for (let b = 0; b < B; b++) {
    const row = rowStart[b]! + entries[b]!.ids.length - 1;
    gpu.copy(x, row * H * 4, last, b * H * 4, H * 4);
  }
  rmsnorm(gpu, normed, rstd, last, ctx.weights.finalNorm, B, H, c.rmsEps);
  const host = new Float32Array(B * V);
  try {
    for (const [r0, n] of logitChunks(ctx, B)) {
      const logits = ws.get('dec.logits', n * V);
      lmHead(ctx, logits, normed, r0, n, 'dec');
      host.set(new Float32Array(await gpu.read(logits, n * V * 4)), r0 * V);
    }
  } finally {
    // The read submitted everything this call recorded (or, after a failure, destroyBuffers does).
    destroyBuffers(gpu, [...temps, ...retired]);
  }
  return entries.map((e, b) => {
    const s = seqs[b]!;
    s.length += e.ids.length;
    return sampleRow(host.subarray(b * V, (b + 1) * V), { temperature: e.temperature, topP: e.topP, topK: e.topK, topLogprobs: e.topLogprobs, vocabLimit: e.vocabLimit ?? 0 }, s.rng);
  });
}
