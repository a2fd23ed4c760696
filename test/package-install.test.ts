// The npm package as a user gets it: `npm pack` (prepack compiles the TypeScript and bundles the
// prebuilt engine), the tarball holds no tests, benches or fixtures, and it installs into an empty
// folder on a machine where cmake fails (a fake cmake that exits 1 is first on PATH), without the
// optional webgpu package, with no compile of the engine, and `npx claas serve` answers GET
// /v1/models with the toy model. Needs the npm registry for the package's dependencies: skipped when
// `npm ping` fails, except with CI set, where that is a failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from '../src/model/random-model.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

function registryReachable(): boolean {
  return spawnSync(npm, ['ping'], { encoding: 'utf8', timeout: 30_000 }).status === 0;
}

const skip = process.env.CI || registryReachable() ? false : 'the npm registry is not reachable (npm ping failed); the install needs it for the dependencies';

function sh(cmd: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeout?: number }): { stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, timeout: options.timeout ?? 600_000, cwd: options.cwd, env: options.env ?? process.env });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`}):\n${(r.stdout ?? '').slice(-4000)}\n${(r.stderr ?? '').slice(-4000)}`);
  return { stdout: r.stdout, stderr: r.stderr };
}

function duBytes(dir: string): number {
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) total += duBytes(p);
    else if (e.isFile()) total += statSync(p).size;
  }
  return total;
}

test('npm pack → npm install in an empty folder with a broken cmake → npx claas serve answers', { skip, timeout: 15 * 60_000 }, async (t) => {
  if (process.env.CI) assert.ok(registryReachable(), 'CI is set but the npm registry is not reachable (npm ping failed)');
  const work = tempDir('claas-pack-');
  // The installed folder is over 100 MB.
  t.after(() => rmSync(work, { recursive: true, force: true }));
  // prepack's own output (tsc, the prebuild) comes first on stdout; the JSON report is the rest.
  const packed = sh(npm, ['pack', '--json', '--pack-destination', work], { cwd: root }).stdout;
  const info = JSON.parse(packed.slice(packed.search(/^\[\s*\{/m))) as { filename: string; size: number; unpackedSize: number; files: { path: string }[] }[];
  const tarball = join(work, info[0]!.filename);
  const paths = info[0]!.files.map((f) => f.path);
  t.diagnostic(`tarball ${(info[0]!.size / 1e6).toFixed(1)} MB, unpacked ${(info[0]!.unpackedSize / 1e6).toFixed(1)} MB, ${paths.length} files`);

  await t.test('the tarball ships the engine, the toy model and the plugin, and no tests, benches or fixtures', () => {
    for (const p of ['dist/src/cli.js', 'prebuilds/linux-x64/claas.node', 'prebuilds/linux-x64/libopenblas.so.0', 'scripts/install.mjs', 'CMakeLists.txt', 'native/sources.json', 'models/toy/model.safetensors', 'models/toy/config.json', 'models/toy/training_profile.json', 'plugins/openclaw/openclaw.plugin.json', 'kernels/wgsl/linear.wgsl']) {
      assert.ok(paths.includes(p), `${p} is in the tarball`);
    }
    const unwanted = paths.filter((p) => /^(test|bench|dist\/test|dist\/bench|\.ci|deploy|build|test-artifacts|models\/toy\/\.data)\//.test(p) || p === 'models/toy/train.py' || p.endsWith('.map') || p.endsWith('.d.ts'));
    assert.deepEqual(unwanted, [], 'nothing for development only');
  });

  const bin = join(work, 'bin');
  mkdirSync(bin);
  writeFileSync(join(bin, 'cmake'), '#!/bin/sh\necho "fake cmake: this machine cannot compile" >&2\nexit 1\n');
  chmodSync(join(bin, 'cmake'), 0o755);
  const env = { ...process.env, PATH: `${bin}:${process.env.PATH}` };
  assert.notEqual(spawnSync('cmake', ['--version'], { env }).status, 0, 'the fake cmake fails');

  const app = join(work, 'app');
  mkdirSync(app);
  // As a user's project on npm 11 would: approve the two install scripts (ours picks the engine).
  writeFileSync(join(app, 'package.json'), '{ "name": "app", "version": "1.0.0", "private": true, "allowScripts": { "claas": true, "better-sqlite3": true } }\n');
  const started = Date.now();
  const installed = sh(npm, ['install', '--no-audit', '--no-fund', '--omit=optional', '--foreground-scripts', tarball], { cwd: app, env });
  const log = `${installed.stdout}\n${installed.stderr}`;
  const pkg = join(app, 'node_modules', 'claas');
  t.diagnostic(`npm install took ${((Date.now() - started) / 1000).toFixed(0)} s; node_modules ${(duBytes(join(app, 'node_modules')) / 1e6).toFixed(1)} MB, of which claas ${(duBytes(pkg) / 1e6).toFixed(1)} MB`);

  await t.test('the install used the prebuilt engine and compiled nothing; webgpu was left out', () => {
    assert.match(log, /using the prebuilt native engine \(prebuilds\/linux-x64\)/);
    assert.ok(!existsSync(join(pkg, 'build')), 'no build/ folder: the source build did not run');
    assert.ok(!existsSync(join(app, 'node_modules', 'webgpu')), 'the optional webgpu package is not installed');
  });

  await t.test('npx claas serve answers GET /v1/models with the toy model', async () => {
    const data = join(work, 'data');
    const proc = spawn('npx', ['--no-install', 'claas', 'serve', '--port', '0', '--data', data], { cwd: app, env: { ...env, LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let out = '';
    try {
      const address = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`claas serve did not start within 120 s:\n${out}`)), 120_000);
        const onData = (d: Buffer) => {
          out += d;
          const m = out.match(/serving "[^"]+" at (\S+)\/v1/);
          if (m) {
            clearTimeout(timer);
            resolve(m[1]!);
          }
        };
        proc.stdout.on('data', onData);
        proc.stderr.on('data', onData);
        proc.on('exit', (code) => reject(new Error(`claas serve exited early (${code}):\n${out}`)));
      });
      const res = await fetch(`${address}/v1/models`);
      assert.equal(res.status, 200);
      const body = (await res.json()) as { data: { id: string; training?: { source?: string } }[] };
      assert.equal(body.data[0]!.id, 'toy', 'the default model is the toy shipped in the package');
      assert.doesNotMatch(out, /webgpu skipped: (?!the optional webgpu package)/, 'a missing webgpu is reported as not installed, not as a crash');
    } finally {
      if (proc.pid !== undefined && proc.exitCode === null) process.kill(-proc.pid, 'SIGTERM');
    }
  });
});
