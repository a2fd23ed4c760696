// Where adapter versions live when more than one machine needs them: an object store behind one
// interface, a folder (local, or a volume shared by every node) or S3 (any S3-compatible endpoint).
// `openObjectStore` is the one place that picks the implementation from a location string.
import { InputError } from '../../errors.js';
import { FsObjectStore } from './fs-object-store.js';
import { S3ObjectStore } from './s3-object-store.js';

export interface ObjectStore {
  /** Where it stores, for logs (no credentials). */
  readonly description: string;
  /**
   * Writes an object. With `ifAbsent` nothing is overwritten: the call returns false when the key
   * already exists (and true when this call created it).
   */
  put(key: string, body: Buffer, options?: { ifAbsent?: boolean }): Promise<boolean>;
  /** The object, or null when there is none. */
  get(key: string): Promise<Buffer | null>;
  /** Keys that start with `prefix`, sorted. */
  list(prefix: string): Promise<string[]>;
  /** Deletes the keys (absent ones are ignored). */
  delete(keys: readonly string[]): Promise<void>;
  /**
   * Whether two create-only writes of one key racing each other can never both succeed. Where not
   * (an S3-compatible server that ignores conditional writes), only the job queue's one-trainer-per-
   * adapter lease keeps two publishers of one version apart.
   */
  atomicCreate(): Promise<boolean>;
}

/** A key's parts must be plain names: no empty parts, no "." or "..", no backslashes or NULs. */
export function checkKey(key: string): string {
  const parts = key.split('/');
  if (key.length === 0 || key.length > 1024 || parts.some((p) => p === '' || p === '.' || p === '..' || /[\\\0]/.test(p))) {
    throw new InputError(`not an object key: ${JSON.stringify(key)}`);
  }
  return key;
}

/**
 * The store at `location`: a folder path (or file:// URL), or
 * s3://bucket[/prefix][?endpoint=http://host:port&region=r&path_style=1]; S3 credentials come from
 * the usual AWS environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, profiles).
 */
export function openObjectStore(location: string): ObjectStore {
  if (location.startsWith('s3://')) {
    const url = new URL(location);
    if (!url.hostname) throw new InputError(`the S3 location names no bucket: ${location}`);
    const endpoint = url.searchParams.get('endpoint') ?? undefined;
    return new S3ObjectStore({
      bucket: url.hostname,
      prefix: url.pathname.replace(/^\/+|\/+$/g, ''),
      endpoint,
      region: url.searchParams.get('region') ?? process.env.AWS_REGION ?? 'us-east-1',
      // A custom endpoint (MinIO, Ceph, an emulator) usually wants path-style addressing.
      pathStyle: url.searchParams.has('path_style') ? url.searchParams.get('path_style') === '1' : endpoint !== undefined,
    });
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location) && !location.startsWith('file://')) throw new InputError(`unsupported object store location ${location} (use a folder path or s3://bucket/prefix)`);
  return new FsObjectStore(location.startsWith('file://') ? new URL(location).pathname : location);
}
