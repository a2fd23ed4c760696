// Loads the compiled addon and types its exports exactly. Explains what to install when it is missing.
import { createRequire } from 'node:module';
import { existsSync, statSync } from 'node:fs';
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
  /** Bytes the adapter holds (weights, EMA, AdamW moments, gradients). */
  readonly bytes: number;
  /**
   * Frees the adapter's memory now (a call already running keeps it until it ends); any later use
   * fails with E_DISPOSED. Idempotent.
   */
  dispose(): void;
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
  /** Bytes its KV cache holds. */
  readonly bytes: number;
  /** Frees the KV cache now; any later use fails with E_DISPOSED. Idempotent. */
  dispose(): void;
}

export interface NativeDecodeEntry {
  seq: NativeSequence;
  /**
   * The adapter this row decodes with (null: the base model). One decode call mixes rows of any
   * adapters: the base projections run once over all rows, the LoRA branch once per adapter over
   * its rows (a segmented product).
   */
  adapter: NativeAdapter | null;
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
  decode(entries: NativeDecodeEntry[]): Promise<NativeSampled[]>;
  /** Frees the weights and everything else the model holds; later calls fail with E_DISPOSED. */
  dispose(): void;
  /**
   * Whether a decode may run while another call (a training step) is in flight, each in its own lane
   * (the CPU addon: separate threads; a GPU backend: its own stream, or the step in chunks that
   * decoding interleaves with). Absent: calls run one at a time.
   */
  readonly concurrentLanes?: boolean;
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

/** The folder holding package.json above this file (dist/src/engine → the package root). */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot locate the claas package root');
    dir = up;
  }
  return dir;
}

/**
 * Where an addon file (claas.node, claas_cuda.node) may be, in the order to try: the prebuilt one
 * shipped in the npm package (prebuilds/<platform>-<arch>/), then a local cmake-js build. A local
 * build newer than the prebuilt one goes first: that is a source build made after the package was
 * installed (the install step's fallback when the prebuilt one would not load) or a developer's
 * rebuild in a clone where `npm pack` left prebuilds/ behind, and either way it is the code meant.
 */
export function addonCandidates(file: string): string[] {
  const root = packageRoot();
  const prebuilt = join(root, 'prebuilds', `${process.platform}-${process.arch}`, file);
  const release = join(root, 'build', 'Release', file);
  const debug = join(root, 'build', 'Debug', file);
  const existing = [prebuilt, release, debug].filter((f) => existsSync(f));
  if (existing.includes(prebuilt) && existing.includes(release) && statSync(release).mtimeMs > statSync(prebuilt).mtimeMs) {
    return [release, prebuilt, ...existing.filter((f) => f === debug)];
  }
  return existing;
}

/**
 * Loads the first candidate that loads; `errors` says why each one tried did not (a prebuilt binary
 * needs a glibc at least as new as the build machine's, for instance).
 */
export function loadAddonFile<T>(file: string): { addon: T; file: string } | { errors: string[] } {
  const errors: string[] = [];
  for (const f of addonCandidates(file)) {
    try {
      return { addon: createRequire(import.meta.url)(f) as T, file: f };
    } catch (err) {
      const first = (err as Error).message.split('\n')[0]!;
      errors.push(first.includes(f) ? first : `${f}: ${first}`);
    }
  }
  return { errors };
}

/** The addon, loaded once. */
export function nativeAddon(): NativeAddon {
  if (cached) return cached;
  const r = loadAddonFile<NativeAddon>('claas.node');
  if ('errors' in r) {
    throw new Error(
      r.errors.length === 0
        ? `The claas native engine is not built (neither prebuilds/${process.platform}-${process.arch}/claas.node nor build/Release/claas.node exists). ` +
            'Install the build dependencies (Debian/Ubuntu: apt-get install cmake g++ libopenblas-dev) and run `npm run build:native`.'
        : `The claas native engine failed to load: ${r.errors.join('; ')}. Rebuild it from source: CLAAS_BUILD_FROM_SOURCE=1 npm rebuild claas ` +
            '(in a clone: npm run build:native), with cmake, g++ and libopenblas-dev installed.',
    );
  }
  cached = r.addon;
  return cached;
}
