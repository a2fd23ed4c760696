// The package's `install` step: use the prebuilt engine in prebuilds/<platform>-<arch>/ when it is
// there and loads on this machine, otherwise compile the addon from source with cmake-js (as a git
// clone always does, since prebuilds/ is not committed). CLAAS_BUILD_FROM_SOURCE=1 forces the source
// build. Plain JavaScript: it runs before any TypeScript is compiled.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const key = `${process.platform}-${process.arch}`;
const prebuilt = join(root, 'prebuilds', key, 'claas.node');
const log = (line) => process.stderr.write(`claas: ${line}\n`);

/**
 * Loads the addon in a child process: a binary built against a newer glibc or libstdc++ fails in
 * dlopen, and that must not take this process down before it can fall back.
 */
function loads(file) {
  const r = spawnSync(process.execPath, ['-e', `const m = require(${JSON.stringify(file)}); if (typeof m.loadModel !== 'function') throw new Error('not the claas addon')`], { encoding: 'utf8' });
  return r.status === 0 ? null : (r.stderr || r.error?.message || `exit ${r.status}`).trim().split('\n').find((l) => /Error|error/.test(l)) ?? 'failed to load';
}

function buildFromSource() {
  let cmakeJs;
  try {
    cmakeJs = join(dirname(createRequire(import.meta.url).resolve('cmake-js/package.json')), 'bin', 'cmake-js');
  } catch {
    log('cmake-js is not installed (it is a dependency of claas; reinstall the package)');
    return 1;
  }
  log(`building the native engine from source (cmake-js compile --out build) for ${key}`);
  const r = spawnSync(process.execPath, [cmakeJs, 'compile', '--out', 'build'], { cwd: root, stdio: 'inherit' });
  if (r.status === 0) return 0;
  log(
    [
      `the source build of the native engine failed (${r.error ? r.error.message : `cmake-js exited with ${r.status}`}).`,
      `There is no prebuilt engine for ${key} that loads here${existsSync(prebuilt) ? ` (${prebuilt} did not load)` : ''}, so it must be compiled:`,
      'install a C++ toolchain, CMake >= 3.19 and OpenBLAS (Debian/Ubuntu: apt-get install cmake g++ make libopenblas-dev libopenblas-openmp-dev)',
      'and reinstall. The messages above say which step failed.',
    ].join('\n  '),
  );
  return 1;
}

function main() {
  if (process.env.CLAAS_BUILD_FROM_SOURCE === '1') {
    log('CLAAS_BUILD_FROM_SOURCE=1: skipping the prebuilt engine');
    return buildFromSource();
  }
  if (existsSync(prebuilt)) {
    const why = loads(prebuilt);
    if (why === null) {
      log(`using the prebuilt native engine (prebuilds/${key}); no compiler needed`);
      return 0;
    }
    log(`the prebuilt engine in prebuilds/${key} does not load here (${why}); falling back to a source build`);
  }
  return buildFromSource();
}

process.exitCode = main();
