// Frozen base projection on the GPU (kernels/wgsl/linear.wgsl), mirroring native/cpu/linear.cc:
// y = x W^T + b with W [O, I], and the input gradient dx = dy W. Both are 64x64-tiled GEMMs. W may
// hold f16 values (Gpu.uploadHalf): the kernel's ".f16" variant reads it; everything else is f32.
import { uniforms, type Gpu } from '../device.js';
import { checkBuffer, checkDims } from './check.js';

const TILE = 64;

function tiles(op: string, cols: number, rows: number): [number, number] {
  const x = Math.ceil(cols / TILE);
  const y = Math.ceil(rows / TILE);
  if (x > 65535 || y > 65535) throw new Error(`${op}: ${rows}x${cols} output exceeds the dispatch grid`);
  return [x, y];
}

/** y_TO = x_TI W_OI^T + b_O (b_O may be null). */
export function linear(gpu: Gpu, y_TO: GPUBuffer, x_TI: GPUBuffer, W_OI: GPUBuffer, b_O: GPUBuffer | null, T: number, I: number, O: number): void {
  checkDims('linear', { T, I, O });
  checkBuffer('linear', 'y', y_TO, T * O);
  checkBuffer('linear', 'x', x_TI, T * I);
  const half = gpu.isHalf(W_OI);
  checkBuffer('linear', 'W', W_OI, O * I, half ? 2 : 4);
  if (b_O) checkBuffer('linear', 'b', b_O, O);
  if (T === 0 || O === 0) return;
  // Without a bias the kernel never reads binding 3; W stands in for it.
  gpu.dispatch(half ? 'linear.f16' : 'linear', 'linear', [y_TO, x_TI, W_OI, b_O ?? W_OI], tiles('linear', O, T), uniforms([['u32', T], ['u32', O], ['u32', I], ['u32', b_O ? 1 : 0]]));
}

/** dx_TI = dy_TO W_OI, or dx_TI += dy_TO W_OI when accumulate. */
export function linear_backward_input(gpu: Gpu, dx_TI: GPUBuffer, dy_TO: GPUBuffer, W_OI: GPUBuffer, T: number, I: number, O: number, accumulate: boolean): void {
  checkDims('linear_backward_input', { T, I, O });
  checkBuffer('linear_backward_input', 'dx', dx_TI, T * I);
  checkBuffer('linear_backward_input', 'dy', dy_TO, T * O);
  const half = gpu.isHalf(W_OI);
  checkBuffer('linear_backward_input', 'W', W_OI, O * I, half ? 2 : 4);
  if (T === 0 || I === 0) return;
  gpu.dispatch(
    half ? 'linear.f16' : 'linear',
    'linear_backward_input',
    [dx_TI, dy_TO, W_OI],
    tiles('linear_backward_input', I, T),
    uniforms([['u32', T], ['u32', I], ['u32', O], ['u32', accumulate ? 1 : 0]]),
  );
}
