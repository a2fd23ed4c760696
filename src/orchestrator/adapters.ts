// Adapters and their versions. Every version is an immutable PEFT folder
// <root>/<tenant>/<name>/vNNNN (written to a temporary name, then renamed) with a row in the store
// (written after the folder); the adapter's id is a stable alias served at its current (promoted) version.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import type { Readable } from 'node:stream';
import * as tar from 'tar';
import { join } from 'node:path';
import { loraSlots, type Adapter, type Engine } from '../engine/engine.js';
import { LORA_MODULES } from '../engine/lora-modules.js';
import { parseAdapterConfig, validateTargets } from '../engine/peft.js';
import { ClaasError, InputError, NotFoundError } from '../errors.js';
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, EMA_WEIGHTS, OPTIMIZER_STATE } from '../engine/peft.js';
import type { InferenceService } from '../serve/inference.js';
import type { AdapterLease } from '../serve/resident-adapters.js';
import { VersionConflictError, type VersionStore } from '../store/objects/version-store.js';
import type { AdapterInfo, AdapterStore, NewVersion } from '../store/adapters.js';
import { importFileLimits, MAX_ADAPTER_CONFIG_BYTES } from '../serve/work-bounds.js';
import { checkAdapterId, versionDir } from './adapter-ids.js';

/** Work folders of imports in progress, inside the adapters' root (no tenant name starts with a dot). */
const IMPORT_PREFIX = '.import-';

/** An archive entry's name without a leading "./". */
const entryName = (path: string) => path.replace(/^\.\//, '');

export interface CreateAdapterRequest {
  rank?: number;
  alpha?: number;
  targetModules?: string[];
  /** Seed of A's initialization (random when absent). */
  seed?: number;
}

/** What a new adapter gets when its request leaves rank, alpha or the target modules out. */
export interface AdapterDefaults {
  rank: number;
  alpha: number;
  targetModules: string[];
}

export class AdapterRegistry {
  constructor(
    private readonly store: AdapterStore,
    private readonly engine: Engine,
    private readonly service: InferenceService,
    readonly root: string,
    readonly defaults: AdapterDefaults = { rank: 32, alpha: 64, targetModules: [...LORA_MODULES] },
    /** Where versions are published for other nodes (null: this server's folders only). */
    readonly published: VersionStore | null = null,
  ) {
    // A served version whose folder this node lacks (written by another node) comes from the object store.
    service.adapters.setPrepare(async (name, label, path) => {
      const version = /^v(\d+)$/.exec(label);
      if (version && path === this.dir(name, Number(version[1]))) await this.ensureLocal(name, Number(version[1]));
    });
    // An adapter another process created (a shared database) is served here from its first request.
    service.adapters.setResolver(async (name) => {
      try {
        checkAdapterId(name);
      } catch {
        return false;
      }
      const info = await this.store.get(name);
      if (info) this.serve(info.id, info.currentVersion);
      return info !== undefined;
    });
  }

  private unwatch: (() => Promise<void>) | null = null;
  /** Receives a line when a version is published to the object store, and when this node follows another's promotion. */
  log: (line: string) => void = () => {};
  private recheck: NodeJS.Timeout | undefined;

  private serve(id: string, version: number): void {
    this.service.adapters.register(id, versionDir(version), this.dir(id, version), true);
  }

  /**
   * Follows what other processes sharing the database promote or delete: each change is announced
   * (Postgres NOTIFY) and applied here at once, and every `recheckMs` the served versions are
   * compared with the database, for a notification lost while the connection was down. Nothing to
   * follow with a database only this process writes.
   */
  async watch(recheckMs = 5000): Promise<void> {
    this.unwatch = await this.store.watch((id, version) => void this.follow(id, version).catch((err: unknown) => console.error(`adapter ${id}: ${(err as Error).message}`)));
    if (!this.unwatch) return;
    this.recheck = setInterval(() => void this.recheckAll().catch((err: unknown) => console.error(`adapters: ${(err as Error).message}`)), recheckMs);
    this.recheck.unref();
  }

  async stopWatching(): Promise<void> {
    clearInterval(this.recheck);
    await this.unwatch?.();
    this.unwatch = null;
  }

  /** Serves what the database says `id` serves (null: deleted), if this process serves it. */
  private async follow(id: string, version: number | null): Promise<void> {
    const served = this.service.adapters.version(id);
    if (!served || !this.service.adapters.managed(id)) return;
    if (version === null) {
      if (!(await this.store.get(id))) this.service.removeAdapter(id);
      return;
    }
    const current = await this.currentVersion(id).catch(() => null);
    if (current !== null && served.version !== versionDir(current)) {
      this.serve(id, current);
      this.log(`adapter ${id}: serving v${current} (announced)`);
    }
  }

  private async recheckAll(): Promise<void> {
    for (const { name } of this.service.adapters.names()) {
      if (!this.service.adapters.managed(name)) continue;
      const info = await this.store.get(name);
      await this.follow(name, info ? info.currentVersion : null);
    }
  }

  /** Publishes a version's folder to the object store, when there is one (before its row is written). */
  private async publish(id: string, version: number, jobId: string | null): Promise<void> {
    if (!this.published) return;
    try {
      this.log(`adapter ${id}: publishing v${version} to the object store`);
      const t0 = performance.now();
      const how = await this.published.publish(id, version, this.dir(id, version), jobId);
      this.log(`adapter ${id}: v${version} ${how === 'published' ? 'published' : 'was already published'} (${Math.round(performance.now() - t0)} ms)`);
    } catch (err) {
      if (err instanceof VersionConflictError) throw new ClaasError('E_CONFLICT', `adapter ${id}: ${err.message}`);
      throw err;
    }
  }

  /** The version's folder on this node, fetched from the object store if it is not here. */
  async ensureLocal(id: string, version: number): Promise<string> {
    const dir = this.dir(id, version);
    if (!existsSync(dir) && this.published) await this.published.fetch(id, version, dir);
    return dir;
  }

  /** Loads a version into the engine (from this node's folder, fetched first when missing). */
  async loadVersion(id: string, version: number): Promise<Adapter> {
    return this.engine.loadAdapter(await this.ensureLocal(id, version));
  }

  /** The name the base model is served under (what a new adapter's base_model must name). */
  get baseModel(): string {
    return this.service.modelName;
  }

  dir(id: string, version: number): string {
    return join(this.root, ...checkAdapterId(id).split('/'), versionDir(version));
  }

  async get(id: string): Promise<AdapterInfo> {
    const info = await this.store.get(checkAdapterId(id));
    if (!info) throw new NotFoundError(`adapter ${id} does not exist`);
    return info;
  }

  list(): Promise<AdapterInfo[]> {
    return this.store.list();
  }

  /** Every adapter's id, creation time and current version (the database's word, for listings). */
  servedVersions(): Promise<{ id: string; createdAt: number; currentVersion: number }[]> {
    return this.store.servedVersions();
  }

  /** A new adapter at version 1 (B = 0: it starts as the base model), served under its id. */
  async create(id: string, req: CreateAdapterRequest = {}): Promise<AdapterInfo> {
    if (await this.store.get(checkAdapterId(id))) throw new InputError(`adapter ${id} already exists`);
    if (id === this.service.modelName) throw new InputError(`${id} is the base model's name`);
    const targets = validateTargets(req.targetModules ?? this.defaults.targetModules);
    const adapter = this.engine.createAdapter({ rank: req.rank ?? this.defaults.rank, alpha: req.alpha ?? this.defaults.alpha, targetModules: targets, seed: req.seed });
    const dir = this.dir(id, 1);
    rmSync(join(dir, '..'), { recursive: true, force: true }); // leftovers of an adapter deleted before
    await this.engine.saveAdapter(adapter, dir);
    await this.publish(id, 1, null);
    if (!(await this.store.create({ id, rank: adapter.rank, alpha: adapter.alpha, targetModules: targets }))) throw new InputError(`adapter ${id} already exists`);
    this.service.setAdapter(id, versionDir(1), adapter, this.dir(id, 1), true);
    return this.get(id);
  }

  /**
   * Saves a trained adapter as a new version (not yet served): `version` when given (the one its job
   * was assigned at claim), else the next. A version that exists is never written again: one written
   * by the same job is returned as it is, one of another job is refused.
   */
  async addVersion(id: string, adapter: Adapter, info: NewVersion, version?: number): Promise<number> {
    const existing = (await this.get(id)).versions;
    const v = version ?? (await this.store.latestVersion(id)) + 1;
    const taken = existing.find((x) => x.version === v);
    if (taken) {
      if (info.jobId !== undefined && taken.jobId === info.jobId) return v;
      throw new ClaasError('E_CONFLICT', `adapter ${id} already has version ${v}${taken.jobId ? ` (written by job ${taken.jobId})` : ''}; not written again`);
    }
    await this.engine.saveAdapter(adapter, this.dir(id, v));
    await this.publish(id, v, info.jobId ?? null);
    await this.store.addVersion(id, v, info);
    return v;
  }

  /** The version a job already wrote (after a crash between saving and finishing it), if any. */
  versionOfJob(id: string, jobId: string): Promise<number | undefined> {
    return this.store.versionOfJob(id, jobId);
  }

  /** Records why a version is not served. */
  reject(id: string, version: number, reason: string): Promise<void> {
    return this.store.reject(id, version, reason);
  }

  /** Serves `version` under the adapter's id from now on. */
  async promote(id: string, version: number, adapter?: Adapter): Promise<void> {
    if (!(await this.get(id)).versions.some((v) => v.version === version)) throw new NotFoundError(`adapter ${id} has no version ${version}`);
    const loaded = adapter ?? (await this.loadVersion(id, version));
    await this.store.promote(id, version);
    this.service.setAdapter(id, versionDir(version), loaded, this.dir(id, version), true);
  }

  /** The version served now. */
  async currentVersion(id: string): Promise<number> {
    return (await this.get(id)).currentVersion;
  }

  /** The adapter served now (loaded if it was evicted), leased: release it when done. */
  async lease(id: string): Promise<AdapterLease> {
    const version = await this.currentVersion(id);
    // The database says what the adapter serves: should the served set have lost it, or not yet have
    // followed a promotion or rollback made elsewhere, it serves that version from now on.
    if (!this.service.adapters.managed(id) || this.service.adapters.version(id)?.version !== versionDir(version)) this.serve(id, version);
    return this.service.adapters.acquire(id);
  }

  /** A version's folder and the PEFT files in it (the current version when none is named). */
  async versionFiles(id: string, version?: number): Promise<{ version: number; dir: string; files: string[] }> {
    const info = await this.get(id);
    const v = version ?? info.currentVersion;
    if (!info.versions.some((x) => x.version === v)) throw new NotFoundError(`adapter ${id} has no version ${v}`);
    const dir = await this.ensureLocal(id, v);
    return { version: v, dir, files: [ADAPTER_CONFIG, ADAPTER_WEIGHTS, OPTIMIZER_STATE, EMA_WEIGHTS].filter((f) => existsSync(join(dir, f))) };
  }

  /** A version's PEFT folder as a .tar.gz stream (the files at the top level). */
  async exportVersion(id: string, version?: number): Promise<{ stream: Readable; filename: string }> {
    const { version: v, dir, files } = await this.versionFiles(id, version);
    return { stream: tar.c({ gzip: true, cwd: dir, portable: true }, files) as unknown as Readable, filename: `${id.replace('/', '-')}-${versionDir(v)}.tar.gz` };
  }

  /** A new adapter whose version 1 is the PEFT folder in a .tar.gz (checked against the base model). */
  async importArchive(id: string, archive: Buffer): Promise<AdapterInfo> {
    if (await this.store.get(checkAdapterId(id))) throw new InputError(`adapter ${id} already exists`);
    // Unpacked inside the data directory (its quota, its permissions), never in the system's temp
    // folder; restore() removes what a killed import left.
    mkdirSync(this.root, { recursive: true });
    const work = mkdtempSync(join(this.root, IMPORT_PREFIX));
    try {
      const file = join(work, 'archive.tar.gz');
      writeFileSync(file, archive);
      const allowed = new Set([ADAPTER_CONFIG, ADAPTER_WEIGHTS, OPTIMIZER_STATE, EMA_WEIGHTS]);
      const unpacked = join(work, 'adapter');
      mkdirSync(unpacked);
      const limits = this.importLimits(file);
      const rejected: string[] = [];
      const oversized: string[] = [];
      try {
        // Only the PEFT files, as plain files at the top level, each no larger than the shape its
        // adapter_config.json declares: nothing else is ever written.
        await tar.x({
          file,
          cwd: unpacked,
          strict: true,
          filter: (path, entry) => {
            const name = entryName(path);
            const ok = allowed.has(name) && (entry as { type?: string }).type === 'File';
            if (!ok && name !== '' && name !== '.') rejected.push(name);
            const size = (entry as { size?: number }).size ?? 0;
            if (ok && size > limits.get(name)!) oversized.push(`${name} (${size} bytes, at most ${limits.get(name)!})`);
            return ok && size <= limits.get(name)!;
          },
        });
      } catch (err) {
        throw new InputError(`the upload is not a readable .tar.gz: ${(err as Error).message}`);
      }
      if (rejected.length > 0) throw new InputError(`the archive may only hold ${[...allowed].join(', ')} at its top level (found ${rejected.slice(0, 3).join(', ')})`);
      if (oversized.length > 0) throw new InputError(`the archive's files are larger than the adapter its adapter_config.json declares: ${oversized.join(', ')}`);
      let adapter: Adapter;
      try {
        adapter = await this.engine.loadAdapter(unpacked);
      } catch (err) {
        if (err instanceof ClaasError) throw new InputError(`the archive is not an adapter for this model: ${err.message}`);
        throw err;
      }
      const bad = adapter.firstNonFinite();
      if (bad) throw new InputError(`the archive's weights hold a non-finite value (${bad.value} at index ${bad.index})`);
      await this.engine.saveAdapter(adapter, this.dir(id, 1));
      await this.publish(id, 1, null);
      if (!(await this.store.create({ id, rank: adapter.rank, alpha: adapter.alpha, targetModules: adapter.targetModules, reason: 'imported' }))) throw new InputError(`adapter ${id} already exists`);
      this.service.setAdapter(id, versionDir(1), adapter, this.dir(id, 1), true);
      return this.get(id);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }

  /**
   * The largest each file of an import may be (work-bounds.ts), from the shape its
   * adapter_config.json declares, read first without unpacking anything. A small archive that
   * unpacks to gigabytes, or a header that lists a million tensors, is refused before it is written.
   */
  private importLimits(file: string): Map<string, number> {
    let config = '';
    let configSize = 0;
    try {
      tar.t({
        file,
        sync: true,
        onReadEntry: (entry) => {
          if (entryName(entry.path) !== ADAPTER_CONFIG) return;
          configSize = entry.size ?? 0;
          if (configSize <= MAX_ADAPTER_CONFIG_BYTES) entry.on('data', (d: Buffer) => (config += d.toString('utf8')));
        },
      });
    } catch (err) {
      throw new InputError(`the upload is not a readable .tar.gz: ${(err as Error).message}`);
    }
    if (config === '' && configSize === 0) throw new InputError(`the archive has no ${ADAPTER_CONFIG}`);
    if (configSize > MAX_ADAPTER_CONFIG_BYTES) throw new InputError(`${ADAPTER_CONFIG} is ${configSize} bytes; at most ${MAX_ADAPTER_CONFIG_BYTES}`);
    let raw: unknown;
    try {
      raw = JSON.parse(config);
    } catch {
      throw new InputError(`${ADAPTER_CONFIG} is not valid JSON`);
    }
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new InputError(`${ADAPTER_CONFIG} must be a JSON object`);
    let params: number;
    try {
      params = loraSlots(this.engine.config, parseAdapterConfig(raw as Record<string, unknown>)).total;
    } catch (err) {
      if (err instanceof ClaasError) throw new InputError(`the archive is not an adapter for this model: ${err.message}`);
      throw err;
    }
    const limit = importFileLimits(params);
    return new Map([
      [ADAPTER_CONFIG, limit.config],
      [ADAPTER_WEIGHTS, limit.weights],
      [EMA_WEIGHTS, limit.ema],
      [OPTIMIZER_STATE, limit.optimizer],
    ]);
  }

  async delete(id: string): Promise<void> {
    if (!(await this.store.delete(checkAdapterId(id)))) throw new NotFoundError(`adapter ${id} does not exist`);
    this.service.removeAdapter(id);
    rmSync(join(this.root, ...id.split('/')), { recursive: true, force: true });
    await this.published?.remove(id);
  }

  /**
   * On start: forget half-written version folders (temporary names, or folders whose row was never
   * written), then serve every adapter at its current version, each loaded when first used (so a
   * server with thousands of adapters starts at once, and holds only those in use).
   */
  async restore(): Promise<void> {
    if (existsSync(this.root)) {
      for (const entry of readdirSync(this.root)) if (entry.startsWith(IMPORT_PREFIX)) rmSync(join(this.root, entry), { recursive: true, force: true });
    }
    for (const info of await this.list()) {
      const folder = join(this.root, ...info.id.split('/'));
      const known = new Set(info.versions.map((v) => versionDir(v.version)));
      if (existsSync(folder)) {
        for (const entry of readdirSync(folder)) {
          if (!known.has(entry)) rmSync(join(folder, entry), { recursive: true, force: true });
        }
      }
      this.service.adapters.register(info.id, versionDir(info.currentVersion), this.dir(info.id, info.currentVersion), true);
    }
  }
}
