// SwiGLU on the GPU (kernels/wgsl/swiglu.wgsl), mirroring native/cpu/swiglu.cc: h = silu(g) * u.
import { uniforms, type Gpu } from '../device.js';
import { grid } from '../grid.js';
import { checkBuffer, checkDims } from './check.js';

export function swiglu(gpu: Gpu, h_n: GPUBuffer, g_n: GPUBuffer, u_n: GPUBuffer, n: number): void {
  checkDims('swiglu', { n });
  for (const [name, buf] of [['h', h_n], ['g', g_n], ['u', u_n]] as const) checkBuffer('swiglu', name, buf, n);
  if (n === 0) return;
  gpu.dispatch('swiglu', 'swiglu', [h_n, g_n, u_n], grid(n / 256), uniforms([['u32', n]]));
}

export function swiglu_backward(gpu: Gpu, dg_n: GPUBuffer, du_n: GPUBuffer, dh_n: GPUBuffer, g_n: GPUBuffer, u_n: GPUBuffer, n: number): void {
  checkDims('swiglu_backward', { n });
  for (const [name, buf] of [['dg', dg_n], ['du', du_n], ['dh', dh_n], ['g', g_n], ['u', u_n]] as const) {
    checkBuffer('swiglu_backward', name, buf, n);
  }
  if (n === 0) return;
  gpu.dispatch('swiglu', 'swiglu_backward', [dg_n, g_n, u_n, dh_n, du_n], grid(n / 256), uniforms([['u32', n]]));
}
