// The Kubernetes manifests in deploy/k8s, read as files (no cluster): every document is a named
// object, no two objects in the folder `kubectl apply -f deploy/k8s/` applies share a name, the
// claas containers use only flags `claas help` lists, with every $(VAR) defined and every Secret or
// ConfigMap key they read present, probes reach the port the process listens on, the API runs
// serving-only on Postgres, the trainer asks for a GPU, and the Service reaches the API's port.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

const k8s = fileURLToPath(new URL('../../deploy/k8s', import.meta.url));
const cli = fileURLToPath(new URL('../src/cli.js', import.meta.url));

type Port = number | string;
interface Probe { httpGet?: { path: string; port: Port } }
interface EnvVar { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string }; configMapKeyRef?: { name: string; key: string }; fieldRef?: { fieldPath: string } } }
interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: unknown[];
  env?: EnvVar[];
  ports?: { name?: string; containerPort: number }[];
  startupProbe?: Probe;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  resources?: { limits?: Record<string, unknown> };
}
interface Manifest {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string };
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  spec?: { selector?: Record<string, string>; ports?: { port: number; targetPort: Port }[]; template?: { metadata: { labels: Record<string, string> }; spec: { containers: Container[]; initContainers?: Container[] } } };
}
interface Doc { file: string; m: Manifest }

const files = readdirSync(k8s, { recursive: true, encoding: 'utf8' }).filter((f) => /\.ya?ml$/.test(f)).sort();
const docs: Doc[] = files.flatMap((file) =>
  parseAllDocuments(readFileSync(join(k8s, file), 'utf8')).map((d) => {
    assert.deepEqual(d.errors, [], `${file} parses`);
    return { file, m: d.toJS() as Manifest };
  }),
);
// What `kubectl apply -f deploy/k8s/` applies (not recursive); alternatives/ holds replacements.
const applied = docs.filter((d) => dirname(d.file) === '.');
const containersOf = (m: Manifest) => [...(m.spec?.template?.spec.initContainers ?? []), ...(m.spec?.template?.spec.containers ?? [])];
const isClaas = (c: Container) => c.command?.[0] === 'claas';
const claasContainers = docs.flatMap(({ file, m }) => containersOf(m).filter(isClaas).map((c) => ({ file, c, args: (c.args ?? []) as string[] })));
const flag = (args: string[], name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const workload = (command: string) => applied.find((d) => d.m.kind === 'Deployment' && containersOf(d.m).some((c) => isClaas(c) && c.args?.[0] === command))!.m;

test('every document is a named object; the applied folder names each object once', () => {
  assert.ok(files.length >= 6, `manifests found in ${k8s}`);
  for (const { file, m } of docs) assert.ok(m.apiVersion && m.kind && m.metadata?.name, `${file}: apiVersion, kind and metadata.name`);
  const ids = applied.map(({ m }) => `${m.kind}/${m.metadata!.name}`);
  assert.deepEqual(ids, [...new Set(ids)]);
  for (const { file, m } of docs) for (const c of containersOf(m)) assert.ok(isClaas(c) || /vllm/.test(c.image), `${file}: ${c.name} runs the claas CLI or vLLM`);
});

test("the claas containers use only the CLI's flags, as strings, and define what they reference", () => {
  const usage = execFileSync(process.execPath, [cli, 'help'], { encoding: 'utf8' });
  const known = new Set(usage.match(/--[a-z][a-z0-9-]*/g));
  const byName = new Map(applied.map(({ m }) => [`${m.kind}/${m.metadata!.name}`, { ...m.data, ...m.stringData }]));
  assert.ok(claasContainers.length >= 4);
  for (const { file, c, args } of claasContainers) {
    // kubectl refuses a number in args: ports must be quoted.
    for (const a of args) assert.equal(typeof a, 'string', `${file}: ${String(a)} is a string`);
    for (const a of args.filter((a) => a.startsWith('--'))) assert.ok(known.has(a), `${file}: ${a} is a flag claas help lists`);
    const env = new Set((c.env ?? []).map((e) => e.name));
    for (const [, name] of args.join(' ').matchAll(/\$\((\w+)\)/g)) assert.ok(env.has(name!), `${file}: $(${name}) is in ${c.name}'s env`);
    for (const e of c.env ?? []) {
      const ref = e.valueFrom?.secretKeyRef ? ['Secret', e.valueFrom.secretKeyRef] as const : e.valueFrom?.configMapKeyRef ? ['ConfigMap', e.valueFrom.configMapKeyRef] as const : null;
      if (ref) assert.ok(byName.get(`${ref[0]}/${ref[1].name}`)?.[ref[1].key] !== undefined, `${file}: ${ref[0]} ${ref[1].name} holds ${ref[1].key}`);
    }
  }
});

test('probes reach the port the process listens on, beyond loopback', () => {
  for (const { file, m } of docs) {
    for (const c of containersOf(m)) {
      for (const probe of [c.startupProbe, c.readinessProbe, c.livenessProbe]) {
        if (!probe?.httpGet) continue;
        const port = c.ports?.find((p) => p.name === probe.httpGet!.port || p.containerPort === probe.httpGet!.port);
        assert.ok(port, `${file}: ${c.name}'s probe port ${probe.httpGet.port} is one it exposes`);
        if (!isClaas(c)) continue;
        const args = c.args as string[];
        assert.equal(flag(args, args[0] === 'serve' ? '--port' : '--health-port'), String(port.containerPort), `${file}: claas listens on ${port.containerPort}`);
        assert.notEqual(flag(args, '--host') ?? '127.0.0.1', '127.0.0.1', `${file}: the kubelet probes the pod's address, not loopback`);
      }
    }
  }
});

test('the API serves only, on the Postgres in the Secret; the trainer asks for a GPU; the Service reaches the API', () => {
  const api = workload('serve');
  const serve = containersOf(api).find(isClaas)!;
  assert.ok(serve.args!.includes('--no-train'));
  assert.equal(flag(serve.args as string[], '--database'), '$(DATABASE_URL)');
  assert.ok(serve.env!.find((e) => e.name === 'DATABASE_URL')?.valueFrom?.secretKeyRef, 'DATABASE_URL comes from a Secret');
  const pg = applied.find(({ m }) => m.kind === 'Secret' && (m.stringData ?? m.data)?.DATABASE_URL !== undefined)!.m;
  assert.match((pg.stringData ?? {}).DATABASE_URL ?? '', /^postgres(ql)?:\/\//);

  const trainer = containersOf(workload('train-worker')).find(isClaas)!;
  assert.ok(Number(trainer.resources?.limits?.['nvidia.com/gpu']) >= 1, 'the trainer requests nvidia.com/gpu');
  assert.equal(flag(trainer.args as string[], '--worker-name'), '$(POD_NAME)');
  assert.equal(trainer.env!.find((e) => e.name === 'POD_NAME')?.valueFrom?.fieldRef?.fieldPath, 'metadata.name');

  const svc = applied.find(({ m }) => m.kind === 'Service')!.m;
  const labels = api.spec!.template!.metadata.labels;
  for (const [k, v] of Object.entries(svc.spec!.selector!)) assert.equal(labels[k], v, `the Service selects the API's pods (${k})`);
  const target = svc.spec!.ports![0]!.targetPort;
  assert.ok(serve.ports!.some((p) => p.name === target || p.containerPort === target), `targetPort ${target} is the API's container port`);
});
