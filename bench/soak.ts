// npm run soak: load, faults and bad input against real `claas serve` processes on loopback. Each
// part starts its servers and stops them; all are bounded in count and time. Knobs (environment):
// SOAK_SECONDS (120) and SOAK_CONNECTIONS (200) for the load, SOAK_KILLS (20), SOAK_FUZZ (10000),
// SOAK_ADVERSARY (3000: requests of the cross-tenant attacker), SOAK_PARTS (which parts, default
// load,faults,fuzz,adversary). The last line is the summary as JSON.
import { tempDir } from '../src/model/random-model.js';
import { runFaults, type FaultResult } from './soak/faults.js';
import { runAdversary, type AdversaryResult } from './soak/adversary.js';
import { runFuzz, type FuzzResult } from './soak/fuzz.js';
import { runLoad, type LoadResult } from './soak/load.js';

const env = (name: string, fallback: number) => {
  const v = Number(process.env[name] ?? fallback);
  if (!Number.isFinite(v) || v < 0) throw new Error(`${name} must be a number >= 0`);
  return v;
};

const seconds = env('SOAK_SECONDS', 120);
const connections = env('SOAK_CONNECTIONS', 200);
const kills = env('SOAK_KILLS', 20);
const fuzz = env('SOAK_FUZZ', 10_000);
const adversary = env('SOAK_ADVERSARY', 3000);
const parts = new Set((process.env.SOAK_PARTS ?? 'load,faults,fuzz,adversary').split(',').map((p) => p.trim()));
for (const p of parts) if (!['load', 'faults', 'fuzz', 'adversary'].includes(p)) throw new Error(`SOAK_PARTS: unknown part "${p}" (load, faults, fuzz, adversary)`);
const dir = tempDir();
const t0 = performance.now();

let load: LoadResult | undefined;
let faults: FaultResult | undefined;
let fz: FuzzResult | undefined;
let adv: AdversaryResult | undefined;
if (parts.has('load')) {
  console.log(`load: ${connections} concurrent chat streams for ${seconds} s, one feedback per second …`);
  load = await runLoad(dir, seconds, connections);
  console.log(JSON.stringify(load));
}
if (parts.has('faults')) {
  console.log(`faults: ${kills} SIGKILLs with restarts …`);
  faults = await runFaults(dir, kills);
  console.log(JSON.stringify(faults));
}
if (parts.has('fuzz')) {
  console.log(`bad input: ${fuzz} fuzzed requests over every route …`);
  fz = await runFuzz(dir, fuzz);
  console.log(JSON.stringify(fz));
}
if (parts.has('adversary')) {
  console.log(`adversary: ${adversary} requests from tenant bob against tenant alice, while alice chats …`);
  adv = await runAdversary(dir, adversary);
  console.log(JSON.stringify(adv));
}

console.log(
  JSON.stringify({
    requests: (load?.requests ?? 0) + (fz?.fuzz_requests ?? 0) + (adv?.adversary_requests ?? 0),
    errors_5xx: (load?.errors_5xx ?? 0) + (fz?.fuzz_5xx ?? 0) + (adv?.adversary_5xx ?? 0),
    p50_ms: load?.p50_ms,
    p99_ms: load?.p99_ms,
    load_timeouts: load?.timeouts,
    updates_applied: load?.updates_applied,
    kills: faults?.kills,
    feedback_acked: load || faults ? (load?.feedback_acked ?? 0) + (faults?.feedback_acked ?? 0) : undefined,
    feedback_lost: faults?.feedback_lost,
    feedback_duplicated: faults?.feedback_duplicated,
    jobs_trained_twice: faults?.jobs_trained_twice,
    versions_torn: faults?.versions_torn,
    fuzz_requests: fz?.fuzz_requests,
    alive_after_fuzz: fz?.alive_after,
    adversary_requests: adv?.adversary_requests,
    cross_tenant_effects: adv?.cross_tenant_effects.length,
    bystander_idle_p99_ms: adv?.bystander_idle_p99_ms,
    bystander_flood_p99_ms: adv?.bystander_flood_p99_ms,
    bystander_p99_ratio: adv?.bystander_p99_ratio,
    seconds: Math.round((performance.now() - t0) / 1000),
  }),
);
