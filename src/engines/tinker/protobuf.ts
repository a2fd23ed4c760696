// The few protobuf messages of Tinker's public schema (package tinker_public, proto3) that this
// client sends or reads, hand-encoded so no protobuf runtime is needed: the forward_backward
// request, and the forward_backward and sample results that retrieve_future returns as protobuf
// when asked. Messages are converted from and to the JSON wire shapes of wire.ts, so the client and
// the fake handle one shape whatever the transport.
//
// Field numbers, from the SDK's serialized descriptor (src/tinker/proto/tinker_public_pb2.py) and
// its converters (request_conv.py, response_conv.py):
//   ForwardBackwardRequest: 1 model_id string, 2 seq_id int32, 3 data repeated Datum,
//     4 loss_fn string, 5 loss_fn_config map<string, double>, 6 forward_only bool
//   Datum: 1 model_input repeated Chunk, 2 loss_fn_inputs map<string, Tensor>
//   Chunk (oneof chunk): 1 encoded_text EncodedTextChunk, 2 image ImageChunk, 3 dmel DmelChunk
//   EncodedTextChunk: 1 tokens bytes (int32 little-endian)
//   Tensor: oneof encoding {1 dense bytes, 2 sparse_csr SparseCsr}, 3 dtype DType,
//     4 shape repeated int64 (packed)
//   DType: 0 UNSPECIFIED, 1 FLOAT32, 2 INT64, 3 INT32, 4 BFLOAT16
//   ForwardBackwardOutput: 1 loss_fn_output_type string, 2 loss_fn_outputs repeated ArrayRecord,
//     3 metrics map<string, double>
//   ArrayRecord: 1 type_tag string, 2 fields map<string, BatchedTensor>, 3 num_datums int64
//   BatchedTensor: 1 data bytes, 2 offsets bytes (int64 byte offsets, one per datum plus one),
//     3 dtype DType, 4 trailing_shape repeated int64
//   SampleResponse: 1 sequences repeated SampledSequence, 2 prompt_logprobs optional bytes
//     (float32, NaN where none), 3 topk_prompt_logprobs optional TopkPromptLogprobs,
//     4 prompt_cache_hit_tokens int32
//   SampledSequence: 1 stop_reason StopReason (0 STOP, 1 LENGTH), 2 tokens bytes (int32),
//     3 logprobs optional bytes (float32)
//   TopkPromptLogprobs: 1 token_ids bytes (int32, N×K row-major), 2 logprobs bytes (float32),
//     3 k uint32, 4 prompt_length uint32; empty cells are token 0 with log-prob -99999
// Map entries are messages with 1 key and 2 value.
import type { Dtype, ForwardBackwardOutputJson, LossFn, SampleResponseJson, StopReason, WireDatum, WireTensorData } from './wire.js';

/** A protobuf body that does not match the schema. */
export class ProtobufError extends Error {}

/** The logprob the server puts in empty top-k cells. */
export const MASK_LOGPROB = -99999;

const DTYPE_CODE: Record<Dtype, number> = { float32: 1, int64: 2 };
const DTYPE_INT32 = 3;
const DTYPE_BFLOAT16 = 4;
const STOP_REASONS: StopReason[] = ['stop', 'length'];

// Wire types.
const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;

// ---- writing ----------------------------------------------------------------------------------

class Writer {
  private parts: Uint8Array[] = [];
  private scratch: number[] = [];

  private flush(): void {
    if (this.scratch.length) {
      this.parts.push(Uint8Array.from(this.scratch));
      this.scratch = [];
    }
  }

  varint(n: number): this {
    if (!Number.isInteger(n)) throw new ProtobufError(`a varint must be an integer, got ${n}`);
    if (n < 0) {
      // Negative int32/int64 go as their 64-bit two's complement (ten bytes).
      let b = BigInt.asUintN(64, BigInt(n));
      while (b >= 0x80n) {
        this.scratch.push(Number(b & 0x7fn) | 0x80);
        b >>= 7n;
      }
      this.scratch.push(Number(b));
      return this;
    }
    while (n >= 0x80) {
      this.scratch.push((n % 0x80) | 0x80);
      n = Math.floor(n / 0x80);
    }
    this.scratch.push(n);
    return this;
  }

  tag(field: number, wire: number): this {
    return this.varint(field * 8 + wire);
  }

  raw(bytes: Uint8Array): this {
    this.flush();
    this.parts.push(bytes);
    return this;
  }

  bytes(field: number, bytes: Uint8Array): this {
    return this.tag(field, LEN).varint(bytes.length).raw(bytes);
  }

  string(field: number, s: string): this {
    return this.bytes(field, Buffer.from(s, 'utf8'));
  }

  double(field: number, v: number): this {
    const b = Buffer.alloc(8);
    b.writeDoubleLE(v);
    return this.tag(field, I64).raw(b);
  }

  packed(field: number, values: readonly number[]): this {
    if (values.length === 0) return this;
    const inner = new Writer();
    for (const v of values) inner.varint(v);
    return this.bytes(field, inner.finish());
  }

  finish(): Uint8Array {
    this.flush();
    return this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
  }
}

function int32Bytes(values: readonly number[], what: string): Uint8Array {
  const out = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => {
    if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) throw new ProtobufError(`${what}[${i}] is not an int32: ${v}`);
    out.writeInt32LE(v, i * 4);
  });
  return out;
}

function float32Bytes(values: readonly (number | null)[]): Uint8Array {
  const out = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => out.writeFloatLE(v ?? NaN, i * 4));
  return out;
}

function int64Bytes(values: readonly number[], what: string): Uint8Array {
  const out = Buffer.alloc(values.length * 8);
  values.forEach((v, i) => {
    if (!Number.isSafeInteger(v)) throw new ProtobufError(`${what}[${i}] is not an integer: ${v}`);
    out.writeBigInt64LE(BigInt(v), i * 8);
  });
  return out;
}

function tensorBytes(t: WireTensorData, what: string): Uint8Array {
  if (t.dtype === 'int64') return int64Bytes(t.data, what);
  if (t.dtype === 'float32') return float32Bytes(t.data);
  throw new ProtobufError(`${what} has dtype ${String(t.dtype)}; the wire carries only int64 and float32`);
}

function mapEntry(key: string, value: (w: Writer) => void): Uint8Array {
  const w = new Writer().string(1, key);
  value(w);
  return w.finish();
}

export interface ForwardBackwardRequestPb {
  model_id: string;
  seq_id: number;
  data: WireDatum[];
  loss_fn: LossFn;
  loss_fn_config: Record<string, number>;
  forward_only: boolean;
}

function encodeTensor(t: WireTensorData, what: string): Uint8Array {
  // The dense oneof member is written even when empty: a oneof field has presence.
  const w = new Writer().bytes(1, tensorBytes(t, what));
  w.tag(3, VARINT).varint(DTYPE_CODE[t.dtype]);
  if (t.shape) w.packed(4, t.shape);
  return w.finish();
}

function encodeDatum(d: WireDatum, i: number): Uint8Array {
  const w = new Writer();
  d.model_input.chunks.forEach((c, j) => {
    if (c.type !== 'encoded_text') throw new ProtobufError(`datum ${i} chunk ${j} has type ${String(c.type)}; only encoded_text is supported`);
    const chunk = new Writer().bytes(1, new Writer().bytes(1, int32Bytes(c.tokens, `datum ${i} chunk ${j} tokens`)).finish()).finish();
    w.bytes(1, chunk);
  });
  for (const [name, t] of Object.entries(d.loss_fn_inputs)) {
    w.bytes(2, mapEntry(name, (e) => e.bytes(2, encodeTensor(t, `datum ${i} ${name}`))));
  }
  return w.finish();
}

export function encodeForwardBackwardRequest(req: ForwardBackwardRequestPb): Uint8Array {
  const w = new Writer();
  if (req.model_id) w.string(1, req.model_id);
  if (req.seq_id) w.tag(2, VARINT).varint(req.seq_id);
  req.data.forEach((d, i) => w.bytes(3, encodeDatum(d, i)));
  if (req.loss_fn) w.string(4, req.loss_fn);
  for (const [k, v] of Object.entries(req.loss_fn_config)) w.bytes(5, mapEntry(k, (e) => e.double(2, v)));
  if (req.forward_only) w.tag(6, VARINT).varint(1);
  return w.finish();
}

/** One ArrayRecord holding every datum, as the server's v1 writer emits. */
export function encodeForwardBackwardOutput(out: ForwardBackwardOutputJson): Uint8Array {
  const w = new Writer();
  if (out.loss_fn_output_type) w.string(1, out.loss_fn_output_type);
  if (out.loss_fn_outputs.length > 0) {
    const record = new Writer().string(1, out.loss_fn_output_type);
    const names = Object.keys(out.loss_fn_outputs[0]!);
    for (const name of names) {
      const tensors = out.loss_fn_outputs.map((o, i) => {
        const t = o[name];
        if (!t) throw new ProtobufError(`loss_fn_outputs[${i}] lacks ${name}`);
        return t;
      });
      const first = tensors[0]!;
      const trailing = (first.shape ?? [first.data.length]).slice(1);
      const chunks = tensors.map((t, i) => tensorBytes(t, `loss_fn_outputs[${i}].${name}`));
      const offsets = [0];
      for (const c of chunks) offsets.push(offsets[offsets.length - 1]! + c.length);
      const bt = new Writer().bytes(1, Buffer.concat(chunks)).bytes(2, int64Bytes(offsets, 'offsets'));
      bt.tag(3, VARINT).varint(DTYPE_CODE[first.dtype]).packed(4, trailing);
      record.bytes(2, mapEntry(name, (e) => e.bytes(2, bt.finish())));
    }
    record.tag(3, VARINT).varint(out.loss_fn_outputs.length);
    w.bytes(2, record.finish());
  }
  for (const [k, v] of Object.entries(out.metrics)) w.bytes(3, mapEntry(k, (e) => e.double(2, v)));
  return w.finish();
}

export function encodeSampleResponse(res: SampleResponseJson & { prompt_cache_hit_tokens?: number }): Uint8Array {
  const w = new Writer();
  for (const s of res.sequences) {
    const sw = new Writer();
    const code = STOP_REASONS.indexOf(s.stop_reason);
    if (code < 0) throw new ProtobufError(`unknown stop reason ${s.stop_reason}`);
    if (code) sw.tag(1, VARINT).varint(code);
    sw.bytes(2, int32Bytes(s.tokens, 'tokens'));
    if (s.logprobs) sw.bytes(3, float32Bytes(s.logprobs));
    w.bytes(1, sw.finish());
  }
  if (res.prompt_logprobs) w.bytes(2, float32Bytes(res.prompt_logprobs));
  const topk = res.topk_prompt_logprobs;
  if (topk) {
    const k = Math.max(0, ...topk.map((row) => row?.length ?? 0));
    const ids: number[] = [];
    const lps: number[] = [];
    for (const row of topk) {
      for (let j = 0; j < k; j++) {
        const cell = row?.[j];
        ids.push(cell ? cell[0] : 0);
        lps.push(cell ? cell[1] : MASK_LOGPROB);
      }
    }
    const tw = new Writer().bytes(1, int32Bytes(ids, 'topk token_ids')).bytes(2, float32Bytes(lps));
    tw.tag(3, VARINT).varint(k).tag(4, VARINT).varint(topk.length);
    w.bytes(3, tw.finish());
  }
  if (res.prompt_cache_hit_tokens) w.tag(4, VARINT).varint(res.prompt_cache_hit_tokens);
  return w.finish();
}

// ---- reading ----------------------------------------------------------------------------------

class Reader {
  private pos: number;
  private readonly view: Buffer;

  constructor(
    bytes: Uint8Array,
    private readonly message: string,
    /** Strict readers (the fake's) refuse fields the schema does not have; the client skips them. */
    private readonly strict: boolean,
  ) {
    this.view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }

  get done(): boolean {
    return this.pos >= this.view.length;
  }

  private fail(why: string): never {
    throw new ProtobufError(`${this.message}: ${why}`);
  }

  varint(): number {
    const start = this.pos;
    let n = 0;
    let scale = 1;
    for (;;) {
      if (this.pos >= this.view.length) this.fail('truncated varint');
      const b = this.view[this.pos++]!;
      n += (b & 0x7f) * scale;
      scale *= 0x80;
      if (!(b & 0x80)) break;
      if (this.pos - start >= 10) this.fail('varint longer than ten bytes');
    }
    if (this.pos - start <= 7) return n;
    // Past 49 bits, redo it exactly: a negative int64 arrives as a ten-byte two's complement.
    let big = 0n;
    for (let i = this.pos - 1; i >= start; i--) big = (big << 7n) | BigInt(this.view[i]! & 0x7f);
    return Number(BigInt.asIntN(64, big));
  }

  key(): { field: number; wire: number } {
    const k = this.varint();
    return { field: Math.floor(k / 8), wire: k % 8 };
  }

  bytes(): Uint8Array {
    const len = this.varint();
    if (this.pos + len > this.view.length) this.fail(`a ${len}-byte field runs past the end`);
    const out = this.view.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  string(): string {
    return Buffer.from(this.bytes()).toString('utf8');
  }

  double(): number {
    if (this.pos + 8 > this.view.length) this.fail('truncated double');
    const v = this.view.readDoubleLE(this.pos);
    this.pos += 8;
    return v;
  }

  /** A repeated varint field, packed (wire type 2) or one value per tag (wire type 0). */
  repeatedVarint(wire: number, into: number[]): void {
    if (wire === VARINT) {
      into.push(this.varint());
      return;
    }
    const inner = new Reader(this.bytes(), this.message, this.strict);
    while (!inner.done) into.push(inner.varint());
  }

  expect(field: number, wire: number, want: number): void {
    if (wire !== want) this.fail(`field ${field} has wire type ${wire}, expected ${want}`);
  }

  skip(field: number, wire: number): void {
    if (this.strict) this.fail(`unknown field ${field}`);
    if (wire === VARINT) this.varint();
    else if (wire === I64) this.pos += 8;
    else if (wire === LEN) this.bytes();
    else if (wire === I32) this.pos += 4;
    else this.fail(`unsupported wire type ${wire} on field ${field}`);
    if (this.pos > this.view.length) this.fail('truncated field');
  }
}

function int32s(b: Uint8Array, what: string): number[] {
  if (b.length % 4) throw new ProtobufError(`${what}: ${b.length} bytes is not a whole number of int32s`);
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const out = new Array<number>(b.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = buf.readInt32LE(i * 4);
  return out;
}

function float32s(b: Uint8Array, what: string): number[] {
  if (b.length % 4) throw new ProtobufError(`${what}: ${b.length} bytes is not a whole number of float32s`);
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const out = new Array<number>(b.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = buf.readFloatLE(i * 4);
  return out;
}

function int64s(b: Uint8Array, what: string): number[] {
  if (b.length % 8) throw new ProtobufError(`${what}: ${b.length} bytes is not a whole number of int64s`);
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const out = new Array<number>(b.length / 8);
  for (let i = 0; i < out.length; i++) out[i] = Number(buf.readBigInt64LE(i * 8));
  return out;
}

function bfloat16s(b: Uint8Array, what: string): number[] {
  if (b.length % 2) throw new ProtobufError(`${what}: ${b.length} bytes is not a whole number of bfloat16s`);
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const f = Buffer.alloc(4);
  const out = new Array<number>(b.length / 2);
  for (let i = 0; i < out.length; i++) {
    f.writeUInt32LE(buf.readUInt16LE(i * 2) * 0x10000);
    out[i] = f.readFloatLE(0);
  }
  return out;
}

/** A map entry: its key, and its value field's raw bytes (null for a scalar value read by `value`). */
function readMapEntry(bytes: Uint8Array, message: string, strict: boolean): { key: string; value: Uint8Array | null; scalar: number } {
  const r = new Reader(bytes, message, strict);
  let key = '';
  let value: Uint8Array | null = null;
  let scalar = 0;
  while (!r.done) {
    const { field, wire } = r.key();
    if (field === 1) {
      r.expect(field, wire, LEN);
      key = r.string();
    } else if (field === 2 && wire === LEN) value = r.bytes();
    else if (field === 2 && wire === I64) scalar = r.double();
    else if (field === 2) r.expect(field, wire, LEN);
    else r.skip(field, wire);
  }
  return { key, value, scalar };
}

function decodeTensor(bytes: Uint8Array, what: string, strict: boolean): WireTensorData {
  const r = new Reader(bytes, `Tensor ${what}`, strict);
  let dense: Uint8Array | null = null;
  let dtype = 0;
  const shape: number[] = [];
  while (!r.done) {
    const { field, wire } = r.key();
    if (field === 1) {
      r.expect(field, wire, LEN);
      dense = r.bytes();
    } else if (field === 2) {
      throw new ProtobufError(`Tensor ${what}: sparse_csr tensors are not supported here`);
    } else if (field === 3) {
      r.expect(field, wire, VARINT);
      dtype = r.varint();
    } else if (field === 4) r.repeatedVarint(wire, shape);
    else r.skip(field, wire);
  }
  if (!dense) throw new ProtobufError(`Tensor ${what}: no dense data`);
  let data: number[];
  let name: Dtype;
  if (dtype === DTYPE_CODE.float32) [data, name] = [float32s(dense, what), 'float32'];
  else if (dtype === DTYPE_CODE.int64) [data, name] = [int64s(dense, what), 'int64'];
  else throw new ProtobufError(`Tensor ${what}: dtype ${dtype} is not FLOAT32 (1) or INT64 (2)`);
  return shape.length ? { data, dtype: name, shape } : { data, dtype: name };
}

function decodeChunkTokens(bytes: Uint8Array, what: string, strict: boolean): number[] {
  const chunk = new Reader(bytes, `${what} Chunk`, strict);
  let tokens: number[] | null = null;
  while (!chunk.done) {
    const k = chunk.key();
    if (k.field === 1) {
      chunk.expect(k.field, k.wire, LEN);
      const text = new Reader(chunk.bytes(), `${what} EncodedTextChunk`, strict);
      tokens = [];
      while (!text.done) {
        const t = text.key();
        if (t.field === 1) {
          text.expect(t.field, t.wire, LEN);
          tokens = int32s(text.bytes(), `${what} tokens`);
        } else text.skip(t.field, t.wire);
      }
    } else if (k.field === 2 || k.field === 3) {
      throw new ProtobufError(`${what}: ${k.field === 2 ? 'image' : 'dmel'} chunks are not supported here`);
    } else chunk.skip(k.field, k.wire);
  }
  if (!tokens) throw new ProtobufError(`${what}: a chunk with no encoded_text`);
  return tokens;
}

function decodeDatum(bytes: Uint8Array, i: number, strict: boolean): WireDatum {
  const r = new Reader(bytes, `Datum ${i}`, strict);
  const datum: WireDatum = { model_input: { chunks: [] }, loss_fn_inputs: {} };
  while (!r.done) {
    const { field, wire } = r.key();
    if (field === 1) {
      r.expect(field, wire, LEN);
      datum.model_input.chunks.push({ tokens: decodeChunkTokens(r.bytes(), `datum ${i}`, strict), type: 'encoded_text' });
    } else if (field === 2) {
      r.expect(field, wire, LEN);
      const { key, value } = readMapEntry(r.bytes(), `Datum ${i} loss_fn_inputs entry`, strict);
      if (Object.hasOwn(datum.loss_fn_inputs, key)) throw new ProtobufError(`Datum ${i}: loss_fn_inputs has ${key} twice`);
      datum.loss_fn_inputs[key] = decodeTensor(value ?? new Uint8Array(), `datum ${i} ${key}`, strict);
    } else r.skip(field, wire);
  }
  return datum;
}

export function decodeForwardBackwardRequest(bytes: Uint8Array, strict = true): ForwardBackwardRequestPb {
  const r = new Reader(bytes, 'ForwardBackwardRequest', strict);
  const req: ForwardBackwardRequestPb = { model_id: '', seq_id: 0, data: [], loss_fn: '' as LossFn, loss_fn_config: {}, forward_only: false };
  while (!r.done) {
    const { field, wire } = r.key();
    if (field === 1) {
      r.expect(field, wire, LEN);
      req.model_id = r.string();
    } else if (field === 2) {
      r.expect(field, wire, VARINT);
      req.seq_id = r.varint();
    } else if (field === 3) {
      r.expect(field, wire, LEN);
      req.data.push(decodeDatum(r.bytes(), req.data.length, strict));
    } else if (field === 4) {
      r.expect(field, wire, LEN);
      req.loss_fn = r.string() as LossFn;
    } else if (field === 5) {
      r.expect(field, wire, LEN);
      const { key, scalar } = readMapEntry(r.bytes(), 'loss_fn_config entry', strict);
      req.loss_fn_config[key] = scalar;
    } else if (field === 6) {
      r.expect(field, wire, VARINT);
      req.forward_only = r.varint() !== 0;
    } else r.skip(field, wire);
  }
  return req;
}

function decodeBatchedTensor(bytes: Uint8Array, what: string): { perDatum: number[][]; dtype: Dtype; trailing: number[] } {
  const r = new Reader(bytes, `BatchedTensor ${what}`, false);
  let data: Uint8Array = new Uint8Array();
  let offsets: number[] = [];
  let code = 0;
  const trailing: number[] = [];
  while (!r.done) {
    const { field, wire } = r.key();
    if (field === 1) {
      r.expect(field, wire, LEN);
      data = r.bytes();
    } else if (field === 2) {
      r.expect(field, wire, LEN);
      offsets = int64s(r.bytes(), `${what} offsets`);
    } else if (field === 3) {
      r.expect(field, wire, VARINT);
      code = r.varint();
    } else if (field === 4) r.repeatedVarint(wire, trailing);
    else r.skip(field, wire);
  }
  // Narrow types widen to the two public dtypes, as the SDK does: int32 to int64, bfloat16 to float32.
  const decoders: Record<number, [(b: Uint8Array, w: string) => number[], Dtype]> = {
    [DTYPE_CODE.float32]: [float32s, 'float32'],
    [DTYPE_CODE.int64]: [int64s, 'int64'],
    [DTYPE_INT32]: [int32s, 'int64'],
    [DTYPE_BFLOAT16]: [bfloat16s, 'float32'],
  };
  const decoder = decoders[code];
  if (!decoder) throw new ProtobufError(`BatchedTensor ${what}: unsupported dtype ${code}`);
  const perDatum: number[][] = [];
  for (let i = 0; i + 1 < offsets.length; i++) {
    const [start, end] = [offsets[i]!, offsets[i + 1]!];
    if (start < 0 || end < start || end > data.length) throw new ProtobufError(`BatchedTensor ${what}: offsets ${start}..${end} outside ${data.length} bytes`);
    perDatum.push(decoder[0](data.subarray(start, end), what));
  }
  return { perDatum, dtype: decoder[1], trailing };
}

export function decodeForwardBackwardOutput(bytes: Uint8Array): ForwardBackwardOutputJson {
  const r = new Reader(bytes, 'ForwardBackwardOutput', false);
  let type = '';
  const records: Uint8Array[] = [];
  const metrics: Record<string, number> = {};
  while (!r.done) {
    const { field, wire } = r.key();
    if (field === 1) {
      r.expect(field, wire, LEN);
      type = r.string();
    } else if (field === 2) {
      r.expect(field, wire, LEN);
      records.push(r.bytes());
    } else if (field === 3) {
      r.expect(field, wire, LEN);
      const { key, scalar } = readMapEntry(r.bytes(), 'metrics entry', false);
      metrics[key] = scalar;
    } else r.skip(field, wire);
  }
  // Each record holds a run of datums; a field's shape and dtype may differ between records.
  const outputs: Record<string, WireTensorData>[] = [];
  for (const bytesOfRecord of records) {
    const rr = new Reader(bytesOfRecord, 'ArrayRecord', false);
    let numDatums = 0;
    const fields: [string, ReturnType<typeof decodeBatchedTensor>][] = [];
    while (!rr.done) {
      const { field, wire } = rr.key();
      if (field === 2) {
        rr.expect(field, wire, LEN);
        const { key, value } = readMapEntry(rr.bytes(), 'ArrayRecord fields entry', false);
        fields.push([key, decodeBatchedTensor(value ?? new Uint8Array(), key)]);
      } else if (field === 3) {
        rr.expect(field, wire, VARINT);
        numDatums = rr.varint();
      } else rr.skip(field, wire);
    }
    if (numDatums === 0 && fields.length) numDatums = fields[0]![1].perDatum.length;
    for (let i = 0; i < numDatums; i++) {
      const datum: Record<string, WireTensorData> = {};
      for (const [name, bt] of fields) {
        const data = bt.perDatum[i] ?? [];
        const inner = bt.trailing.reduce((a, b) => a * b, 1);
        datum[name] = { data, dtype: bt.dtype, shape: [inner ? Math.floor(data.length / inner) : 0, ...bt.trailing] };
      }
      outputs.push(datum);
    }
  }
  return { loss_fn_output_type: type ? type.split(':').pop()! : 'ArrayRecord', loss_fn_outputs: outputs, metrics };
}

export function decodeSampleResponse(bytes: Uint8Array): SampleResponseJson & { prompt_cache_hit_tokens: number } {
  const r = new Reader(bytes, 'SampleResponse', false);
  const out: SampleResponseJson & { prompt_cache_hit_tokens: number } = { sequences: [], prompt_logprobs: null, topk_prompt_logprobs: null, prompt_cache_hit_tokens: 0 };
  while (!r.done) {
    const { field, wire } = r.key();
    if (field === 1) {
      r.expect(field, wire, LEN);
      const s = new Reader(r.bytes(), 'SampledSequence', false);
      let stop = 0;
      let tokens: number[] = [];
      let logprobs: number[] | null = null;
      while (!s.done) {
        const k = s.key();
        if (k.field === 1) {
          s.expect(k.field, k.wire, VARINT);
          stop = s.varint();
        } else if (k.field === 2) {
          s.expect(k.field, k.wire, LEN);
          tokens = int32s(s.bytes(), 'tokens');
        } else if (k.field === 3) {
          s.expect(k.field, k.wire, LEN);
          logprobs = float32s(s.bytes(), 'logprobs');
        } else s.skip(k.field, k.wire);
      }
      const reason = STOP_REASONS[stop];
      if (!reason) throw new ProtobufError(`SampledSequence: unknown stop_reason ${stop}`);
      // Like the SDK, an empty logprobs field reads as "not computed".
      out.sequences.push({ stop_reason: reason, tokens, logprobs: logprobs && logprobs.length ? logprobs : null });
    } else if (field === 2) {
      r.expect(field, wire, LEN);
      const lps = float32s(r.bytes(), 'prompt_logprobs');
      out.prompt_logprobs = lps.length ? lps.map((x) => (Number.isNaN(x) ? null : x)) : null;
    } else if (field === 3) {
      r.expect(field, wire, LEN);
      out.topk_prompt_logprobs = decodeTopk(r.bytes());
    } else if (field === 4) {
      r.expect(field, wire, VARINT);
      out.prompt_cache_hit_tokens = r.varint();
    } else r.skip(field, wire);
  }
  return out;
}

function decodeTopk(bytes: Uint8Array): ([number, number][] | null)[] | null {
  const r = new Reader(bytes, 'TopkPromptLogprobs', false);
  let ids: number[] = [];
  let lps: number[] = [];
  let k = 0;
  let n = 0;
  while (!r.done) {
    const { field, wire } = r.key();
    if (field === 1) {
      r.expect(field, wire, LEN);
      ids = int32s(r.bytes(), 'topk token_ids');
    } else if (field === 2) {
      r.expect(field, wire, LEN);
      lps = float32s(r.bytes(), 'topk logprobs');
    } else if (field === 3) {
      r.expect(field, wire, VARINT);
      k = r.varint();
    } else if (field === 4) {
      r.expect(field, wire, VARINT);
      n = r.varint();
    } else r.skip(field, wire);
  }
  if (n === 0 || k === 0) return null;
  if (ids.length !== n * k || lps.length !== n * k) throw new ProtobufError(`TopkPromptLogprobs: ${ids.length} ids and ${lps.length} log-probs for ${n}×${k}`);
  const masked = (j: number) => ids[j] === 0 && lps[j] === MASK_LOGPROB;
  const rows: ([number, number][] | null)[] = [];
  for (let i = 0; i < n; i++) {
    const start = i * k;
    if (masked(start)) {
      rows.push(null);
      continue;
    }
    let end = start + k;
    while (end > start && masked(end - 1)) end--;
    const row: [number, number][] = [];
    for (let j = start; j < end; j++) row.push([ids[j]!, lps[j]!]);
    rows.push(row);
  }
  return rows;
}
