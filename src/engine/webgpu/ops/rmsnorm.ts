// RMSNorm and its input gradient on the GPU (kernels/wgsl/rmsnorm.wgsl), mirroring
// native/cpu/rmsnorm.cc: y = w * x * rstd per row of x[N, D], rstd = 1 / sqrt(mean(x^2) + eps).
import { uniforms, type Gpu } from '../device.js';
import { grid } from '../grid.js';
import { checkBuffer, checkDims } from './check.js';

// Where rstd goes when the caller does not keep it (the kernel always writes one value per row).
const discardedRstd = new WeakMap<Gpu, GPUBuffer>();

function rstdSink(gpu: Gpu, N: number): GPUBuffer {
  let buf = discardedRstd.get(gpu);
  if (!buf || buf.size < N * 4) {
    buf = gpu.buffer(Math.max(N, 1024) * 4, 'rmsnorm.rstd-discarded');
    discardedRstd.set(gpu, buf);
  }
  return buf;
}

/** y_ND = w_D * x_ND * rstd_N; rstd_N may be null when the backward will not run. */
export function rmsnorm(gpu: Gpu, y_ND: GPUBuffer, rstd_N: GPUBuffer | null, x_ND: GPUBuffer, w_D: GPUBuffer, N: number, D: number, eps: number): void {
  checkDims('rmsnorm', { N, D });
  checkBuffer('rmsnorm', 'y', y_ND, N * D);
  checkBuffer('rmsnorm', 'x', x_ND, N * D);
  checkBuffer('rmsnorm', 'w', w_D, D);
  if (rstd_N) checkBuffer('rmsnorm', 'rstd', rstd_N, N);
  if (N === 0 || D === 0) return;
  const rstd = rstd_N ?? rstdSink(gpu, N);
  gpu.dispatch('rmsnorm', 'rmsnorm', [y_ND, rstd, x_ND, w_D], grid(N), uniforms([['u32', N], ['u32', D], ['f32', eps], ['u32', 0]]));
}

/** dx = rstd * (g - xhat * mean(g * xhat)), g = dy * w; adds into dx_ND when accumulate. */
export function rmsnorm_backward(
  gpu: Gpu,
  dx_ND: GPUBuffer,
  dy_ND: GPUBuffer,
  x_ND: GPUBuffer,
  rstd_N: GPUBuffer,
  w_D: GPUBuffer,
  N: number,
  D: number,
  accumulate: boolean,
): void {
  checkDims('rmsnorm_backward', { N, D });
  for (const [name, buf] of [['dx', dx_ND], ['dy', dy_ND], ['x', x_ND]] as const) checkBuffer('rmsnorm_backward', name, buf, N * D);
  checkBuffer('rmsnorm_backward', 'rstd', rstd_N, N);
  checkBuffer('rmsnorm_backward', 'w', w_D, D);
  if (N === 0 || D === 0) return;
  gpu.dispatch(
    'rmsnorm',
    'rmsnorm_backward',
    [dx_ND, dy_ND, x_ND, rstd_N, w_D],
    grid(N),
    uniforms([['u32', N], ['u32', D], ['f32', 0], ['u32', accumulate ? 1 : 0]]),
  );
}
