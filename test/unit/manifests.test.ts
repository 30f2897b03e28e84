/**
 * deploy/kubernetes: every manifest validates against the Kubernetes API
 * schema (kubernetes-models, generated from the Kubernetes OpenAPI spec,
 * offline), and the values that matter are the ones the image tests ran
 * with: image, capabilities, mounts, port, probe paths.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { ConfigMap, Namespace, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
import { parseConfig } from '../../src/config/config.js';
import { parseSinkSpecs } from '../../src/sinks/index.js';
import { CAPABILITIES, IMAGE, LIVENESS_PATH, METRICS_PORT, MOUNTS, READINESS_PATH } from '../helpers/deploy.js';
import { repoRoot } from '../helpers/paths.js';

type Obj = Record<string, unknown> & { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; annotations?: Record<string, string>; labels?: Record<string, string> } };

const dir = join(repoRoot, 'deploy/kubernetes');
const MODELS: Record<string, new (o: never) => { validate(): void }> = {
  'v1/Namespace': Namespace,
  'v1/ServiceAccount': ServiceAccount,
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'v1/Service': Service,
  'apps/v1/DaemonSet': DaemonSet,
};

function load(): Obj[] {
  const objs: Obj[] = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort()) {
    for (const doc of parseAllDocuments(readFileSync(join(dir, file), 'utf8'))) {
      assert.deepEqual(doc.errors, [], file);
      objs.push(doc.toJS() as Obj);
    }
  }
  return objs;
}

const validate = (o: Obj): void => {
  const Model = MODELS[`${o.apiVersion}/${o.kind}`];
  assert.ok(Model, `no schema for ${o.apiVersion} ${o.kind}`);
  new Model(o as never).validate();
};

test('every manifest validates against the Kubernetes API schema', () => {
  const objs = load();
  assert.deepEqual(objs.map((o) => o.kind).sort(), ['ConfigMap', 'DaemonSet', 'Namespace', 'Secret', 'Service', 'ServiceAccount']);
  for (const o of objs) assert.doesNotThrow(() => validate(o), `${o.kind} ${o.metadata.name}`);
  // and the validator does reject what the API server would
  const ds = structuredClone(objs.find((o) => o.kind === 'DaemonSet')!) as Obj & { spec: { template: { spec: { containers: { ports: { containerPort: unknown }[] }[] } } } };
  ds.spec.template.spec.containers[0]!.ports[0]!.containerPort = 'ninety-four hundred';
  assert.throws(() => validate(ds));
  const noSelector = structuredClone(objs.find((o) => o.kind === 'DaemonSet')!) as Obj & { spec: Record<string, unknown> };
  delete noSelector.spec.selector;
  assert.throws(() => validate(noSelector));
});

interface Container {
  image: string;
  args: string[];
  env: { name: string; valueFrom?: { fieldRef?: { fieldPath: string }; configMapKeyRef?: { name: string; key: string } } }[];
  ports: { name: string; containerPort: number }[];
  livenessProbe: { httpGet: { path: string; port: string | number } };
  readinessProbe: { httpGet: { path: string; port: string | number } };
  resources: { requests: Record<string, string>; limits: Record<string, string> };
  securityContext: { privileged?: boolean; capabilities: { drop: string[]; add: string[] }; readOnlyRootFilesystem?: boolean };
  volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[];
}

test('the DaemonSet runs what the image tests ran: image, capabilities, host pid, read-only mounts, port and probes', () => {
  const objs = load();
  const ds = objs.find((o) => o.kind === 'DaemonSet') as Obj & {
    spec: { template: { metadata: { labels: Record<string, string>; annotations: Record<string, string> }; spec: Record<string, unknown> & { containers: Container[]; volumes: { name: string; hostPath?: { path: string }; secret?: { secretName: string } }[] } } };
  };
  const pod = ds.spec.template.spec;
  assert.equal(pod.hostPID, true);
  assert.equal(pod.hostNetwork, undefined, 'the host network is not needed');
  assert.deepEqual(pod.tolerations, [{ operator: 'Exists' }], 'tolerates every taint');
  assert.equal(pod.containers.length, 1);
  const c = pod.containers[0]!;
  assert.equal(c.image, IMAGE);
  assert.deepEqual(c.securityContext.capabilities, { drop: ['ALL'], add: CAPABILITIES });
  assert.equal(c.securityContext.privileged, false);
  assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  // port and probes
  assert.deepEqual(c.ports.map((p) => [p.name, p.containerPort]), [['metrics', METRICS_PORT]]);
  const port = (p: string | number) => (typeof p === 'number' ? p : c.ports.find((x) => x.name === p)?.containerPort);
  assert.equal(c.livenessProbe.httpGet.path, LIVENESS_PATH);
  assert.equal(c.readinessProbe.httpGet.path, READINESS_PATH);
  assert.equal(port(c.livenessProbe.httpGet.port), METRICS_PORT);
  assert.equal(port(c.readinessProbe.httpGet.port), METRICS_PORT);
  assert.ok(c.args.includes(`--sink=metrics,listen=:${METRICS_PORT}`), c.args.join(' '));
  for (const k of ['cpu', 'memory']) assert.ok(c.resources.requests[k] && c.resources.limits[k], `requests and limits of ${k}`);
  // the node name from the downward API
  assert.deepEqual(c.env.find((e) => e.name === 'NODE_NAME')?.valueFrom, { fieldRef: { fieldPath: 'spec.nodeName' } });
  // every mount read-only; each host path is one the image tests mounted, at the same place, or the CRI socket
  for (const m of c.volumeMounts) {
    assert.equal(m.readOnly, true, m.name);
    const v = pod.volumes.find((x) => x.name === m.name);
    assert.ok(v, m.name);
    if (v.secret) continue;
    const documented = MOUNTS.find((d) => d.path === m.mountPath);
    assert.ok(documented, `${m.mountPath} is not a documented mount`);
    assert.equal(v.hostPath?.path, documented.host, m.name);
  }
  const mounted = c.volumeMounts.map((m) => m.mountPath);
  for (const p of ['/sys/kernel/tracing', '/sys/fs/cgroup', '/run/containerd/containerd.sock']) assert.ok(mounted.includes(p), p);
  // Prometheus finds the pods
  assert.deepEqual(ds.spec.template.metadata.annotations, { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(METRICS_PORT), 'prometheus.io/path': '/metrics' });
});

test('the other objects fit the DaemonSet: namespace, service account, ConfigMap, Secret, headless Service', () => {
  const objs = load();
  const byKind = (k: string) => objs.find((o) => o.kind === k) as Obj & Record<string, never>;
  const ns = byKind('Namespace').metadata.name;
  for (const o of objs.filter((x) => x.kind !== 'Namespace')) assert.equal(o.metadata.namespace, ns, `${o.kind} in ${ns}`);
  const ds = byKind('DaemonSet') as unknown as { spec: { selector: { matchLabels: Record<string, string> }; template: { metadata: { labels: Record<string, string> }; spec: { serviceAccountName: string; containers: Container[]; volumes: { secret?: { secretName: string } }[] } } } };
  const pod = ds.spec.template.spec;
  assert.equal(pod.serviceAccountName, byKind('ServiceAccount').metadata.name);
  const cm = byKind('ConfigMap') as unknown as { metadata: { name: string }; data: Record<string, string> };
  const c = pod.containers[0]!;
  for (const e of c.env) if (e.valueFrom?.configMapKeyRef) assert.ok(cm.data[e.valueFrom.configMapKeyRef.key] !== undefined && e.valueFrom.configMapKeyRef.name === cm.metadata.name, e.name);
  assert.ok(pod.volumes.some((v) => v.secret?.secretName === byKind('Secret').metadata.name), 'the Secret is mounted as files');
  // the arguments, with the ConfigMap's values put in, are flags convis takes; no credential among them
  const env: Record<string, string> = {};
  for (const e of c.env) if (e.valueFrom?.configMapKeyRef) env[e.name] = cm.data[e.valueFrom.configMapKeyRef.key]!;
  const args = c.args.map((a) => a.replace(/\$\((\w+)\)/g, (_, n: string) => env[n] ?? `$(${n})`));
  const config = parseConfig(args, { NODE_NAME: 'node-1' });
  assert.doesNotThrow(() => parseSinkSpecs(config.sinks));
  for (const a of args) assert.doesNotMatch(a, /(^|,)(key|password|header\.[^=]*)=/, `a credential on the command line: ${a}`);
  // the headless Service selects the agents' pods and names the metrics port for scraping
  const svc = byKind('Service') as unknown as { metadata: { annotations: Record<string, string> }; spec: { clusterIP: string; selector: Record<string, string>; ports: { port: number; targetPort: string | number }[] } };
  assert.equal(svc.spec.clusterIP, 'None');
  for (const [k, v] of Object.entries(svc.spec.selector)) assert.equal(ds.spec.template.metadata.labels[k], v);
  assert.deepEqual(ds.spec.selector.matchLabels, svc.spec.selector);
  assert.deepEqual(svc.spec.ports.map((p) => p.port), [METRICS_PORT]);
  assert.deepEqual(svc.metadata.annotations, { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(METRICS_PORT), 'prometheus.io/path': '/metrics' });
});
