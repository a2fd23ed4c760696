// Argument checks shared by the GPU op wrappers: dimensions are non-negative integers and every buffer
// holds at least the elements the op touches (a too-small buffer would otherwise be clamped silently).

export function checkDims(op: string, dims: Record<string, number>): void {
  for (const [name, v] of Object.entries(dims)) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`${op}: ${name} must be a non-negative integer (got ${v})`);
  }
}

/** `elements` elements of `bytesPer` bytes (default 4; 2 for half weights) must fit in `buf`. */
export function checkBuffer(op: string, name: string, buf: GPUBuffer, elements: number, bytesPer = 4): void {
  if (buf.size < elements * bytesPer) {
    throw new Error(`${op}: ${name} holds ${buf.size} bytes, needs ${elements * bytesPer}`);
  }
}
