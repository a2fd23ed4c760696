// The per-position SDPO objective on the GPU over R rows at once (kernels/wgsl/sdpo_loss.wgsl),
// mirroring sdpo_loss_row of native/cpu/sdpo_loss.cc for every row: ds [R, V] gets
// coef * d(w*D + beta*k3)/ds (zeros where no gradient) and vals [R, 4] the row's (D, w, k3, clipped).
import { uniforms, type Gpu } from '../device.js';
import { grid } from '../grid.js';
import { checkBuffer, checkDims } from './check.js';

/** Largest teacher top-K the kernel holds in workgroup memory (MAXC - 1 in the kernel). */
export const SDPO_LOSS_MAX_K = 1024;

export interface SdpoLossOptions {
  /** 0 forward KL, 1 reverse KL, in between generalized Jensen-Shannon. */
  alpha: number;
  /** Extra category for the mass outside the top-K, else renormalize over it. */
  tail: boolean;
  sampledToken: boolean;
  isClip: number;
  /** Weight of the k3 KL-to-base term. */
  beta: number;
}

// The kernel reads the four per-row scalars from one [4, R] buffer (storage bindings per stage are
// few); it is packed here with copies into one scratch buffer per device, grown on demand.
const packed = new WeakMap<Gpu, GPUBuffer>();

function rowScratch(gpu: Gpu, bytes: number): GPUBuffer {
  let buf = packed.get(gpu);
  if (!buf || buf.size < bytes) {
    if (buf) {
      gpu.flush(); // work already recorded still reads the old buffer; destroy is deferred past it
      buf.destroy();
    }
    buf = gpu.buffer(Math.max(bytes, 4096), 'sdpo_loss rows');
    packed.set(gpu, buf);
  }
  return buf;
}

/**
 * s_RV: student log-probabilities [R, V]; y_R int32 sampled tokens; teacherIdx_RK int32 / teacherLogp_RK
 * the teacher's top-K (not read in sampled-token mode); per row: tailLogp_R (log of the teacher's mass
 * outside the top-K, may be -inf), tokenLogp_R (teacher log-prob of y), oldLogp_R (NaN = unknown, weight
 * 1), baseLogp_R (base model log-prob of y). coef multiplies every gradient (1 / (T * B) in a step).
 * Writes ds_RV [R, V] and vals_R4 [R, 4] = (D, w, k3, clipped as 0/1).
 */
export function sdpo_loss(gpu: Gpu, ds_RV: GPUBuffer, vals_R4: GPUBuffer, s_RV: GPUBuffer, y_R: GPUBuffer,
                          teacherIdx_RK: GPUBuffer, teacherLogp_RK: GPUBuffer, tailLogp_R: GPUBuffer, tokenLogp_R: GPUBuffer,
                          oldLogp_R: GPUBuffer, baseLogp_R: GPUBuffer, R: number, V: number, K: number,
                          opt: SdpoLossOptions, coef: number): void {
  const op = 'sdpo_loss';
  checkDims(op, { R, V, K });
  if (K > SDPO_LOSS_MAX_K) throw new Error(`${op}: K (${K}) exceeds the GPU limit ${SDPO_LOSS_MAX_K}`);
  if (!(opt.alpha >= 0 && opt.alpha <= 1)) throw new Error(`${op}: alpha must be in [0, 1] (got ${opt.alpha})`);
  if (!Number.isFinite(coef)) throw new Error(`${op}: coef must be finite (got ${coef})`);
  checkBuffer(op, 'ds', ds_RV, R * V);
  checkBuffer(op, 'vals', vals_R4, R * 4);
  checkBuffer(op, 's', s_RV, R * V);
  checkBuffer(op, 'y', y_R, R);
  if (!opt.sampledToken) {
    checkBuffer(op, 'teacherIdx', teacherIdx_RK, R * K);
    checkBuffer(op, 'teacherLogp', teacherLogp_RK, R * K);
  }
  const planes = [tailLogp_R, tokenLogp_R, oldLogp_R, baseLogp_R];
  const names = ['tailLogp', 'tokenLogp', 'oldLogp', 'baseLogp'];
  planes.forEach((b, i) => checkBuffer(op, names[i]!, b, R));
  if (R === 0 || V === 0) return;
  const rowIn = rowScratch(gpu, 4 * R * 4);
  planes.forEach((b, i) => gpu.copy(b, 0, rowIn, i * R * 4, R * 4));
  const u = uniforms([
    ['u32', R], ['u32', V], ['u32', opt.sampledToken ? 0 : K], ['u32', opt.tail ? 1 : 0], ['u32', opt.sampledToken ? 1 : 0],
    ['f32', opt.alpha], ['f32', opt.isClip], ['f32', opt.beta], ['f32', coef],
  ]);
  gpu.dispatch(op, op, [ds_RV, vals_R4, s_RV, y_R, teacherIdx_RK, teacherLogp_RK, rowIn], grid(R), u);
}
