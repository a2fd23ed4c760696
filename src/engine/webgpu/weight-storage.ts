// How the WebGPU backend stores the frozen base weights (projection matrices, embedding, LM head):
// the one place that decides between f32 and f16. Norms and biases, LoRA parameters, optimizer state,
// activations and every accumulation stay f32 whatever is chosen; f16 only halves the weights' memory
// and bandwidth, each value being widened to f32 as a kernel loads it.
//
// Policy:
//   'auto' (default): f16 when the adapter offers shader-f16 AND every weight matrix of the checkpoint
//     is 16-bit (F16 or BF16) — rounding those to f16 loses little or nothing (F16 is stored as is;
//     BF16 values are exact in f16 unless tiny), while an F32 checkpoint keeps f32 so the backend stays
//     within f32 rounding of the CPU engine;
//   'f16': f16 for every weight matrix (F32 and BF16 rounded to nearest even); refused when the adapter
//     lacks shader-f16;
//   'f32': f32.
// A matrix with a finite value beyond the f16 range (|x| > 65504) stays f32 under either f16 choice.
import { InputError } from '../../errors.js';
import type { WeightRole, WeightSpec } from '../../model/weights.js';

export type WeightStorageRequest = 'auto' | 'f16' | 'f32';
export type WeightStorage = 'f16' | 'f32';

export const WEIGHT_STORAGE_REQUESTS: readonly WeightStorageRequest[] = ['auto', 'f16', 'f32'];

/** The roles read through a weight_t binding (linear and embedding kernels); the rest stay f32. */
const MATRIX_ROLES: ReadonlySet<WeightRole> = new Set<WeightRole>(['embed', 'lm_head', 'q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);

export function isWeightMatrix(role: WeightRole): boolean {
  return MATRIX_ROLES.has(role);
}

export interface StorageDecision {
  storage: WeightStorage;
  /** Why, for the log: e.g. "f16 (the checkpoint is 16-bit and the adapter offers shader-f16)". */
  reason: string;
}

export function checkWeightStorageRequest(request: unknown): WeightStorageRequest {
  if (request === undefined) return 'auto';
  if (!(WEIGHT_STORAGE_REQUESTS as readonly unknown[]).includes(request)) {
    throw new InputError(`webgpuWeights must be one of ${WEIGHT_STORAGE_REQUESTS.join(', ')} (got ${JSON.stringify(request)})`);
  }
  return request as WeightStorageRequest;
}

/** Applies the policy above; `adapter` names the adapter for the refusal message. */
export function decideWeightStorage(request: WeightStorageRequest, shaderF16: boolean, adapter: string, tensors: readonly WeightSpec[]): StorageDecision {
  const matrices = tensors.filter((t) => isWeightMatrix(t.role));
  const sixteen = matrices.length > 0 && matrices.every((t) => t.dtype === 1 || t.dtype === 2);
  const kinds = [...new Set(matrices.map((t) => ['F32', 'F16', 'BF16'][t.dtype] ?? `dtype ${t.dtype}`))].join('/');
  switch (request) {
    case 'f32':
      return { storage: 'f32', reason: 'requested' };
    case 'f16':
      if (!shaderF16) {
        throw new InputError(`webgpuWeights 'f16' needs the WebGPU feature shader-f16, which the adapter ${adapter} does not offer (use 'auto' or 'f32')`);
      }
      return { storage: 'f16', reason: `requested; checkpoint ${kinds}` };
    case 'auto':
      if (!shaderF16) return { storage: 'f32', reason: `the adapter ${adapter} lacks shader-f16` };
      if (!sixteen) return { storage: 'f32', reason: `checkpoint ${kinds}` };
      return { storage: 'f16', reason: `checkpoint ${kinds}, adapter offers shader-f16` };
  }
}
