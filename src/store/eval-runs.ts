// Eval runs: the summaries `claas eval` posts, per tenant, for the dashboard. Each tenant keeps its
// newest `keep`, so one tenant's posts never push out another's.
import { randomUUID } from 'node:crypto';
import { DIALECT, type SqlDatabase } from './sql.js';

export interface EvalRun {
  id: string;
  createdAt: number;
  tenant: string | null;
  summary: unknown;
}

export interface EvalRunStore {
  /** Stores a run under `tenant` (null: the local operator) and drops that tenant's runs beyond the newest `keep`; returns its id. */
  add(tenant: string | null, summary: unknown, keep: number): Promise<string>;
  /** The newest `limit` runs, newest first: every tenant's, or one tenant's. */
  list(scope: 'all' | { tenant: string | null }, limit: number): Promise<EvalRun[]>;
}

interface RunRow {
  id: string;
  created_at: number;
  tenant: string | null;
  summary_json: string;
}

export class SqlEvalRunStore implements EvalRunStore {
  private readonly newest: string;

  constructor(private readonly db: SqlDatabase) {
    this.newest = `ORDER BY created_at DESC, ${DIALECT[db.dialect].insertOrder} DESC`;
  }

  async add(tenant: string | null, summary: unknown, keep: number): Promise<string> {
    const id = `eval-${randomUUID()}`;
    await this.db.transaction(async (tx) => {
      await tx.run('INSERT INTO eval_runs (id, created_at, tenant, summary_json) VALUES (?, ?, ?, ?)', [id, Date.now(), tenant, JSON.stringify(summary)]);
      await tx.run(`DELETE FROM eval_runs WHERE tenant IS NOT DISTINCT FROM ? AND id NOT IN (SELECT id FROM eval_runs WHERE tenant IS NOT DISTINCT FROM ? ${this.newest} LIMIT ?)`, [tenant, tenant, keep]);
    });
    return id;
  }

  async list(scope: 'all' | { tenant: string | null }, limit: number): Promise<EvalRun[]> {
    const rows =
      scope === 'all'
        ? await this.db.query<RunRow>(`SELECT * FROM eval_runs ${this.newest} LIMIT ?`, [limit])
        : await this.db.query<RunRow>(`SELECT * FROM eval_runs WHERE tenant IS NOT DISTINCT FROM ? ${this.newest} LIMIT ?`, [scope.tenant, limit]);
    return rows.map((r) => ({ id: r.id, createdAt: r.created_at, tenant: r.tenant ?? null, summary: JSON.parse(r.summary_json) as unknown }));
  }
}
