// One SDPO update on the GPU (native/engine/sdpo_step.cc, docs/learning.md): teacher targets (base, EMA,
// current adapter, or supplied by a remote teacher), base log-probs, then per optimizer step the
// student forward, SDPO loss, backward, global-norm clip, AdamW and EMA. Only metrics, the gradient
// norm's partial sums and (at the end) the adapter state come back to the host.
//
// The step runs in chunks (a layer of a forward or backward, a chunk of logits rows, an optimizer
// update): after each, what it recorded is submitted and the step waits for the GPU to finish it, so
// a decode that arrives meanwhile gets its commands onto the queue between two chunks rather than
// behind the whole step. The commands and their order are those of an unchunked step, so the
// numbers are too. A runner serves one step (its buffers are its own); run it in a context whose
// workspace no other call in flight uses.
import type { NativeSample, NativeStepOptions, NativeStepResult } from '../native.js';
import { destroyBuffers, type GpuAdapter, type LoraView } from './adapter.js';
import type { ModelContext } from './context.js';
import { backwardChunks } from './backward.js';
import { forwardChunks, lmHead, runChunks, type Activations } from './forward.js';
import { adamw } from './ops/adamw.js';
import { axpby } from './ops/axpby.js';
import { log_softmax, log_softmax_backward } from './ops/log_softmax.js';
import { sdpo_loss } from './ops/sdpo_loss.js';
import { SUM_SQUARES_PARTIALS, sum_squares } from './ops/sum_squares.js';
import { teacher_tail } from './ops/teacher_tail.js';
import { token_logp } from './ops/token_logp.js';
import { topk } from './ops/topk.js';
import { lmHeadBackwardRows, logitChunks, rowSlice } from './vocab.js';

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
  ids: Int32Array; // prompt ++ response
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

  /** Submits what was recorded and waits until the GPU has done it (and whatever came before it). */
  private async sync(): Promise<void> {
    this.ctx.gpu.flush();
    await this.ctx.gpu.device.queue.onSubmittedWorkDone();
  }

  /** Runs a chunked pass, submitting and waiting after each chunk (see the header). */
  private chunked<R>(chunks: Generator<void, R>): Promise<R> {
    return runChunks(chunks, () => this.sync());
  }

  /**
   * Runs the forward on `ids` and hands the log-probs of the rows that score the response after `P`
   * prompt tokens to `use`, a chunk of rows at a time (logp [n, V] of response rows r0..r0+n-1).
   */
  private *responseLogp(lv: LoraView | null, ids: Int32Array, P: number, T: number, keep: boolean, prefix: string, use: (logp: GPUBuffer, r0: number, n: number) => void): Generator<void, Activations> {
    const ctx = this.ctx, V = ctx.cfg.vocab;
    const acts = yield* forwardChunks(ctx, lv, ids, P + T, keep, prefix);
    for (const [r0, n] of logitChunks(ctx, T)) {
      const logits = ctx.ws.get('sd.logits', n * V);
      lmHead(ctx, logits, acts.xf, P - 1 + r0, n, prefix);
      const logp = ctx.ws.get('sd.logp', n * V);
      const lse = ctx.ws.get('sd.lse', n);
      log_softmax(ctx.gpu, logp, lse, logits, n, V);
      use(logp, r0, n);
      yield;
    }
    return acts;
  }

  /** Rows r0..r0+n-1 of a [T, width] buffer (the buffer itself when that is all of it). */
  private rows(name: string, src: GPUBuffer, r0: number, n: number, T: number, width = 1): GPUBuffer {
    return rowSlice(this.ctx, name, src, r0, n, T, width);
  }

  /** Writes `part` [n, width] into rows r0.. of `dst` unless it is `dst` itself. */
  private place(part: GPUBuffer, dst: GPUBuffer, r0: number, n: number, width = 1): void {
    if (part !== dst) this.ctx.gpu.copy(part, 0, dst, r0 * width * 4, n * width * 4);
  }

  private *teacherTargets(lv: LoraView | null, s: NativeSample, y: GPUBuffer, K: number): Generator<void, Targets> {
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
    const tt: Targets = { K, idx: this.buffer(T * K, 'tt.idx'), logp: this.buffer(T * K, 'tt.logp'), tail: this.buffer(T, 'tt.tail'), token: this.buffer(T, 'tt.token') };
    yield* this.responseLogp(lv, concat(s.teacherPrompt, s.response), s.teacherPrompt.length, T, false, 'fw', (logp, r0, n) => {
      const whole = r0 === 0 && n === T;
      const idx = whole ? tt.idx : ctx.ws.get('tt.idxPart', n * K), val = whole ? tt.logp : ctx.ws.get('tt.logpPart', n * K);
      const tail = whole ? tt.tail : ctx.ws.get('tt.tailPart', n), token = whole ? tt.token : ctx.ws.get('tt.tokenPart', n);
      topk(ctx.gpu, idx, val, logp, n, V, K);
      teacher_tail(ctx.gpu, tail, token, logp, idx, val, this.rows('tt.yPart', y, r0, n, T), n, V, K);
      this.place(idx, tt.idx, r0, n, K);
      this.place(val, tt.logp, r0, n, K);
      this.place(tail, tt.tail, r0, n);
      this.place(token, tt.token, r0, n);
    });
    return tt;
  }

  async run(adapter: GpuAdapter, samples: NativeSample[], opt: NativeStepOptions): Promise<NativeStepResult> {
    try {
      return await this.step(adapter, samples, opt);
    } finally {
      // After a failure, commands naming them may be unsubmitted in the encoder other calls share.
      destroyBuffers(this.ctx.gpu, this.temps);
      this.temps.length = 0;
    }
  }

  private async step(adapter: GpuAdapter, samples: NativeSample[], opt: NativeStepOptions): Promise<NativeStepResult> {
    const ctx = this.ctx, gpu = ctx.gpu, ws = ctx.ws;
    const V = ctx.cfg.vocab, H = ctx.cfg.hidden, B = samples.length, L = adapter.L;
    const timings = { teacherMs: 0, baseMs: 0, studentForwardMs: 0, backwardMs: 0, optimizerMs: 0 };

    // Teacher: the adapter truly off (base), the EMA copy, or the adapter as it is before this step.
    let t0 = performance.now();
    const teacherView = opt.teacher === 1 ? adapter.params : opt.teacher === 2 ? adapter.ema() : null;
    const buffers: SampleBuffers[] = [];
    for (const s of samples) {
      const T = s.response.length, P = s.prompt.length;
      const y = this.upload(s.response, 'sd.y');
      const old = this.upload(s.oldLogprobs ?? new Float32Array(T).fill(NaN), 'sd.old');
      const targets = await this.chunked(this.teacherTargets(teacherView, s, y, opt.topK));
      buffers.push({ P, T, ids: concat(s.prompt, s.response), y, old, base: this.buffer(T, 'sd.base'), targets });
    }
    await this.sync();
    timings.teacherMs = performance.now() - t0;

    t0 = performance.now();
    for (const b of buffers) {
      await this.chunked(this.responseLogp(null, b.ids, b.P, b.T, false, 'fw', (logp, r0, n) => {
        const part = r0 === 0 && n === b.T ? b.base : ws.get('sd.basePart', n);
        token_logp(gpu, part, logp, this.rows('sd.yPart', b.y, r0, n, b.T), n, V);
        this.place(part, b.base, r0, n);
      }));
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
        const T = b.T, tt = b.targets, coef = 1 / (T * B);
        const dxf = ws.get('sd.dxf', (b.P + T) * H);
        ws.zero(dxf, (b.P + T) * H);
        // Per chunk of response rows: the loss, d/dlogits, then into the final hidden states of the
        // scoring rows; the backward through the model runs once all rows are in. (Logits exist only a
        // chunk at a time, so the loss and the LM-head backward count in studentForwardMs.)
        const acts = await this.chunked(this.responseLogp(adapter.params, b.ids, b.P, T, true, 'st', (logp, r0, n) => {
          const ds = ws.get('sd.ds', n * V);
          const v = ws.get('sd.v', n * 4);
          const part = (name: string, src: GPUBuffer, width = 1) => this.rows(name, src, r0, n, T, width);
          sdpo_loss(gpu, ds, v, logp, part('sd.yPart', b.y), part('tt.idxPart', tt.idx, tt.K), part('tt.logpPart', tt.logp, tt.K), part('tt.tailPart', tt.tail), part('tt.tokenPart', tt.token), part('sd.oldPart', b.old), part('sd.basePart', b.base), n, V, tt.K, { alpha: opt.alpha, tail: opt.tail, sampledToken: opt.sampledToken, isClip: opt.isClip, beta: opt.beta }, coef);
          gpu.copy(v, 0, vals, (row + r0) * 16, n * 16);
          const dlogits = ws.get('sd.dlogits', n * V);
          log_softmax_backward(gpu, dlogits, ds, logp, n, V);
          const dRows = ws.get('sd.dRows', n * H);
          lmHeadBackwardRows(ctx, dRows, dlogits, n);
          gpu.copy(dRows, 0, dxf, (b.P - 1 + r0) * H * 4, n * H * 4);
        }));
        row += T;
        await this.sync();
        timings.studentForwardMs += performance.now() - tf;

        const tb = performance.now();
        await this.chunked(backwardChunks(ctx, adapter.params, adapter.grads, acts, dxf));
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
