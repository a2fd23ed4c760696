// The one place that picks a compute backend, recording why each candidate was skipped. `auto` tries
// CUDA, then WebGPU (a hardware adapter; a software rasterizer such as llvmpipe is slower than the CPU
// engine, so auto passes it over, while an explicit `webgpu` request uses it), then the CPU.
import { InputError } from '../errors.js';
import { cudaUnavailableReason } from './cuda.js';
import { probeWebGpu } from './webgpu/probe.js';

export type BackendName = 'cuda' | 'webgpu' | 'cpu';
export type BackendRequest = BackendName | 'auto';

export const BACKEND_REQUESTS: readonly BackendRequest[] = ['auto', 'cuda', 'webgpu', 'cpu'];

/** Why the backend cannot run here (null: it can). `auto` also refuses software WebGPU adapters. */
async function unavailable(backend: BackendName, auto: boolean): Promise<string | null> {
  switch (backend) {
    case 'cuda':
      return cudaUnavailableReason();
    case 'webgpu': {
      const p = await probeWebGpu();
      if (!p.ok) return p.reason;
      if (auto && p.software) return `the only WebGPU adapter is a software renderer (${p.name}); the CPU backend runs the same math faster (request webgpu explicitly to use it)`;
      return null;
    }
    case 'cpu':
      return null;
  }
}

export interface BackendChoice {
  backend: BackendName;
  skipped: { backend: BackendName; reason: string }[];
  /** The device, where there is a choice of one (the WebGPU adapter). */
  device?: string;
  /** How the backend stores the weights, where it has a choice (WebGPU: f16 or f32), once loaded. */
  weights?: string;
}

async function device(backend: BackendName): Promise<string | undefined> {
  if (backend !== 'webgpu') return undefined;
  const p = await probeWebGpu();
  return p.ok ? `${p.name}${p.software ? ', software' : ''}` : undefined;
}

export async function pickBackend(requested: BackendRequest = 'auto'): Promise<BackendChoice> {
  if (requested !== 'auto') {
    if (!(BACKEND_REQUESTS as readonly string[]).includes(requested)) throw new InputError(`unknown backend ${JSON.stringify(requested)} (use auto, cuda, webgpu or cpu)`);
    const reason = await unavailable(requested, false);
    if (reason) throw new InputError(`backend ${requested} is not available: ${reason}`);
    return { backend: requested, skipped: [], device: await device(requested) };
  }
  const skipped: { backend: BackendName; reason: string }[] = [];
  for (const b of ['cuda', 'webgpu', 'cpu'] as const) {
    const reason = await unavailable(b, true);
    if (!reason) return { backend: b, skipped, device: await device(b) };
    skipped.push({ backend: b, reason });
  }
  throw new InputError('no compute backend is available');
}

/** One line for logs: the backend and why the ones before it were skipped. */
export function describeChoice(choice: BackendChoice): string {
  const details = [choice.device, choice.weights].filter((d) => d !== undefined).join('; ');
  return [`backend ${choice.backend}${details ? ` (${details})` : ''}`, ...choice.skipped.map((s) => `${s.backend} skipped: ${s.reason}`)].join('; ');
}
