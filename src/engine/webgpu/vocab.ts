// The vocabulary-sized tensors under the device's storage binding limit (Gpu.maxBinding): the
// embedding / LM-head matrix [V, H] and the logits [R, V]. Kernels bind whole buffers, so a matrix
// over the limit is kept as row blocks (each a vocabulary range, each under the limit) and logits are
// produced and consumed a few rows at a time. This keeps every kernel and its CPU mirror unchanged:
// the LM head runs once per block and its output columns are copied into place (the backward sums the
// blocks' input gradients), the embedding gathers once per block with ids shifted into the block
// (an id outside gives a zero row, so the blocks' outputs add up to the lookup), and every logits
// consumer (log-softmax, top-k, SDPO loss, token log-probs) works row by row already. With a single
// block and a single row chunk the ops run exactly as they would on whole buffers.
import type { WeightSpec } from '../../model/weights.js';
import type { Gpu } from './device.js';
import type { ModelContext } from './context.js';
import { axpby } from './ops/axpby.js';
import { embedding } from './ops/embedding.js';
import { linear, linear_backward_input } from './ops/linear.js';
import { readTensor, readTensorHalf } from './weights.js';

export interface VocabMatrix {
  /** Row blocks in order; block b holds rows row0[b] .. row0[b] + rows[b] - 1. */
  parts: GPUBuffer[];
  row0: number[];
  rows: number[];
}

/**
 * Uploads a [V, H] matrix, split into row blocks of at most the binding limit when needed; with
 * `half` as f16 unless a value lies beyond the f16 range (then `keptF32` is true).
 */
export function uploadVocabMatrix(gpu: Gpu, spec: WeightSpec, H: number, half: boolean, label: string): { m: VocabMatrix; bytes: number; keptF32: boolean } {
  const V = spec.count / H;
  const bits = half ? readTensorHalf(spec) : null;
  const data = bits ? null : readTensor(spec);
  const keptF32 = half && !bits;
  const per = bits ? 2 : 4;
  const blockRows = Math.floor(gpu.maxBinding / (H * per));
  if (blockRows < 1) throw new Error(`${label}: one row of ${H * per} bytes exceeds the ${gpu.maxBinding}-byte storage binding limit`);
  const m: VocabMatrix = { parts: [], row0: [], rows: [] };
  let bytes = 0;
  for (let r0 = 0; r0 < V; r0 += blockRows) {
    const n = Math.min(blockRows, V - r0);
    const name = blockRows >= V ? label : `${label}[${r0}:${r0 + n}]`;
    const buf = bits ? gpu.uploadHalf(bits.subarray(r0 * H, (r0 + n) * H), name) : gpu.upload(data!.subarray(r0 * H, (r0 + n) * H), name);
    m.parts.push(buf);
    m.row0.push(r0);
    m.rows.push(n);
    bytes += buf.size;
  }
  return { m, bytes, keptF32 };
}

/** Rows of logits [*, V] that fit one binding (at least 1; a single row over the limit is refused). */
export function logitRows(ctx: ModelContext): number {
  const V = ctx.cfg.vocab;
  const n = Math.floor(ctx.gpu.maxBinding / (V * 4));
  if (n < 1) throw new Error(`one row of logits (${V * 4} bytes) exceeds the ${ctx.gpu.maxBinding}-byte storage binding limit`);
  return n;
}

/** [row0, rows] chunks covering R rows, each fitting one logits binding. */
export function logitChunks(ctx: ModelContext, R: number): Array<[number, number]> {
  const step = logitRows(ctx);
  const out: Array<[number, number]> = [];
  for (let r0 = 0; r0 < R; r0 += step) out.push([r0, Math.min(step, R - r0)]);
  return out;
}

/** x[t, :] = embed[ids[t], :] for the T host ids, block by block. */
export function embedTokens(ctx: ModelContext, x_TH: GPUBuffer, ids: Int32Array, T: number, prefix: string): void {
  const gpu = ctx.gpu, ws = ctx.ws, m = ctx.weights.embed, H = ctx.cfg.hidden;
  for (let b = 0; b < m.parts.length; b++) {
    const r0 = m.row0[b]!, n = m.rows[b]!;
    const shifted = r0 === 0 ? ids : ids.map((id) => (id >= r0 && id < r0 + n ? id - r0 : -1));
    const idsBuf = ws.get(`${prefix}.ids${b}`, T);
    gpu.write(idsBuf, shifted);
    if (b === 0) {
      embedding(gpu, x_TH, m.parts[b]!, idsBuf, T, H);
    } else {
      const part = ws.get(`${prefix}.embPart`, T * H);
      embedding(gpu, part, m.parts[b]!, idsBuf, T, H);
      axpby(gpu, x_TH, part, T * H, 1, 1);
    }
  }
}

/** logits [R, V] (R within one logits chunk) of the R rows of x [R, H]. */
export function lmHeadRows(ctx: ModelContext, logits_RV: GPUBuffer, x_RH: GPUBuffer, R: number): void {
  const gpu = ctx.gpu, m = ctx.weights.lmHead, H = ctx.cfg.hidden, V = ctx.cfg.vocab;
  if (m.parts.length === 1) {
    linear(gpu, logits_RV, x_RH, m.parts[0]!, null, R, H, V);
    return;
  }
  for (let b = 0; b < m.parts.length; b++) {
    const c0 = m.row0[b]!, n = m.rows[b]!;
    const part = ctx.ws.get('lm.part', R * n);
    linear(gpu, part, x_RH, m.parts[b]!, null, R, H, n);
    for (let r = 0; r < R; r++) gpu.copy(part, r * n * 4, logits_RV, (r * V + c0) * 4, n * 4);
  }
}

/** dx [R, H] = dlogits [R, V] W (R within one logits chunk), summed over the blocks. */
export function lmHeadBackwardRows(ctx: ModelContext, dx_RH: GPUBuffer, dlogits_RV: GPUBuffer, R: number): void {
  const gpu = ctx.gpu, m = ctx.weights.lmHead, H = ctx.cfg.hidden, V = ctx.cfg.vocab;
  if (m.parts.length === 1) {
    linear_backward_input(gpu, dx_RH, dlogits_RV, m.parts[0]!, R, H, V, false);
    return;
  }
  for (let b = 0; b < m.parts.length; b++) {
    const c0 = m.row0[b]!, n = m.rows[b]!;
    const part = ctx.ws.get('lm.dpart', R * n);
    for (let r = 0; r < R; r++) gpu.copy(dlogits_RV, (r * V + c0) * 4, part, r * n * 4, n * 4);
    linear_backward_input(gpu, dx_RH, part, m.parts[b]!, R, H, n, b > 0);
  }
}

/** A [n, width] row range of a [*, width] buffer: the buffer itself when it is the whole of it. */
export function rowSlice(ctx: ModelContext, name: string, src: GPUBuffer, r0: number, n: number, total: number, width: number): GPUBuffer {
  if (r0 === 0 && n === total) return src;
  const dst = ctx.ws.get(name, n * width);
  ctx.gpu.copy(src, r0 * width * 4, dst, 0, n * width * 4);
  return dst;
}
