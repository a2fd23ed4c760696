// API keys: each maps to a tenant and a role (user or admin). Only a SHA-256 of a key is stored (keys
// are 256 random bits, so a fast hash is enough); the key itself is shown once, when created.
// Lookups read the database on every request, so a revoked key stops working at once.
import { createHash, randomBytes } from 'node:crypto';
import { InputError, NotFoundError } from '../errors.js';
import type { ApiKeyStore, KeyInfo, Role } from '../store/api-keys.js';

export type { KeyInfo, Role };

const TENANT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const KEY = /^sk-claas-([0-9a-f]{12})-[A-Za-z0-9_-]{43}$/;

export function checkTenant(tenant: unknown): string {
  if (typeof tenant !== 'string' || !TENANT.test(tenant) || tenant.includes('..')) {
    throw new InputError(`tenant ${JSON.stringify(tenant)} must be 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit`);
  }
  return tenant;
}

const hash = (key: string) => createHash('sha256').update(key).digest('hex');

export class ApiKeys {
  constructor(private readonly store: ApiKeyStore) {}

  /** Creates a key; the returned `key` is the only time it is visible. */
  async create(opts: { tenant: string; role: Role; name?: string | null }): Promise<{ key: string; info: KeyInfo }> {
    checkTenant(opts.tenant);
    if (opts.role !== 'user' && opts.role !== 'admin') throw new InputError(`role must be "user" or "admin" (got ${JSON.stringify(opts.role)})`);
    if (opts.name !== undefined && opts.name !== null && (typeof opts.name !== 'string' || opts.name.length > 200)) throw new InputError('name must be a string of at most 200 characters');
    const id = randomBytes(6).toString('hex');
    const key = `sk-claas-${id}-${randomBytes(32).toString('base64url')}`;
    return { key, info: await this.store.add({ id, hash: hash(key), tenant: opts.tenant, role: opts.role, name: opts.name ?? null }) };
  }

  list(): Promise<KeyInfo[]> {
    return this.store.list();
  }

  async revoke(id: string): Promise<KeyInfo> {
    if (!(await this.store.get(id))) throw new NotFoundError(`key ${id} does not exist`);
    await this.store.revoke(id);
    return (await this.store.get(id))!;
  }

  /** The active key matching `key`, if any. */
  async verify(key: string): Promise<KeyInfo | undefined> {
    if (!KEY.test(key)) return undefined;
    return this.store.activeByHash(hash(key));
  }

  hasActive(): Promise<boolean> {
    return this.store.hasActive();
  }
}
