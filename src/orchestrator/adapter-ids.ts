// Adapter ids are "tenant/name": two path-safe segments, so an id can never point outside the adapters folder.
import { InputError } from '../errors.js';

const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function checkAdapterId(id: unknown): string {
  if (typeof id !== 'string') throw new InputError('lora_id must be a string like "tenant/name"');
  const parts = id.split('/');
  if (parts.length !== 2) throw new InputError(`lora_id ${JSON.stringify(id)} must have the form "tenant/name"`);
  for (const p of parts) {
    if (!SEGMENT.test(p) || p.includes('..')) {
      throw new InputError(`lora_id ${JSON.stringify(id)}: each part must be 1-64 letters, digits, ".", "_" or "-", start with a letter or digit, and contain no ".."`);
    }
  }
  return id;
}

/** Folder name of a version: v0001, v0002, … (sorts in order). */
export function versionDir(version: number): string {
  return `v${String(version).padStart(4, '0')}`;
}
