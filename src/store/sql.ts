// The SQL database under the stores: SQLite (sqlite.ts) or Postgres (postgres.ts) behind one small
// async interface. Statements are written once, with `?` placeholders, in SQL both databases accept;
// the few fragments that differ are in DIALECT, named for what they do.

export type Dialect = 'sqlite' | 'postgres';

/** What a statement's parameters may be; rows come back with the same types (BLOB/BYTEA as Buffer, integers as numbers). */
export type SqlValue = string | number | Buffer | null;

/** Runs statements: the database itself, or one open transaction. */
export interface SqlRunner {
  readonly dialect: Dialect;
  /** Rows of a statement that returns data. */
  query<Row = Record<string, unknown>>(sql: string, params?: readonly SqlValue[]): Promise<Row[]>;
  /** Runs a statement; returns how many rows it changed. */
  run(sql: string, params?: readonly SqlValue[]): Promise<number>;
}

/** An open transaction. */
export interface SqlTransaction extends SqlRunner {
  /**
   * Holds a lock named `name` until the transaction ends: transactions taking the same name run one
   * after the other (SQLite's write transactions already do, whatever the name).
   */
  lock(name: string): Promise<void>;
}

export interface SqlDatabase extends SqlRunner {
  /** Where it is, for messages (a Postgres URL without its password). */
  readonly description: string;
  /**
   * Runs `fn` in one transaction: committed when it resolves, rolled back when it throws. `fn` must
   * use the `tx` it is given (statements on the database itself wait for the transaction to end).
   */
  transaction<T>(fn: (tx: SqlTransaction) => Promise<T>): Promise<T>;
  close(): Promise<void>;
  /**
   * Where other processes share the database (Postgres): calls `onMessage` with each payload sent on
   * `channel` by any process (NOTIFY); resolves to a function that stops listening. Absent where one
   * process owns the database (SQLite).
   */
  listen?(channel: string, onMessage: (payload: string) => void): Promise<() => Promise<void>>;
}

/** The SQL fragments that differ between the databases. */
export const DIALECT: Record<Dialect, { insertOrder: string; jsonIsTrue: (column: string, key: string) => string }> = {
  sqlite: {
    // SQLite numbers rows in insertion order itself; Postgres tables carry an identity column `seq`.
    insertOrder: 'rowid',
    jsonIsTrue: (column, key) => `json_extract(${column}, '$.${key}') = 1`,
  },
  postgres: {
    insertOrder: 'seq',
    jsonIsTrue: (column, key) => `(${column}::jsonb ->> '${key}') = 'true'`,
  },
};

/** Whether `err` is a database's refusal of a duplicate in a unique column. */
export function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === '23505';
}

/** `?, ?, ?` for `n` parameters. */
export const placeholders = (n: number) => Array.from({ length: n }, () => '?').join(', ');
