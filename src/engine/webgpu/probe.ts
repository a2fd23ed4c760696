// Whether a WebGPU adapter is present (Dawn through the optional `webgpu` package), probed once per
// process without opening a device.
export type WebGpuProbe = { ok: true; name: string; software: boolean } | { ok: false; reason: string };

let probed: Promise<WebGpuProbe> | undefined;

async function probe(): Promise<WebGpuProbe> {
  let mod: { create(options: string[]): GPU; globals: object };
  try {
    mod = (await import('webgpu')) as unknown as typeof mod;
  } catch (e) {
    return { ok: false, reason: `the webgpu package (Dawn) cannot be loaded: ${(e as Error).message}` };
  }
  Object.assign(globalThis, mod.globals);
  try {
    const adapter = await mod.create([]).requestAdapter();
    if (!adapter) return { ok: false, reason: 'no WebGPU adapter (requestAdapter() returned null; no Vulkan driver found)' };
    const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
    const name = (info.description || info.device || info.vendor || 'unknown').split(':')[0]!.trim();
    return { ok: true, name, software: info.isFallbackAdapter === true || info.architecture === 'software' };
  } catch (e) {
    return { ok: false, reason: `requesting a WebGPU adapter failed: ${(e as Error).message}` };
  }
}

export function probeWebGpu(): Promise<WebGpuProbe> {
  probed ??= probe();
  return probed;
}
