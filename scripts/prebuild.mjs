// `npm run build:prebuilds` (and `npm pack`, through prepack): turns this machine's cmake-js build of the
// addons (build/Release/claas.node, and claas_cuda.node when a CUDA toolkit built it) into a prebuilt
// set under prebuilds/<platform>-<arch>/ that loads on a machine without OpenBLAS or a compiler: the
// shared libraries the addons need beyond glibc and the C++ runtime are copied next to them and
// every file's RUNPATH is set to $ORIGIN, so the loader finds them there (the way sharp ships libvips).
// Needs patchelf (Debian: apt-get install patchelf). Plain JavaScript, like scripts/install.mjs.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const key = `${process.platform}-${process.arch}`;
const out = join(root, 'prebuilds', key);
const release = join(root, 'build', 'Release');
const log = (line) => process.stderr.write(`prebuild: ${line}\n`);

// Present on every glibc Linux that can run Node.js (Node itself links them): bundling them would
// tie the addon to this machine's glibc instead of loosening anything.
const SYSTEM = /^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s)\.so/;

function fail(message) {
  log(message);
  process.exit(1);
}

function run(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', ...options });
  if (r.error) fail(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) fail(`${cmd} ${args.join(' ')} exited with ${r.status}:\n${r.stderr ?? ''}`);
  return r.stdout ?? '';
}

/** ldd's resolved dependencies of a file: soname → path (or null when not found). */
function deps(file) {
  const map = new Map();
  for (const line of run('ldd', [file]).split('\n')) {
    const m = line.match(/^\s*(\S+)\s+=>\s+(\S+|not found)/);
    if (m) map.set(m[1], m[2] === 'not found' ? null : m[2]);
  }
  return map;
}

function nvccPresent() {
  return spawnSync('nvcc', ['--version']).status === 0 || existsSync('/usr/local/cuda/bin/nvcc');
}

if (process.platform !== 'linux') fail(`prebuilds are made on Linux only (this is ${process.platform}); elsewhere the package builds from source`);
if (spawnSync('patchelf', ['--version']).status !== 0) fail('patchelf is not installed (Debian/Ubuntu: apt-get install patchelf)');

if (!process.argv.includes('--no-compile')) {
  // Incremental: a tree that `npm ci` already built compiles nothing here.
  const cmakeJs = join(dirname(createRequire(import.meta.url).resolve('cmake-js/package.json')), 'bin', 'cmake-js');
  log('cmake-js build --out build');
  const r = spawnSync(process.execPath, [cmakeJs, 'build', '--out', 'build'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) fail(`the native build failed (cmake-js exited with ${r.status})`);
}

const addons = ['claas.node', 'claas_cuda.node'].filter((f) => existsSync(join(release, f)));
if (!addons.includes('claas.node')) fail(`${join(release, 'claas.node')} is missing: run npm run build:native first`);
if (nvccPresent() && !addons.includes('claas_cuda.node')) fail('a CUDA toolkit is present but build/Release/claas_cuda.node was not built');
if (addons.includes('claas_cuda.node') && statSync(join(release, 'claas_cuda.node')).mtimeMs < statSync(join(release, 'claas.node')).mtimeMs - 3_600_000) {
  log('note: claas_cuda.node is more than an hour older than claas.node (a build without the CUDA toolkit since?)');
}

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

const bundled = new Map();
for (const addon of addons) {
  for (const [soname, path] of deps(join(release, addon))) {
    if (SYSTEM.test(soname)) continue;
    if (path === null) fail(`${addon} needs ${soname}, which this machine does not have`);
    bundled.set(soname, path);
  }
}

for (const file of [...addons.map((a) => [a, join(release, a)]), ...bundled]) {
  const [name, from] = file;
  const to = join(out, name);
  copyFileSync(realpathSync(from), to);
  chmodSync(to, 0o755);
  run('patchelf', ['--set-rpath', '$ORIGIN', to]);
}

// Every non-system dependency must now resolve inside prebuilds/<key>, and the addon must load.
for (const addon of addons) {
  for (const [soname, path] of deps(join(out, addon))) {
    if (SYSTEM.test(soname)) continue;
    if (path === null || dirname(realpathSync(path)) !== realpathSync(out)) fail(`${addon} resolves ${soname} to ${path ?? 'nothing'}, not to ${out}`);
  }
}
execFileSync(process.execPath, ['-e', `const m = require(${JSON.stringify(join(out, 'claas.node'))}); if (typeof m.loadModel !== 'function') process.exit(1)`]);

const size = readdirSync(out).reduce((s, f) => s + statSync(join(out, f)).size, 0);
log(`${basename(out)}: ${readdirSync(out).sort().join(', ')} (${(size / 1e6).toFixed(1)} MB)`);
