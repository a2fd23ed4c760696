// API keys as rows: a key's id, the hash of the key (never the key), its tenant and role, when it
// was created and revoked. Minting and checking keys is src/auth/keys.ts's.
import { DIALECT, type SqlDatabase } from './sql.js';

export type Role = 'user' | 'admin';

export interface KeyInfo {
  id: string;
  tenant: string;
  role: Role;
  name: string | null;
  createdAt: number;
  revokedAt: number | null;
}

export interface ApiKeyStore {
  add(key: { id: string; hash: string; tenant: string; role: Role; name: string | null }): Promise<KeyInfo>;
  get(id: string): Promise<KeyInfo | undefined>;
  /** The active (not revoked) key with this hash. */
  activeByHash(hash: string): Promise<KeyInfo | undefined>;
  /** Every key, oldest first. */
  list(): Promise<KeyInfo[]>;
  /** Marks a key revoked now (a revoked key keeps its first revocation time). */
  revoke(id: string): Promise<void>;
  /** Whether any key is active. */
  hasActive(): Promise<boolean>;
}

interface KeyRow {
  id: string;
  tenant: string;
  role: Role;
  name: string | null;
  created_at: number;
  revoked_at: number | null;
}

const info = (row: KeyRow): KeyInfo => ({ id: row.id, tenant: row.tenant, role: row.role, name: row.name ?? null, createdAt: row.created_at, revokedAt: row.revoked_at ?? null });

export class SqlApiKeyStore implements ApiKeyStore {
  constructor(private readonly db: SqlDatabase) {}

  async add(key: { id: string; hash: string; tenant: string; role: Role; name: string | null }): Promise<KeyInfo> {
    const createdAt = Date.now();
    await this.db.run('INSERT INTO api_keys (id, hash, tenant, role, name, created_at) VALUES (?, ?, ?, ?, ?, ?)', [key.id, key.hash, key.tenant, key.role, key.name, createdAt]);
    return { id: key.id, tenant: key.tenant, role: key.role, name: key.name, createdAt, revokedAt: null };
  }

  async get(id: string): Promise<KeyInfo | undefined> {
    const [row] = await this.db.query<KeyRow>('SELECT * FROM api_keys WHERE id = ?', [id]);
    return row ? info(row) : undefined;
  }

  async activeByHash(hash: string): Promise<KeyInfo | undefined> {
    const [row] = await this.db.query<KeyRow>('SELECT * FROM api_keys WHERE hash = ? AND revoked_at IS NULL', [hash]);
    return row ? info(row) : undefined;
  }

  async list(): Promise<KeyInfo[]> {
    return (await this.db.query<KeyRow>(`SELECT * FROM api_keys ORDER BY created_at, ${DIALECT[this.db.dialect].insertOrder}`)).map(info);
  }

  async revoke(id: string): Promise<void> {
    await this.db.run('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL', [Date.now(), id]);
  }

  async hasActive(): Promise<boolean> {
    return (await this.db.query('SELECT 1 AS one FROM api_keys WHERE revoked_at IS NULL LIMIT 1')).length > 0;
  }
}
