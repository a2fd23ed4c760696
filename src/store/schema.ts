// The schema, as numbered migrations for each database. A database records how many it has applied
// (SQLite: PRAGMA user_version; Postgres: the schema_migrations table) and gets the rest on open.
// Migrations are only ever appended: a change to the schema is a new entry in both lists.
//
// The two lists differ in history, not in shape: SQLite's grew one change at a time (and databases
// at every step of it exist), Postgres starts from the shape SQLite reached at its version 7. Column
// types differ where the databases do: BLOB / BYTEA, INTEGER / BIGINT for millisecond times, and
// AUTOINCREMENT / identity columns; Postgres tables that SQLite orders by rowid have a `seq` column.

export const SQLITE_MIGRATIONS: readonly string[] = [
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
  // Leases (jobs.ts): who trains a job and until when, and the version its batch writes.
  `ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
   ALTER TABLE jobs ADD COLUMN lease_until INTEGER;
   ALTER TABLE jobs ADD COLUMN version INTEGER;
   CREATE INDEX jobs_by_adapter ON jobs(adapter_id, status);`,
];

export const POSTGRES_MIGRATIONS: readonly string[] = [
  `CREATE TABLE completions (
     id TEXT PRIMARY KEY,
     created_at BIGINT NOT NULL,
     model TEXT NOT NULL,
     adapter TEXT,
     adapter_version TEXT,
     tenant TEXT,
     request_json TEXT NOT NULL,
     prompt_ids BYTEA NOT NULL,
     enable_thinking INTEGER NOT NULL
   );
   CREATE INDEX completions_by_time ON completions(created_at);
   CREATE INDEX completions_by_tenant ON completions(tenant);
   CREATE INDEX completions_by_adapter ON completions(adapter, created_at);
   CREATE TABLE completion_choices (
     completion_id TEXT NOT NULL REFERENCES completions(id) ON DELETE CASCADE,
     idx INTEGER NOT NULL,
     output_ids BYTEA NOT NULL,
     output_logprobs BYTEA NOT NULL,
     text TEXT NOT NULL,
     finish_reason TEXT NOT NULL,
     finished_at BIGINT NOT NULL,
     PRIMARY KEY (completion_id, idx)
   );
   CREATE TABLE adapters (
     id TEXT PRIMARY KEY,
     created_at BIGINT NOT NULL,
     rank INTEGER NOT NULL,
     alpha DOUBLE PRECISION NOT NULL,
     target_modules TEXT NOT NULL,
     current_version INTEGER NOT NULL
   );
   CREATE TABLE adapter_versions (
     adapter_id TEXT NOT NULL REFERENCES adapters(id) ON DELETE CASCADE,
     version INTEGER NOT NULL,
     created_at BIGINT NOT NULL,
     parent_version INTEGER,
     status TEXT NOT NULL,
     reason TEXT,
     metrics_json TEXT,
     job_id TEXT,
     PRIMARY KEY (adapter_id, version)
   );
   CREATE TABLE jobs (
     seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
     id TEXT PRIMARY KEY,
     adapter_id TEXT NOT NULL,
     status TEXT NOT NULL,
     created_at BIGINT NOT NULL,
     started_at BIGINT,
     finished_at BIGINT,
     idempotency_key TEXT UNIQUE,
     options_json TEXT NOT NULL,
     error TEXT,
     result_json TEXT,
     attempts INTEGER NOT NULL DEFAULT 0
   );
   CREATE INDEX jobs_by_status ON jobs(status, created_at, seq);
   CREATE TABLE feedback_items (
     id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
     job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
     completion_id TEXT,
     choice_index INTEGER NOT NULL DEFAULT 0,
     messages_json TEXT,
     response_text TEXT,
     feedback TEXT NOT NULL,
     created_at BIGINT NOT NULL
   );
   CREATE INDEX feedback_by_job ON feedback_items(job_id);
   CREATE TABLE api_keys (
     seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
     id TEXT PRIMARY KEY,
     hash TEXT NOT NULL UNIQUE,
     tenant TEXT NOT NULL,
     role TEXT NOT NULL CHECK (role IN ('user', 'admin')),
     name TEXT,
     created_at BIGINT NOT NULL,
     revoked_at BIGINT
   );
   CREATE TABLE eval_runs (
     seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
     id TEXT PRIMARY KEY,
     created_at BIGINT NOT NULL,
     tenant TEXT,
     summary_json TEXT NOT NULL
   );`,
  // Leases (jobs.ts): who trains a job and until when, and the version its batch writes.
  `ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
   ALTER TABLE jobs ADD COLUMN lease_until BIGINT;
   ALTER TABLE jobs ADD COLUMN version INTEGER;
   CREATE INDEX jobs_by_adapter ON jobs(adapter_id, status);`,
];
