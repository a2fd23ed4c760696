// A served model's training defaults: what one feedback update does when a request sets no options.
// A model folder may carry them in training_profile.json beside config.json; whatever the file leaves
// out comes from a rule over the model's config (see docs/learning.md). Per-request `training`
// options still override them, within the server's bounds.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TeacherMode } from '../engine/sdpo-options.js';
import { LORA_MODULES } from '../engine/lora-modules.js';
import { ConfigError } from '../errors.js';

export const PROFILE_FILE = 'training_profile.json';

export interface TrainingProfile {
  /** Where the values came from: the profile file (and the rule for what it leaves out), or the rule alone. */
  source: string;
  training: { learningRate: number; alpha: number; steps: number; topK: number; teacher: TeacherMode; memory: number };
  /** New adapters: LoRA rank, alpha and the projections it trains. */
  lora: { rank: number; alpha: number; targetModules: string[] };
  /** Feedback items per update, and the longest wait for a batch to fill. */
  feedback: { batchSize: number; batchWaitMs: number };
  /** Prompts from the model's own domain for the collapse guard (empty: the guard's generic ones). */
  guardProbes: string[];
  /** The guard's bound on one update's KL to the version it replaces (nats per token; unset: the guard's default). */
  guardMaxUpdateKl?: number;
}

/**
 * The original service's figures for Qwen3-8B (hidden size 4096): lr 3e-5, α 0.5, 4 steps per batch of 4.
 * The learning rate scales with the hidden size by the exponent Tinker's cookbook fits for Qwen LoRA
 * (lr ∝ (1/hidden)^0.0775): smaller models take somewhat larger steps.
 */
const ANCHOR = { hidden: 4096, learningRate: 3e-5, exponent: 0.0775 };

/** The defaults for a model without a profile (or for what its profile leaves out). */
export function ruleProfile(hiddenSize: number): TrainingProfile {
  const lr = ANCHOR.learningRate * Math.pow(ANCHOR.hidden / hiddenSize, ANCHOR.exponent);
  return {
    source: `rule: lr = 3e-5 × (4096 / hidden ${hiddenSize})^0.0775`,
    training: { learningRate: Number(lr.toPrecision(3)), alpha: 0.5, steps: 4, topK: 100, teacher: 'current', memory: 0 },
    lora: { rank: 32, alpha: 64, targetModules: [...LORA_MODULES] },
    feedback: { batchSize: 4, batchWaitMs: 2000 },
    guardProbes: [],
  };
}

type Json = Record<string, unknown>;

function fail(file: string, message: string): never {
  throw new ConfigError(`${file}: ${message}`);
}

function pickObject(file: string, o: Json, key: string, allowed: string[]): Json | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(file, `${key} must be an object`);
  for (const k of Object.keys(v)) if (!allowed.includes(k)) fail(file, `unknown key ${key}.${k} (allowed: ${allowed.join(', ')})`);
  return v as Json;
}

function number(file: string, o: Json | undefined, key: string, where: string, lo: number, hi: number, integer = false): number | undefined {
  const v = o?.[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi || (integer && !Number.isInteger(v))) {
    fail(file, `${where} must be ${integer ? 'an integer' : 'a number'} in [${lo}, ${hi}] (got ${JSON.stringify(v)})`);
  }
  return v;
}

const TOP_KEYS = ['learning_rate', 'alpha', 'steps', 'top_k', 'teacher', 'memory', 'lora', 'feedback_batch', 'guard_probes', 'guard_max_update_kl', 'comment'];

/** The profile of a model folder: its training_profile.json over the rule. Bad files fail loudly. */
export function readTrainingProfile(modelDir: string, hiddenSize: number): TrainingProfile {
  const rule = ruleProfile(hiddenSize);
  const file = join(modelDir, PROFILE_FILE);
  if (!existsSync(file)) return rule;
  let o: Json;
  try {
    o = JSON.parse(readFileSync(file, 'utf8')) as Json;
  } catch (err) {
    fail(file, `not valid JSON (${(err as Error).message})`);
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) fail(file, 'must hold a JSON object');
  for (const k of Object.keys(o)) if (!TOP_KEYS.includes(k)) fail(file, `unknown key ${k} (allowed: ${TOP_KEYS.join(', ')})`);
  const lora = pickObject(file, o, 'lora', ['rank', 'alpha', 'target_modules']);
  const batch = pickObject(file, o, 'feedback_batch', ['size', 'wait_ms']);
  const teacher = o.teacher;
  if (teacher !== undefined && !['base', 'current', 'ema'].includes(teacher as string)) fail(file, `teacher must be base, current or ema (got ${JSON.stringify(teacher)})`);
  const targets = lora?.target_modules;
  if (targets !== undefined && !(Array.isArray(targets) && targets.length > 0 && targets.every((t) => (LORA_MODULES as readonly string[]).includes(t as string)))) {
    fail(file, `lora.target_modules must be a non-empty list of ${LORA_MODULES.join(', ')}`);
  }
  const probes = o.guard_probes;
  if (probes !== undefined && !(Array.isArray(probes) && probes.every((p) => typeof p === 'string' && p.length > 0))) fail(file, 'guard_probes must be a list of prompts');
  const t = rule.training;
  return {
    source: `${file}${Object.keys(o).length < TOP_KEYS.length - 1 ? ' (the rest from the rule)' : ''}`,
    training: {
      learningRate: number(file, o, 'learning_rate', 'learning_rate', 1e-8, 1e-2) ?? t.learningRate,
      alpha: number(file, o, 'alpha', 'alpha', 0, 1) ?? t.alpha,
      steps: number(file, o, 'steps', 'steps', 1, 10, true) ?? t.steps,
      topK: number(file, o, 'top_k', 'top_k', 1, 1000, true) ?? t.topK,
      teacher: (teacher as TeacherMode | undefined) ?? t.teacher,
      memory: number(file, o, 'memory', 'memory', 0, 32, true) ?? t.memory,
    },
    lora: {
      rank: number(file, lora, 'rank', 'lora.rank', 1, 256, true) ?? rule.lora.rank,
      alpha: number(file, lora, 'alpha', 'lora.alpha', 1e-6, 4096) ?? rule.lora.alpha,
      targetModules: (targets as string[] | undefined) ?? rule.lora.targetModules,
    },
    feedback: {
      batchSize: number(file, batch, 'size', 'feedback_batch.size', 1, 64, true) ?? rule.feedback.batchSize,
      batchWaitMs: number(file, batch, 'wait_ms', 'feedback_batch.wait_ms', 0, 3_600_000) ?? rule.feedback.batchWaitMs,
    },
    guardProbes: (probes as string[] | undefined) ?? rule.guardProbes,
    guardMaxUpdateKl: number(file, o, 'guard_max_update_kl', 'guard_max_update_kl', 1e-6, 100),
  };
}
