// Partial sums of squares of x[0..n) into out[0..PARTIALS) (kernels/wgsl/sum_squares.wgsl).
import { uniforms, type Gpu } from '../device.js';

export const SUM_SQUARES_PARTIALS = 256;

export function sum_squares(gpu: Gpu, out: GPUBuffer, x: GPUBuffer, n: number): void {
  gpu.dispatch('sum_squares', 'sum_squares', [out, x], [SUM_SQUARES_PARTIALS], uniforms([['u32', n]]));
}
