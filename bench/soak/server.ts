// Starts `claas serve` as a child process on loopback for the soak runs, and stops or kills it.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

export interface ServerProcess {
  url: string;
  proc: ChildProcess;
  /** SIGTERM and wait for the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait for the process to be gone. */
  kill(): Promise<void>;
  log(): string;
}

export async function startServer(data: string, args: string[] = []): Promise<ServerProcess> {
  const proc = spawn(process.execPath, [cli, 'serve', '--model', 'random', '--data', data, '--port', '0', '--threads', '2', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn' } });
  let out = '';
  proc.stderr!.on('data', (d) => (out = (out + d).slice(-20_000)));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    proc.stdout!.on('data', (d: Buffer) => {
      out = (out + d).slice(-20_000);
      const m = out.match(/serving "[^"]+" at (\S+)\/v1/);
      if (m) resolve(m[1]!);
    });
    void exited.then((code) => reject(new Error(`claas serve exited (${code}) before listening:\n${out}`)));
  });
  return {
    url,
    proc,
    log: () => out,
    stop: async () => {
      proc.kill('SIGTERM');
      return exited;
    },
    kill: async () => {
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

export async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  const text = await res.text();
  try {
    return { status: res.status, json: JSON.parse(text) as Record<string, unknown> };
  } catch {
    return { status: res.status, json: { text } };
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Creates an API key in a state directory (before its server starts) and returns it. */
export function createKey(data: string, tenant: string, role: 'user' | 'admin'): string {
  const r = spawnSync(process.execPath, [cli, 'keys', 'create', '--tenant', tenant, '--role', role, '--data', data], { encoding: 'utf8' });
  const key = r.stdout.match(/sk-claas-\S+/)?.[0];
  if (r.status !== 0 || !key) throw new Error(`could not create a key: ${r.stderr}`);
  return key;
}
