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

export interface NativeAddon {
  loadModel(spec: { config: NativeConfig; threads: number; tensors: WeightSpec[] }): Promise<NativeModel>;
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
