// Named scratch buffers that grow and are reused across passes (activations, gradients, staging),
// plus zeroing by copy from a zero buffer so that clearing stays in order with the kernels; and the
// pool that gives each call in flight a workspace of its own, so that calls interleaved at their
// awaits (a decode during a training step) never write or free each other's scratch buffers.
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

  /**
   * Destroys buffers replaced by larger ones. Recorded commands may name them, and the encoder is
   * shared with other calls, so what is pending is submitted first (a submit naming a destroyed
   * buffer fails; destroying one after its submit is allowed).
   */
  release(): void {
    if (this.retired.length === 0) return;
    submitPending(this.gpu);
    for (const b of this.retired) b.destroy();
    this.retired = [];
  }

  /** Destroys every buffer (the workspace must not be used again). */
  destroy(): void {
    submitPending(this.gpu);
    for (const b of [...this.retired, ...[...this.buffers.values()].map((h) => h.buf), ...(this.zeros ? [this.zeros] : [])]) b.destroy();
    this.retired = [];
    this.buffers.clear();
    this.zeros = null;
    this.zeroBytes = 0;
  }
}

function submitPending(gpu: Gpu): void {
  try {
    gpu.flush();
  } catch {
    // A device error seen earlier; the call that hit it reports it, and the next call does too.
  }
}

/**
 * Workspaces handed to calls in flight, one each. A workspace goes back idle when its call ends and
 * is reused by the next call of the same kind (decode passes are a few rows, training passes whole
 * sequences, so each kind keeps buffers of its own sizes). When two calls of one kind overlap, the
 * second gets a new workspace, destroyed on its return while another of that kind is idle, so the
 * pool keeps one idle workspace per kind.
 */
export class WorkspacePool {
  private readonly idle = new Map<string, Workspace>();
  private readonly busy = new Map<Workspace, string>();

  constructor(private readonly gpu: Gpu) {}

  acquire(kind: string): Workspace {
    let ws = this.idle.get(kind);
    if (ws) this.idle.delete(kind);
    else ws = new Workspace(this.gpu);
    this.busy.set(ws, kind);
    return ws;
  }

  giveBack(ws: Workspace): void {
    const kind = this.busy.get(ws);
    if (kind === undefined) throw new Error('giveBack: the workspace is not in use');
    this.busy.delete(ws);
    if (this.idle.has(kind)) {
      ws.destroy();
      return;
    }
    ws.release();
    this.idle.set(kind, ws);
  }
}
