// LoRA adapters on disk in PEFT's format (adapter_config.json + adapter_model.safetensors), with the
// AdamW state (optimizer.safetensors) and the EMA copy (ema_model.safetensors) beside them.
// A save writes a new directory under a temporary name and renames it into place.
import { existsSync, fsyncSync, mkdirSync, openSync, closeSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { AdapterError, ShapeError } from '../errors.js';
import { readSafetensors, writeSafetensors, type TensorToWrite } from '../model/safetensors.js';
import { isLoraModule, LORA_MODULES, type LoraModule } from './lora-modules.js';

export interface LoraShape {
  rank: number;
  alpha: number;
  targetModules: LoraModule[];
}

/** One LoRA tensor of the flat parameter buffer. */
export interface LoraTensorSlot {
  key: string;
  offset: number;
  shape: [number, number];
}

export interface AdapterFileState {
  params: Float32Array;
  ema?: Float32Array;
  m?: Float32Array;
  v?: Float32Array;
  step: number;
}

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';
export const EMA_WEIGHTS = 'ema_model.safetensors';
export const OPTIMIZER_STATE = 'optimizer.safetensors';

/** Bounds on a LoRA's shape, for created and imported adapters alike (an imported `r` of 1e12 once reached the allocator). */
export const MAX_LORA_RANK = 4096;
export const MAX_LORA_ALPHA = 65536;

/** Validates a PEFT adapter_config.json object. */
export function parseAdapterConfig(raw: Record<string, unknown>): LoraShape {
  if (raw.peft_type !== undefined && raw.peft_type !== 'LORA') throw new AdapterError(`adapter_config.json: peft_type ${JSON.stringify(raw.peft_type)} is not LORA`);
  const r = raw.r;
  if (typeof r !== 'number' || !Number.isInteger(r) || r <= 0 || r > MAX_LORA_RANK) throw new AdapterError(`adapter_config.json: r must be an integer in [1, ${MAX_LORA_RANK}] (got ${JSON.stringify(r)})`);
  const alpha = raw.lora_alpha ?? r;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha <= 0 || alpha > MAX_LORA_ALPHA) throw new AdapterError(`adapter_config.json: lora_alpha must be a number in (0, ${MAX_LORA_ALPHA}] (got ${JSON.stringify(alpha)})`);
  if (raw.use_rslora === true) throw new AdapterError('adapter_config.json: use_rslora is not supported');
  if (raw.use_dora === true) throw new AdapterError('adapter_config.json: use_dora is not supported');
  if (raw.fan_in_fan_out === true) throw new AdapterError('adapter_config.json: fan_in_fan_out is not supported');
  if (raw.layers_to_transform !== undefined && raw.layers_to_transform !== null) throw new AdapterError('adapter_config.json: layers_to_transform is not supported');
  if (raw.bias !== undefined && raw.bias !== 'none') throw new AdapterError(`adapter_config.json: bias ${JSON.stringify(raw.bias)} is not supported`);
  let targets = raw.target_modules;
  if (typeof targets === 'string') targets = targets === 'all-linear' ? [...LORA_MODULES] : [targets];
  return { rank: r, alpha, targetModules: validateTargets(targets) };
}

export function validateTargets(targets: unknown): LoraModule[] {
  if (!Array.isArray(targets) || targets.length === 0) throw new AdapterError('target_modules must be a non-empty list');
  for (const t of targets) {
    if (typeof t !== 'string' || !isLoraModule(t)) throw new AdapterError(`unknown target module ${JSON.stringify(t)} (known: ${LORA_MODULES.join(', ')})`);
  }
  return LORA_MODULES.filter((m) => (targets as string[]).includes(m));
}

function tensorsOf(slots: readonly LoraTensorSlot[], flat: Float32Array, suffix = ''): TensorToWrite[] {
  return slots.map((s) => ({ name: s.key + suffix, shape: s.shape, data: flat.subarray(s.offset, s.offset + s.shape[0] * s.shape[1]) }));
}

function writeDurably(file: string, write: () => void): void {
  write();
  const fd = openSync(file, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Writes a new adapter directory; refuses to overwrite an existing one (versions are immutable). */
export function saveAdapterFiles(dir: string, shape: LoraShape, slots: readonly LoraTensorSlot[], state: AdapterFileState, baseModel: string): void {
  if (existsSync(dir)) throw new AdapterError(`${dir} already exists; adapter versions are never overwritten`);
  mkdirSync(dirname(dir), { recursive: true });
  const tmp = join(dirname(dir), `.${basename(dir)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  mkdirSync(tmp);
  try {
    const config = {
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      r: shape.rank,
      lora_alpha: shape.alpha,
      lora_dropout: 0.0,
      target_modules: shape.targetModules,
      bias: 'none',
      fan_in_fan_out: false,
      inference_mode: true,
      use_rslora: false,
      modules_to_save: null,
      init_lora_weights: true,
      base_model_name_or_path: baseModel,
    };
    writeDurably(join(tmp, ADAPTER_CONFIG), () => writeFileSync(join(tmp, ADAPTER_CONFIG), JSON.stringify(config, null, 2) + '\n'));
    writeDurably(join(tmp, ADAPTER_WEIGHTS), () => writeSafetensors(join(tmp, ADAPTER_WEIGHTS), tensorsOf(slots, state.params), { format: 'pt' }));
    if (state.ema) writeDurably(join(tmp, EMA_WEIGHTS), () => writeSafetensors(join(tmp, EMA_WEIGHTS), tensorsOf(slots, state.ema!), { format: 'pt' }));
    if (state.m && state.v) {
      const tensors = [...tensorsOf(slots, state.m, '.exp_avg'), ...tensorsOf(slots, state.v, '.exp_avg_sq')];
      writeDurably(join(tmp, OPTIMIZER_STATE), () => writeSafetensors(join(tmp, OPTIMIZER_STATE), tensors, { step: String(state.step) }));
    }
    renameSync(tmp, dir);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

export function readAdapterConfig(dir: string): LoraShape {
  const file = join(dir, ADAPTER_CONFIG);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new AdapterError(`cannot read ${file}: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new AdapterError(`${file} must hold a JSON object`);
  return parseAdapterConfig(raw as Record<string, unknown>);
}

type FloatTensors = ReturnType<typeof readSafetensors>['tensors'];

function gather(file: string, tensors: FloatTensors, slots: readonly LoraTensorSlot[], total: number, suffix = ''): Float32Array {
  const flat = new Float32Array(total);
  for (const s of slots) {
    const t = tensors.get(s.key + suffix);
    if (!t) throw new AdapterError(`${file}: tensor ${s.key + suffix} is missing`);
    if (t.shape.length !== 2 || t.shape[0] !== s.shape[0] || t.shape[1] !== s.shape[1]) {
      throw new ShapeError(`${file}: ${s.key + suffix} has shape [${t.shape.join(', ')}], expected [${s.shape.join(', ')}]`);
    }
    flat.set(t.data, s.offset);
  }
  return flat;
}

/** Reads the weights (and, when present, EMA and optimizer state) of an adapter directory. */
export function loadAdapterFiles(dir: string, slots: readonly LoraTensorSlot[], total: number): AdapterFileState {
  const weights = join(dir, ADAPTER_WEIGHTS);
  const state: AdapterFileState = { params: gather(weights, readSafetensors(weights).tensors, slots, total), step: 0 };
  const ema = join(dir, EMA_WEIGHTS);
  if (existsSync(ema)) state.ema = gather(ema, readSafetensors(ema).tensors, slots, total);
  const opt = join(dir, OPTIMIZER_STATE);
  if (existsSync(opt)) {
    const { tensors, metadata } = readSafetensors(opt);
    state.m = gather(opt, tensors, slots, total, '.exp_avg');
    state.v = gather(opt, tensors, slots, total, '.exp_avg_sq');
    const step = Number(metadata.step ?? '0');
    if (!Number.isInteger(step) || step < 0) throw new AdapterError(`${opt}: bad step count`);
    state.step = step;
  }
  return state;
}
