// Reads the frozen weights named by the model's WeightSpecs (fp32 / fp16 / bf16 safetensors data) as
// fp32 arrays for upload to the GPU.
import { closeSync, openSync, readSync } from 'node:fs';
import { WeightsError } from '../../errors.js';
import type { WeightSpec } from '../../model/weights.js';

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** The tensor's values as fp32 (fp16 and bf16 converted exactly). */
export function readTensor(spec: WeightSpec): Float32Array {
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
  const out = new Float32Array(spec.count);
  if (spec.dtype === 0) {
    for (let i = 0; i < spec.count; i++) out[i] = raw.readFloatLE(i * 4);
  } else if (spec.dtype === 1) {
    for (let i = 0; i < spec.count; i++) out[i] = halfToFloat(raw.readUInt16LE(i * 2));
  } else if (spec.dtype === 2) {
    const bits = new Uint32Array(1);
    const f = new Float32Array(bits.buffer);
    for (let i = 0; i < spec.count; i++) {
      bits[0] = raw.readUInt16LE(i * 2) << 16;
      out[i] = f[0]!;
    }
  } else {
    throw new WeightsError(`unknown dtype code ${spec.dtype} for ${spec.role}`);
  }
  return out;
}
