// The state database: SQLite in WAL mode, schema created and migrated on open.
//
// better-sqlite3 on Node 24 aborts the whole process when a statement object is garbage-collected
// (its destructor runs with no current environment). So no statement is ever left to the GC here:
// pragmas and transactions go through exec(), and prepared statements are pinned for the life of the
// process (a handful per database).
import Database from 'better-sqlite3';
import { chmodSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

export type Db = Database.Database;
export type Statement = Database.Statement;

const pinned: Statement[] = [];

/** Prepares a statement that is never garbage-collected (see the note above). */
export function prepare(db: Db, sql: string): Statement {
  const s = db.prepare(sql);
  pinned.push(s);
  return s;
}

/** Runs fn inside BEGIN / COMMIT, rolling back if it throws. */
export function inTransaction<T>(db: Db, fn: () => T): T {
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

const MIGRATIONS: string[] = [
  `CREATE TABLE completions (
     id TEXT PRIMARY KEY,
     created_at INTEGER NOT NULL,
     model TEXT NOT NULL,
     adapter TEXT,
     adapter_version TEXT,
     request_json TEXT NOT NULL,
     prompt_ids BLOB NOT NULL,
     enable_thinking INTEGER NOT NULL
   );
   CREATE TABLE completion_choices (
     completion_id TEXT NOT NULL REFERENCES completions(id) ON DELETE CASCADE,
     idx INTEGER NOT NULL,
     output_ids BLOB NOT NULL,
     output_logprobs BLOB NOT NULL,
     text TEXT NOT NULL,
     finish_reason TEXT NOT NULL,
     finished_at INTEGER NOT NULL,
     PRIMARY KEY (completion_id, idx)
   );`,
  `CREATE TABLE adapters (
     id TEXT PRIMARY KEY,
     created_at INTEGER NOT NULL,
     rank INTEGER NOT NULL,
     alpha REAL NOT NULL,
     target_modules TEXT NOT NULL,
     current_version INTEGER NOT NULL
   );
   CREATE TABLE adapter_versions (
     adapter_id TEXT NOT NULL REFERENCES adapters(id) ON DELETE CASCADE,
     version INTEGER NOT NULL,
     created_at INTEGER NOT NULL,
     parent_version INTEGER,
     status TEXT NOT NULL,
     reason TEXT,
     metrics_json TEXT,
     job_id TEXT,
     PRIMARY KEY (adapter_id, version)
   );
   CREATE TABLE jobs (
     id TEXT PRIMARY KEY,
     adapter_id TEXT NOT NULL,
     status TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     started_at INTEGER,
     finished_at INTEGER,
     idempotency_key TEXT UNIQUE,
     options_json TEXT NOT NULL,
     error TEXT,
     result_json TEXT
   );
   CREATE INDEX jobs_by_status ON jobs(status, created_at);
   CREATE TABLE feedback_items (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
     completion_id TEXT,
     choice_index INTEGER NOT NULL DEFAULT 0,
     messages_json TEXT,
     response_text TEXT,
     feedback TEXT NOT NULL,
     created_at INTEGER NOT NULL
   );`,
  `ALTER TABLE completions ADD COLUMN tenant TEXT;
   CREATE INDEX completions_by_time ON completions(created_at);
   CREATE INDEX completions_by_tenant ON completions(tenant);
   CREATE INDEX feedback_by_job ON feedback_items(job_id);
   CREATE TABLE api_keys (
     id TEXT PRIMARY KEY,
     hash TEXT NOT NULL UNIQUE,
     tenant TEXT NOT NULL,
     role TEXT NOT NULL CHECK (role IN ('user', 'admin')),
     name TEXT,
     created_at INTEGER NOT NULL,
     revoked_at INTEGER
   );`,
  `CREATE TABLE eval_runs (
     id TEXT PRIMARY KEY,
     created_at INTEGER NOT NULL,
     tenant TEXT,
     summary_json TEXT NOT NULL
   );`,
  `ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;`,
  // Feedback given as prompt + response text finds the stored reply of that adapter.
  `CREATE INDEX completions_by_adapter ON completions(adapter, created_at);`,
];

/** Opens (creating when needed) the database at `file`, or in memory for ':memory:'. */
export function openDb(file: string): Db {
  if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const db = new Database(file);
  // Prompts, replies and key hashes live here: readable by the server's user only, also when an
  // older version created the file with the default mode.
  if (file !== ':memory:') chmodSync(file, 0o600);
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;');
  const version = prepare(db, 'PRAGMA user_version').pluck().get() as number;
  for (let v = version; v < MIGRATIONS.length; v++) {
    inTransaction(db, () => db.exec(`${MIGRATIONS[v]!}\nPRAGMA user_version = ${v + 1};`));
  }
  return db;
}
