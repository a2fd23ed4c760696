// One SDPO update on the GPU (native/engine/sdpo_step.cc, docs sdpo.md): teacher targets (base, EMA,
// current adapter, or supplied by a remote teacher), base log-probs, then per optimizer step the
// student forward, SDPO loss, backward, global-norm clip, AdamW and EMA. Only metrics, the gradient
// norm's partial sums and (at the end) the adapter state come back to the host.
import type { NativeSample, NativeStepOptions, NativeStepResult } from '../native.js';
import type { GpuAdapter, LoraView } from './adapter.js';
import type { ModelContext } from './context.js';
import { backward } from './backward.js';
import { forward, lmHead } from './forward.js';
import { adamw } from './ops/adamw.js';
import { axpby } from './ops/axpby.js';
import { linear_backward_input } from './ops/linear.js';
import { log_softmax, log_softmax_backward } from './ops/log_softmax.js';
import { sdpo_loss } from './ops/sdpo_loss.js';
import { SUM_SQUARES_PARTIALS, sum_squares } from './ops/sum_squares.js';
import { teacher_tail } from './ops/teacher_tail.js';
import { token_logp } from './ops/token_logp.js';
import { topk } from './ops/topk.js';

/** Teacher targets of one sample's response positions, on the GPU. */
interface Targets {
  K: number;
  idx: GPUBuffer;
  logp: GPUBuffer;
  tail: GPUBuffer;
  token: GPUBuffer;
}

interface SampleBuffers {
  P: number;
  T: number;
  ids: GPUBuffer; // prompt ++ response
  y: GPUBuffer; // response
  old: GPUBuffer; // NaN where unknown
  base: GPUBuffer; // base log-probs of y
  targets: Targets;
}

function concat(a: Int32Array, b: Int32Array): Int32Array {
  const out = new Int32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** The tail of supplied targets is the mass the top-K leaves (supplied_targets in sdpo_step.cc). */
function suppliedTail(top: Float32Array, T: number, K: number): Float32Array {
  const tail = new Float32Array(T);
  for (let t = 0; t < T; t++) {
    let inK = 0;
    for (let k = 0; k < K; k++) inK += Math.exp(top[t * K + k]!);
    const rest = 1 - inK;
    tail[t] = rest > 1e-12 ? Math.log(rest) : -Infinity;
  }
  return tail;
}

export class SdpoStepRunner {
  private readonly temps: GPUBuffer[] = [];

  constructor(private readonly ctx: ModelContext) {}

  private upload(data: Float32Array | Int32Array, label: string): GPUBuffer {
    const b = this.ctx.gpu.upload(data, label);
    this.temps.push(b);
    return b;
  }

  private buffer(floats: number, label: string): GPUBuffer {
    const b = this.ctx.gpu.buffer(floats * 4, label);
    this.temps.push(b);
    return b;
  }

  private async sync(): Promise<void> {
    this.ctx.gpu.flush();
    await this.ctx.gpu.device.queue.onSubmittedWorkDone();
  }

  /** log-probs [T, V] of the rows that score the response after `P` prompt tokens of `ids`. */
  private responseLogp(lv: LoraView | null, ids: GPUBuffer, P: number, T: number, keep: boolean, prefix: string) {
    const ctx = this.ctx, V = ctx.cfg.vocab;
    const acts = forward(ctx, lv, ids, P + T, keep, prefix);
    const logits = ctx.ws.get('sd.logits', T * V);
    lmHead(ctx, logits, acts.xf, P - 1, T, prefix);
    const logp = ctx.ws.get('sd.logp', T * V);
    const lse = ctx.ws.get('sd.lse', T);
    log_softmax(ctx.gpu, logp, lse, logits, T, V);
    return { acts, logp };
  }

  private teacherTargets(lv: LoraView | null, s: NativeSample, y: GPUBuffer, K: number): Targets {
    const ctx = this.ctx, V = ctx.cfg.vocab, T = s.response.length;
    if (s.teacherK !== undefined && s.teacherK > 0) {
      const k = s.teacherK;
      return {
        K: k,
        idx: this.upload(s.teacherTopIds!, 'tt.idx'),
        logp: this.upload(s.teacherTopLogprobs!, 'tt.logp'),
        tail: this.upload(suppliedTail(s.teacherTopLogprobs!, T, k), 'tt.tail'),
        token: this.upload(s.teacherTokenLogprobs!, 'tt.token'),
      };
    }
    const ids = this.upload(concat(s.teacherPrompt, s.response), 'tt.ids');
    const { logp } = this.responseLogp(lv, ids, s.teacherPrompt.length, T, false, 'fw');
    const tt: Targets = { K, idx: this.buffer(T * K, 'tt.idx'), logp: this.buffer(T * K, 'tt.logp'), tail: this.buffer(T, 'tt.tail'), token: this.buffer(T, 'tt.token') };
    topk(ctx.gpu, tt.idx, tt.logp, logp, T, V, K);
    teacher_tail(ctx.gpu, tt.tail, tt.token, logp, tt.idx, tt.logp, y, T, V, K);
    return tt;
  }

  async run(adapter: GpuAdapter, samples: NativeSample[], opt: NativeStepOptions): Promise<NativeStepResult> {
    try {
      return await this.step(adapter, samples, opt);
    } finally {
      this.ctx.gpu.flush();
      for (const b of this.temps) b.destroy();
      this.temps.length = 0;
      this.ctx.ws.release();
    }
  }

  private async step(adapter: GpuAdapter, samples: NativeSample[], opt: NativeStepOptions): Promise<NativeStepResult> {
    const ctx = this.ctx, gpu = ctx.gpu, ws = ctx.ws;
    const V = ctx.cfg.vocab, H = ctx.cfg.hidden, B = samples.length, L = adapter.L;
    const timings = { teacherMs: 0, baseMs: 0, studentForwardMs: 0, backwardMs: 0, optimizerMs: 0 };

    // Teacher: the adapter truly off (base), the EMA copy, or the adapter as it is before this step.
    let t0 = performance.now();
    const teacherView = opt.teacher === 1 ? adapter.params : opt.teacher === 2 ? adapter.ema() : null;
    const buffers: SampleBuffers[] = samples.map((s) => {
      const T = s.response.length, P = s.prompt.length;
      const y = this.upload(s.response, 'sd.y');
      const old = this.upload(s.oldLogprobs ?? new Float32Array(T).fill(NaN), 'sd.old');
      const targets = this.teacherTargets(teacherView, s, y, opt.topK);
      return { P, T, ids: this.upload(concat(s.prompt, s.response), 'sd.ids'), y, old, base: this.buffer(T, 'sd.base'), targets };
    });
    await this.sync();
    timings.teacherMs = performance.now() - t0;

    t0 = performance.now();
    for (const b of buffers) {
      const { logp } = this.responseLogp(null, b.ids, b.P, b.T, false, 'fw');
      token_logp(gpu, b.base, logp, b.y, b.T, V);
    }
    await this.sync();
    timings.baseMs = performance.now() - t0;

    const totalT = buffers.reduce((s, b) => s + b.T, 0);
    const vals = this.buffer(totalT * 4, 'sd.vals');
    const partials = this.buffer(SUM_SQUARES_PARTIALS, 'sd.partials');
    const clipped = this.buffer(L.total, 'sd.clipped');
    const firstGrads = opt.steps > 1 ? this.buffer(L.total, 'sd.firstGrads') : null;
    const result: NativeStepResult = {
      loss: 0, distillLoss: 0, klToBase: 0, meanIsWeight: 0, clipFraction: 0, gradNorm: 0, teacherStudentKl: 0, tokens: 0, stepLosses: [], timings,
    };

    for (let step = 0; step < opt.steps; step++) {
      for (const s of adapter.grads.slots) {
        if (!s) continue;
        ws.zero(s.A, s.A.size / 4);
        ws.zero(s.B, s.B.size / 4);
      }
      let row = 0;
      for (const b of buffers) {
        const tf = performance.now();
        const { acts, logp } = this.responseLogp(adapter.params, b.ids, b.P, b.T, true, 'st');
        await this.sync();
        timings.studentForwardMs += performance.now() - tf;

        const tb = performance.now();
        const T = b.T, tt = b.targets;
        const ds = ws.get('sd.ds', T * V);
        const v = ws.get('sd.v', T * 4);
        const coef = 1 / (T * B);
        sdpo_loss(gpu, ds, v, logp, b.y, tt.idx, tt.logp, tt.tail, tt.token, b.old, b.base, T, V, tt.K, { alpha: opt.alpha, tail: opt.tail, sampledToken: opt.sampledToken, isClip: opt.isClip, beta: opt.beta }, coef);
        gpu.copy(v, 0, vals, row * 16, T * 16);
        row += T;
        // d/dlogits, then into the final hidden states of the scoring rows, then through the model.
        const dlogits = ws.get('sd.dlogits', T * V);
        log_softmax_backward(gpu, dlogits, ds, logp, T, V);
        const dRows = ws.get('sd.dRows', T * H);
        linear_backward_input(gpu, dRows, dlogits, ctx.weights.lmHead, T, H, V, false);
        const dxf = ws.get('sd.dxf', acts.T * H);
        ws.zero(dxf, acts.T * H);
        gpu.copy(dRows, 0, dxf, (b.P - 1) * H * 4, T * H * 4);
        backward(ctx, adapter.params, adapter.grads, acts, dxf);
        await this.sync();
        timings.backwardMs += performance.now() - tb;
      }

      const to = performance.now();
      adapter.gather(adapter.grads, adapter.flat.grads);
      sum_squares(gpu, partials, adapter.flat.grads, L.total);
      const [valsHost, partHost] = await Promise.all([gpu.read(vals, totalT * 16), gpu.read(partials, SUM_SQUARES_PARTIALS * 4)]);
      const rv = new Float32Array(valsHost!);
      let sq = 0;
      for (const p of new Float32Array(partHost!)) sq += p;
      const gradNorm = Math.sqrt(sq);

      let loss = 0, distill = 0, kl = 0, wSum = 0, tsKl = 0, tokens = 0, nClipped = 0;
      let r = 0;
      for (const b of buffers) {
        let sD = 0, sWD = 0, sK = 0;
        for (let t = 0; t < b.T; t++, r++) {
          const D = rv[r * 4]!, w = rv[r * 4 + 1]!, k3 = rv[r * 4 + 2]!;
          sD += D;
          sWD += w * D;
          sK += k3;
          wSum += w;
          nClipped += rv[r * 4 + 3]! !== 0 ? 1 : 0;
        }
        tokens += b.T;
        distill += sWD / b.T;
        kl += sK / b.T;
        tsKl += sD / b.T;
        loss += sWD / b.T + (opt.beta * sK) / b.T;
      }
      loss /= B;
      result.stepLosses.push(loss);
      if (step === 0) {
        Object.assign(result, {
          loss,
          distillLoss: distill / B,
          klToBase: kl / B,
          teacherStudentKl: tsKl / B,
          meanIsWeight: wSum / tokens,
          clipFraction: nClipped / tokens,
          gradNorm,
          tokens,
        });
        if (firstGrads) gpu.copy(adapter.flat.grads, 0, firstGrads, 0, L.total * 4);
      }
      // torch.nn.utils.clip_grad_norm_ semantics.
      const clipCoef = opt.maxGradNorm / (gradNorm + 1e-6);
      let g = adapter.flat.grads;
      if (clipCoef < 1) {
        axpby(gpu, clipped, adapter.flat.grads, L.total, 0, clipCoef);
        g = clipped;
      }
      adapter.step += 1;
      adamw(gpu, adapter.flat.params, adapter.flat.m, adapter.flat.v, g, L.total, opt.learningRate, opt.adamBeta1, opt.adamBeta2, opt.adamEps, opt.weightDecay, adapter.step);
      axpby(gpu, adapter.flat.ema, adapter.flat.params, L.total, Math.fround(1 - Math.fround(opt.emaRate)), Math.fround(opt.emaRate));
      adapter.syncMirror(adapter.params, adapter.flat.params);
      await this.sync();
      timings.optimizerMs += performance.now() - to;
    }
    if (firstGrads) gpu.copy(firstGrads, 0, adapter.flat.grads, 0, L.total * 4);
    await adapter.refreshHost();
    return result;
  }
}
