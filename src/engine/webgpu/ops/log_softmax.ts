// Row-wise log-softmax on the GPU and its backward (kernels/wgsl/log_softmax.wgsl), mirroring
// native/cpu/log_softmax.cc; both may run in place (out == logits, dlogits == ds), through entries of
// their own since WebGPU forbids a buffer bound twice with a writable binding.
import { uniforms, type Gpu } from '../device.js';
import { grid } from '../grid.js';
import { checkBuffer, checkDims } from './check.js';

/** out = logits - lse per row; lse_R (may be null) receives each row's log-sum-exp. */
export function log_softmax(gpu: Gpu, out_RV: GPUBuffer, lse_R: GPUBuffer | null, logits_RV: GPUBuffer, R: number, V: number): void {
  checkDims('log_softmax', { R, V });
  checkBuffer('log_softmax', 'out', out_RV, R * V);
  checkBuffer('log_softmax', 'logits', logits_RV, R * V);
  if (lse_R) checkBuffer('log_softmax', 'lse', lse_R, R);
  if (R === 0 || V === 0) return;
  const u = uniforms([['u32', R], ['u32', V]]);
  if (out_RV === logits_RV) {
    if (lse_R) gpu.dispatch('log_softmax', 'log_softmax_inplace', [out_RV, lse_R], grid(R), u);
    else gpu.dispatch('log_softmax', 'log_softmax_inplace_no_lse', [out_RV], grid(R), u);
  } else if (lse_R) {
    gpu.dispatch('log_softmax', 'log_softmax', [out_RV, lse_R, logits_RV], grid(R), u);
  } else {
    gpu.dispatch('log_softmax', 'log_softmax_no_lse', [out_RV, logits_RV], grid(R), u);
  }
}

/** dlogits = ds - exp(logp) * sum(ds) per row. */
export function log_softmax_backward(gpu: Gpu, dlogits_RV: GPUBuffer, ds_RV: GPUBuffer, logp_RV: GPUBuffer, R: number, V: number): void {
  checkDims('log_softmax_backward', { R, V });
  for (const [name, buf] of [['dlogits', dlogits_RV], ['ds', ds_RV], ['logp', logp_RV]] as const) {
    checkBuffer('log_softmax_backward', name, buf, R * V);
  }
  if (logp_RV === dlogits_RV || logp_RV === ds_RV) {
    throw new Error('log_softmax_backward: logp must be a buffer of its own (only dlogits == ds may alias)');
  }
  if (R === 0 || V === 0) return;
  const u = uniforms([['u32', R], ['u32', V]]);
  if (dlogits_RV === ds_RV) gpu.dispatch('log_softmax', 'log_softmax_backward_inplace', [ds_RV, logp_RV], grid(R), u);
  else gpu.dispatch('log_softmax', 'log_softmax_backward', [dlogits_RV, ds_RV, logp_RV], grid(R), u);
}
