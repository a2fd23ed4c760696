// Top-K per row on the GPU (kernels/wgsl/topk.wgsl), mirroring native/cpu/topk.cc: the K largest
// values of each row of x[R, V], descending, ties broken by the lower index; idx_RK is int32.
import { uniforms, type Gpu } from '../device.js';
import { grid } from '../grid.js';
import { checkBuffer, checkDims } from './check.js';

/** Largest K the kernel gathers in workgroup memory (MAXK in the kernel). */
export const TOPK_MAX_K = 1024;

export function topk(gpu: Gpu, idx_RK: GPUBuffer, val_RK: GPUBuffer, x_RV: GPUBuffer, R: number, V: number, K: number): void {
  checkDims('topk', { R, V, K });
  if (K > V) throw new Error(`topk: K (${K}) exceeds the row length V (${V})`);
  if (K > TOPK_MAX_K) throw new Error(`topk: K (${K}) exceeds the GPU limit ${TOPK_MAX_K}`);
  checkBuffer('topk', 'idx', idx_RK, R * K);
  checkBuffer('topk', 'val', val_RK, R * K);
  checkBuffer('topk', 'x', x_RV, R * V);
  if (R === 0 || K === 0) return;
  gpu.dispatch('topk', 'topk', [idx_RK, val_RK, x_RV], grid(R), uniforms([['u32', R], ['u32', V], ['u32', K]]));
}
