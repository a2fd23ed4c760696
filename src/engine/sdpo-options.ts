// Options of one SDPO step: the engine defaults of docs/learning.md and validation with clear messages.
import { InputError } from '../errors.js';
import type { NativeStepOptions } from './native.js';

/** `remote`: targets come with the samples, scored by an OpenAI-compatible server (prompt_logprobs). */
export type TeacherMode = 'base' | 'current' | 'ema' | 'remote';

export interface SdpoOptions {
  /** 0 forward KL, 1 reverse KL, in between generalized Jensen-Shannon. */
  alpha: number;
  /** Teacher top-K (capped at the vocabulary size). */
  topK: number;
  /** Tail bucket for the mass outside the top-K (else renormalize over it). */
  tail: boolean;
  teacher: TeacherMode;
  /** Sampled-token divergence instead of the top-K distribution. */
  sampledToken: boolean;
  isClip: number;
  /** Weight of the k3 KL-to-base term. */
  beta: number;
  learningRate: number;
  maxGradNorm: number;
  weightDecay: number;
  adamBeta1: number;
  adamBeta2: number;
  adamEps: number;
  emaRate: number;
  steps: number;
}

export const DEFAULT_SDPO_OPTIONS: Readonly<SdpoOptions> = Object.freeze({
  alpha: 0.5,
  topK: 100,
  tail: true,
  teacher: 'current',
  sampledToken: false,
  isClip: 2.0,
  beta: 0.0,
  learningRate: 1e-5,
  maxGradNorm: 1.0,
  weightDecay: 0.01,
  adamBeta1: 0.9,
  adamBeta2: 0.999,
  adamEps: 1e-8,
  emaRate: 0.05,
  steps: 1,
});

// remote never reaches the engine's own teacher: every sample carries its targets.
const TEACHER_CODE: Record<TeacherMode, number> = { base: 0, current: 1, ema: 2, remote: 1 };

function num(o: SdpoOptions, key: keyof SdpoOptions, lo: number, hi: number, loOpen = false): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || v > hi || (loOpen ? v <= lo : v < lo)) {
    throw new InputError(`${key} must be a finite number in ${loOpen ? '(' : '['}${lo}, ${hi}] (got ${String(v)})`);
  }
  return v;
}

/** Merges with the defaults, validates, and converts to the addon's form. */
export function resolveSdpoOptions(partial: Partial<SdpoOptions>, vocabSize: number): { options: SdpoOptions; native: NativeStepOptions } {
  const o: SdpoOptions = { ...DEFAULT_SDPO_OPTIONS, ...partial };
  num(o, 'alpha', 0, 1);
  num(o, 'learningRate', 0, 1, true);
  num(o, 'maxGradNorm', 0, Number.MAX_VALUE, true);
  num(o, 'weightDecay', 0, 1);
  num(o, 'adamBeta1', 0, 1);
  num(o, 'adamBeta2', 0, 1);
  num(o, 'adamEps', 0, 1, true);
  num(o, 'emaRate', 0, 1);
  num(o, 'isClip', 0, Number.MAX_VALUE, true);
  num(o, 'beta', 0, Number.MAX_VALUE);
  if (!Number.isInteger(o.topK) || o.topK < 1) throw new InputError(`topK must be a positive integer (got ${String(o.topK)})`);
  if (!Number.isInteger(o.steps) || o.steps < 1 || o.steps > 100) throw new InputError(`steps must be an integer in [1, 100] (got ${String(o.steps)})`);
  if (!(o.teacher in TEACHER_CODE)) throw new InputError(`teacher must be one of base, current, ema, remote (got ${JSON.stringify(o.teacher)})`);
  if (typeof o.tail !== 'boolean' || typeof o.sampledToken !== 'boolean') throw new InputError('tail and sampledToken must be booleans');
  const topK = Math.min(o.topK, vocabSize);
  return {
    options: { ...o, topK },
    native: {
      alpha: o.alpha,
      tail: o.tail,
      sampledToken: o.sampledToken,
      isClip: o.isClip,
      beta: o.beta,
      topK,
      teacher: TEACHER_CODE[o.teacher],
      learningRate: o.learningRate,
      maxGradNorm: o.maxGradNorm,
      weightDecay: o.weightDecay,
      adamBeta1: o.adamBeta1,
      adamBeta2: o.adamBeta2,
      adamEps: o.adamEps,
      emaRate: o.emaRate,
      steps: o.steps,
    },
  };
}
