// The decoder forward on the GPU, composed from the WGSL ops exactly as native/engine/model.cc composes
// the CPU ops: per layer RMSNorm, q/k/v (+ LoRA), optional q/k norm, RoPE, attention, o (+ residual),
// RMSNorm, gate/up, SwiGLU, down (+ residual); then the final norm. The rows of a pass are split into
// segments, each with its own adapter (or none): training has one segment over every row, a decode batch
// one per adapter, and each projection runs its base matrix once over all rows.
import type { Gpu } from './device.js';
import type { LoraView } from './adapter.js';
import type { ModelContext } from './context.js';
import { axpby } from './ops/axpby.js';
import { lora } from './ops/lora.js';
import { rmsnorm } from './ops/rmsnorm.js';
import { rope } from './ops/rope.js';
import { attention } from './ops/attention.js';
import { swiglu } from './ops/swiglu.js';
import { linearBlocks } from './row-blocks.js';
import { embedTokens, lmHeadRows, rowSlice } from './vocab.js';

/** Buffers of one layer's activations (what the backward reads). */
export interface LayerActs {
  x: GPUBuffer;
  xn1: GPUBuffer;
  rstd1: GPUBuffer;
  qRaw: GPUBuffer;
  kRaw: GPUBuffer;
  rstdQ: GPUBuffer;
  rstdK: GPUBuffer;
  q: GPUBuffer;
  k: GPUBuffer;
  v: GPUBuffer;
  attn: GPUBuffer;
  lse: GPUBuffer;
  h1: GPUBuffer;
  xn2: GPUBuffer;
  rstd2: GPUBuffer;
  g: GPUBuffer;
  u: GPUBuffer;
  act: GPUBuffer;
  loraU: (GPUBuffer | null)[];
}

export interface Activations {
  T: number;
  layers: LayerActs[];
  xLast: GPUBuffer;
  rstdF: GPUBuffer;
  xf: GPUBuffer;
  cos: GPUBuffer;
  sin: GPUBuffer;
}

/** Fills a.attn from a.q (after RoPE), a.k and a.v. */
export type Attend = (a: LayerActs, layer: number) => void;

/** Rows row0..row0+rows-1 of a pass, which take the LoRA branch of `view` (none when null). */
export interface LoraSegment {
  row0: number;
  rows: number;
  view: LoraView | null;
}

/** One segment: every one of T rows with the same adapter (or none). */
export function allRows(view: LoraView | null, T: number): LoraSegment[] {
  return [{ row0: 0, rows: T, view }];
}

/**
 * Workspace buffers of one layer's activations for T rows, under a name prefix. The LoRA products
 * u = x A^T are kept (for the backward) only when one segment covers every row; with several adapters
 * each segment's u is scratch, since no backward runs over a mixed batch.
 */
export function layerActs(ctx: ModelContext, prefix: string, x: GPUBuffer, T: number, segments: readonly LoraSegment[]): LayerActs {
  const c = ctx.cfg, ws = ctx.ws;
  const H = c.hidden, N = c.heads, M = c.kvHeads, D = c.headDim, F = c.intermediate;
  const get = (name: string, n: number) => ws.get(`${prefix}.${name}`, n);
  const only = segments.length === 1 && segments[0]!.row0 === 0 && segments[0]!.rows === T ? segments[0]!.view : null;
  return {
    x,
    xn1: get('xn1', T * H),
    rstd1: get('rstd1', T),
    qRaw: get('qRaw', T * N * D),
    kRaw: get('kRaw', T * M * D),
    rstdQ: get('rstdQ', T * N),
    rstdK: get('rstdK', T * M),
    q: get('q', T * N * D),
    k: get('k', T * M * D),
    v: get('v', T * M * D),
    attn: get('attn', T * N * D),
    lse: get('lse', N * T),
    h1: get('h1', T * H),
    xn2: get('xn2', T * H),
    rstd2: get('rstd2', T),
    g: get('g', T * F),
    u: get('u', T * F),
    act: get('act', T * F),
    loraU: Array.from({ length: 7 }, (_, m) => (only && only.slots.some((s, i) => s && i % 7 === m) ? get(`u${m}`, T * only.rank) : null)),
  };
}

/**
 * Projection m of layer l over all T rows, then the LoRA branch of each segment whose adapter targets
 * it over that segment's rows. `u` (from layerActs) keeps the product when there is one; otherwise a
 * scratch buffer serves each segment in turn.
 */
export function project(ctx: ModelContext, segments: readonly LoraSegment[], l: number, m: number, y: GPUBuffer, u: GPUBuffer | null, x: GPUBuffer, T: number): void {
  const w = ctx.weights.layers[l]!;
  const I = ctx.moduleIn(m), O = ctx.moduleOut(m);
  linearBlocks(ctx.gpu, ctx.ws, y, x, w.W[m]!, m <= 3 ? w.b[m] ?? null : null, T, I, O);
  for (const s of segments) {
    const slot = s.view?.slots[l * 7 + m];
    if (!s.view || !slot || s.rows === 0) continue;
    const uSeg = u ?? ctx.ws.get('lora.u', s.rows * s.view.rank);
    lora(ctx.gpu, y, uSeg, x, slot.A, slot.B, s.rows, I, O, s.view.rank, s.view.scale, s.row0);
  }
}

/** One decoder layer: reads xIn [T, H], writes xOut [T, H] (distinct buffers). */
export function layerForward(ctx: ModelContext, segments: readonly LoraSegment[], l: number, xIn: GPUBuffer, xOut: GPUBuffer, T: number, cos: GPUBuffer, sin: GPUBuffer, a: LayerActs, attend: Attend): void {
  const c = ctx.cfg, gpu: Gpu = ctx.gpu, w = ctx.weights.layers[l]!;
  const H = c.hidden, N = c.heads, M = c.kvHeads, D = c.headDim, F = c.intermediate;
  rmsnorm(gpu, a.xn1, a.rstd1, xIn, w.inNorm, T, H, c.rmsEps);
  const qOut = c.qkNorm ? a.qRaw : a.q;
  const kOut = c.qkNorm ? a.kRaw : a.k;
  project(ctx, segments, l, 0, qOut, a.loraU[0]!, a.xn1, T);
  project(ctx, segments, l, 1, kOut, a.loraU[1]!, a.xn1, T);
  project(ctx, segments, l, 2, a.v, a.loraU[2]!, a.xn1, T);
  if (c.qkNorm) {
    rmsnorm(gpu, a.q, a.rstdQ, a.qRaw, w.qNorm!, T * N, D, c.rmsEps);
    rmsnorm(gpu, a.k, a.rstdK, a.kRaw, w.kNorm!, T * M, D, c.rmsEps);
  }
  rope(gpu, a.q, cos, sin, T, N, D);
  rope(gpu, a.k, cos, sin, T, M, D);
  attend(a, l);
  project(ctx, segments, l, 3, a.h1, a.loraU[3]!, a.attn, T);
  axpby(gpu, a.h1, xIn, T * H, 1, 1);
  rmsnorm(gpu, a.xn2, a.rstd2, a.h1, w.postNorm, T, H, c.rmsEps);
  project(ctx, segments, l, 4, a.g, a.loraU[4]!, a.xn2, T);
  project(ctx, segments, l, 5, a.u, a.loraU[5]!, a.xn2, T);
  swiglu(gpu, a.act, a.g, a.u, T * F);
  project(ctx, segments, l, 6, xOut, a.loraU[6]!, a.act, T);
  axpby(gpu, xOut, a.h1, T * H, 1, 1);
}

/**
 * Runs the decoder on the T token ids at positions 0..T-1. With `keep`, every
 * layer keeps its activations under `prefix` for a backward; otherwise one set is reused.
 */
export function forward(ctx: ModelContext, lv: LoraView | null, ids: Int32Array, T: number, keep: boolean, prefix: string): Activations {
  return drain(forwardChunks(ctx, lv, ids, T, keep, prefix));
}

/**
 * forward() recorded a layer at a time: the generator pauses after each layer's commands, so that
 * a caller can submit them and let other calls in (runChunks) before it records the next.
 */
export function* forwardChunks(ctx: ModelContext, lv: LoraView | null, ids: Int32Array, T: number, keep: boolean, prefix: string): Generator<void, Activations> {
  const c = ctx.cfg, gpu = ctx.gpu, ws = ctx.ws;
  const H = c.hidden, N = c.heads, M = c.kvHeads, D = c.headDim;
  const { cos, sin } = ctx.ropeTables(T);
  const xs: GPUBuffer[] = [];
  for (let i = 0; i <= c.layers; i++) xs.push(ws.get(`${prefix}.x${keep ? i : i % 2}`, T * H));
  embedTokens(ctx, xs[0]!, ids, T, prefix);
  const layers: LayerActs[] = [];
  const attend: Attend = (a) => attention(gpu, a.attn, a.lse, a.q, a.k, a.v, T, N, M, D, 0);
  const segments = allRows(lv, T);
  for (let l = 0; l < c.layers; l++) {
    const a = layerActs(ctx, keep ? `${prefix}.l${l}` : `${prefix}.l`, xs[l]!, T, segments);
    layerForward(ctx, segments, l, xs[l]!, xs[l + 1]!, T, cos, sin, a, attend);
    if (keep) layers.push(a);
    yield;
  }
  const xLast = xs[c.layers]!;
  const rstdF = ws.get(`${prefix}.rstdF`, T);
  const xf = ws.get(`${prefix}.xf`, T * H);
  rmsnorm(gpu, xf, rstdF, xLast, ctx.weights.finalNorm, T, H, c.rmsEps);
  return { T, layers, xLast, rstdF, xf, cos, sin };
}

/** Runs a chunked pass to its end without pausing. */
export function drain<R>(chunks: Generator<void, R>): R {
  for (;;) {
    const next = chunks.next();
    if (next.done) return next.value;
  }
}

/** Runs a chunked pass, awaiting `pause` (which submits what was recorded) between its chunks. */
export async function runChunks<R>(chunks: Generator<void, R>, pause: () => Promise<void>): Promise<R> {
  for (;;) {
    const next = chunks.next();
    if (next.done) return next.value;
    await pause();
  }
}

/**
 * logits [R, V] of rows row0..row0+R-1 of xf (copied out first: kernels bind whole buffers); R must
 * lie within one logits chunk (vocab.ts logitChunks).
 */
export function lmHead(ctx: ModelContext, logits: GPUBuffer, xf: GPUBuffer, row0: number, R: number, prefix: string): void {
  const rows = row0 === 0 ? xf : rowSlice(ctx, `${prefix}.rows`, xf, row0, R, Infinity, ctx.cfg.hidden);
  lmHeadRows(ctx, logits, rows, R);
}
