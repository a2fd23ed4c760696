// Rotary position embedding on the GPU (kernels/wgsl/rope.wgsl), mirroring native/cpu/rope.cc:
// rotate-half in place on x[T, N, D] with cos/sin tables [T, D/2]. The tables are built on the host
// (rope_tables, same double-precision formula as the CPU) and uploaded by the caller.
import { uniforms, type Gpu } from '../device.js';
import { grid } from '../grid.js';
import { checkBuffer, checkDims } from './check.js';

/** cos/sin of position * theta^(-2i/D) for i < D/2, rows t at positions_T[t]. */
export function rope_tables(cos_TD2: Float32Array, sin_TD2: Float32Array, positions_T: Int32Array, T: number, D: number, theta: number): void {
  checkDims('rope_tables', { T, D });
  const D2 = D / 2;
  if (!Number.isInteger(D2)) throw new Error(`rope_tables: D must be even (got ${D})`);
  if (cos_TD2.length < T * D2 || sin_TD2.length < T * D2 || positions_T.length < T) {
    throw new Error('rope_tables: arrays are shorter than T * D/2 (tables) or T (positions)');
  }
  for (let i = 0; i < D2; ++i) {
    const invFreq = Math.pow(theta, (-2.0 * i) / D);
    for (let t = 0; t < T; ++t) {
      const a = positions_T[t]! * invFreq;
      cos_TD2[t * D2 + i] = Math.cos(a);
      sin_TD2[t * D2 + i] = Math.sin(a);
    }
  }
}

function rotate(entry: 'rope' | 'rope_backward', gpu: Gpu, x_TND: GPUBuffer, cos_TD2: GPUBuffer, sin_TD2: GPUBuffer, T: number, N: number, D: number): void {
  checkDims(entry, { T, N, D });
  if (D % 2 !== 0) throw new Error(`${entry}: D must be even (got ${D})`);
  checkBuffer(entry, 'x', x_TND, T * N * D);
  checkBuffer(entry, 'cos', cos_TD2, (T * D) / 2);
  checkBuffer(entry, 'sin', sin_TD2, (T * D) / 2);
  const pairs = (T * N * D) / 2;
  if (pairs === 0) return;
  gpu.dispatch('rope', entry, [x_TND, cos_TD2, sin_TD2], grid(pairs / 64), uniforms([['u32', T], ['u32', N], ['u32', D]]));
}

/** Rotates x[T, N, D] in place by the angles of the tables. */
export function rope(gpu: Gpu, x_TND: GPUBuffer, cos_TD2: GPUBuffer, sin_TD2: GPUBuffer, T: number, N: number, D: number): void {
  rotate('rope', gpu, x_TND, cos_TD2, sin_TD2, T, N, D);
}

/** The inverse rotation: carries dL/d(rope(x)) back to dL/dx, in place. */
export function rope_backward(gpu: Gpu, dx_TND: GPUBuffer, cos_TD2: GPUBuffer, sin_TD2: GPUBuffer, T: number, N: number, D: number): void {
  rotate('rope_backward', gpu, dx_TND, cos_TD2, sin_TD2, T, N, D);
}
