// Loads the compiled addon and types its exports exactly. Explains what to install when it is missing.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import type { WeightSpec } from '../model/weights.js';

export interface NativeConfig {
  vocab: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  ropeTheta: number;
  rmsEps: number;
  tieEmbeddings: boolean;
  qkNorm: boolean;
  bias: [boolean, boolean, boolean, boolean];
}

export interface NativeLayoutEntry {
  layer: number;
  module: number;
  aOffset: number;
  bOffset: number;
  inFeatures: number;
  outFeatures: number;
}

export interface NativeAdapterState {
  params: Float32Array;
  ema: Float32Array;
  m: Float32Array;
  v: Float32Array;
  grads: Float32Array;
  step: number;
}

export interface NativeAdapter {
  layout(): { rank: number; alpha: number; total: number; entries: NativeLayoutEntry[] };
  state(): NativeAdapterState;
  clone(): NativeAdapter;
}

export interface NativeSample {
  prompt: Int32Array;
  teacherPrompt: Int32Array;
  response: Int32Array;
  oldLogprobs?: Float32Array;
  teacherK?: number;
  teacherTopIds?: Int32Array;
  teacherTopLogprobs?: Float32Array;
  teacherTokenLogprobs?: Float32Array;
}

export interface NativeStepOptions {
  alpha: number;
  tail: boolean;
  sampledToken: boolean;
  isClip: number;
  beta: number;
  topK: number;
  teacher: number; // 0 base, 1 current, 2 ema
  learningRate: number;
  maxGradNorm: number;
  weightDecay: number;
  adamBeta1: number;
  adamBeta2: number;
  adamEps: number;
  emaRate: number;
  steps: number;
}

export interface NativeStepResult {
  loss: number;
  distillLoss: number;
  klToBase: number;
  meanIsWeight: number;
  clipFraction: number;
  gradNorm: number;
  teacherStudentKl: number;
  tokens: number;
  stepLosses: number[];
  timings: { teacherMs: number; baseMs: number; studentForwardMs: number; backwardMs: number; optimizerMs: number };
}

/** A sequence's KV cache and sampling RNG. */
export interface NativeSequence {
  readonly length: number;
}

export interface NativeDecodeEntry {
  seq: NativeSequence;
  ids: Int32Array;
  temperature: number;
  topP: number;
  topK: number;
  topLogprobs: number;
  vocabLimit?: number;
}

export interface NativeSampled {
  id: number;
  logprob: number;
  topIds: Int32Array;
  topLogprobs: Float32Array;
}

export interface NativeModel {
  createAdapter(options: {
    rank: number;
    alpha: number;
    targets: boolean[];
    seed?: number;
    params?: Float32Array;
    ema?: Float32Array;
    m?: Float32Array;
    v?: Float32Array;
    step?: number;
  }): NativeAdapter;
  forward(ids: Int32Array, adapter: NativeAdapter | null, useEma: boolean): Promise<Float32Array>;
  tokenLogprobs(ids: Int32Array, adapter: NativeAdapter | null, start: number): Promise<Float32Array>;
  sdpoStep(adapter: NativeAdapter, samples: NativeSample[], options: NativeStepOptions): Promise<NativeStepResult>;
  createSequence(seed: number): NativeSequence;
  decode(entries: NativeDecodeEntry[], adapter: NativeAdapter | null): Promise<NativeSampled[]>;
}

/** Options of one SDPO loss row (cpu/sdpo_loss.h SdpoLossOptions). */
export interface CpuSdpoLossOptions {
  alpha: number;
  tail: boolean;
  sampledToken: boolean;
  isClip: number;
  beta: number;
}

/** What the teacher provides for one response position (cpu/sdpo_loss.h SdpoTeacherRow). */
export interface CpuSdpoTeacherRow {
  idx_K: Int32Array;
  logp_K: Float32Array;
  tailLogp: number;
  tokenLogp: number;
  K: number;
}

/**
 * The CPU reference ops (native/cpu/ops.h, sdpo_loss.h) as synchronous calls on typed arrays, for
 * comparing other backends op by op. Same names, argument order and shape letters as ops.h; `null`
 * where the C++ takes an optional pointer. Array lengths are checked (TypeError when too short).
 */
export interface CpuOps {
  embedding(out_TH: Float32Array, table_VH: Float32Array, ids_T: Int32Array, T: number, H: number): void;
  rmsnorm(y_ND: Float32Array, rstd_N: Float32Array | null, x_ND: Float32Array, w_D: Float32Array, N: number, D: number, eps: number): void;
  rmsnorm_backward(dx_ND: Float32Array, dy_ND: Float32Array, x_ND: Float32Array, rstd_N: Float32Array, w_D: Float32Array, N: number, D: number, accumulate: boolean): void;
  linear(y_TO: Float32Array, x_TI: Float32Array, W_OI: Float32Array, b_O: Float32Array | null, T: number, I: number, O: number): void;
  linear_backward_input(dx_TI: Float32Array, dy_TO: Float32Array, W_OI: Float32Array, T: number, I: number, O: number, accumulate: boolean): void;
  lora(y_TO: Float32Array, u_TR: Float32Array, x_TI: Float32Array, A_RI: Float32Array, B_OR: Float32Array, T: number, I: number, O: number, R: number, scale: number): void;
  lora_backward(
    dx_TI: Float32Array, dA_RI: Float32Array, dB_OR: Float32Array, dy_TO: Float32Array, x_TI: Float32Array, u_TR: Float32Array,
    A_RI: Float32Array, B_OR: Float32Array, T: number, I: number, O: number, R: number, scale: number, scratch_TR: Float32Array,
  ): void;
  rope_tables(cos_TD2: Float32Array, sin_TD2: Float32Array, positions_T: Int32Array, T: number, D: number, theta: number): void;
  rope(x_TND: Float32Array, cos_TD2: Float32Array, sin_TD2: Float32Array, T: number, N: number, D: number): void;
  rope_backward(dx_TND: Float32Array, cos_TD2: Float32Array, sin_TD2: Float32Array, T: number, N: number, D: number): void;
  attention(
    out_TND: Float32Array, lse_NT: Float32Array, q_TND: Float32Array, k_TMD: Float32Array, v_TMD: Float32Array,
    T: number, N: number, NKV: number, D: number, q0?: number,
  ): void;
  /** scratch holds 2*N*T*D floats. */
  attention_backward(
    dq_TND: Float32Array, dk_TMD: Float32Array, dv_TMD: Float32Array, dout_TND: Float32Array, q_TND: Float32Array,
    k_TMD: Float32Array, v_TMD: Float32Array, out_TND: Float32Array, lse_NT: Float32Array,
    T: number, N: number, NKV: number, D: number, scratch: Float32Array,
  ): void;
  swiglu(h_n: Float32Array, g_n: Float32Array, u_n: Float32Array, n: number): void;
  swiglu_backward(dg_n: Float32Array, du_n: Float32Array, dh_n: Float32Array, g_n: Float32Array, u_n: Float32Array, n: number): void;
  log_softmax(out_RV: Float32Array, lse_R: Float32Array | null, logits_RV: Float32Array, R: number, V: number): void;
  log_softmax_backward(dlogits_RV: Float32Array, ds_RV: Float32Array, logp_RV: Float32Array, R: number, V: number): void;
  topk(idx_RK: Int32Array, val_RK: Float32Array, x_RV: Float32Array, R: number, V: number, K: number): void;
  adamw(
    p: Float32Array, m: Float32Array, v: Float32Array, g: Float32Array, n: number, lr: number, beta1: number, beta2: number,
    eps: number, weightDecay: number, step: number,
  ): void;
  /** Writes ds_V (every entry) and returns the row's values; oldLogp NaN when unknown. */
  sdpo_loss_row(
    ds_V: Float32Array, s_V: Float32Array, V: number, y: number, teacher: CpuSdpoTeacherRow, oldLogp: number,
    baseLogp: number, options: CpuSdpoLossOptions, coef: number,
  ): { D: number; w: number; k3: number; clipped: boolean };
}

export interface NativeAddon {
  loadModel(spec: { config: NativeConfig; threads: number; tensors: WeightSpec[] }): Promise<NativeModel>;
  cpuOps: CpuOps;
}

let cached: NativeAddon | undefined;

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot locate the claas package root');
    dir = up;
  }
  return dir;
}

/** The addon, loaded once. */
export function nativeAddon(): NativeAddon {
  if (cached) return cached;
  const root = packageRoot();
  const candidates = [join(root, 'build', 'Release', 'claas.node'), join(root, 'build', 'Debug', 'claas.node')];
  const file = candidates.find((f) => existsSync(f));
  if (!file) {
    throw new Error(
      'The claas native engine is not built. Install the build dependencies ' +
        '(Debian/Ubuntu: apt-get install cmake g++ libopenblas-dev) and run `npm run build:native`.',
    );
  }
  cached = createRequire(import.meta.url)(file) as NativeAddon;
  return cached;
}
