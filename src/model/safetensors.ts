// Reading and writing the safetensors format: an 8-byte little-endian header length, a JSON header
// describing each tensor, then the raw row-major data.
import { closeSync, openSync, readSync, fstatSync, readFileSync, writeFileSync } from 'node:fs';
import { WeightsError } from '../errors.js';

export type DType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

const DTYPE_BYTES: Record<DType, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
const MAX_HEADER = 100 * 1024 * 1024;

export interface TensorInfo {
  dtype: DType;
  shape: number[];
  /** absolute byte offset of the data in the file */
  offset: number;
  byteLength: number;
}

export interface SafetensorsHeader {
  file: string;
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Parses and validates the header of a safetensors file without reading the tensor data. */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    throw new WeightsError(`cannot open ${file}: ${(err as Error).message}`);
  }
  try {
    const size = fstatSync(fd).size;
    const lenBuf = Buffer.alloc(8);
    if (size < 8 || readSync(fd, lenBuf, 0, 8, 0) !== 8) throw new WeightsError(`${file}: file too short for a safetensors header`);
    const n = Number(lenBuf.readBigUInt64LE(0));
    if (n < 2 || n > MAX_HEADER || n > size - 8) throw new WeightsError(`${file}: corrupt safetensors header (length ${n})`);
    const headBuf = Buffer.alloc(n);
    readSync(fd, headBuf, 0, n, 8);
    let json: unknown;
    try {
      json = JSON.parse(headBuf.toString('utf8'));
    } catch {
      throw new WeightsError(`${file}: corrupt safetensors header (not JSON)`);
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new WeightsError(`${file}: corrupt safetensors header (not an object)`);
    const dataStart = 8 + n;
    const dataSize = size - dataStart;
    const tensors = new Map<string, TensorInfo>();
    let metadata: Record<string, string> = {};
    for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
      if (name === '__metadata__') {
        metadata = (raw ?? {}) as Record<string, string>;
        continue;
      }
      const t = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (typeof t?.dtype !== 'string' || !(t.dtype in DTYPE_BYTES)) throw new WeightsError(`${file}: tensor ${name} has unknown dtype ${String(t?.dtype)}`);
      if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isInteger(d) && d >= 0)) throw new WeightsError(`${file}: tensor ${name} has an invalid shape`);
      const off = t.data_offsets;
      if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isInteger(d) && d >= 0)) throw new WeightsError(`${file}: tensor ${name} has invalid data_offsets`);
      const [begin, end] = off as [number, number];
      const dtype = t.dtype as DType;
      const shape = t.shape as number[];
      if (end < begin || end - begin !== numel(shape) * DTYPE_BYTES[dtype]) throw new WeightsError(`${file}: tensor ${name} data_offsets do not match its shape`);
      if (end > dataSize) throw new WeightsError(`${file}: tensor ${name} lies outside the file (truncated?)`);
      tensors.set(name, { dtype, shape, offset: dataStart + begin, byteLength: end - begin });
    }
    return { file, tensors, metadata };
  } finally {
    closeSync(fd);
  }
}

function toFloat32(buf: Buffer, info: TensorInfo): Float32Array {
  const n = numel(info.shape);
  const out = new Float32Array(n);
  const view = new DataView(buf.buffer, buf.byteOffset + info.offset, info.byteLength);
  const scratch = new DataView(new ArrayBuffer(4));
  for (let i = 0; i < n; i++) {
    switch (info.dtype) {
      case 'F32':
        out[i] = view.getFloat32(4 * i, true);
        break;
      case 'F64':
        out[i] = view.getFloat64(8 * i, true);
        break;
      case 'BF16':
        scratch.setUint32(0, view.getUint16(2 * i, true) << 16);
        out[i] = scratch.getFloat32(0);
        break;
      case 'F16':
        out[i] = halfToFloat(view.getUint16(2 * i, true));
        break;
      default:
        throw new WeightsError(`tensor of dtype ${info.dtype} cannot be read as floats`);
    }
  }
  return out;
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (mant / 1024);
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + mant / 1024);
}

/** Reads every floating-point tensor of a (small) safetensors file as float32. */
export function readSafetensors(file: string): { tensors: Map<string, { shape: number[]; data: Float32Array }>; metadata: Record<string, string> } {
  const header = readSafetensorsHeader(file);
  const buf = readFileSync(file);
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, info] of header.tensors) tensors.set(name, { shape: info.shape, data: toFloat32(buf, info) });
  return { tensors, metadata: header.metadata };
}

export interface TensorToWrite {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** Writes float32 tensors; the header is padded with spaces to keep the data 8-byte aligned. */
export function writeSafetensors(file: string, tensors: readonly TensorToWrite[], metadata: Record<string, string> = {}): void {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    if (t.data.length !== numel(t.shape)) throw new Error(`tensor ${t.name}: ${t.data.length} values for shape [${t.shape.join(', ')}]`);
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + headerBytes.length + offset);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  let pos = 8 + headerBytes.length;
  for (const t of tensors) {
    Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).copy(out, pos);
    pos += t.data.byteLength;
  }
  writeFileSync(file, out);
}
