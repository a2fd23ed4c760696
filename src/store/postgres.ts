// Postgres as the SqlDatabase (the `pg` client, a connection pool). Statements arrive with `?`
// placeholders and are sent with `$1, $2, …`; BIGINT columns (millisecond times, counts) come back as
// numbers, as they do from SQLite. On open, POSTGRES_MIGRATIONS are applied in one transaction under
// an advisory lock, so servers starting together migrate once, one after the other.
import { createHash } from 'node:crypto';
import pg from 'pg';
import { ClaasError } from '../errors.js';
import { POSTGRES_MIGRATIONS } from './schema.js';
import type { SqlDatabase, SqlRunner, SqlTransaction, SqlValue } from './sql.js';

/** First key of every advisory lock this server takes (the second is the lock's name, hashed). */
const LOCK_SPACE = 0x636c6173; // "clas"

const INT8_OID = 20;

/** Integers beyond 2^53 would come back rounded: refused instead. */
function parseInt8(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new ClaasError('E_DATABASE', `a BIGINT value ${text} is beyond what a JavaScript number holds exactly`);
  return n;
}

const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => (oid === INT8_OID && format !== 'binary' ? parseInt8 : pg.types.getTypeParser(oid, format))) as typeof pg.types.getTypeParser,
};

const numberedCache = new Map<string, string>();

/** `?` placeholders as `$1, $2, …` (a `?` inside a quoted string stays). */
function numbered(sql: string): string {
  let out = numberedCache.get(sql);
  if (out === undefined) {
    let n = 0;
    let quoted = false;
    out = '';
    for (const ch of sql) {
      if (ch === "'") quoted = !quoted;
      out += ch === '?' && !quoted ? `$${++n}` : ch;
    }
    numberedCache.set(sql, out);
  }
  return out;
}

/** The URL with its password (in the address or as a parameter) replaced: fit for messages and logs. */
export function redactUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return 'postgres://… (not a valid URL)';
  }
  if (u.password) u.password = '***';
  if (u.searchParams.has('password')) u.searchParams.set('password', '***');
  return u.toString();
}

/** A 32-bit key for the lock `name`, the same in every process. */
const lockKey = (name: string) => createHash('sha256').update(name).digest().readInt32BE(0);

function runner(on: pg.Pool | pg.PoolClient): SqlRunner {
  return {
    dialect: 'postgres',
    query: async <Row>(sql: string, params: readonly SqlValue[] = []) => (await on.query(numbered(sql), params as unknown[])).rows as Row[],
    run: async (sql, params = []) => {
      const result = (await on.query(numbered(sql), params as unknown[])) as pg.QueryResult | pg.QueryResult[];
      // Several statements in one text (a migration) answer with a result each.
      return Array.isArray(result) ? 0 : (result.rowCount ?? 0);
    },
  };
}

class PostgresDatabase implements SqlDatabase {
  readonly dialect = 'postgres' as const;
  private readonly direct: SqlRunner;

  constructor(
    private readonly pool: pg.Pool,
    readonly description: string,
  ) {
    this.direct = runner(pool);
  }

  query<Row>(sql: string, params?: readonly SqlValue[]): Promise<Row[]> {
    return this.direct.query<Row>(sql, params);
  }

  run(sql: string, params?: readonly SqlValue[]): Promise<number> {
    return this.direct.run(sql, params);
  }

  async transaction<T>(fn: (tx: SqlTransaction) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    const on = runner(client);
    const tx: SqlTransaction = { ...on, lock: async (name) => void (await on.query('SELECT pg_advisory_xact_lock(?, ?)', [LOCK_SPACE, lockKey(name)])) };
    // A connection whose rollback failed is in an unknown state: it is closed, not reused.
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const out = await fn(tx);
      await client.query('COMMIT');
      return out;
    } catch (err) {
      await client.query('ROLLBACK').catch((e: unknown) => (broken = e instanceof Error ? e : new Error(String(e))));
      throw err;
    } finally {
      client.release(broken);
    }
  }

  async listen(channel: string, onMessage: (payload: string) => void): Promise<() => Promise<void>> {
    // A connection of its own: LISTEN holds for the session, and notifications arrive on it.
    const client = await this.pool.connect();
    const handler = (msg: pg.Notification) => {
      if (msg.channel === channel && msg.payload !== undefined) onMessage(msg.payload);
    };
    client.on('notification', handler);
    await client.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
    return async () => {
      client.off('notification', handler);
      await client.query(`UNLISTEN ${pg.escapeIdentifier(channel)}`).catch(() => undefined);
      client.release();
    };
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

async function migrate(db: SqlDatabase): Promise<void> {
  await db.transaction(async (tx) => {
    await tx.lock('schema migrations');
    await tx.run('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)');
    const [row] = await tx.query<{ version: number | null }>('SELECT MAX(version) AS version FROM schema_migrations');
    const version = row?.version ?? 0;
    if (version > POSTGRES_MIGRATIONS.length) {
      throw new ClaasError('E_DATABASE', `the database has schema version ${version}, newer than this claas knows (${POSTGRES_MIGRATIONS.length}): a newer claas wrote it`);
    }
    for (let v = version; v < POSTGRES_MIGRATIONS.length; v++) {
      await tx.run(POSTGRES_MIGRATIONS[v]!);
      await tx.run('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)', [v + 1, Date.now()]);
    }
  });
}

/** Connects to the database at `url` (postgres://user:password@host:port/database) and migrates it. */
export async function openPostgres(url: string): Promise<SqlDatabase> {
  const description = redactUrl(url);
  const pool = new pg.Pool({ connectionString: url, types, connectionTimeoutMillis: 15_000 });
  // A connection that fails while idle in the pool (the server restarted) is dropped by the pool;
  // without a listener the error would end the process.
  pool.on('error', (err) => console.error(`postgres ${description}: an idle connection failed: ${err.message}`));
  try {
    (await pool.connect()).release();
  } catch (err) {
    await pool.end().catch(() => {});
    throw new ClaasError('E_DATABASE', `cannot reach the Postgres database at ${description}: ${(err as Error).message || (err as { code?: string }).code || String(err)}`);
  }
  const db = new PostgresDatabase(pool, description);
  try {
    await migrate(db);
  } catch (err) {
    await db.close().catch(() => {});
    if (err instanceof ClaasError) throw err;
    throw new ClaasError('E_DATABASE', `cannot migrate the Postgres database at ${description}: ${(err as Error).message}`);
  }
  return db;
}
