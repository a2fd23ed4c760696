// What every GPU pass shares: the device, the configuration, the frozen weights (uploaded once, the
// matrices in the storage weight-storage.ts picked) and RoPE tables; plus the scratch workspace of
// the call it serves (withWorkspace gives each call in flight its own, over the same weights).
import type { NativeConfig } from '../native.js';
import type { WeightSpec } from '../../model/weights.js';
import { WeightsError } from '../../errors.js';
import type { Gpu } from './device.js';
import { moduleIn, moduleOut } from './adapter.js';
import { readTensor, readTensorHalf } from './weights.js';
import { isWeightMatrix, type WeightStorage } from './weight-storage.js';
import { Workspace } from './workspace.js';
import { uploadRowBlocks, type RowBlocks } from './row-blocks.js';
import type { VocabMatrix } from './vocab.js';

export interface LayerWeights {
  inNorm: GPUBuffer;
  postNorm: GPUBuffer;
  qNorm: GPUBuffer | null;
  kNorm: GPUBuffer | null;
  /** Projections q, k, v, o, gate, up, down: row blocks when over the binding limit (row-blocks.ts). */
  W: RowBlocks[];
  b: (GPUBuffer | null)[];
}

export interface ModelWeights {
  /** Bytes of every weight buffer (each buffer once; a tied LM head is the embedding). */
  bytes: number;
  /** Weight matrices kept f32 under f16 storage because a value lies beyond the f16 range. */
  keptF32: number;
  /** [V, H], in row blocks when it exceeds the storage binding limit (vocab.ts). */
  embed: VocabMatrix;
  finalNorm: GPUBuffer;
  /** The embedding itself when tied. */
  lmHead: VocabMatrix;
  layers: LayerWeights[];
}

const PROJ = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
const BIAS = ['q_bias', 'k_bias', 'v_bias', 'o_bias'] as const;

/** cos/sin [T, D/2] for the given positions, as cpu::rope_tables computes them. */
export function ropeTableData(positions: ArrayLike<number>, D: number, theta: number): { cos: Float32Array; sin: Float32Array } {
  const D2 = D / 2, T = positions.length;
  const cos = new Float32Array(T * D2), sin = new Float32Array(T * D2);
  for (let i = 0; i < D2; i++) {
    const invFreq = Math.pow(theta, (-2.0 * i) / D);
    for (let t = 0; t < T; t++) {
      const a = positions[t]! * invFreq;
      cos[t * D2 + i] = Math.cos(a);
      sin[t * D2 + i] = Math.sin(a);
    }
  }
  return { cos, sin };
}

/** RoPE tables for positions 0..T-1, shared by every context over one model. */
interface RopeCache {
  table: { T: number; cos: GPUBuffer; sin: GPUBuffer } | null;
}

export class ModelContext {
  private constructor(
    readonly gpu: Gpu,
    readonly cfg: NativeConfig,
    readonly weights: ModelWeights,
    readonly ws: Workspace,
    private readonly rope: RopeCache,
  ) {}

  /** The same model with `ws` as scratch: what one call in flight works in. */
  withWorkspace(ws: Workspace): ModelContext {
    return new ModelContext(this.gpu, this.cfg, this.weights, ws, this.rope);
  }

  /**
   * Uploads every tensor of the model (checked complete, like the addon's loadModel); with f16
   * storage the weight matrices go up as half values.
   */
  static load(gpu: Gpu, cfg: NativeConfig, tensors: readonly WeightSpec[], storage: WeightStorage = 'f32'): ModelContext {
    const one = new Map<string, GPUBuffer>();
    const vocab = new Map<string, VocabMatrix>();
    const blocks = new Map<string, RowBlocks>();
    const key = (role: string, layer: number) => `${role}@${layer}`;
    let bytes = 0, keptF32 = 0;
    for (const t of tensors) {
      if (t.layer < -1 || t.layer >= cfg.layers) throw new WeightsError(`tensor layer out of range for ${t.role}`);
      const label = `${t.role}${t.layer >= 0 ? `.${t.layer}` : ''}`;
      if (t.role === 'embed' || t.role === 'lm_head') {
        if (t.count !== cfg.vocab * cfg.hidden) throw new WeightsError(`${t.role} holds ${t.count} values, expected vocab x hidden = ${cfg.vocab * cfg.hidden}`);
        const up = uploadRowBlocks(gpu, t, cfg.hidden, storage === 'f16', label);
        bytes += up.bytes;
        if (up.keptF32) keptF32++;
        vocab.set(t.role, up.m);
        continue;
      }
      const m = (PROJ as readonly string[]).indexOf(t.role);
      if (m >= 0) {
        const I = moduleIn(cfg, m), O = moduleOut(cfg, m);
        if (t.count !== I * O) throw new WeightsError(`${label} holds ${t.count} values, expected ${O} x ${I}`);
        const up = uploadRowBlocks(gpu, t, I, storage === 'f16', label);
        bytes += up.bytes;
        if (up.keptF32) keptF32++;
        blocks.set(key(t.role, t.layer), up.m);
        continue;
      }
      let buf: GPUBuffer | null = null;
      if (storage === 'f16' && isWeightMatrix(t.role)) {
        const bits = readTensorHalf(t);
        if (bits) buf = gpu.uploadHalf(bits, label);
        else keptF32++;
      }
      buf ??= gpu.upload(readTensor(t), label);
      bytes += buf.size;
      one.set(key(t.role, t.layer), buf);
    }
    const need = (role: string, layer: number, what: string) => {
      const b = one.get(key(role, layer));
      if (!b) throw new WeightsError(`missing ${what}`);
      return b;
    };
    const embed = vocab.get('embed');
    if (!embed) throw new WeightsError('missing embedding');
    const head = vocab.get('lm_head') ?? (cfg.tieEmbeddings ? embed : null);
    if (!head) throw new WeightsError('missing LM head');
    const weights: ModelWeights = {
      bytes,
      keptF32,
      embed,
      finalNorm: need('final_norm', -1, 'final norm'),
      lmHead: head,
      layers: [],
    };
    for (let l = 0; l < cfg.layers; l++) {
      const where = `of layer ${l}`;
      weights.layers.push({
        inNorm: need('in_norm', l, `input norm ${where}`),
        postNorm: need('post_norm', l, `post-attention norm ${where}`),
        qNorm: cfg.qkNorm ? need('q_norm', l, `q norm ${where}`) : null,
        kNorm: cfg.qkNorm ? need('k_norm', l, `k norm ${where}`) : null,
        W: PROJ.map((p) => {
          const b = blocks.get(key(p, l));
          if (!b) throw new WeightsError(`missing ${p} ${where}`);
          return b;
        }),
        b: BIAS.map((b, i) => (cfg.bias[i] ? need(b, l, `${b} ${where}`) : null)),
      });
    }
    return new ModelContext(gpu, cfg, weights, new Workspace(gpu), { table: null });
  }

  moduleIn(m: number): number {
    return moduleIn(this.cfg, m);
  }

  moduleOut(m: number): number {
    return moduleOut(this.cfg, m);
  }

  /** RoPE tables for positions 0..T-1 (a longer table serves: rows depend only on the position). */
  ropeTables(T: number): { cos: GPUBuffer; sin: GPUBuffer } {
    let table = this.rope.table;
    if (!table || table.T < T) {
      const n = Math.max(T, table ? table.T * 2 : 256);
      const positions = Array.from({ length: n }, (_, i) => i);
      const { cos, sin } = ropeTableData(positions, this.cfg.headDim, this.cfg.ropeTheta);
      // Replaced tables are never destroyed here: a call in flight (a step between its forward and
      // its backward) may still record commands that bind them; they go when collected.
      table = { T: n, cos: this.gpu.upload(cos, 'rope.cos'), sin: this.gpu.upload(sin, 'rope.sin') };
      this.rope.table = table;
    }
    return table;
  }
}
