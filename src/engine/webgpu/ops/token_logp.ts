// out[r] = logp[r, y[r]] (kernels/wgsl/token_logp.wgsl).
import { uniforms, type Gpu } from '../device.js';

export function token_logp(gpu: Gpu, out_R: GPUBuffer, logp_RV: GPUBuffer, y_R: GPUBuffer, R: number, V: number): void {
  gpu.dispatch('token_logp', 'token_logp', [out_R, logp_RV, y_R], [Math.ceil(R / 64)], uniforms([['u32', R], ['u32', V]]));
}
