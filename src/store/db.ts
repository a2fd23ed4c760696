// The state database: SQLite in WAL mode, schema created and migrated on open.
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

export type Db = Database.Database;

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
];

/** Opens (creating when needed) the database at `file`, or in memory for ':memory:'. */
export function openDb(file: string): Db {
  if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  const version = db.pragma('user_version', { simple: true }) as number;
  for (let v = version; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
  return db;
}
