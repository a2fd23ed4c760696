// Per row: log of the mass outside the top-K and the sampled token's log-prob (kernels/wgsl/teacher_tail.wgsl).
import { uniforms, type Gpu } from '../device.js';
import { grid } from '../grid.js';

export function teacher_tail(gpu: Gpu, tail_R: GPUBuffer, token_R: GPUBuffer, logp_RV: GPUBuffer, idx_RK: GPUBuffer, val_RK: GPUBuffer, y_R: GPUBuffer, R: number, V: number, K: number): void {
  gpu.dispatch('teacher_tail', 'teacher_tail', [tail_R, token_R, logp_RV, idx_RK, val_RK, y_R], grid(R), uniforms([['u32', R], ['u32', V], ['u32', K], ['f32', -Infinity]]));
}
