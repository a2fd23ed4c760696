// Weight matrices W [O, I] held as row blocks, each under the device's storage binding limit
// (Gpu.maxBinding): kernels bind whole buffers, so a matrix over the limit cannot be bound at once.
// y = x W^T + b runs once per block (output columns c0..c0+n-1, copied into place row by row) and
// dx = dy W sums the blocks' products (dy's columns of each block copied out first). The kernels and
// their CPU mirrors stay as they are; a matrix that fits is one block and runs exactly as before.
import type { WeightSpec } from '../../model/weights.js';
import type { Gpu } from './device.js';
import { linear, linear_backward_input } from './ops/linear.js';
import { readTensor, readTensorHalf } from './weights.js';
import type { Workspace } from './workspace.js';

export interface RowBlocks {
  /** Block b holds rows row0[b] .. row0[b] + rows[b] - 1. */
  parts: GPUBuffer[];
  row0: number[];
  rows: number[];
}

/**
 * Uploads a [rows, cols] matrix as row blocks of at most the binding limit; with `half` as f16
 * unless a value lies beyond the f16 range (then `keptF32`).
 */
export function uploadRowBlocks(gpu: Gpu, spec: WeightSpec, cols: number, half: boolean, label: string): { m: RowBlocks; bytes: number; keptF32: boolean } {
  const rows = spec.count / cols;
  const bits = half ? readTensorHalf(spec) : null;
  const data = bits ? null : readTensor(spec);
  const per = bits ? 2 : 4;
  const blockRows = Math.floor(gpu.maxBinding / (cols * per));
  if (blockRows < 1) throw new Error(`${label}: one row of ${cols * per} bytes exceeds the ${gpu.maxBinding}-byte storage binding limit`);
  const m: RowBlocks = { parts: [], row0: [], rows: [] };
  let bytes = 0;
  for (let r0 = 0; r0 < rows; r0 += blockRows) {
    const n = Math.min(blockRows, rows - r0);
    const name = blockRows >= rows ? label : `${label}[${r0}:${r0 + n}]`;
    const buf = bits ? gpu.uploadHalf(bits.subarray(r0 * cols, (r0 + n) * cols), name) : gpu.upload(data!.subarray(r0 * cols, (r0 + n) * cols), name);
    m.parts.push(buf);
    m.row0.push(r0);
    m.rows.push(n);
    bytes += buf.size;
  }
  return { m, bytes, keptF32: half && !bits };
}

/** y_TO = x_TI W^T + b_O (b_O may be null), block by block. */
export function linearBlocks(gpu: Gpu, ws: Workspace, y_TO: GPUBuffer, x_TI: GPUBuffer, W: RowBlocks, b_O: GPUBuffer | null, T: number, I: number, O: number): void {
  if (W.parts.length === 1) {
    linear(gpu, y_TO, x_TI, W.parts[0]!, b_O, T, I, O);
    return;
  }
  for (let k = 0; k < W.parts.length; k++) {
    const c0 = W.row0[k]!, n = W.rows[k]!;
    let bias: GPUBuffer | null = null;
    if (b_O) {
      bias = ws.get('blocks.bias', n);
      gpu.copy(b_O, c0 * 4, bias, 0, n * 4);
    }
    const part = ws.get('blocks.y', T * n);
    linear(gpu, part, x_TI, W.parts[k]!, bias, T, I, n);
    for (let t = 0; t < T; t++) gpu.copy(part, t * n * 4, y_TO, (t * O + c0) * 4, n * 4);
  }
}

/** dx_TI = dy_TO W (or dx_TI += when accumulate), summed over the blocks. */
export function linearBackwardInputBlocks(gpu: Gpu, ws: Workspace, dx_TI: GPUBuffer, dy_TO: GPUBuffer, W: RowBlocks, T: number, I: number, O: number, accumulate: boolean): void {
  if (W.parts.length === 1) {
    linear_backward_input(gpu, dx_TI, dy_TO, W.parts[0]!, T, I, O, accumulate);
    return;
  }
  for (let k = 0; k < W.parts.length; k++) {
    const c0 = W.row0[k]!, n = W.rows[k]!;
    const part = ws.get('blocks.dy', T * n);
    for (let t = 0; t < T; t++) gpu.copy(dy_TO, (t * O + c0) * 4, part, t * n * 4, n * 4);
    linear_backward_input(gpu, dx_TI, part, W.parts[k]!, T, I, n, accumulate || k > 0);
  }
}
