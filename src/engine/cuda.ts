// The CUDA addon (claas_cuda.node: prebuilt in the npm package, or built when a CUDA toolkit was found): loading it,
// probing for a usable device, and its op-level entry points for the parity tests. It exposes the
// same NativeModel interface as the CPU addon, so the engine runs on either.
import { loadAddonFile, type NativeAddon, type NativeConfig, type NativeModel } from './native.js';

export interface CudaDeviceStatus {
  available: boolean;
  /** Why the backend cannot run here; empty when it can. */
  reason: string;
  /** e.g. "NVIDIA H200 (sm_90, 139 GiB)"; empty without a device. */
  device: string;
}

export type OpArgs = Record<string, Float32Array | Int32Array | number | boolean>;
export type OpResult = Record<string, Float32Array | Int32Array | Float64Array>;
/** One function per op (the names of native/cpu and kernels/cuda), taking and returning named arrays. */
export type OpTable = Record<string, (args: OpArgs) => OpResult>;

export interface CudaAddon extends Omit<NativeAddon, 'cpuOps'> {
  deviceStatus(): CudaDeviceStatus;
  /** The CUDA ops; they throw an error with code E_NO_DEVICE without a device. */
  cudaOps: OpTable;
  /** The CPU reference ops with the same signatures. */
  cpuOps: OpTable;
  /** A model with weights made on the device (bench/): matrices ~ N(0, std^2), norms 1. */
  loadRandomModel(spec: { config: NativeConfig; seed: number; std: number } & CudaModelOptions): Promise<NativeModel>;
  /** Bytes held by the engine's device buffers now and at most since resetPeak(). */
  deviceMemory(): { inUseBytes: number; peakBytes: number };
  resetPeak(): void;
}

/** Device-only loadModel options. */
export interface CudaModelOptions {
  /** Keep only layer inputs for the backward and recompute the rest (activation checkpointing). */
  checkpoint?: boolean;
  /** LM-head rows materialized at once (default 64). */
  logitRows?: number;
}

let loaded: { addon: CudaAddon } | { reason: string } | undefined;

/** The CUDA addon, or why it could not be loaded (not built, or failed to load). */
export function loadCudaAddon(): { addon: CudaAddon } | { reason: string } {
  if (loaded) return loaded;
  const r = loadAddonFile<CudaAddon>('claas_cuda.node');
  if ('addon' in r) loaded = { addon: r.addon };
  else if (r.errors.length === 0) loaded = { reason: 'this build has no CUDA backend (no CUDA toolkit was found when the addon was compiled)' };
  else loaded = { reason: `the CUDA addon failed to load: ${r.errors.join('; ')}` };
  return loaded;
}

/** null when the CUDA backend can run here, else the reason it cannot. */
export function cudaUnavailableReason(): string | null {
  const l = loadCudaAddon();
  if ('reason' in l) return l.reason;
  const status = l.addon.deviceStatus();
  return status.available ? null : status.reason;
}

/** The loaded CUDA addon; throws with the reason when it is missing. */
export function cudaAddon(): CudaAddon {
  const l = loadCudaAddon();
  if ('reason' in l) throw new Error(l.reason);
  return l.addon;
}
