// A private Postgres server for tests: a new cluster in a temporary folder, listening on a free
// loopback port (and a socket in that folder), trust authentication, durability off (a test's data
// need not survive a power cut). Tests ask it for fresh databases and stop it at the end; a process
// that exits without stopping it stops it on the way out.
//
// initdb and postgres refuse to run as root: as root they run as the `postgres` user (runuser), in a
// folder owned by it.
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';

const run = promisify(execFile);

export interface PostgresServer {
  readonly port: number;
  /** A new, empty database on the server, as a URL (with a password, which trust authentication ignores). */
  createDatabase(): Promise<string>;
  stop(): Promise<void>;
}

/** The folder with initdb and pg_ctl: $CLAAS_PG_BIN, Debian's newest /usr/lib/postgresql/<v>/bin, or pg_config's; null when there is none. */
export function postgresBinDir(): string | null {
  const has = (dir: string) => existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'pg_ctl'));
  if (process.env.CLAAS_PG_BIN) return has(process.env.CLAAS_PG_BIN) ? process.env.CLAAS_PG_BIN : null;
  const debian = '/usr/lib/postgresql';
  if (existsSync(debian)) {
    const versions = readdirSync(debian).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
    for (const v of versions) if (has(join(debian, v, 'bin'))) return join(debian, v, 'bin');
  }
  try {
    const dir = execFileSync('pg_config', ['--bindir'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return has(dir) ? dir : null;
  } catch {
    return null;
  }
}

/**
 * The server programs for a test file, and its skip reason: without them a test skips, except with
 * CI=true, where it runs and fails (CI installs the postgresql package).
 */
export function postgresForTests(): { bin: string | null; skip: string | false } {
  const bin = postgresBinDir();
  return { bin, skip: bin === null && process.env.CI !== 'true' ? 'Postgres server programs (initdb, pg_ctl) are not installed' : false };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Starts a new cluster; throws (with the server's log) when it cannot. */
export async function startPostgres(bin = postgresBinDir()): Promise<PostgresServer> {
  if (!bin) throw new Error('no Postgres server programs (initdb, pg_ctl) found: install the postgresql package, or set CLAAS_PG_BIN');
  const root = process.getuid?.() === 0;
  const dir = mkdtempSync(join(tmpdir(), 'claas-pg-'));
  const data = join(dir, 'data');
  const log = join(dir, 'server.log');
  if (root) {
    const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
    let uid: number, gid: number;
    try {
      [uid, gid] = [id('-u'), id('-g')];
    } catch {
      throw new Error('running as root, and there is no postgres user to run the test server as (the postgresql package creates it)');
    }
    chownSync(dir, uid, gid);
  }
  const as = (program: string, args: string[]) => (root ? run('runuser', ['-u', 'postgres', '--', join(bin, program), ...args]) : run(join(bin, program), args));
  const pgCtlSync = (args: string[]) => (root ? spawnSync('runuser', ['-u', 'postgres', '--', join(bin, 'pg_ctl'), ...args]) : spawnSync(join(bin, 'pg_ctl'), args));

  await as('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-locale', '--no-sync']);
  let port = 0;
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    const options = `-c listen_addresses=127.0.0.1 -p ${port} -c unix_socket_directories=${dir} -c fsync=off -c synchronous_commit=off -c full_page_writes=off`;
    try {
      await as('pg_ctl', ['-D', data, '-l', log, '-w', '-t', '60', '-o', options, 'start']);
      break;
    } catch (err) {
      // Another process may have taken the port between the probe and the start.
      if (attempt === 3) {
        const text = existsSync(log) ? readFileSync(log, 'utf8').slice(-2000) : '';
        rmSync(dir, { recursive: true, force: true });
        throw new Error(`the test Postgres server did not start: ${(err as Error).message}\n${text}`);
      }
    }
  }

  let stopped = false;
  const stopNow = () => {
    if (stopped) return;
    stopped = true;
    pgCtlSync(['-D', data, '-m', 'immediate', '-w', 'stop']);
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', stopNow);

  const admin = `postgres://postgres@127.0.0.1:${port}/postgres`;
  let databases = 0;
  return {
    port,
    async createDatabase() {
      const name = `claas_test_${++databases}`;
      const client = new pg.Client({ connectionString: admin });
      await client.connect();
      try {
        await client.query(`CREATE DATABASE ${name}`);
      } finally {
        await client.end();
      }
      return `postgres://postgres:not-checked@127.0.0.1:${port}/${name}`;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      process.removeListener('exit', stopNow);
      await as('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']).catch(() => pgCtlSync(['-D', data, '-m', 'immediate', '-w', 'stop']));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
