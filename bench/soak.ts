// npm run soak: load, faults and bad input against real `claas serve` processes on loopback. Each
// part starts its servers and stops them; all are bounded in count and time. Knobs (environment):
// SOAK_SECONDS (120) and SOAK_CONNECTIONS (200) for the load, SOAK_KILLS (20), SOAK_FUZZ (10000).
// The last line is the summary as JSON.
import { tempDir } from '../src/model/random-model.js';
import { runFaults } from './soak/faults.js';
import { runFuzz } from './soak/fuzz.js';
import { runLoad } from './soak/load.js';

const env = (name: string, fallback: number) => {
  const v = Number(process.env[name] ?? fallback);
  if (!Number.isFinite(v) || v < 0) throw new Error(`${name} must be a number >= 0`);
  return v;
};

const seconds = env('SOAK_SECONDS', 120);
const connections = env('SOAK_CONNECTIONS', 200);
const kills = env('SOAK_KILLS', 20);
const fuzz = env('SOAK_FUZZ', 10_000);
const dir = tempDir();
const t0 = performance.now();

console.log(`load: ${connections} concurrent chat streams for ${seconds} s, one feedback per second …`);
const load = await runLoad(dir, seconds, connections);
console.log(JSON.stringify(load));
console.log(`faults: ${kills} SIGKILLs with restarts …`);
const faults = await runFaults(dir, kills);
console.log(JSON.stringify(faults));
console.log(`bad input: ${fuzz} fuzzed requests over every route …`);
const fz = await runFuzz(dir, fuzz);
console.log(JSON.stringify(fz));

console.log(
  JSON.stringify({
    requests: load.requests + fz.fuzz_requests,
    errors_5xx: load.errors_5xx + fz.fuzz_5xx,
    p50_ms: load.p50_ms,
    p99_ms: load.p99_ms,
    load_timeouts: load.timeouts,
    updates_applied: load.updates_applied,
    kills: faults.kills,
    feedback_acked: load.feedback_acked + faults.feedback_acked,
    feedback_lost: faults.feedback_lost,
    feedback_duplicated: faults.feedback_duplicated,
    jobs_trained_twice: faults.jobs_trained_twice,
    versions_torn: faults.versions_torn,
    fuzz_requests: fz.fuzz_requests,
    alive_after_fuzz: fz.alive_after,
    seconds: Math.round((performance.now() - t0) / 1000),
  }),
);
