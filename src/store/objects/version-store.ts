// Adapter versions as immutable objects. A version's files go up first, under a folder of their own
// upload; its manifest (names, sizes, SHA-256 of each file) is written last, and only if no manifest
// exists: a version is visible once complete, never replaced, and a trainer killed mid-upload leaves
// only unreferenced objects behind (sweep() removes them). Reading checks every file against the
// manifest, and the files land in a local folder under a temporary name, renamed when whole.
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ClaasError, NotFoundError } from '../../errors.js';
import type { ObjectStore } from './object-store.js';

export interface VersionManifest {
  adapter: string;
  version: number;
  /** The training job that wrote it (null: created or imported). */
  jobId: string | null;
  createdAt: number;
  /** Folder of this version's files, relative to the adapter's prefix. */
  upload: string;
  files: { name: string; bytes: number; sha256: string }[];
}

/** Another job already published this version: it is never replaced. */
export class VersionConflictError extends ClaasError {
  constructor(message: string) {
    super('E_CONFLICT', message);
  }
}

const pad = (v: number) => `v${String(v).padStart(4, '0')}`;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

export class VersionStore {
  constructor(
    readonly objects: ObjectStore,
    private readonly prefix = 'adapters',
  ) {}

  private base(adapterId: string): string {
    return `${this.prefix}/${adapterId}`;
  }

  private manifestKey(adapterId: string, version: number): string {
    return `${this.base(adapterId)}/${pad(version)}.manifest.json`;
  }

  /**
   * Publishes the files of `dir` as `version`. 'exists' when this job published it before (a retry
   * after a crash); a VersionConflictError when another job or upload did.
   */
  async publish(adapterId: string, version: number, dir: string, jobId: string | null = null): Promise<'published' | 'exists'> {
    const before = await this.manifest(adapterId, version);
    if (before) return this.same(before, jobId);
    const upload = `${pad(version)}.${randomUUID()}`;
    const files: VersionManifest['files'] = [];
    for (const name of (await readdir(dir)).sort()) {
      const body = await readFile(join(dir, name));
      await this.objects.put(`${this.base(adapterId)}/${upload}/${name}`, body);
      files.push({ name, bytes: body.length, sha256: sha256(body) });
    }
    const manifest: VersionManifest = { adapter: adapterId, version, jobId, createdAt: Date.now(), upload, files };
    if (await this.objects.put(this.manifestKey(adapterId, version), Buffer.from(JSON.stringify(manifest)), { ifAbsent: true })) return 'published';
    // Lost a race: this upload is not referenced by anything; remove it.
    await this.objects.delete(files.map((f) => `${this.base(adapterId)}/${upload}/${f.name}`));
    const winner = await this.manifest(adapterId, version);
    return this.same(winner!, jobId);
  }

  private same(m: VersionManifest, jobId: string | null): 'exists' {
    if (jobId !== null && m.jobId === jobId) return 'exists';
    throw new VersionConflictError(`version ${m.version} of ${m.adapter} was already published${m.jobId ? ` by job ${m.jobId}` : ''}; versions are never replaced`);
  }

  async manifest(adapterId: string, version: number): Promise<VersionManifest | null> {
    const raw = await this.objects.get(this.manifestKey(adapterId, version));
    return raw ? (JSON.parse(raw.toString('utf8')) as VersionManifest) : null;
  }

  /** Deletes every object of the adapter (its versions and any leftovers). */
  async remove(adapterId: string): Promise<void> {
    await this.objects.delete(await this.objects.list(`${this.base(adapterId)}/`));
  }

  /** Published versions, ascending. */
  async versions(adapterId: string): Promise<number[]> {
    const keys = await this.objects.list(`${this.base(adapterId)}/v`);
    return keys
      .map((k) => /\/v(\d{4,})\.manifest\.json$/.exec(k))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
  }

  /** Downloads a published version into `dir` (created whole, or not at all); checks every file. */
  async fetch(adapterId: string, version: number, dir: string): Promise<VersionManifest> {
    const m = await this.manifest(adapterId, version);
    if (!m) throw new NotFoundError(`version ${version} of ${adapterId} is not published`);
    const temp = `${dir}.tmp-${randomUUID()}`;
    await mkdir(temp, { recursive: true, mode: 0o700 });
    try {
      for (const f of m.files) {
        const body = await this.objects.get(`${this.base(adapterId)}/${m.upload}/${f.name}`);
        if (!body) throw new ClaasError('E_STORE', `version ${version} of ${adapterId}: ${f.name} is missing from the object store`);
        if (body.length !== f.bytes || sha256(body) !== f.sha256) throw new ClaasError('E_STORE', `version ${version} of ${adapterId}: ${f.name} does not match its manifest (${body.length} bytes)`);
        await writeFile(join(temp, f.name), body, { mode: 0o600 });
      }
      await mkdir(dirname(dir), { recursive: true, mode: 0o700 });
      await rename(temp, dir);
    } catch (err) {
      await rm(temp, { recursive: true, force: true });
      throw err;
    }
    return m;
  }

  /**
   * Removes uploads no manifest references and that can no longer become a version: those of a
   * published version (another upload won it) and those below the newest published version (one
   * trainer works on an adapter at a time, in version order, so they were abandoned). An upload of a
   * newer, unpublished version may still be in progress and stays. Returns the keys removed.
   */
  async sweep(adapterId: string): Promise<string[]> {
    const published = await this.versions(adapterId);
    const newest = published.at(-1) ?? 0;
    const referenced = new Set<string>();
    for (const v of published) referenced.add((await this.manifest(adapterId, v))!.upload);
    const doomed: string[] = [];
    for (const k of await this.objects.list(`${this.base(adapterId)}/`)) {
      const rest = k.slice(this.base(adapterId).length + 1);
      const m = /^v(\d{4,})\.[^/]+\//.exec(rest);
      if (!m || referenced.has(rest.slice(0, rest.indexOf('/')))) continue;
      const version = Number(m[1]);
      if (version <= newest) doomed.push(k);
    }
    if (doomed.length > 0) await this.objects.delete(doomed);
    return doomed;
  }
}
