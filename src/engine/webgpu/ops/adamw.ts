// AdamW on the GPU (kernels/wgsl/adamw.wgsl), mirroring native/cpu/adamw.cc (torch.optim.AdamW):
// the bias corrections are computed here in double from the f32 hyper-parameters and rounded to f32
// exactly where the CPU rounds them; step is the 1-based step count after this update.
import { uniforms, type Gpu } from '../device.js';
import { grid } from '../grid.js';
import { checkBuffer, checkDims } from './check.js';

export function adamw(
  gpu: Gpu,
  p: GPUBuffer,
  m: GPUBuffer,
  v: GPUBuffer,
  g: GPUBuffer,
  n: number,
  lr: number,
  beta1: number,
  beta2: number,
  eps: number,
  weightDecay: number,
  step: number,
): void {
  checkDims('adamw', { n });
  if (!Number.isInteger(step) || step < 1) throw new Error(`adamw: step must be a positive integer (got ${step})`);
  for (const [name, buf] of [['p', p], ['m', m], ['v', v], ['g', g]] as const) checkBuffer('adamw', name, buf, n);
  if (n === 0) return;
  const f = Math.fround;
  const lrF = f(lr);
  const b1 = f(beta1);
  const b2 = f(beta2);
  const bc1 = 1 - Math.pow(b1, step);
  const bc2 = 1 - Math.pow(b2, step);
  const stepSize = f(lrF / bc1);
  const bc2Sqrt = f(Math.sqrt(bc2));
  const decay = f(1 - f(lrF * f(weightDecay)));
  gpu.dispatch(
    'adamw',
    'adamw',
    [p, m, v, g],
    grid(n / 256),
    uniforms([['u32', n], ['f32', b1], ['f32', b2], ['f32', eps], ['f32', stepSize], ['f32', bc2Sqrt], ['f32', decay]]),
  );
}
