// Argument checks shared by the GPU op wrappers: dimensions are non-negative integers and every buffer
// holds at least the elements the op touches (a too-small buffer would otherwise be clamped silently).

export function checkDims(op: string, dims: Record<string, number>): void {
  for (const [name, v] of Object.entries(dims)) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`${op}: ${name} must be a non-negative integer (got ${v})`);
  }
}

/** `elements` 4-byte elements must fit in `buf`. */
export function checkBuffer(op: string, name: string, buf: GPUBuffer, elements: number): void {
  if (buf.size < elements * 4) {
    throw new Error(`${op}: ${name} holds ${buf.size} bytes, needs ${elements * 4}`);
  }
}
