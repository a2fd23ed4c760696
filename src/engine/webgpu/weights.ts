// Reads the frozen weights named by the model's WeightSpecs (fp32 / fp16 / bf16 safetensors data) for
// upload to the GPU: as fp32 arrays, or as half-precision bits for 16-bit storage.
import { closeSync, openSync, readSync } from 'node:fs';
import { WeightsError } from '../../errors.js';
import type { WeightSpec } from '../../model/weights.js';
import { bf16ToFloat, floatToHalf, halfToFloat } from './half.js';

function readRaw(spec: WeightSpec): Buffer {
  const bytesPer = spec.dtype === 0 ? 4 : 2;
  const raw = Buffer.alloc(spec.count * bytesPer);
  const fd = openSync(spec.file, 'r');
  try {
    let done = 0;
    while (done < raw.length) {
      const n = readSync(fd, raw, done, raw.length - done, spec.offset + done);
      if (n === 0) throw new WeightsError(`${spec.file}: ${spec.role}${spec.layer >= 0 ? ` of layer ${spec.layer}` : ''} lies outside the file`);
      done += n;
    }
  } finally {
    closeSync(fd);
  }
  if (spec.dtype !== 0 && spec.dtype !== 1 && spec.dtype !== 2) throw new WeightsError(`unknown dtype code ${spec.dtype} for ${spec.role}`);
  return raw;
}

/** The tensor's values as fp32 (fp16 and bf16 converted exactly). */
export function readTensor(spec: WeightSpec): Float32Array {
  const raw = readRaw(spec);
  const out = new Float32Array(spec.count);
  if (spec.dtype === 0) {
    for (let i = 0; i < spec.count; i++) out[i] = raw.readFloatLE(i * 4);
  } else if (spec.dtype === 1) {
    for (let i = 0; i < spec.count; i++) out[i] = halfToFloat(raw.readUInt16LE(i * 2));
  } else {
    for (let i = 0; i < spec.count; i++) out[i] = bf16ToFloat(raw.readUInt16LE(i * 2));
  }
  return out;
}

/**
 * The tensor as IEEE half bits: fp16 data as stored, fp32 and bf16 rounded to nearest even. null when
 * a finite value lies beyond the half range (it would become an infinity): such a tensor stays fp32.
 */
export function readTensorHalf(spec: WeightSpec): Uint16Array | null {
  const raw = readRaw(spec);
  const out = new Uint16Array(spec.count);
  if (spec.dtype === 1) {
    for (let i = 0; i < spec.count; i++) out[i] = raw.readUInt16LE(i * 2);
    return out;
  }
  for (let i = 0; i < spec.count; i++) {
    const x = spec.dtype === 0 ? raw.readFloatLE(i * 4) : bf16ToFloat(raw.readUInt16LE(i * 2));
    const h = floatToHalf(x);
    if ((h & 0x7fff) === 0x7c00 && Number.isFinite(x)) return null;
    out[i] = h;
  }
  return out;
}
