// Token embedding lookup on the GPU (kernels/wgsl/embedding.wgsl), mirroring native/cpu/embedding.cc:
// out[t, :] = table[ids[t], :]. ids outside the table give zero rows instead of reading past it. The
// table may hold f16 values (Gpu.uploadHalf): the kernel's ".f16" variant reads it.
import { uniforms, type Gpu } from '../device.js';
import { grid } from '../grid.js';
import { checkBuffer, checkDims } from './check.js';

export function embedding(gpu: Gpu, out_TH: GPUBuffer, table_VH: GPUBuffer, ids_T: GPUBuffer, T: number, H: number): void {
  checkDims('embedding', { T, H });
  checkBuffer('embedding', 'out', out_TH, T * H);
  checkBuffer('embedding', 'ids', ids_T, T);
  if (T * H === 0) return;
  const half = gpu.isHalf(table_VH);
  const V = Math.floor(table_VH.size / (half ? 2 : 4) / H);
  gpu.dispatch(half ? 'embedding.f16' : 'embedding', 'embedding', [out_TH, table_VH, ids_T], grid((T * H) / 256), uniforms([['u32', T], ['u32', H], ['u32', V]]));
}
