// `claas serve` or `claas train-worker` as a child process for tests: started with the given
// arguments, resolved once it says it is ready, with everything it printed kept for assertions.
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
export function startServe(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<ServeChild> {
  return startCli(['serve', ...args], /serving "[^"]+" at (\S+)\/v1/, env);
}

/** Starts `claas train-worker <args>` and waits until it takes work (`address` is then its worker name). */
export function startTrainWorker(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<ServeChild> {
  return startCli(['train-worker', ...args], /^training as worker (\S+):/m, env);
}

async function startCli(args: readonly string[], ready: RegExp, env: NodeJS.ProcessEnv): Promise<ServeChild> {
  const proc = spawn(process.execPath, [cli, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn', ...env } });
  proc.stdin.end();
  let out = '';
  proc.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const address = await new Promise<string>((resolve, reject) => {
    proc.stdout.on('data', (d: Buffer) => {
      out += d;
      const m = out.match(ready);
      if (m) resolve(m[1]!);
    });
    void exited.then((code) => reject(new Error(`claas ${args[0]} exited early (${code}):\n${out}`)));
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
