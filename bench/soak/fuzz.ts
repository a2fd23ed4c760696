// Bad input at volume: requests for every route of the server's own OpenAPI document, with bodies,
// path parameters and query strings generated from the route's schema and then mutated (wrong types,
// missing or extra fields, extremes, garbage). No request may get a 5xx; the server stays up.
import { join } from 'node:path';
import { rng } from '../../src/model/random-model.js';
import { createKey, sleep, startServer } from './server.js';

interface Schema {
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  enum?: unknown[];
  const?: unknown;
  anyOf?: Schema[];
  oneOf?: Schema[];
  then?: Schema;
  else?: Schema;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
}

interface Operation {
  method: string;
  path: string;
  body?: Schema;
  query?: Schema;
  params: string[];
}

export interface FuzzResult {
  fuzz_requests: number;
  fuzz_routes: number;
  fuzz_5xx: number;
  fuzz_timeouts: number;
  fuzz_status: Record<string, number>;
  alive_after: boolean;
}


export async function runFuzz(dir: string, count: number, seed = 7): Promise<FuzzResult> {
  // An admin key reaches every route (keys the fuzzer creates do not lock it out); a few requests go without.
  const admin = createKey(join(dir, 'fuzz'), 'ops', 'admin');
  const auth = { authorization: `Bearer ${admin}` };
  const server = await startServer(join(dir, 'fuzz'), ['--max-tokens', '4', '--rate-chat', '0', '--rate-feedback', '0', '--batch-size', '8', '--batch-wait-ms', '200']);
  const random = rng(seed);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(random() * a.length)]!;
  const chance = (p: number) => random() < p;
  const words = ['random-tiny', 'fz/a', 'fz/b', 'hello', '', 'x'.repeat(5000), '../../etc/passwd', 'fz/../x', '0', '-1', 'null', '%00', 'v0001', 'ü🙂'];
  const garbage = (): unknown => pick([null, true, false, 0, -1, 1e308, -1e-308, 2 ** 53, 3.5, '', 'x', 'x'.repeat(10_000), [], [1, 'a', null], {}, { a: { b: [] } }]);

  const gen = (s: Schema | undefined, depth = 0): unknown => {
    if (!s || depth > 5) return garbage();
    if (chance(0.05)) return garbage();
    if (s.const !== undefined) return s.const;
    if (s.enum) return pick(s.enum);
    // A shape decided by if/then/else: generate from one of the branches.
    if (s.then || s.else) return gen(pick([s.then, s.else].filter((x): x is Schema => x !== undefined)), depth + 1);
    const alts = s.anyOf ?? s.oneOf;
    if (alts) return gen(pick(alts), depth + 1);
    const type = Array.isArray(s.type) ? pick(s.type) : s.type;
    switch (type) {
      case 'object': {
        const out: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(s.properties ?? {})) if ((s.required ?? []).includes(k) ? !chance(0.05) : chance(0.5)) out[k] = gen(v, depth + 1);
        if (chance(0.05)) out[`extra_${Math.floor(random() * 9)}`] = garbage();
        return out;
      }
      case 'array':
        return Array.from({ length: Math.floor(random() * 4) }, () => gen(s.items, depth + 1));
      case 'integer': {
        const lo = s.minimum ?? -5;
        const hi = Math.min(s.maximum ?? 50, lo + 100);
        return chance(0.1) ? pick([lo - 1, hi + 1, 2 ** 31, -(2 ** 31)]) : lo + Math.floor(random() * (hi - lo + 1));
      }
      case 'number':
        return chance(0.1) ? pick([-1, 1e9, 0]) : (s.minimum ?? 0) + random() * ((s.maximum ?? 2) - (s.minimum ?? 0));
      case 'boolean':
        return chance(0.5);
      case 'null':
        return null;
      case 'string':
        return s.pattern && chance(0.5) ? pick(['fz', 'a1', '1', '123456789012', 'fz-b']) : pick(words);
      default:
        return garbage();
    }
  };

  try {
    const doc = (await (await fetch(`${server.url}/docs/json`)).json()) as { paths: Record<string, Record<string, { requestBody?: { content?: Record<string, { schema: Schema }> }; parameters?: { in: string; name: string; schema: Schema }[] }>> };
    const ops: Operation[] = [];
    for (const [path, methods] of Object.entries(doc.paths)) {
      if (path.startsWith('/docs')) continue;
      for (const [method, op] of Object.entries(methods)) {
        const query: Schema = { type: 'object', properties: {} };
        for (const p of op.parameters ?? []) if (p.in === 'query') query.properties![p.name] = p.schema;
        ops.push({ method: method.toUpperCase(), path, body: op.requestBody?.content?.['application/json']?.schema, query, params: (op.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name) });
      }
    }
    // Some real state for the routes to find.
    await fetch(`${server.url}/v1/lora/init`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ lora_id: 'fz/a', rank: 2 }) });

    const status: Record<string, number> = {};
    let sent = 0;
    let timeouts = 0;
    const one = async () => {
      const op = pick(ops);
      let path = op.path;
      for (const p of op.params) path = path.replace(`{${p}}`, encodeURIComponent(String(pick(['fz', 'a', 'b', 'nope', '..', 'x'.repeat(300), '1', 'job-1', '000000000000']))));
      path = path.replace('{*}', pick(['random-tiny', 'fz/a', 'nope']));
      const q = gen(op.query) as Record<string, unknown> | null;
      const qs = q && typeof q === 'object' ? new URLSearchParams(Object.entries(q).map(([k, v]) => [k, String(v)])).toString() : '';
      let body: string | undefined;
      let type = 'application/json';
      if (op.method !== 'GET' && op.method !== 'DELETE') {
        if (chance(0.05)) body = pick(['{', '[]', 'null', '{"model":', '\u0000', 'x'.repeat(1000)]);
        else if (op.body) body = JSON.stringify(gen(op.body));
        else if (chance(0.3)) {
          type = 'application/gzip';
          body = 'not a gzip';
        }
        if (chance(0.02)) type = pick(['text/plain', 'application/xml']);
      }
      try {
        const res = await fetch(`${server.url}${path}${qs ? `?${qs}` : ''}`, { method: op.method, headers: { ...(chance(0.05) ? {} : auth), ...(body === undefined ? {} : { 'content-type': type }) }, body, signal: AbortSignal.timeout(15_000) });
        await res.arrayBuffer();
        status[res.status] = (status[res.status] ?? 0) + 1;
      } catch {
        timeouts++;
      }
      sent++;
      // A fuzzed /sleep would hold generations until a fuzzed /wake_up: wake the server regularly.
      if (sent % 50 === 0) await fetch(`${server.url}/wake_up`, { method: 'POST', headers: auth });
    };
    const workers = Array.from({ length: 16 }, async () => {
      while (sent < count) await one();
    });
    await Promise.all(workers);
    await fetch(`${server.url}/wake_up`, { method: 'POST', headers: auth });
    await sleep(100);
    const alive = (await fetch(`${server.url}/healthz`)).ok && (await fetch(`${server.url}/v1/chat/completions`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ model: 'random-tiny', messages: [{ role: 'user', content: 'still there?' }], max_tokens: 2 }) })).ok;
    const fiveXX = Object.entries(status).filter(([s]) => Number(s) >= 500).reduce((a, [, n]) => a + n, 0);
    return { fuzz_requests: sent, fuzz_routes: ops.length, fuzz_5xx: fiveXX, fuzz_timeouts: timeouts, fuzz_status: status, alive_after: alive };
  } finally {
    await server.stop();
  }
}
