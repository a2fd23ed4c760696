// `webgpu` is an optional dependency, imported only dynamically (device.ts, probe.ts) and cast to the
// shape used there. This shorthand declaration lets the TypeScript compile when it was not installed
// (npm ci --omit=optional, as the container build does); TypeScript consults it only when the real
// package, with its own types, cannot be resolved.
declare module 'webgpu';
