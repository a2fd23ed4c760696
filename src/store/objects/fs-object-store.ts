// An object store in a folder: each object a file, written under a temporary name and renamed, so a
// reader sees a whole object or none. `ifAbsent` creates by hard link, which fails when the name
// exists, so two writers never both succeed. On a shared volume (NFS, a Kubernetes ReadWriteMany
// claim) the same holds where the filesystem makes link and rename atomic, as NFSv3+ does.
import { randomUUID } from 'node:crypto';
import { link, mkdir, readFile, readdir, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { checkKey, type ObjectStore } from './object-store.js';

const TEMP = '.tmp-';

export class FsObjectStore implements ObjectStore {
  constructor(readonly root: string) {}

  get description(): string {
    return `folder ${this.root}`;
  }

  private path(key: string): string {
    return join(this.root, ...checkKey(key).split('/'));
  }

  async put(key: string, body: Buffer, options: { ifAbsent?: boolean } = {}): Promise<boolean> {
    const file = this.path(key);
    await mkdir(dirname(file), { recursive: true, mode: 0o700 });
    const temp = join(dirname(file), `${TEMP}${randomUUID()}`);
    await writeFile(temp, body, { mode: 0o600, flush: true });
    try {
      if (!options.ifAbsent) {
        await rename(temp, file);
        return true;
      }
      try {
        await link(temp, file);
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
        throw err;
      }
    } finally {
      await unlink(temp).catch(() => undefined);
    }
  }

  async get(key: string): Promise<Buffer | null> {
    try {
      return await readFile(this.path(key));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  async list(prefix: string): Promise<string[]> {
    const out: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
      for (const e of entries) {
        if (e.name.startsWith(TEMP)) continue;
        const full = join(dir, e.name);
        if (e.isDirectory()) await walk(full);
        else if (e.isFile()) {
          const key = relative(this.root, full).split(sep).join('/');
          if (key.startsWith(prefix)) out.push(key);
        }
      }
    };
    // Walk only the folder the prefix reaches into.
    const dir = prefix.includes('/') ? join(this.root, ...prefix.slice(0, prefix.lastIndexOf('/')).split('/')) : this.root;
    await walk(dir);
    return out.sort();
  }

  async atomicCreate(): Promise<boolean> {
    return true;
  }

  async delete(keys: readonly string[]): Promise<void> {
    for (const k of keys) await rm(this.path(k), { force: true });
  }
}
