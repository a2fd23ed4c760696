// SQLite as the SqlDatabase (better-sqlite3): WAL, a file only the server's user may read, and the
// schema migrated on open up to SQLITE_MIGRATIONS (PRAGMA user_version counts those applied).
//
// better-sqlite3 on Node 24 aborts the whole process when a statement object is garbage-collected
// (its destructor runs with no current environment). So no statement is ever left to the GC here:
// pragmas and transactions go through exec(), and prepared statements are pinned for the life of the
// process (one per distinct SQL text, a few dozen per database).
//
// better-sqlite3 is synchronous, so a statement's promise is settled when it is returned. A
// transaction's function may still await between its statements; while it does, statements from
// elsewhere wait for it to end instead of landing inside it.
import Database from 'better-sqlite3';
import { chmodSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { ClaasError } from '../errors.js';
import { SQLITE_MIGRATIONS } from './schema.js';
import type { SqlDatabase, SqlTransaction, SqlValue } from './sql.js';

const pinned: Database.Statement[] = [];

function pin(statement: Database.Statement): Database.Statement {
  pinned.push(statement);
  return statement;
}

/** Runs fn inside BEGIN IMMEDIATE / COMMIT, rolling back if it throws. */
function exclusively<T>(db: Database.Database, fn: () => T): T {
  db.exec('BEGIN IMMEDIATE');
  try {
    const out = fn();
    db.exec('COMMIT');
    return out;
  } catch (err) {
    if (db.inTransaction) db.exec('ROLLBACK');
    throw err;
  }
}

/**
 * Applies the migrations this file lacks, one transaction each. The version is read again inside
 * each transaction: another process opening the same file may have applied it meanwhile.
 */
function migrate(db: Database.Database, file: string): void {
  const userVersion = pin(db.prepare('PRAGMA user_version').pluck());
  for (;;) {
    const applied = exclusively(db, () => {
      const version = userVersion.get() as number;
      if (version > SQLITE_MIGRATIONS.length) {
        throw new ClaasError('E_DATABASE', `${file} has schema version ${version}, newer than this claas knows (${SQLITE_MIGRATIONS.length}): a newer claas wrote it`);
      }
      if (version === SQLITE_MIGRATIONS.length) return false;
      db.exec(`${SQLITE_MIGRATIONS[version]!}\nPRAGMA user_version = ${version + 1};`);
      return true;
    });
    if (!applied) return;
  }
}

class SqliteDatabase implements SqlDatabase {
  readonly dialect = 'sqlite' as const;
  private readonly statements = new Map<string, Database.Statement>();
  /** Settles when the open transaction ends (null when none is open). */
  private transactionEnd: Promise<void> | null = null;
  private readonly tx: SqlTransaction = {
    dialect: 'sqlite',
    query: async (sql, params) => this.all(sql, params),
    run: async (sql, params) => this.change(sql, params),
    // BEGIN IMMEDIATE already holds the database's one write lock.
    lock: async () => {},
  };

  constructor(
    private readonly db: Database.Database,
    readonly description: string,
  ) {}

  private statement(sql: string): Database.Statement {
    let s = this.statements.get(sql);
    if (!s) {
      s = pin(this.db.prepare(sql));
      this.statements.set(sql, s);
    }
    return s;
  }

  private all<Row>(sql: string, params: readonly SqlValue[] = []): Row[] {
    return this.statement(sql).all(...params) as Row[];
  }

  private change(sql: string, params: readonly SqlValue[] = []): number {
    return this.statement(sql).run(...params).changes;
  }

  // Each waits in its own loop: the check that no transaction is open and the work after it must
  // run with no await between them, or another transaction could begin in the gap.

  async query<Row>(sql: string, params?: readonly SqlValue[]): Promise<Row[]> {
    while (this.transactionEnd) await this.transactionEnd;
    return this.all<Row>(sql, params);
  }

  async run(sql: string, params?: readonly SqlValue[]): Promise<number> {
    while (this.transactionEnd) await this.transactionEnd;
    return this.change(sql, params);
  }

  async transaction<T>(fn: (tx: SqlTransaction) => Promise<T>): Promise<T> {
    while (this.transactionEnd) await this.transactionEnd;
    let end!: () => void;
    this.transactionEnd = new Promise((resolve) => (end = resolve));
    try {
      this.db.exec('BEGIN IMMEDIATE');
      const out = await fn(this.tx);
      this.db.exec('COMMIT');
      return out;
    } catch (err) {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
      throw err;
    } finally {
      this.transactionEnd = null;
      end();
    }
  }

  async close(): Promise<void> {
    while (this.transactionEnd) await this.transactionEnd;
    this.db.close();
  }
}

/** Opens (creating when needed) the database at `file`, or in memory for ':memory:'. */
export function openSqlite(file: string): SqlDatabase {
  if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const db = new Database(file);
  // Prompts, replies and key hashes live here: readable by the server's user only, also when an
  // older version created the file with the default mode.
  if (file !== ':memory:') chmodSync(file, 0o600);
  try {
    db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;');
    migrate(db, file);
  } catch (err) {
    db.close();
    throw err;
  }
  return new SqliteDatabase(db, file);
}
