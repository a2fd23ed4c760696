// `claas serve` as a child process for tests: started with the given arguments, resolved once it
// prints the address it serves at, with everything it printed kept for assertions.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const cli = fileURLToPath(new URL('../src/cli.js', import.meta.url));

export interface ServeChild {
  proc: ChildProcessWithoutNullStreams;
  /** http://host:port (without /v1). */
  address: string;
  /** What it printed so far, stdout and stderr. */
  output(): string;
  /** Its exit code once it exits. */
  exited: Promise<number | null>;
  /** SIGTERM, then waits for the exit. */
  stop(): Promise<number | null>;
}

/** Starts `claas serve <args>` and waits for its "serving … at" line (rejects if it exits first). */
export async function startServe(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<ServeChild> {
  const proc = spawn(process.execPath, [cli, 'serve', ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn', ...env } });
  proc.stdin.end();
  let out = '';
  proc.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const address = await new Promise<string>((resolve, reject) => {
    proc.stdout.on('data', (d: Buffer) => {
      out += d;
      const m = out.match(/serving "[^"]+" at (\S+)\/v1/);
      if (m) resolve(m[1]!);
    });
    void exited.then((code) => reject(new Error(`server exited early (${code}):\n${out}`)));
  });
  return {
    proc,
    address,
    output: () => out,
    exited,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      return exited;
    },
  };
}
