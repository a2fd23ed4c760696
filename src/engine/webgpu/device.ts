// The WebGPU device every GPU op runs on (Dawn through the `webgpu` package): buffers, uploads,
// one pending command encoder that dispatches and copies are recorded into in order, WGSL kernels
// loaded from kernels/wgsl with their shader modules and pipelines cached, and readback through a
// MAP_READ staging buffer. Kernels that read frozen weights declare `alias weight_t = f32;`; their
// ".f16" variant (kernel name "linear.f16") is the same source with `enable f16;` and weight_t = f16,
// for weights uploaded with uploadHalf (devices with shader-f16 only).
import { readFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { webgpuLoadFailure } from './probe.js';

type HostArray = Float32Array | Int32Array | Uint32Array;

// Limits worth raising to what the adapter offers (the WebGPU defaults are conservative).
const RAISED_LIMITS = [
  'maxStorageBuffersPerShaderStage',
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
] as const;

// Dispatches recorded before a submit is forced; keeps command buffers and pending uniforms bounded.
const MAX_PENDING_COMMANDS = 2048;
// Distinct uniform blocks kept alive for reuse (they are immutable, so identical bytes share one buffer).
const MAX_CACHED_UNIFORMS = 8192;

function kernelDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot locate the claas package root (for kernels/wgsl)');
    dir = up;
  }
  return join(dir, 'kernels', 'wgsl');
}

function bindingCapFromEnv(): number {
  const raw = process.env.CLAAS_WEBGPU_MAX_BINDING_BYTES;
  if (raw === undefined || raw === '') return Infinity;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 256) throw new Error(`CLAAS_WEBGPU_MAX_BINDING_BYTES must be an integer >= 256 (got ${JSON.stringify(raw)})`);
  return n;
}

function padded(bytes: number): number {
  return Math.max(4, Math.ceil(bytes / 4) * 4);
}

export class Gpu {
  readonly device: GPUDevice;
  readonly adapterName: string;
  /** The adapter's full description, e.g. "llvmpipe: Mesa 25.0.7 (LLVM 15.0.6)". */
  readonly adapterDescription: string;
  readonly f16: boolean;
  readonly maxStorageBuffers: number;
  /**
   * The most bytes one storage binding may span: the device's maxStorageBufferBindingSize (and
   * maxBufferSize), or less when Gpu.open was given maxBindingBytes (or CLAAS_WEBGPU_MAX_BINDING_BYTES
   * is set), so that the paths splitting oversized vocabulary matrices and logits (vocab.ts) can be
   * exercised on small models.
   */
  readonly maxBinding: number;

  private readonly kernels: string;
  private readonly modules = new Map<string, { module: GPUShaderModule; readOnly: Set<number> }>();
  private readonly pipelines = new Map<string, { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout }>();
  private readonly layouts = new Map<string, GPUBindGroupLayout>();
  private readonly uniformCache = new Map<string, GPUBuffer>();
  private readonly halfBuffers = new WeakSet<GPUBuffer>();
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private pending = 0;
  private retired: GPUBuffer[] = [];
  private error: string | null = null;
  private destroyed = false;
  // Dawn tears its instance down when the GPU object is collected, even while devices are in use.
  private readonly instance: GPU;

  private constructor(instance: GPU, device: GPUDevice, info: GPUAdapterInfo, f16: boolean, maxBinding: number) {
    this.instance = instance;
    this.device = device;
    const description = info.description || info.device || info.vendor || 'unknown adapter';
    this.adapterDescription = description;
    this.adapterName = (description.split(':')[0] ?? description).trim();
    this.f16 = f16;
    this.maxStorageBuffers = device.limits.maxStorageBuffersPerShaderStage;
    this.maxBinding = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize, maxBinding);
    this.kernels = kernelDir();
    device.addEventListener('uncapturederror', (ev) => {
      const message = (ev as GPUUncapturedErrorEvent).error.message;
      this.error ??= message;
    });
    void device.lost.then((info) => {
      if (!this.destroyed) this.error ??= `WebGPU device lost: ${info.message}`;
    });
  }

  /**
   * Opens the first adapter Dawn offers; throws Error('no WebGPU adapter: <why>') when there is none.
   * The device gets shader-f16 when the adapter offers it, unless `shaderF16: false`.
   */
  static async open(options: { shaderF16?: boolean; maxBindingBytes?: number } = {}): Promise<Gpu> {
    const cap = options.maxBindingBytes ?? bindingCapFromEnv();
    let mod: { create(options: string[]): GPU; globals: object };
    try {
      mod = (await import('webgpu')) as unknown as typeof mod;
    } catch (e) {
      throw new Error(`no WebGPU adapter: ${webgpuLoadFailure(e)}`);
    }
    Object.assign(globalThis, mod.globals);
    const gpu = mod.create([]);
    const adapter = await gpu.requestAdapter();
    if (!adapter) {
      throw new Error(
        'no WebGPU adapter: requestAdapter() returned null (no Vulkan driver found; on a CPU-only Linux ' +
          'machine install Mesa lavapipe, e.g. apt-get install mesa-vulkan-drivers, and check that ' +
          'VK_ICD_FILENAMES, if set, names an existing ICD such as /usr/share/vulkan/icd.d/lvp_icd.json)',
      );
    }
    const requiredLimits: Record<string, number> = {};
    for (const name of RAISED_LIMITS) requiredLimits[name] = adapter.limits[name];
    const f16 = adapter.features.has('shader-f16') && options.shaderF16 !== false;
    const device = await adapter.requestDevice({
      requiredLimits,
      requiredFeatures: f16 ? ['shader-f16'] : [],
    });
    return new Gpu(gpu, device, adapter.info, f16, cap);
  }

  /** A zeroed STORAGE|COPY_SRC|COPY_DST buffer (sizes round up to a multiple of 4 bytes). */
  buffer(bytes: number, label?: string): GPUBuffer {
    if (!Number.isFinite(bytes) || bytes < 0) throw new Error(`invalid buffer size ${bytes}`);
    return this.device.createBuffer({
      size: padded(bytes),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      ...(label !== undefined ? { label } : {}),
    });
  }

  /** A new storage buffer holding a copy of `data`. */
  upload(data: HostArray, label?: string): GPUBuffer {
    return this.uploadBytes(data, label);
  }

  private uploadBytes(data: ArrayBufferView, label?: string): GPUBuffer {
    const buf = this.device.createBuffer({
      size: padded(data.byteLength),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      mappedAtCreation: true,
      ...(label !== undefined ? { label } : {}),
    });
    new Uint8Array(buf.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    buf.unmap();
    return buf;
  }

  /** A new storage buffer of IEEE half values (bits); kernels read it through their ".f16" variant. */
  uploadHalf(bits: Uint16Array, label?: string): GPUBuffer {
    if (!this.f16) throw new Error(`f16 weight storage needs the shader-f16 feature, which this device (${this.adapterName}) lacks`);
    const buf = this.uploadBytes(bits, label);
    this.halfBuffers.add(buf);
    return buf;
  }

  /** Whether `buf` holds half values (it came from uploadHalf). */
  isHalf(buf: GPUBuffer): boolean {
    return this.halfBuffers.has(buf);
  }

  /** Writes `data` at `byteOffset`, after everything recorded so far (pending work is submitted first). */
  write(buf: GPUBuffer, data: HostArray, byteOffset = 0): void {
    if (byteOffset % 4 !== 0) throw new Error(`write offset ${byteOffset} is not a multiple of 4`);
    if (byteOffset + data.byteLength > buf.size) {
      throw new Error(`write of ${data.byteLength} bytes at ${byteOffset} overruns a ${buf.size}-byte buffer`);
    }
    this.flush();
    this.device.queue.writeBuffer(buf, byteOffset, data.buffer, data.byteOffset, data.byteLength);
  }

  /** Records a buffer-to-buffer copy in order with the dispatches around it. */
  copy(src: GPUBuffer, srcByte: number, dst: GPUBuffer, dstByte: number, bytes: number): void {
    if (bytes === 0) return;
    if ((srcByte | dstByte | bytes) % 4 !== 0) throw new Error('copy offsets and sizes must be multiples of 4');
    if (srcByte + bytes > src.size || dstByte + bytes > dst.size) {
      throw new Error(`copy of ${bytes} bytes (${srcByte} -> ${dstByte}) overruns a buffer`);
    }
    this.endPass();
    this.commandEncoder().copyBufferToBuffer(src, srcByte, dst, dstByte, bytes);
    this.countCommand();
  }

  /**
   * Encodes one compute dispatch into the pending command encoder (in order with copy()). `kernel` is
   * the file name under kernels/wgsl without .wgsl (with ".f16" appended: its f16-weight variant),
   * `entry` its entry point; `bindings` are bound in
   * order to @group(0) @binding(0..n-1) as read-write storage buffers and `uniforms`, when given, at
   * @binding(n) as a uniform buffer; `constants` are WGSL override constants.
   */
  dispatch(
    kernel: string,
    entry: string,
    bindings: GPUBuffer[],
    workgroups: [number, number?, number?],
    uniforms?: ArrayBuffer,
    constants?: Record<string, number>,
  ): void {
    if (bindings.length > this.maxStorageBuffers) {
      throw new Error(`${kernel}.${entry}: ${bindings.length} storage buffers exceed the limit ${this.maxStorageBuffers}`);
    }
    for (const [i, b] of bindings.entries()) {
      if (b.size > this.maxBinding) {
        throw new Error(`${kernel}.${entry}: binding ${i} (${b.label || 'unnamed'}) holds ${b.size} bytes, over the ${this.maxBinding}-byte binding limit`);
      }
    }
    const [x, y = 1, z = 1] = workgroups;
    const maxDim = this.device.limits.maxComputeWorkgroupsPerDimension;
    for (const n of [x, y, z]) {
      if (!Number.isInteger(n) || n < 0 || n > maxDim) {
        throw new Error(`${kernel}.${entry}: workgroup count ${n} outside 0..${maxDim}`);
      }
    }
    if (x === 0 || y === 0 || z === 0) return;
    const { pipeline, layout } = this.pipeline(kernel, entry, bindings.length, uniforms !== undefined, constants);
    const entries: GPUBindGroupEntry[] = bindings.map((buffer, binding) => ({ binding, resource: { buffer } }));
    if (uniforms !== undefined) {
      entries.push({ binding: bindings.length, resource: { buffer: this.uniformBuffer(uniforms) } });
    }
    const group = this.device.createBindGroup({ layout, entries });
    if (!this.pass) this.pass = this.commandEncoder().beginComputePass();
    this.pass.setPipeline(pipeline);
    this.pass.setBindGroup(0, group);
    this.pass.dispatchWorkgroups(x, y, z);
    this.countCommand();
  }

  /** Submits what is pending; throws the first WebGPU error seen so far. */
  flush(): void {
    this.endPass();
    if (this.encoder) {
      this.device.queue.submit([this.encoder.finish()]);
      this.encoder = null;
      this.pending = 0;
    }
    for (const b of this.retired) b.destroy();
    this.retired = [];
    this.throwIfFailed();
  }

  /** Reads `bytes` (default: the rest of the buffer) from `byteOffset` after all recorded work. */
  async read(buf: GPUBuffer, bytes?: number, byteOffset = 0): Promise<ArrayBuffer> {
    const size = bytes ?? buf.size - byteOffset;
    if (byteOffset % 4 !== 0 || size % 4 !== 0) throw new Error('read offsets and sizes must be multiples of 4');
    if (byteOffset + size > buf.size) throw new Error(`read of ${size} bytes at ${byteOffset} overruns a ${buf.size}-byte buffer`);
    if (size === 0) return new ArrayBuffer(0);
    this.endPass();
    const staging = this.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    this.commandEncoder().copyBufferToBuffer(buf, byteOffset, staging, 0, size);
    this.flush();
    try {
      await staging.mapAsync(GPUMapMode.READ);
      this.throwIfFailed();
      return staging.getMappedRange().slice(0);
    } finally {
      staging.destroy();
    }
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.pass = null;
    this.encoder = null;
    for (const b of this.uniformCache.values()) b.destroy();
    this.uniformCache.clear();
    this.device.destroy();
  }

  private commandEncoder(): GPUCommandEncoder {
    if (this.destroyed) throw new Error('the WebGPU device has been destroyed');
    this.encoder ??= this.device.createCommandEncoder();
    return this.encoder;
  }

  private endPass(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
  }

  private countCommand(): void {
    if (++this.pending >= MAX_PENDING_COMMANDS) this.flush();
  }

  private throwIfFailed(): void {
    if (this.error !== null) throw new Error(`WebGPU error: ${this.error}`);
  }

  private module(kernel: string): { module: GPUShaderModule; readOnly: Set<number> } {
    let m = this.modules.get(kernel);
    if (!m) {
      const parts = /^([a-z0-9_]+)(\.f16)?$/.exec(kernel);
      if (!parts) throw new Error(`invalid kernel name ${JSON.stringify(kernel)}`);
      const file = join(this.kernels, `${parts[1]}.wgsl`);
      if (!existsSync(file)) throw new Error(`WGSL kernel not found: ${file}`);
      let code = readFileSync(file, 'utf8');
      if (parts[2]) {
        if (!this.f16) throw new Error(`${kernel}: f16 kernels need the shader-f16 feature, which this device (${this.adapterName}) lacks`);
        code = halfVariant(kernel, code);
      }
      m = { module: this.device.createShaderModule({ code, label: kernel }), readOnly: readOnlyBindings(kernel, code) };
      this.modules.set(kernel, m);
    }
    return m;
  }

  private bindLayout(storage: number, uniform: boolean, readOnly: Set<number>): GPUBindGroupLayout {
    const key = `${storage}:${uniform}:${[...readOnly].filter((b) => b < storage).sort((a, b) => a - b).join(',')}`;
    let layout = this.layouts.get(key);
    if (!layout) {
      const entries: GPUBindGroupLayoutEntry[] = [];
      for (let i = 0; i < storage; ++i) {
        const type: GPUBufferBindingType = readOnly.has(i) ? 'read-only-storage' : 'storage';
        entries.push({ binding: i, visibility: GPUShaderStage.COMPUTE, buffer: { type } });
      }
      if (uniform) entries.push({ binding: storage, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } });
      layout = this.device.createBindGroupLayout({ entries });
      this.layouts.set(key, layout);
    }
    return layout;
  }

  private pipeline(
    kernel: string,
    entry: string,
    storage: number,
    uniform: boolean,
    constants?: Record<string, number>,
  ): { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout } {
    const constKey = constants
      ? Object.keys(constants)
          .sort()
          .map((k) => `${k}=${constants[k]}`)
          .join(',')
      : '';
    const key = `${kernel}|${entry}|${constKey}|${storage}|${uniform}`;
    let p = this.pipelines.get(key);
    if (!p) {
      const { module, readOnly } = this.module(kernel);
      const layout = this.bindLayout(storage, uniform, readOnly);
      const pipeline = this.device.createComputePipeline({
        label: `${kernel}.${entry}`,
        layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
        compute: { module, entryPoint: entry, ...(constants ? { constants } : {}) },
      });
      p = { pipeline, layout };
      this.pipelines.set(key, p);
    }
    return p;
  }

  private uniformBuffer(data: ArrayBuffer): GPUBuffer {
    const key = Buffer.from(data).toString('base64');
    let buf = this.uniformCache.get(key);
    if (!buf) {
      if (this.uniformCache.size >= MAX_CACHED_UNIFORMS) {
        // Recorded commands may still use them: destroy only after the next submit.
        this.retired.push(...this.uniformCache.values());
        this.uniformCache.clear();
      }
      buf = this.device.createBuffer({
        size: Math.max(16, Math.ceil(data.byteLength / 16) * 16),
        usage: GPUBufferUsage.UNIFORM,
        mappedAtCreation: true,
      });
      new Uint8Array(buf.getMappedRange()).set(new Uint8Array(data));
      buf.unmap();
      this.uniformCache.set(key, buf);
    }
    return buf;
  }
}

/**
 * The storage bindings a kernel file declares only as `var<storage, read>` (or `var<storage>`): their
 * layout entries must be read-only-storage. A binding declared both ways in one file is an error, since
 * one layout serves every entry point of the file.
 */
function readOnlyBindings(kernel: string, code: string): Set<number> {
  const access = new Map<number, Set<string>>();
  const decl = /@binding\(\s*(\d+)\s*\)\s*(?:@group\(\s*\d+\s*\)\s*)?var\s*<\s*storage\s*(?:,\s*(read_write|read)\s*)?>/g;
  for (const m of code.matchAll(decl)) {
    const binding = Number(m[1]);
    const mode = m[2] ?? 'read';
    const modes = access.get(binding) ?? new Set<string>();
    modes.add(mode);
    access.set(binding, modes);
  }
  const readOnly = new Set<number>();
  for (const [binding, modes] of access) {
    if (modes.size > 1) throw new Error(`${kernel}.wgsl declares @binding(${binding}) both read and read_write`);
    if (modes.has('read')) readOnly.add(binding);
  }
  return readOnly;
}

const WEIGHT_ALIAS = /^alias weight_t = f32;$/m;

/** The f16-weight variant of a kernel's source: `enable f16;` and weight_t = f16. */
function halfVariant(kernel: string, code: string): string {
  if (!WEIGHT_ALIAS.test(code)) throw new Error(`${kernel}: the kernel declares no \`alias weight_t = f32;\`, so it has no f16 variant`);
  return `enable f16;\n${code.replace(WEIGHT_ALIAS, 'alias weight_t = f16;')}`;
}

/** Packs scalar uniform fields, 4 bytes each in order, into a block padded to 16 bytes. */
export function uniforms(fields: Array<['u32' | 'i32' | 'f32', number]>): ArrayBuffer {
  const out = new ArrayBuffer(Math.max(16, Math.ceil((fields.length * 4) / 16) * 16));
  const view = new DataView(out);
  fields.forEach(([type, value], i) => {
    if (type === 'f32') view.setFloat32(i * 4, value, true);
    else if (type === 'i32') view.setInt32(i * 4, value, true);
    else view.setUint32(i * 4, value, true);
  });
  return out;
}
