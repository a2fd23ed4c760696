// Adapters and their versions as rows: an adapter's rank, alpha, target modules and the version it
// serves; each version's parent, status, metrics and the job that wrote it. The version folders
// themselves, and serving them, are the AdapterRegistry's (src/orchestrator/adapters.ts).
import { isUniqueViolation, type SqlDatabase, type SqlRunner } from './sql.js';

/** Where promotions and deletions are announced to the other processes of a shared database. */
const SERVED_CHANNEL = 'claas_served_versions';

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

export interface NewVersion {
  parent: number;
  status: VersionStatus;
  reason?: string;
  metrics?: Record<string, unknown>;
  jobId?: string;
}

export interface AdapterStore {
  get(id: string): Promise<AdapterInfo | undefined>;
  /** Every adapter, by id. */
  list(): Promise<AdapterInfo[]>;
  /** Every adapter's id, creation time and current version, without their version histories. */
  servedVersions(): Promise<{ id: string; createdAt: number; currentVersion: number }[]>;
  /** A new adapter at version 1 ('initial'); false when the id is taken. */
  create(adapter: { id: string; rank: number; alpha: number; targetModules: readonly string[]; reason?: string }): Promise<boolean>;
  /** The highest version the adapter has (0 for none). */
  latestVersion(id: string): Promise<number>;
  /** Records a version whose folder is written (not served until promoted). */
  addVersion(id: string, version: number, info: NewVersion): Promise<void>;
  /** The version a job wrote, if any. */
  versionOfJob(id: string, jobId: string): Promise<number | undefined>;
  /** Records why a version is not served. */
  reject(id: string, version: number, reason: string): Promise<void>;
  /** Makes `version` the one served (marked promoted, unless it is the first). */
  promote(id: string, version: number): Promise<void>;
  /** Deletes an adapter and its versions' rows; false when there was none. */
  delete(id: string): Promise<boolean>;
  /**
   * Calls `onChange` when any process sharing the database promotes a version (or deletes the
   * adapter: null); resolves to a function that stops it, or null where no other process can write.
   */
  watch(onChange: (id: string, version: number | null) => void): Promise<(() => Promise<void>) | null>;
}

interface AdapterRow {
  id: string;
  created_at: number;
  rank: number;
  alpha: number;
  target_modules: string;
  current_version: number;
}

interface VersionRow {
  adapter_id: string;
  version: number;
  created_at: number;
  parent_version: number | null;
  status: VersionStatus;
  reason: string | null;
  metrics_json: string | null;
  job_id: string | null;
}

const versionInfo = (v: VersionRow): VersionInfo => ({
  version: v.version,
  createdAt: v.created_at,
  parentVersion: v.parent_version ?? null,
  status: v.status,
  reason: v.reason ?? null,
  metrics: v.metrics_json ? (JSON.parse(v.metrics_json) as Record<string, unknown>) : null,
  jobId: v.job_id ?? null,
});

const adapterInfo = (r: AdapterRow, versions: VersionRow[]): AdapterInfo => ({
  id: r.id,
  createdAt: r.created_at,
  rank: r.rank,
  alpha: r.alpha,
  targetModules: JSON.parse(r.target_modules) as string[],
  currentVersion: r.current_version,
  versions: versions.map(versionInfo),
});

export class SqlAdapterStore implements AdapterStore {
  constructor(private readonly db: SqlDatabase) {}

  async get(id: string): Promise<AdapterInfo | undefined> {
    const [row] = await this.db.query<AdapterRow>('SELECT * FROM adapters WHERE id = ?', [id]);
    if (!row) return undefined;
    return adapterInfo(row, await this.db.query<VersionRow>('SELECT * FROM adapter_versions WHERE adapter_id = ? ORDER BY version', [id]));
  }

  async list(): Promise<AdapterInfo[]> {
    const rows = await this.db.query<AdapterRow>('SELECT * FROM adapters ORDER BY id');
    const versions = new Map<string, VersionRow[]>();
    for (const v of await this.db.query<VersionRow>('SELECT * FROM adapter_versions ORDER BY adapter_id, version')) {
      const list = versions.get(v.adapter_id) ?? [];
      list.push(v);
      versions.set(v.adapter_id, list);
    }
    return rows.map((r) => adapterInfo(r, versions.get(r.id) ?? []));
  }

  async servedVersions(): Promise<{ id: string; createdAt: number; currentVersion: number }[]> {
    const rows = await this.db.query<Pick<AdapterRow, 'id' | 'created_at' | 'current_version'>>('SELECT id, created_at, current_version FROM adapters ORDER BY id');
    return rows.map((r) => ({ id: r.id, createdAt: Number(r.created_at), currentVersion: r.current_version }));
  }

  async create(a: { id: string; rank: number; alpha: number; targetModules: readonly string[]; reason?: string }): Promise<boolean> {
    try {
      await this.db.transaction(async (tx) => {
        const now = Date.now();
        await tx.run('INSERT INTO adapters (id, created_at, rank, alpha, target_modules, current_version) VALUES (?, ?, ?, ?, ?, ?)', [a.id, now, a.rank, a.alpha, JSON.stringify(a.targetModules), 1]);
        await tx.run('INSERT INTO adapter_versions (adapter_id, version, created_at, parent_version, status, reason, metrics_json, job_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)', [a.id, 1, now, null, 'initial', a.reason ?? null, null, null]);
      });
      return true;
    } catch (err) {
      if (isUniqueViolation(err)) return false;
      throw err;
    }
  }

  async latestVersion(id: string): Promise<number> {
    const [row] = await this.db.query<{ v: number | null }>('SELECT MAX(version) AS v FROM adapter_versions WHERE adapter_id = ?', [id]);
    return row?.v ?? 0;
  }

  async addVersion(id: string, version: number, info: NewVersion): Promise<void> {
    await this.db.run('INSERT INTO adapter_versions (adapter_id, version, created_at, parent_version, status, reason, metrics_json, job_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)', [
      id,
      version,
      Date.now(),
      info.parent,
      info.status,
      info.reason ?? null,
      info.metrics ? JSON.stringify(info.metrics) : null,
      info.jobId ?? null,
    ]);
  }

  async versionOfJob(id: string, jobId: string): Promise<number | undefined> {
    const [row] = await this.db.query<{ version: number }>('SELECT version FROM adapter_versions WHERE adapter_id = ? AND job_id = ?', [id, jobId]);
    return row?.version;
  }

  async reject(id: string, version: number, reason: string): Promise<void> {
    await this.db.run('UPDATE adapter_versions SET status = ?, reason = ? WHERE adapter_id = ? AND version = ?', ['rejected', reason, id, version]);
  }

  async promote(id: string, version: number): Promise<void> {
    await this.db.transaction(async (tx) => {
      await tx.run('UPDATE adapters SET current_version = ? WHERE id = ?', [version, id]);
      if (version !== 1) await tx.run('UPDATE adapter_versions SET status = ?, reason = ? WHERE adapter_id = ? AND version = ?', ['promoted', null, id, version]);
      await this.announce(tx, id, version);
    });
  }

  async delete(id: string): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const gone = (await tx.run('DELETE FROM adapters WHERE id = ?', [id])) > 0;
      if (gone) await this.announce(tx, id, null);
      return gone;
    });
  }

  /** Tells every process that shares the database what `id` serves now (sent when the transaction commits). */
  private async announce(tx: SqlRunner, id: string, version: number | null): Promise<void> {
    if (tx.dialect === 'postgres') await tx.query('SELECT pg_notify(?, ?)', [SERVED_CHANNEL, JSON.stringify({ id, version })]);
  }

  async watch(onChange: (id: string, version: number | null) => void): Promise<(() => Promise<void>) | null> {
    if (!this.db.listen) return null;
    return this.db.listen(SERVED_CHANNEL, (payload) => {
      const m = JSON.parse(payload) as { id: string; version: number | null };
      onChange(m.id, m.version);
    });
  }
}
