// Named scratch buffers that grow and are reused across passes (activations, gradients, staging),
// plus zeroing by copy from a zero buffer so that clearing stays in order with the kernels.
import type { Gpu } from './device.js';

export class Workspace {
  private readonly buffers = new Map<string, { buf: GPUBuffer; bytes: number }>();
  private zeros: GPUBuffer | null = null;
  private zeroBytes = 0;
  private retired: GPUBuffer[] = [];

  constructor(private readonly gpu: Gpu) {}

  /** A buffer holding at least `floats` 4-byte values (contents unspecified). */
  get(name: string, floats: number): GPUBuffer {
    const bytes = Math.max(16, Math.ceil(floats) * 4);
    const have = this.buffers.get(name);
    if (have && have.bytes >= bytes) return have.buf;
    // Pending commands may still use the old buffer: destroy it only after the next flush.
    if (have) this.retired.push(have.buf);
    const grown = have ? Math.max(bytes, Math.ceil(have.bytes * 1.5 / 16) * 16) : bytes;
    const buf = this.gpu.buffer(grown, name);
    this.buffers.set(name, { buf, bytes: grown });
    return buf;
  }

  /** Clears the first `floats` values of buf. */
  zero(buf: GPUBuffer, floats: number, floatOffset = 0): void {
    const bytes = floats * 4;
    if (bytes === 0) return;
    if (!this.zeros || this.zeroBytes < bytes) {
      if (this.zeros) this.retired.push(this.zeros);
      this.zeroBytes = Math.max(bytes, 1 << 16);
      this.zeros = this.gpu.buffer(this.zeroBytes, 'zeros');
    }
    this.gpu.copy(this.zeros, 0, buf, floatOffset * 4, bytes);
  }

  /** Destroys buffers replaced by larger ones; call when nothing pending can use them. */
  release(): void {
    for (const b of this.retired) b.destroy();
    this.retired = [];
  }
}
