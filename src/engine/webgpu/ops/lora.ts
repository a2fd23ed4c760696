// LoRA branch on the GPU (kernels/wgsl/lora.wgsl), mirroring native/cpu/lora.cc: y += s (x A^T) B^T
// with u = x A^T kept for the backward, and the backward accumulating dA, dB and dx. The forward may
// cover a row range of larger x and y buffers: a mixed-adapter decode batch applies each adapter to its
// own rows.
import { uniforms, type Gpu } from '../device.js';
import { grid } from '../grid.js';
import { checkBuffer, checkDims } from './check.js';

function step(gpu: Gpu, entry: string, out: GPUBuffer, a: GPUBuffer, b: GPUBuffer, outputs: number, dims: ArrayBuffer): void {
  if (outputs > 0) gpu.dispatch('lora', entry, [out, a, b], grid(outputs / 256), dims);
}

function loraDims(T: number, I: number, O: number, R: number, scale: number, t0 = 0): ArrayBuffer {
  return uniforms([['u32', T], ['u32', I], ['u32', O], ['u32', R], ['f32', scale], ['u32', t0]]);
}

/**
 * y_TO += scale * (x_TI A_RI^T) B_OR^T; u_TR = x_TI A_RI^T, on rows t0..t0+T-1 of y and x (which hold
 * at least t0+T rows); u holds the T rows of the range from its start.
 */
export function lora(gpu: Gpu, y_TO: GPUBuffer, u_TR: GPUBuffer, x_TI: GPUBuffer, A_RI: GPUBuffer, B_OR: GPUBuffer, T: number, I: number, O: number, R: number, scale: number, t0 = 0): void {
  checkDims('lora', { T, I, O, R, t0 });
  checkBuffer('lora', 'y', y_TO, (t0 + T) * O);
  checkBuffer('lora', 'u', u_TR, T * R);
  checkBuffer('lora', 'x', x_TI, (t0 + T) * I);
  checkBuffer('lora', 'A', A_RI, R * I);
  checkBuffer('lora', 'B', B_OR, O * R);
  const dims = loraDims(T, I, O, R, scale, t0);
  step(gpu, 'lora_down', u_TR, x_TI, A_RI, T * R, dims);
  step(gpu, 'lora_up', y_TO, u_TR, B_OR, T * O, dims);
}

/** dB += s dy^T u; du = s dy B (in scratch_TR); dA += du^T x; dx += du A. */
export function lora_backward(
  gpu: Gpu,
  dx_TI: GPUBuffer,
  dA_RI: GPUBuffer,
  dB_OR: GPUBuffer,
  dy_TO: GPUBuffer,
  x_TI: GPUBuffer,
  u_TR: GPUBuffer,
  A_RI: GPUBuffer,
  B_OR: GPUBuffer,
  T: number,
  I: number,
  O: number,
  R: number,
  scale: number,
  scratch_TR: GPUBuffer,
): void {
  checkDims('lora_backward', { T, I, O, R });
  checkBuffer('lora_backward', 'dx', dx_TI, T * I);
  checkBuffer('lora_backward', 'dA', dA_RI, R * I);
  checkBuffer('lora_backward', 'dB', dB_OR, O * R);
  checkBuffer('lora_backward', 'dy', dy_TO, T * O);
  checkBuffer('lora_backward', 'x', x_TI, T * I);
  checkBuffer('lora_backward', 'u', u_TR, T * R);
  checkBuffer('lora_backward', 'A', A_RI, R * I);
  checkBuffer('lora_backward', 'B', B_OR, O * R);
  checkBuffer('lora_backward', 'scratch', scratch_TR, T * R);
  const dims = loraDims(T, I, O, R, scale);
  step(gpu, 'lora_grad_B', dB_OR, dy_TO, u_TR, O * R, dims);
  step(gpu, 'lora_du', scratch_TR, dy_TO, B_OR, T * R, dims);
  step(gpu, 'lora_grad_A', dA_RI, scratch_TR, x_TI, R * I, dims);
  step(gpu, 'lora_dx', dx_TI, scratch_TR, A_RI, T * I, dims);
}
