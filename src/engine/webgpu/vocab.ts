// The vocabulary-sized tensors under the device's storage binding limit (Gpu.maxBinding): the
// embedding / LM-head matrix [V, H] and the logits [R, V]. Kernels bind whole buffers, so a matrix
// over the limit is kept as row blocks (row-blocks.ts; each a vocabulary range) and logits are
// produced and consumed a few rows at a time. This keeps every kernel and its CPU mirror unchanged:
// the LM head is a block-wise linear, the embedding gathers once per block with ids shifted into
// the block (an id outside gives a zero row, so the blocks' outputs add up to the lookup), and every logits
// consumer (log-softmax, top-k, SDPO loss, token log-probs) works row by row already. With a single
// block and a single row chunk the ops run exactly as they would on whole buffers.
import type { ModelContext } from './context.js';
import { axpby } from './ops/axpby.js';
import { embedding } from './ops/embedding.js';
import { linearBackwardInputBlocks, linearBlocks, type RowBlocks } from './row-blocks.js';

/** The [V, H] embedding / LM-head matrix. */
export type VocabMatrix = RowBlocks;

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
  linearBlocks(ctx.gpu, ctx.ws, logits_RV, x_RH, ctx.weights.lmHead, null, R, ctx.cfg.hidden, ctx.cfg.vocab);
}

/** dx [R, H] = dlogits [R, V] W (R within one logits chunk). */
export function lmHeadBackwardRows(ctx: ModelContext, dx_RH: GPUBuffer, dlogits_RV: GPUBuffer, R: number): void {
  linearBackwardInputBlocks(ctx.gpu, ctx.ws, dx_RH, dlogits_RV, ctx.weights.lmHead, R, ctx.cfg.hidden, ctx.cfg.vocab, false);
}

/** A [n, width] row range of a [*, width] buffer: the buffer itself when it is the whole of it. */
export function rowSlice(ctx: ModelContext, name: string, src: GPUBuffer, r0: number, n: number, total: number, width: number): GPUBuffer {
  if (r0 === 0 && n === total) return src;
  const dst = ctx.ws.get(name, n * width);
  ctx.gpu.copy(src, r0 * width * 4, dst, 0, n * width * 4);
  return dst;
}
