// API keys: each maps to a tenant and a role (user or admin). Only a SHA-256 of a key is stored (keys
// are 256 random bits, so a fast hash is enough); the key itself is shown once, when created.
// Lookups read the database on every request, so a revoked key stops working at once.
import { createHash, randomBytes } from 'node:crypto';
import { InputError, NotFoundError } from '../errors.js';
import { prepare, type Db } from '../store/db.js';

export type Role = 'user' | 'admin';

export interface KeyInfo {
  id: string;
  tenant: string;
  role: Role;
  name: string | null;
  createdAt: number;
  revokedAt: number | null;
}

const TENANT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const KEY = /^sk-claas-([0-9a-f]{12})-[A-Za-z0-9_-]{43}$/;

export function checkTenant(tenant: unknown): string {
  if (typeof tenant !== 'string' || !TENANT.test(tenant) || tenant.includes('..')) {
    throw new InputError(`tenant ${JSON.stringify(tenant)} must be 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit`);
  }
  return tenant;
}

const hash = (key: string) => createHash('sha256').update(key).digest('hex');

function info(row: Record<string, unknown>): KeyInfo {
  return { id: row.id as string, tenant: row.tenant as string, role: row.role as Role, name: (row.name as string | null) ?? null, createdAt: row.created_at as number, revokedAt: (row.revoked_at as number | null) ?? null };
}

export class KeyStore {
  private readonly q;

  constructor(db: Db) {
    this.q = {
      insert: prepare(db, 'INSERT INTO api_keys (id, hash, tenant, role, name, created_at) VALUES (?, ?, ?, ?, ?, ?)'),
      byHash: prepare(db, 'SELECT * FROM api_keys WHERE hash = ? AND revoked_at IS NULL'),
      all: prepare(db, 'SELECT * FROM api_keys ORDER BY created_at, rowid'),
      revoke: prepare(db, 'UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL'),
      byId: prepare(db, 'SELECT * FROM api_keys WHERE id = ?'),
      anyActive: prepare(db, 'SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1'),
    };
  }

  /** Creates a key; the returned `key` is the only time it is visible. */
  create(opts: { tenant: string; role: Role; name?: string | null }): { key: string; info: KeyInfo } {
    checkTenant(opts.tenant);
    if (opts.role !== 'user' && opts.role !== 'admin') throw new InputError(`role must be "user" or "admin" (got ${JSON.stringify(opts.role)})`);
    if (opts.name !== undefined && opts.name !== null && (typeof opts.name !== 'string' || opts.name.length > 200)) throw new InputError('name must be a string of at most 200 characters');
    const id = randomBytes(6).toString('hex');
    const key = `sk-claas-${id}-${randomBytes(32).toString('base64url')}`;
    this.q.insert.run(id, hash(key), opts.tenant, opts.role, opts.name ?? null, Date.now());
    return { key, info: info(this.q.byId.get(id) as Record<string, unknown>) };
  }

  list(): KeyInfo[] {
    return (this.q.all.all() as Record<string, unknown>[]).map(info);
  }

  revoke(id: string): KeyInfo {
    const row = this.q.byId.get(id) as Record<string, unknown> | undefined;
    if (!row) throw new NotFoundError(`key ${id} does not exist`);
    this.q.revoke.run(Date.now(), id);
    return info(this.q.byId.get(id) as Record<string, unknown>);
  }

  /** The active key matching `key`, if any. */
  verify(key: string): KeyInfo | undefined {
    if (!KEY.test(key)) return undefined;
    const row = this.q.byHash.get(hash(key)) as Record<string, unknown> | undefined;
    return row ? info(row) : undefined;
  }

  hasActive(): boolean {
    return this.q.anyActive.get() !== undefined;
  }
}
