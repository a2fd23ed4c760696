// y = a*y + b*x over n values (kernels/wgsl/axpby.wgsl); a == 0 overwrites y.
import { uniforms, type Gpu } from '../device.js';
import { grid } from '../grid.js';

export function axpby(gpu: Gpu, y: GPUBuffer, x: GPUBuffer, n: number, a: number, b: number): void {
  if (n === 0) return;
  gpu.dispatch('axpby', 'axpby', [y, x], grid(n / 256), uniforms([['u32', n], ['f32', a], ['f32', b]]));
}
