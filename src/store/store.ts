// The server's state, one store per concern over one SQL database, and the one place that picks the
// database from `--database`: a postgres:// URL, or a SQLite file (by default <data>/claas.db).
import { join, resolve } from 'node:path';
import { ClaasError } from '../errors.js';
import { SqlAdapterStore, type AdapterStore } from './adapters.js';
import { SqlApiKeyStore, type ApiKeyStore } from './api-keys.js';
import { SqlCompletionStore, type CompletionStore } from './completions.js';
import { SqlEvalRunStore, type EvalRunStore } from './eval-runs.js';
import { SqlJobStore, type JobStore } from './jobs.js';
import { openPostgres } from './postgres.js';
import type { SqlDatabase } from './sql.js';
import { openSqlite } from './sqlite.js';

export interface Store {
  readonly completions: CompletionStore;
  readonly jobs: JobStore;
  readonly adapters: AdapterStore;
  readonly apiKeys: ApiKeyStore;
  readonly evalRuns: EvalRunStore;
  /** The database under them (checks that look at rows directly read it: tests, the soak). */
  readonly sql: SqlDatabase;
  close(): Promise<void>;
}

/** The database a state directory uses when `--database` is not given. */
export const defaultDatabase = (dataDir: string) => join(dataDir, 'claas.db');

/** Which database `database` names: a URL's scheme says, and anything else is a SQLite file. */
function kindOf(database: string): 'postgres' | 'sqlite' {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(database)?.[1];
  if (scheme === undefined) return 'sqlite';
  if (/^postgres(ql)?$/i.test(scheme)) return 'postgres';
  throw new ClaasError('E_USAGE', `--database must be a SQLite file path or a postgres:// URL (got a ${scheme}:// URL)`);
}

/** Whether other processes can share the database `database` names (Postgres: the cluster roles need it). */
export const isSharedDatabase = (database: string): boolean => kindOf(database) === 'postgres';

/**
 * What `--database` names, for openStore: a postgres:// URL as given, a SQLite file relative to the
 * working directory, or (not given) the SQLite file in the state directory.
 */
export function resolveDatabase(database: string | undefined, dataDir: string): string {
  if (database === undefined) return defaultDatabase(resolve(dataDir));
  if (database.trim() === '') throw new ClaasError('E_USAGE', '--database must be a SQLite file path or a postgres:// URL');
  return kindOf(database) === 'postgres' || database === ':memory:' ? database : resolve(database);
}

/** Opens (creating and migrating as needed) the database `database` names: a postgres:// URL, a SQLite file, or ':memory:'. */
export async function openStore(database: string): Promise<Store> {
  const sql = kindOf(database) === 'postgres' ? await openPostgres(database) : openSqlite(database);
  return {
    completions: new SqlCompletionStore(sql),
    jobs: new SqlJobStore(sql),
    adapters: new SqlAdapterStore(sql),
    apiKeys: new SqlApiKeyStore(sql),
    evalRuns: new SqlEvalRunStore(sql),
    sql,
    close: () => sql.close(),
  };
}
