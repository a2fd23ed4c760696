// Whether a WebGPU adapter is present (Dawn through the optional `webgpu` package). The probe runs in a
// child process, once per process: a faulty GPU driver then cannot take the server down, and Dawn's
// start-up warnings stay out of this process's output when the answer is "not this backend".
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export type WebGpuProbe = { ok: true; name: string; software: boolean } | { ok: false; reason: string };

/**
 * Why `import('webgpu')` failed, in words: the package is an optional dependency (132 MB of Dawn),
 * so "not installed" is an expected state with a one-line remedy, not a crash to decode.
 */
export function webgpuLoadFailure(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'ERR_MODULE_NOT_FOUND' && /'webgpu'/.test(err.message)) {
    return 'the optional webgpu package (Dawn) is not installed; install it with `npm install webgpu` (it was left out by --omit=optional or a failed optional install)';
  }
  return `the webgpu package (Dawn) cannot be loaded: ${err?.message ?? String(e)}`;
}

/** Requests an adapter in this process (without opening a device). */
export async function probeAdapter(): Promise<WebGpuProbe> {
  let mod: { create(options: string[]): GPU; globals: object };
  try {
    mod = (await import('webgpu')) as unknown as typeof mod;
  } catch (e) {
    return { ok: false, reason: webgpuLoadFailure(e) };
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

const CHILD = fileURLToPath(new URL('./probe-child.js', import.meta.url));
let probed: Promise<WebGpuProbe> | undefined;

function probeInChild(): Promise<WebGpuProbe> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CHILD], { timeout: 30_000, maxBuffer: 1 << 20 }, (err, stdout) => {
      const line = stdout.trim().split('\n').pop() ?? '';
      try {
        const p = JSON.parse(line) as WebGpuProbe;
        if (typeof p.ok === 'boolean') return resolve(p);
      } catch {
        // reported below
      }
      resolve({ ok: false, reason: `the WebGPU probe process failed${err ? `: ${err.message.split('\n')[0]}` : ''}` });
    });
  });
}

export function probeWebGpu(): Promise<WebGpuProbe> {
  probed ??= probeInChild();
  return probed;
}
