// The decoder backward on the GPU, in the order of native/engine/model.cc backward: from the gradient
// of the final normalized hidden states down to every LoRA gradient (accumulated into the adapter's
// per-tensor gradient buffers).
import type { LoraView } from './adapter.js';
import type { ModelContext } from './context.js';
import { drain, type Activations } from './forward.js';
import { lora_backward } from './ops/lora.js';
import { rmsnorm_backward } from './ops/rmsnorm.js';
import { rope_backward } from './ops/rope.js';
import { attention_backward } from './ops/attention.js';
import { swiglu_backward } from './ops/swiglu.js';
import { linearBackwardInputBlocks } from './row-blocks.js';

/** Input gradient of projection m (into dx, added when accumulate) plus its LoRA gradients. */
function projectBackward(ctx: ModelContext, lv: LoraView, grads: LoraView, l: number, m: number, dx: GPUBuffer, dy: GPUBuffer, x: GPUBuffer, u: GPUBuffer | null, T: number, accumulate: boolean): void {
  const I = ctx.moduleIn(m), O = ctx.moduleOut(m);
  linearBackwardInputBlocks(ctx.gpu, ctx.ws, dx, dy, ctx.weights.layers[l]!.W[m]!, T, I, O, accumulate);
  const slot = lv.slots[l * 7 + m];
  const g = grads.slots[l * 7 + m];
  if (slot && g && u) {
    const scratch = ctx.ws.get('bw.loraScratch', T * lv.rank);
    lora_backward(ctx.gpu, dx, g.A, g.B, dy, x, u, slot.A, slot.B, T, I, O, lv.rank, lv.scale, scratch);
  }
}

/** Back-propagates dxf [T, H] through the model kept in acts; LoRA gradients are added into grads. */
export function backward(ctx: ModelContext, lv: LoraView, grads: LoraView, acts: Activations, dxf: GPUBuffer): void {
  drain(backwardChunks(ctx, lv, grads, acts, dxf));
}

/** backward() recorded a layer at a time, pausing after each (see forwardChunks). */
export function* backwardChunks(ctx: ModelContext, lv: LoraView, grads: LoraView, acts: Activations, dxf: GPUBuffer): Generator<void, void> {
  const c = ctx.cfg, gpu = ctx.gpu, ws = ctx.ws;
  const T = acts.T, H = c.hidden, N = c.heads, M = c.kvHeads, D = c.headDim, F = c.intermediate;
  const get = (name: string, n: number) => ws.get(`bw.${name}`, n);
  const dx = get('dx', T * H), dh1 = get('dh1', T * H), dxn = get('dxn', T * H);
  const dact = get('dact', T * F), dg = get('dg', T * F), du = get('du', T * F);
  const dattn = get('dattn', T * N * D), dq = get('dq', T * N * D), dk = get('dk', T * M * D), dv = get('dv', T * M * D);
  const dqRaw = get('dqRaw', T * N * D), dkRaw = get('dkRaw', T * M * D);
  const attnScratch = get('attnScratch', 2 * N * T * D);
  rmsnorm_backward(gpu, dx, dxf, acts.xLast, acts.rstdF, ctx.weights.finalNorm, T, H, false);

  for (let l = c.layers - 1; l >= 0; l--) {
    const a = acts.layers[l]!;
    const w = ctx.weights.layers[l]!;
    // MLP: x_out = h1 + down(swiglu(gate(xn2), up(xn2)))
    projectBackward(ctx, lv, grads, l, 6, dact, dx, a.act, a.loraU[6]!, T, false);
    swiglu_backward(gpu, dg, du, dact, a.g, a.u, T * F);
    projectBackward(ctx, lv, grads, l, 4, dxn, dg, a.xn2, a.loraU[4]!, T, false);
    projectBackward(ctx, lv, grads, l, 5, dxn, du, a.xn2, a.loraU[5]!, T, true);
    gpu.copy(dx, 0, dh1, 0, T * H * 4);
    rmsnorm_backward(gpu, dh1, dxn, a.h1, a.rstd2, w.postNorm, T, H, true);

    // Attention: h1 = x + o(attn(rope(norm(q)), rope(norm(k)), v))
    projectBackward(ctx, lv, grads, l, 3, dattn, dh1, a.attn, a.loraU[3]!, T, false);
    attention_backward(gpu, dq, dk, dv, dattn, a.q, a.k, a.v, a.attn, a.lse, T, N, M, D, attnScratch);
    rope_backward(gpu, dq, acts.cos, acts.sin, T, N, D);
    rope_backward(gpu, dk, acts.cos, acts.sin, T, M, D);
    let dqIn = dq, dkIn = dk;
    if (c.qkNorm) {
      rmsnorm_backward(gpu, dqRaw, dq, a.qRaw, a.rstdQ, w.qNorm!, T * N, D, false);
      rmsnorm_backward(gpu, dkRaw, dk, a.kRaw, a.rstdK, w.kNorm!, T * M, D, false);
      dqIn = dqRaw;
      dkIn = dkRaw;
    }
    projectBackward(ctx, lv, grads, l, 0, dxn, dqIn, a.xn1, a.loraU[0]!, T, false);
    projectBackward(ctx, lv, grads, l, 1, dxn, dkIn, a.xn1, a.loraU[1]!, T, true);
    projectBackward(ctx, lv, grads, l, 2, dxn, dv, a.xn1, a.loraU[2]!, T, true);
    gpu.copy(dh1, 0, dx, 0, T * H * 4);
    rmsnorm_backward(gpu, dx, dxn, a.x, a.rstd1, w.inNorm, T, H, true);
    if (l > 0) yield;
  }
}
