// Adapters and their versions. Every version is an immutable PEFT folder
// <root>/<tenant>/<name>/vNNNN (written to a temporary name, then renamed) with a row in SQLite; the
// adapter's id is a stable alias served at its current (promoted) version.
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
import { inTransaction, prepare, type Db, type Statement } from '../store/db.js';
import { importFileLimits, MAX_ADAPTER_CONFIG_BYTES } from '../serve/work-bounds.js';
import { checkAdapterId, versionDir } from './adapter-ids.js';

/** Work folders of imports in progress, inside the adapters' root (no tenant name starts with a dot). */
const IMPORT_PREFIX = '.import-';

/** An archive entry's name without a leading "./". */
const entryName = (path: string) => path.replace(/^\.\//, '');

export type VersionStatus = 'initial' | 'promoted' | 'rejected' | 'candidate';

export interface VersionInfo {
  version: number;
  createdAt: number;
  parentVersion: number | null;
  status: VersionStatus;
  reason: string | null;
  metrics: Record<string, unknown> | null;
  jobId: string | null;
}

export interface AdapterInfo {
  id: string;
  createdAt: number;
  rank: number;
  alpha: number;
  targetModules: string[];
  currentVersion: number;
  versions: VersionInfo[];
}

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
  private readonly q: Record<string, Statement>;

  constructor(
    private readonly db: Db,
    private readonly engine: Engine,
    private readonly service: InferenceService,
    readonly root: string,
    readonly defaults: AdapterDefaults = { rank: 32, alpha: 64, targetModules: [...LORA_MODULES] },
  ) {
    this.q = {
      insertAdapter: prepare(db, 'INSERT INTO adapters (id, created_at, rank, alpha, target_modules, current_version) VALUES (?, ?, ?, ?, ?, ?)'),
      insertVersion: prepare(db, 'INSERT INTO adapter_versions (adapter_id, version, created_at, parent_version, status, reason, metrics_json, job_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
      adapter: prepare(db, 'SELECT * FROM adapters WHERE id = ?'),
      adapters: prepare(db, 'SELECT * FROM adapters ORDER BY id'),
      versions: prepare(db, 'SELECT * FROM adapter_versions WHERE adapter_id = ? ORDER BY version'),
      maxVersion: prepare(db, 'SELECT MAX(version) FROM adapter_versions WHERE adapter_id = ?').pluck(),
      setCurrent: prepare(db, 'UPDATE adapters SET current_version = ? WHERE id = ?'),
      setStatus: prepare(db, 'UPDATE adapter_versions SET status = ?, reason = ? WHERE adapter_id = ? AND version = ?'),
      deleteAdapter: prepare(db, 'DELETE FROM adapters WHERE id = ?'),
      byJob: prepare(db, 'SELECT version FROM adapter_versions WHERE adapter_id = ? AND job_id = ?').pluck(),
    };
  }

  /** The name the base model is served under (what a new adapter's base_model must name). */
  get baseModel(): string {
    return this.service.modelName;
  }

  dir(id: string, version: number): string {
    return join(this.root, ...checkAdapterId(id).split('/'), versionDir(version));
  }

  private row(id: string): Record<string, unknown> {
    const r = this.q.adapter!.get(checkAdapterId(id)) as Record<string, unknown> | undefined;
    if (!r) throw new NotFoundError(`adapter ${id} does not exist`);
    return r;
  }

  get(id: string): AdapterInfo {
    const r = this.row(id);
    const versions = (this.q.versions!.all(id) as Record<string, unknown>[]).map((v) => ({
      version: v.version as number,
      createdAt: v.created_at as number,
      parentVersion: (v.parent_version as number | null) ?? null,
      status: v.status as VersionStatus,
      reason: (v.reason as string | null) ?? null,
      metrics: v.metrics_json ? (JSON.parse(v.metrics_json as string) as Record<string, unknown>) : null,
      jobId: (v.job_id as string | null) ?? null,
    }));
    return {
      id,
      createdAt: r.created_at as number,
      rank: r.rank as number,
      alpha: r.alpha as number,
      targetModules: JSON.parse(r.target_modules as string) as string[],
      currentVersion: r.current_version as number,
      versions,
    };
  }

  list(): AdapterInfo[] {
    return (this.q.adapters!.all() as Record<string, unknown>[]).map((r) => this.get(r.id as string));
  }

  /** A new adapter at version 1 (B = 0: it starts as the base model), served under its id. */
  async create(id: string, req: CreateAdapterRequest = {}): Promise<AdapterInfo> {
    checkAdapterId(id);
    if (this.q.adapter!.get(id)) throw new InputError(`adapter ${id} already exists`);
    if (id === this.service.modelName) throw new InputError(`${id} is the base model's name`);
    const targets = validateTargets(req.targetModules ?? this.defaults.targetModules);
    const adapter = this.engine.createAdapter({ rank: req.rank ?? this.defaults.rank, alpha: req.alpha ?? this.defaults.alpha, targetModules: targets, seed: req.seed });
    const dir = this.dir(id, 1);
    rmSync(join(dir, '..'), { recursive: true, force: true }); // leftovers of an adapter deleted before
    await this.engine.saveAdapter(adapter, dir);
    inTransaction(this.db, () => {
      this.q.insertAdapter!.run(id, Date.now(), adapter.rank, adapter.alpha, JSON.stringify(targets), 1);
      this.q.insertVersion!.run(id, 1, Date.now(), null, 'initial', null, null, null);
    });
    this.service.setAdapter(id, versionDir(1), adapter, this.dir(id, 1), true);
    return this.get(id);
  }

  /** Saves a trained adapter as the next version (not yet served). */
  async addVersion(id: string, adapter: Adapter, info: { parent: number; status: VersionStatus; reason?: string; metrics?: Record<string, unknown>; jobId?: string }): Promise<number> {
    this.row(id);
    const version = ((this.q.maxVersion!.get(id) as number | null) ?? 0) + 1;
    await this.engine.saveAdapter(adapter, this.dir(id, version));
    this.q.insertVersion!.run(id, version, Date.now(), info.parent, info.status, info.reason ?? null, info.metrics ? JSON.stringify(info.metrics) : null, info.jobId ?? null);
    return version;
  }

  /** The version a job already wrote (after a crash between saving and finishing it), if any. */
  versionOfJob(id: string, jobId: string): number | undefined {
    return (this.q.byJob!.get(id, jobId) as number | undefined) ?? undefined;
  }

  /** Records why a version is not served. */
  reject(id: string, version: number, reason: string): void {
    this.q.setStatus!.run('rejected', reason, id, version);
  }

  /** Serves `version` under the adapter's id from now on. */
  async promote(id: string, version: number, adapter?: Adapter): Promise<void> {
    this.row(id);
    const exists = (this.q.versions!.all(id) as { version: number }[]).some((v) => v.version === version);
    if (!exists) throw new NotFoundError(`adapter ${id} has no version ${version}`);
    const loaded = adapter ?? (await this.engine.loadAdapter(this.dir(id, version)));
    inTransaction(this.db, () => {
      this.q.setCurrent!.run(version, id);
      if (version !== 1) this.q.setStatus!.run('promoted', null, id, version);
    });
    this.service.setAdapter(id, versionDir(version), loaded, this.dir(id, version), true);
  }

  /** The version served now. */
  currentVersion(id: string): number {
    return this.row(id).current_version as number;
  }

  /** The adapter served now (loaded if it was evicted), leased: release it when done. */
  async lease(id: string): Promise<AdapterLease> {
    const version = this.currentVersion(id);
    // The database says what the adapter serves; should the served set have lost it, it is served again.
    if (!this.service.adapters.managed(id)) this.service.adapters.register(id, versionDir(version), this.dir(id, version), true);
    return this.service.adapters.acquire(id);
  }

  /** A version's PEFT folder as a .tar.gz stream (the files at the top level). */
  /** A version's folder and the PEFT files in it (the current version when none is named). */
  versionFiles(id: string, version?: number): { version: number; dir: string; files: string[] } {
    const info = this.get(id);
    const v = version ?? info.currentVersion;
    if (!info.versions.some((x) => x.version === v)) throw new NotFoundError(`adapter ${id} has no version ${v}`);
    const dir = this.dir(id, v);
    return { version: v, dir, files: [ADAPTER_CONFIG, ADAPTER_WEIGHTS, OPTIMIZER_STATE, EMA_WEIGHTS].filter((f) => existsSync(join(dir, f))) };
  }

  exportVersion(id: string, version?: number): { stream: Readable; filename: string } {
    const { version: v, dir, files } = this.versionFiles(id, version);
    return { stream: tar.c({ gzip: true, cwd: dir, portable: true }, files) as unknown as Readable, filename: `${id.replace('/', '-')}-${versionDir(v)}.tar.gz` };
  }

  /** A new adapter whose version 1 is the PEFT folder in a .tar.gz (checked against the base model). */
  async importArchive(id: string, archive: Buffer): Promise<AdapterInfo> {
    checkAdapterId(id);
    if (this.q.adapter!.get(id)) throw new InputError(`adapter ${id} already exists`);
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
      inTransaction(this.db, () => {
        this.q.insertAdapter!.run(id, Date.now(), adapter.rank, adapter.alpha, JSON.stringify(adapter.targetModules), 1);
        this.q.insertVersion!.run(id, 1, Date.now(), null, 'initial', 'imported', null, null);
      });
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
    this.row(id);
    this.q.deleteAdapter!.run(id);
    this.service.removeAdapter(id);
    rmSync(join(this.root, ...id.split('/')), { recursive: true, force: true });
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
    for (const info of this.list()) {
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
