// The one place that picks a compute backend, recording why each candidate was skipped.
import { InputError } from '../errors.js';
import { cudaUnavailableReason } from './cuda.js';

export type BackendName = 'cuda' | 'webgpu' | 'cpu';
export type BackendRequest = BackendName | 'auto';

/** Backends this build can run, with the reason for the ones it cannot. */
function availability(): Record<BackendName, string | null> {
  return {
    cuda: cudaUnavailableReason(),
    webgpu: 'this build has no WebGPU backend',
    cpu: null,
  };
}

export interface BackendChoice {
  backend: BackendName;
  skipped: { backend: BackendName; reason: string }[];
}

export function pickBackend(requested: BackendRequest = 'auto'): BackendChoice {
  const avail = availability();
  if (requested !== 'auto') {
    if (!(requested in avail)) throw new InputError(`unknown backend ${JSON.stringify(requested)} (use auto, cuda, webgpu or cpu)`);
    const reason = avail[requested];
    if (reason) throw new InputError(`backend ${requested} is not available: ${reason}`);
    return { backend: requested, skipped: [] };
  }
  const skipped: { backend: BackendName; reason: string }[] = [];
  for (const b of ['cuda', 'webgpu', 'cpu'] as const) {
    const reason = avail[b];
    if (!reason) return { backend: b, skipped };
    skipped.push({ backend: b, reason });
  }
  throw new InputError('no compute backend is available');
}
