// Causal grouped-query attention on the GPU (kernels/wgsl/attention.wgsl), mirroring
// native/cpu/attention.cc: q [T, N, D] at positions q0..q0+T-1, k/v [q0+T, NKV, D] (earlier keys from a
// KV cache when q0 > 0), out [T, N, D], lse [N, T]. The backward (q0 = 0) writes dq [T, N, D] and
// dk/dv [T, NKV, D]; its scratch needs N * T floats (the CPU's 2 * N * T * D also do).
import { uniforms, type Gpu } from '../device.js';
import { grid } from '../grid.js';
import { checkBuffer, checkDims } from './check.js';

/** Largest head dim the kernels hold in their per-row private arrays. */
export const ATTENTION_MAX_D = 128;

function check(op: string, T: number, N: number, NKV: number, D: number, q0: number): void {
  checkDims(op, { T, N, NKV, D, q0 });
  if (NKV < 1 || N % NKV !== 0) throw new Error(`${op}: N (${N}) must be a positive multiple of NKV (${NKV})`);
  if (D < 1 || D > ATTENTION_MAX_D) throw new Error(`${op}: head dim D must be in 1..${ATTENTION_MAX_D} (got ${D})`);
}

// A few rows against many keys go to attention_decode, which splits each row's keys over a workgroup.
const DECODE_ROWS = 4;
const DECODE_KEYS = 128;

// Override constants: the head dim (loops over it get fixed trip counts) and the rows per workgroup.
// Every invocation of a workgroup walks the keys of its block, so short inputs get small workgroups
// rather than 64 invocations shadowing a few rows.
function rowsPerGroup(T: number): number {
  let rows = 8;
  while (rows < 64 && rows < T) rows *= 2;
  return rows;
}

function constants(D: number, rows: number): Record<string, number> {
  return { HD: D, ROWS: rows };
}

function dims(T: number, N: number, NKV: number, D: number, q0: number): ArrayBuffer {
  const scale = Math.fround(1 / Math.fround(Math.sqrt(D)));
  return uniforms([['u32', T], ['u32', N], ['u32', NKV], ['u32', D], ['u32', q0], ['f32', scale]]);
}

export function attention(gpu: Gpu, out_TND: GPUBuffer, lse_NT: GPUBuffer, q_TND: GPUBuffer, k_TMD: GPUBuffer, v_TMD: GPUBuffer,
                          T: number, N: number, NKV: number, D: number, q0 = 0): void {
  check('attention', T, N, NKV, D, q0);
  checkBuffer('attention', 'out', out_TND, T * N * D);
  checkBuffer('attention', 'lse', lse_NT, N * T);
  checkBuffer('attention', 'q', q_TND, T * N * D);
  checkBuffer('attention', 'k', k_TMD, (q0 + T) * NKV * D);
  checkBuffer('attention', 'v', v_TMD, (q0 + T) * NKV * D);
  if (T === 0 || N === 0) return;
  const bindings = [out_TND, lse_NT, q_TND, k_TMD, v_TMD];
  if (T <= DECODE_ROWS && q0 + T >= DECODE_KEYS) {
    gpu.dispatch('attention', 'attention_decode', bindings, [T, N], dims(T, N, NKV, D, q0), constants(D, rowsPerGroup(T)));
    return;
  }
  const rows = rowsPerGroup(T);
  gpu.dispatch('attention', 'attention', bindings, [Math.ceil(T / rows), N], dims(T, N, NKV, D, q0), constants(D, rows));
}

export function attention_backward(gpu: Gpu, dq_TND: GPUBuffer, dk_TMD: GPUBuffer, dv_TMD: GPUBuffer, dout_TND: GPUBuffer,
                                   q_TND: GPUBuffer, k_TMD: GPUBuffer, v_TMD: GPUBuffer, out_TND: GPUBuffer, lse_NT: GPUBuffer,
                                   T: number, N: number, NKV: number, D: number, scratch: GPUBuffer): void {
  const op = 'attention_backward';
  check(op, T, N, NKV, D, 0);
  for (const [name, buf] of [['dq', dq_TND], ['dout', dout_TND], ['q', q_TND], ['out', out_TND]] as const) {
    checkBuffer(op, name, buf, T * N * D);
  }
  for (const [name, buf] of [['dk', dk_TMD], ['dv', dv_TMD], ['k', k_TMD], ['v', v_TMD]] as const) {
    checkBuffer(op, name, buf, T * NKV * D);
  }
  checkBuffer(op, 'lse', lse_NT, N * T);
  checkBuffer(op, 'scratch', scratch, N * T);
  if (T === 0 || N === 0) return;
  const u = dims(T, N, NKV, D, 0);
  const rows = rowsPerGroup(T);
  const c = constants(D, rows);
  const blocks = Math.ceil(T / rows);
  const di_NT = scratch;
  gpu.dispatch('attention', 'attention_backward_di', [di_NT, dout_TND, out_TND], grid((T * N) / rows), u, c);
  gpu.dispatch('attention', 'attention_backward_dq', [dq_TND, dout_TND, q_TND, k_TMD, v_TMD, lse_NT, di_NT], [blocks, N], u, c);
  gpu.dispatch('attention', 'attention_backward_dkdv', [dk_TMD, dv_TMD, dout_TND, q_TND, k_TMD, v_TMD, lse_NT, di_NT], [blocks, NKV], u, c);
}
