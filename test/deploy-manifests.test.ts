// The deployment examples in deploy/, checked offline: every Kubernetes manifest against the
// Kubernetes OpenAPI schemas (the validators kubernetes-models generates from the API's OpenAPI
// document), the compose file against the Compose Specification's JSON schema (the copy dclint
// ships), the systemd units with `systemd-analyze verify` where the host has it; and what ties
// them to Isola: every ISOLA_* setting they name is one the server reads, one image throughout,
// the Service finds the controllers and only them, the invokers may drain.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import ts from 'typescript';
import { parseAllDocuments } from 'yaml';
import { LIMIT_RANGES } from '../src/core/limits.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DEPLOY = join(ROOT, 'deploy');
const KUBERNETES = join(DEPLOY, 'kubernetes');
const require = createRequire(import.meta.url);

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Obj = { [key: string]: Json };

function isObj(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A nested field as an object (or an empty one), for reading manifests without a cast per step. */
function obj(value: unknown, ...path: string[]): Obj {
  let current = value;
  for (const key of path) current = isObj(current) ? current[key] : undefined;
  return isObj(current) ? current : {};
}

function list(value: unknown): Obj[] {
  return Array.isArray(value) ? value.filter(isObj) : [];
}

function str(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

/** Every YAML document of a file, as plain data; a syntax error (or a warning) fails. */
function parseYamlFile(path: string): Obj[] {
  const documents = parseAllDocuments(readFileSync(path, 'utf8'), { merge: true, uniqueKeys: true });
  const parsed = Array.isArray(documents) ? documents : [documents];
  return parsed.flatMap((document) => {
    const problems = [...document.errors, ...document.warnings].map((e) => e.message);
    assert.deepEqual(problems, [], `${path} is not clean YAML`);
    const value: unknown = document.toJS();
    if (value === null || value === undefined) return [];
    assert.ok(isObj(value), `${path}: every document must be a mapping`);
    return [value];
  });
}

function yamlFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((name) => /\.ya?ml$/.test(name))
    .sort()
    .map((name) => join(dir, name));
}

// ---- the settings the server reads -------------------------------------------------------------

/** The ISOLA_* names src/config.ts reads: string literals and `env.ISOLA_X` accesses (not comments). */
function settingsConfigReads(): Set<string> {
  const path = join(ROOT, 'src/config.ts');
  const source = ts.createSourceFile(path, readFileSync(path, 'utf8'), ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const names = new Set<string>();
  const visit = (node: ts.Node): void => {
    if (ts.isStringLiteralLike(node) && /^ISOLA_[A-Z0-9_]+$/.test(node.text)) names.add(node.text);
    if (ts.isPropertyAccessExpression(node) && /^ISOLA_[A-Z0-9_]+$/.test(node.name.text)) names.add(node.name.text);
    ts.forEachChild(node, visit);
  };
  visit(source);
  return names;
}

const KNOWN_SETTINGS = settingsConfigReads();

function assertKnownSettings(names: Iterable<string>, where: string): void {
  const unknown = [...new Set(names)].filter((name) => name.startsWith('ISOLA_') && !KNOWN_SETTINGS.has(name));
  assert.deepEqual(unknown, [], `${where} names settings src/config.ts does not read`);
}

// ---- Kubernetes --------------------------------------------------------------------------------

interface Resource {
  file: string;
  apiVersion: string;
  kind: string;
  name: string;
  body: Obj;
}

interface ModelClass {
  new (data: Obj): { validate(): void };
  apiVersion?: string;
  kind?: string;
}

/**
 * The kubernetes-models class of a kind: one module per kind, `<group>/<version>/<Kind>`
 * (`v1/<Kind>` for the core group). Undefined for a kind the Kubernetes API does not have,
 * including the API's inner types (DeploymentSpec), which are not resources.
 */
function modelFor(apiVersion: string, kind: string): ModelClass | undefined {
  if (!/^([a-z0-9.-]+\/)?v[0-9]+((alpha|beta)[0-9]+)?$/.test(apiVersion) || !/^[A-Z][A-Za-z0-9]*$/.test(kind)) return undefined;
  let loaded: unknown;
  try {
    loaded = require(`kubernetes-models/${apiVersion}/${kind}`);
  } catch (error) {
    // A kind its group/version lacks is a missing file; a group/version it lacks is not exported.
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'MODULE_NOT_FOUND' || code === 'ERR_PACKAGE_PATH_NOT_EXPORTED') return undefined;
    throw error;
  }
  const model = (loaded as Record<string, unknown>)[kind];
  if (typeof model !== 'function') return undefined;
  const candidate = model as ModelClass;
  return candidate.apiVersion === apiVersion && candidate.kind === kind ? candidate : undefined;
}

/** Validates one object against its kind's schema; the errors name the field (`data/spec/...`). */
function schemaErrors(body: Obj): string | undefined {
  const apiVersion = str(body.apiVersion);
  const kind = str(body.kind);
  if (!apiVersion || !kind) return 'has no apiVersion or kind';
  const model = modelFor(apiVersion, kind);
  if (!model) return `${apiVersion} ${kind} is not a kind of the Kubernetes API`;
  try {
    new model(body).validate();
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

/**
 * Fields the Kubernetes API does not have, which the OpenAPI schemas let through (the API server
 * drops them): each object becomes an object literal typed with its kind's interface from
 * kubernetes-models' type declarations, and TypeScript's excess property check names any unknown
 * field, a misspelt `readinesProbe` as much as a top-level one. One message per problem, prefixed
 * with the object's label.
 */
function unknownFieldErrors(objects: { label: string; body: Obj }[]): string[] {
  const file = join(ROOT, 'test', 'deploy-manifests.virtual.ts');
  const typed = objects.filter(({ body }) => modelFor(str(body.apiVersion) ?? '', str(body.kind) ?? ''));
  // One object a line, so that a diagnostic's line tells which object it is about.
  const text = typed
    .map(
      ({ body }, i) =>
        `export const o${i}: import('kubernetes-models/${body.apiVersion}/${body.kind}').I${body.kind} = ${JSON.stringify(body)};`,
    )
    .join('\n');
  const options: ts.CompilerOptions = {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, true, ts.ScriptKind.TS);
  const { fileExists, readFile, getSourceFile } = host;
  host.fileExists = (name) => name === file || fileExists.call(host, name);
  host.readFile = (name) => (name === file ? text : readFile.call(host, name));
  host.getSourceFile = (name, ...rest) => (name === file ? source : getSourceFile.call(host, name, ...rest));
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program, source).map((diagnostic) => {
    const line = diagnostic.start === undefined ? -1 : source.getLineAndCharacterOfPosition(diagnostic.start).line;
    return `${typed[line]?.label ?? '?'}: ${ts.flattenDiagnosticMessageText(diagnostic.messageText, ' ')}`;
  });
}

function loadResources(): Resource[] {
  return yamlFiles(KUBERNETES)
    .filter((file) => !file.endsWith('kustomization.yaml'))
    .flatMap((file) =>
      parseYamlFile(file).map((body) => ({
        file,
        apiVersion: str(body.apiVersion) ?? '',
        kind: str(body.kind) ?? '',
        name: str(obj(body, 'metadata').name) ?? '',
        body,
      })),
    );
}

const resources = loadResources();
const kustomization = parseYamlFile(join(KUBERNETES, 'kustomization.yaml'))[0] ?? {};

function resource(kind: string, name: string): Resource {
  const found = resources.find((r) => r.kind === kind && r.name === name);
  assert.ok(found, `no ${kind} ${name} in deploy/kubernetes`);
  return found;
}

const WORKLOADS = new Set(['Deployment', 'DaemonSet', 'StatefulSet']);

function podTemplate(r: Resource): Obj {
  return obj(r.body, 'spec', 'template');
}

function containers(pod: Obj): Obj[] {
  return [...list(obj(pod, 'spec').containers), ...list(obj(pod, 'spec').initContainers)];
}

function labelsMatch(selector: Obj, labels: Obj): boolean {
  return Object.entries(selector).every(([key, value]) => labels[key] === value);
}

/** Env names a container gets: its env list and the keys of the ConfigMaps and Secrets it takes whole. */
function containerEnvNames(container: Obj): string[] {
  const names = list(container.env).map((e) => str(e.name) ?? '');
  for (const from of list(container.envFrom)) {
    const configMap = str(obj(from, 'configMapRef').name);
    if (configMap) names.push(...Object.keys(obj(resource('ConfigMap', configMap).body, 'data')));
    assert.equal(obj(from, 'secretRef').name, undefined, 'secrets are taken key by key (secretKeyRef), not whole');
  }
  return names;
}

function envValue(container: Obj, name: string): string | undefined {
  for (const e of list(container.env)) if (e.name === name) return str(e.value);
  for (const from of list(container.envFrom)) {
    const configMap = str(obj(from, 'configMapRef').name);
    const value = configMap ? str(obj(resource('ConfigMap', configMap).body, 'data')[name]) : undefined;
    if (value !== undefined) return value;
  }
  return undefined;
}

/** Quantities as Kubernetes writes them, in bytes or cores. */
function quantity(text: string): number {
  const match = /^([0-9.]+)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(text);
  assert.ok(match, `"${text}" is not a quantity this test reads`);
  const units: Record<string, number> = {
    m: 1e-3,
    Ki: 2 ** 10,
    Mi: 2 ** 20,
    Gi: 2 ** 30,
    Ti: 2 ** 40,
    k: 1e3,
    M: 1e6,
    G: 1e9,
    T: 1e12,
  };
  return Number(match[1]) * (match[2] ? (units[match[2]] ?? Number.NaN) : 1);
}

describe('deploy/kubernetes: the manifests', () => {
  it('every document is a Kubernetes object that its kind’s OpenAPI schema accepts', () => {
    assert.ok(resources.length >= 10, `only ${resources.length} objects in deploy/kubernetes`);
    const failures = resources
      .map((r) => ({ r, error: schemaErrors(r.body) }))
      .filter(({ error }) => error !== undefined)
      .map(({ r, error }) => `${r.file.slice(ROOT.length)}: ${r.kind} ${r.name}: ${error}`);
    assert.deepEqual(failures, []);
  });

  it('has no field the Kubernetes API lacks (TypeScript’s excess property check on kubernetes-models’ types)', () => {
    const errors = unknownFieldErrors(
      resources.map((r) => ({ label: `${r.file.slice(ROOT.length)}: ${r.kind} ${r.name}`, body: r.body })),
    );
    assert.deepEqual(errors, []);
  });

  it('the schema check refuses unknown kinds, missing required fields and wrong types', () => {
    const controller = resource('Deployment', 'isola-controller').body;
    const changed = (edit: (copy: Obj) => void): Obj => {
      const copy = structuredClone(controller);
      edit(copy);
      return copy;
    };
    assert.match(schemaErrors({ ...controller, kind: 'Deploymnet' }) ?? '', /not a kind/);
    assert.match(schemaErrors({ ...controller, kind: 'DeploymentSpec' }) ?? '', /not a kind/);
    assert.match(schemaErrors({ ...controller, apiVersion: 'apps/v2' }) ?? '', /not a kind/);
    assert.match(
      schemaErrors(
        changed((copy) => {
          delete obj(copy, 'spec').selector;
        }),
      ) ?? '',
      /selector/,
    );
    assert.match(
      schemaErrors(
        changed((copy) => {
          obj(copy, 'spec').replicas = 'two';
        }),
      ) ?? '',
      /replicas/,
    );
    assert.match(
      schemaErrors(
        changed((copy) => {
          const first = list(obj(copy, 'spec', 'template', 'spec').containers)[0];
          if (first) delete first.name;
        }),
      ) ?? '',
      /name/,
    );
    assert.match(
      schemaErrors(
        changed((copy) => {
          const first = list(obj(copy, 'spec', 'template', 'spec').containers)[0];
          if (first) first.ports = [{ containerPort: 'http' }];
        }),
      ) ?? '',
      /containerPort/,
    );
    // TypeScript names the first unknown field of each object.
    const errors = unknownFieldErrors([
      {
        label: 'deep',
        body: changed((copy) => {
          const first = list(obj(copy, 'spec', 'template', 'spec').containers)[0];
          if (first) first.readinesProbe = first.readinessProbe ?? null;
        }),
      },
      {
        label: 'shallow',
        body: changed((copy) => {
          obj(copy, 'spec').replica = 2;
        }),
      },
    ]);
    assert.equal(errors.length, 2, errors.join('\n'));
    assert.match(errors[0] ?? '', /^deep: .*readinesProbe.* does not exist in type 'IContainer'/);
    assert.match(errors[1] ?? '', /^shallow: .*replica.* does not exist in type 'IDeploymentSpec'/);
  });

  it('kustomization.yaml applies every manifest of the folder, the example Secret aside', () => {
    const listed = (Array.isArray(kustomization.resources) ? kustomization.resources : []).map(String).sort();
    const files = yamlFiles(KUBERNETES)
      .map((file) => file.slice(KUBERNETES.length + 1))
      .filter((name) => name !== 'kustomization.yaml' && name !== 'secrets.example.yaml')
      .sort();
    assert.deepEqual(listed, files);
    assert.equal(kustomization.namespace, 'isola');
    assert.ok(resources.some((r) => r.kind === 'Namespace' && r.name === 'isola'));
  });

  it('names only settings src/config.ts reads', () => {
    const names: string[] = [];
    for (const r of resources) {
      if (r.kind === 'ConfigMap') names.push(...Object.keys(obj(r.body, 'data')).filter((k) => k.startsWith('ISOLA_')));
      if (WORKLOADS.has(r.kind)) for (const c of containers(podTemplate(r))) names.push(...containerEnvNames(c));
    }
    assert.ok(names.includes('ISOLA_DATABASE_URL') && names.includes('ISOLA_ADMIN_TOKEN'));
    assertKnownSettings(names, 'deploy/kubernetes');
  });

  it('every Isola container runs the one image, isola:<the package version>, that kustomize retags', () => {
    const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    const images = new Set<string>();
    for (const r of resources.filter((r) => WORKLOADS.has(r.kind))) {
      if (obj(podTemplate(r), 'metadata', 'labels')['app.kubernetes.io/name'] !== 'isola') continue;
      for (const c of containers(podTemplate(r))) images.add(str(c.image) ?? '');
    }
    assert.deepEqual([...images], [`isola:${version}`]);
    const retag = list(kustomization.images).find((i) => i.name === 'isola');
    assert.ok(retag, 'kustomization.yaml has no images entry for isola');
    assert.equal(String(retag.newTag), version);
    const compose = parseYamlFile(join(DEPLOY, 'compose/docker-compose.yml'))[0] ?? {};
    for (const [name, service] of Object.entries(obj(compose, 'services'))) {
      const image = str(obj(service).image) ?? '';
      if (image.startsWith('isola')) assert.equal(image, `isola:${version}`, `compose service ${name}`);
    }
    const dockerfile = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8');
    assert.match(dockerfile, new RegExp(`-t isola:${version.replace(/\./g, '\\.')} `));
    assertKnownSettings(dockerfile.match(/\bISOLA_[A-Z0-9_]+(?==)/g) ?? [], 'deploy/Dockerfile');
  });

  it('selectors match their pod templates; the isola Service selects the controllers and nothing else', () => {
    for (const r of resources.filter((r) => WORKLOADS.has(r.kind))) {
      const selector = obj(r.body, 'spec', 'selector', 'matchLabels');
      assert.ok(Object.keys(selector).length > 0, `${r.kind} ${r.name} has no matchLabels`);
      assert.ok(labelsMatch(selector, obj(podTemplate(r), 'metadata', 'labels')), `${r.kind} ${r.name}: selector`);
    }
    const pods = resources.filter((r) => WORKLOADS.has(r.kind));
    for (const service of resources.filter((r) => r.kind === 'Service')) {
      const selector = obj(service.body, 'spec', 'selector');
      const selected = pods.filter((p) => labelsMatch(selector, obj(podTemplate(p), 'metadata', 'labels')));
      assert.ok(selected.length > 0, `Service ${service.name} selects no pods`);
      // A port the Service forwards to by name is one the selected containers declare.
      for (const port of list(obj(service.body, 'spec').ports)) {
        const target = port.targetPort;
        if (typeof target !== 'string') continue;
        for (const p of selected) {
          const names = containers(podTemplate(p)).flatMap((c) => list(c.ports).map((cp) => cp.name));
          assert.ok(names.includes(target), `Service ${service.name}: ${p.kind} ${p.name} has no port ${target}`);
        }
      }
    }
    const isola = obj(resource('Service', 'isola').body, 'spec', 'selector');
    const selected = pods.filter((p) => labelsMatch(isola, obj(podTemplate(p), 'metadata', 'labels'))).map((p) => p.name);
    assert.deepEqual(selected, ['isola-controller']);
    const budget = resource('PodDisruptionBudget', 'isola-controller');
    const deployment = resource('Deployment', 'isola-controller');
    assert.ok(
      labelsMatch(obj(budget.body, 'spec', 'selector', 'matchLabels'), obj(podTemplate(deployment), 'metadata', 'labels')),
    );
  });

  it('references resolve: ConfigMaps, the Secret’s keys, PVC templates', () => {
    const secret = parseYamlFile(join(KUBERNETES, 'secrets.example.yaml')).find((d) => d.kind === 'Secret');
    assert.ok(secret, 'secrets.example.yaml has no Secret');
    const secretKeys = Object.keys(obj(secret, 'stringData'));
    for (const r of resources.filter((r) => WORKLOADS.has(r.kind))) {
      for (const c of containers(podTemplate(r))) {
        for (const e of list(c.env)) {
          const ref = obj(e, 'valueFrom', 'secretKeyRef');
          if (Object.keys(ref).length === 0) continue;
          assert.equal(ref.name, obj(secret, 'metadata').name, `${r.name}: ${e.name}`);
          assert.ok(secretKeys.includes(str(ref.key) ?? ''), `${r.name}: ${e.name} reads a key the Secret lacks`);
        }
        containerEnvNames(c); // fails on a ConfigMap that is not there
        const volumes = list(obj(podTemplate(r), 'spec').volumes).map((v) => v.name);
        const claims = list(obj(r.body, 'spec').volumeClaimTemplates).map((v) => obj(v, 'metadata').name);
        for (const mount of list(c.volumeMounts)) {
          assert.ok([...volumes, ...claims].includes(mount.name), `${r.name}: volume ${mount.name} is not declared`);
        }
        for (const v of list(obj(podTemplate(r), 'spec').volumes)) {
          const configMap = str(obj(v, 'configMap').name);
          if (configMap) resource('ConfigMap', configMap);
        }
      }
    }
  });

  it('the controllers: two replicas, probes on /healthz, env from the Secret, a grace period longer than the blocking wait', () => {
    const deployment = resource('Deployment', 'isola-controller');
    assert.equal(obj(deployment.body, 'spec').replicas, 2);
    const pod = podTemplate(deployment);
    const [controller] = containers(pod);
    assert.ok(controller);
    assert.equal(envValue(controller, 'ISOLA_ROLE'), 'controller');
    const port = Number(envValue(controller, 'ISOLA_PORT'));
    const http = list(controller.ports).find((p) => p.name === 'http');
    assert.equal(http?.containerPort, port, 'the container port is the one ISOLA_PORT makes the server listen on');
    assert.equal(envValue(controller, 'ISOLA_HOST'), '0.0.0.0');
    for (const probe of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
      const get = obj(controller, probe, 'httpGet');
      assert.equal(get.path, '/healthz', probe);
      assert.equal(get.port, 'http', probe);
    }
    for (const name of ['ISOLA_DATABASE_URL', 'ISOLA_ADMIN_TOKEN', 'ISOLA_GUEST_AUTH']) {
      const entry = list(controller.env).find((e) => e.name === name);
      assert.ok(entry && Object.keys(obj(entry, 'valueFrom', 'secretKeyRef')).length > 0, `${name} comes from the Secret`);
    }
    const blockingWaitS = Number.parseInt(envValue(controller, 'ISOLA_BLOCKING_WAIT') ?? '60', 10);
    assert.ok(Number(obj(pod, 'spec').terminationGracePeriodSeconds) > blockingWaitS);
    for (const key of ['requests', 'limits']) {
      assert.ok(obj(controller, 'resources', key).cpu && obj(controller, 'resources', key).memory, key);
    }
  });

  it('the invokers: a privileged DaemonSet that sees /dev/kvm without requiring it, and time to drain', () => {
    const daemonSet = resource('DaemonSet', 'isola-invoker');
    const pod = podTemplate(daemonSet);
    const [invoker] = containers(pod);
    assert.ok(invoker);
    assert.equal(envValue(invoker, 'ISOLA_ROLE'), 'invoker');
    assert.equal(obj(invoker, 'securityContext').privileged, true);
    // A hostPath of type CharDevice (or any hostPath of /dev/kvm) keeps the pod off nodes without KVM.
    for (const volume of list(obj(pod, 'spec').volumes)) {
      const hostPath = obj(volume, 'hostPath');
      assert.notEqual(hostPath.type, 'CharDevice', `volume ${volume.name}`);
      assert.ok(!String(hostPath.path ?? '').startsWith('/dev'), `volume ${volume.name}: devices come with privileged`);
    }
    const longestRunS = LIMIT_RANGES.timeout.max / 1000;
    assert.ok(Number(obj(pod, 'spec').terminationGracePeriodSeconds) > longestRunS, 'the grace period covers the longest run');
    const budgetBytes = Number(envValue(invoker, 'ISOLA_MEMORY_BUDGET_MB')) * 2 ** 20;
    const limitBytes = quantity(str(obj(invoker, 'resources', 'limits').memory) ?? '');
    assert.ok(budgetBytes > 0 && budgetBytes + 2 ** 30 <= limitBytes, 'the memory budget leaves room below the limit');
    assert.ok(obj(invoker, 'resources', 'requests').cpu && obj(invoker, 'resources', 'requests').memory);
    assert.equal(obj(invoker, 'readinessProbe', 'httpGet').path, '/healthz');
  });

  it('PostgreSQL and NATS (JetStream on) are StatefulSets on persistent volumes', () => {
    for (const name of ['isola-postgres', 'isola-nats']) {
      const set = resource('StatefulSet', name);
      assert.ok(list(obj(set.body, 'spec').volumeClaimTemplates).length > 0, `${name} has a volume claim`);
      resource('Service', str(obj(set.body, 'spec').serviceName) ?? '');
    }
    const natsConf = str(obj(resource('ConfigMap', 'isola-nats-config').body, 'data')['nats.conf']) ?? '';
    assert.match(natsConf, /^jetstream\s*\{[^}]*store_dir:/m);
    const natsUrl = str(obj(resource('ConfigMap', 'isola-settings').body, 'data').ISOLA_NATS_URL) ?? '';
    assert.match(natsUrl, /^nats:\/\/isola-nats:4222$/);
    const example = parseYamlFile(join(KUBERNETES, 'secrets.example.yaml'))[0] ?? {};
    assert.match(str(obj(example, 'stringData')['database-url']) ?? '', /^postgres:\/\/isola:[^@]+@isola-postgres:5432\/isola$/);
  });

  it('kustomize builds the folder (where kubectl is installed)', (t) => {
    const probe = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8', timeout: 30_000 });
    if (probe.error || probe.status !== 0) {
      t.skip('kubectl is not installed here');
      return;
    }
    const built = spawnSync('kubectl', ['kustomize', KUBERNETES], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(built.status, 0, built.stderr);
    const documents = parseAllDocuments(built.stdout).map((d) => d.toJS() as Obj);
    assert.equal(documents.length, resources.filter((r) => !r.file.endsWith('secrets.example.yaml')).length);
    for (const document of documents) {
      assert.equal(schemaErrors(document), undefined, `${document.kind} after kustomize`);
      if (document.kind !== 'Namespace') assert.equal(obj(document, 'metadata').namespace, 'isola');
    }
  });
});

// ---- Compose -----------------------------------------------------------------------------------

function composeSchemaValidator() {
  // dclint exports only its code; the schema is a file of the package (schemas/compose.schema.json).
  const schemaPath = join(dirname(require.resolve('dclint/package.json')), 'schemas/compose.schema.json');
  const schema = JSON.parse(readFileSync(schemaPath, 'utf8')) as Obj;
  assert.equal(schema.title, 'Compose Specification');
  // As dclint reads it: the schema has annotations strict mode would refuse.
  const ajv = new Ajv({ allErrors: true, strict: false, allowUnionTypes: true });
  // The schema names draft 07 by its https address; ajv knows the meta-schema by its http one.
  const draft07 = require('ajv/dist/refs/json-schema-draft-07.json') as Obj;
  ajv.addMetaSchema({ ...draft07, $id: str(schema.$schema) ?? '' });
  return ajv.compile(schema);
}

describe('deploy/compose', () => {
  const file = join(DEPLOY, 'compose/docker-compose.yml');
  const [compose = {}] = parseYamlFile(file);
  const services = obj(compose, 'services');
  const environment = (name: string) => obj(services[name], 'environment');

  it('the Compose Specification’s JSON schema accepts docker-compose.yml, and refuses broken copies', () => {
    const validate = composeSchemaValidator();
    assert.ok(validate(compose), JSON.stringify(validate.errors, null, 2));
    assert.equal(validate({ ...compose, servics: services }), false);
    assert.equal(validate({ services: { controller: { ...obj(services.controller), imag: 'isola' } } }), false);
    assert.equal(validate({ services: { controller: { ...obj(services.controller), ports: 3233 } } }), false);
  });

  it('PostgreSQL, NATS with JetStream, one controller and two invokers, each with its own data dir', () => {
    assert.deepEqual(Object.keys(services).sort(), ['controller', 'invoker-1', 'invoker-2', 'nats', 'postgres']);
    const natsCommand = obj(services, 'nats').command;
    assert.ok(Array.isArray(natsCommand) && natsCommand.includes('-js'), 'NATS runs with JetStream');
    assert.equal(environment('controller').ISOLA_ROLE, 'controller');
    const dataVolumes = new Set<string>();
    for (const name of ['controller', 'invoker-1', 'invoker-2']) {
      const volumes = obj(services, name).volumes;
      const volume = (Array.isArray(volumes) ? volumes : []).map(String).find((v) => v.endsWith(':/var/lib/isola'));
      assert.ok(volume, `${name} keeps its data dir on a volume`);
      dataVolumes.add(volume);
    }
    assert.equal(dataVolumes.size, 3, 'one server per data dir');
    for (const name of ['invoker-1', 'invoker-2']) {
      const invoker = obj(services[name]);
      assert.equal(environment(name).ISOLA_ROLE, 'invoker');
      assert.equal(invoker.privileged, true);
      assert.equal(invoker.stop_signal, 'SIGTERM');
      assert.ok(Number.parseInt(String(invoker.stop_grace_period), 10) > LIMIT_RANGES.timeout.max / 1000);
    }
  });

  it('names only settings src/config.ts reads', () => {
    const names = Object.values(services).flatMap((service) => Object.keys(obj(service, 'environment')));
    assertKnownSettings(names, 'docker-compose.yml');
    const exampleEnv = readFileSync(join(DEPLOY, 'compose/example.env'), 'utf8');
    assertKnownSettings(
      exampleEnv.match(/^#?\s*ISOLA_[A-Z0-9_]+(?==)/gm)?.map((n) => n.replace(/^#?\s*/, '')) ?? [],
      'example.env',
    );
  });
});

// ---- the image ---------------------------------------------------------------------------------

describe('deploy/Dockerfile (not built here: no Docker engine runs)', () => {
  const dockerfile = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8');

  it('copies files the repository has, and installs setup groups that scripts/setup-host.sh knows', () => {
    const copied = [...dockerfile.matchAll(/^COPY\s+(.+)\s+\S+$/gm)].flatMap((m) => (m[1] ?? '').split(/\s+/));
    assert.ok(copied.includes('src') && copied.includes('package-lock.json'));
    for (const path of copied) assert.ok(existsSync(join(ROOT, path)), `COPY ${path}: not in the repository`);
    const setup = /isola\.js setup ([a-z ]+)/.exec(dockerfile);
    assert.ok(setup, 'the Dockerfile installs the Debian packages with isola setup');
    const script = readFileSync(join(ROOT, 'scripts/setup-host.sh'), 'utf8');
    for (const group of (setup[1] ?? '').trim().split(/\s+/)) {
      assert.match(script, new RegExp(`^\\s*\\[${group}\\]=`, 'm'), `setup group ${group}`);
    }
  });

  it('keeps the uid the controllers run as', () => {
    const controller = resource('Deployment', 'isola-controller');
    const uid = obj(podTemplate(controller), 'spec', 'securityContext').runAsUser;
    assert.match(dockerfile, new RegExp(`useradd [^\\n]*--uid ${uid} `));
  });
});

// ---- systemd -----------------------------------------------------------------------------------

describe('deploy/systemd', () => {
  const units = ['isola-controller.service', 'isola-invoker.service'].map((name) => join(DEPLOY, 'systemd', name));
  /** `Key=value` lines of a unit (the last one wins, as in systemd). */
  const directives = (path: string) =>
    new Map(
      readFileSync(path, 'utf8')
        .split('\n')
        .filter((line) => /^[A-Za-z]+=/.test(line))
        .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)] as const),
    );

  it('systemd-analyze verify finds nothing to say (where systemd-analyze is installed)', (t) => {
    const probe = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
    if (probe.error || probe.status !== 0) {
      t.skip('systemd-analyze is not installed here');
      return;
    }
    const verified = spawnSync('systemd-analyze', ['verify', ...units], { encoding: 'utf8', timeout: 60_000 });
    // verify exits 0 on unknown keys and unparsable values, only warning: any line about these units fails.
    const complaints = `${verified.stdout}\n${verified.stderr}`.split('\n').filter((line) => units.some((u) => line.includes(u)));
    assert.equal(verified.status, 0, verified.stderr);
    assert.deepEqual(complaints, []);
  });

  it('SIGTERM stops them, with time to drain; the invoker alone gets the signal, not its sandboxes', () => {
    for (const unit of units) {
      const d = directives(unit);
      assert.equal(d.get('KillSignal'), 'SIGTERM', unit);
      assert.match(d.get('TimeoutStopSec') ?? '', /^\d+$/, unit);
    }
    const invoker = directives(units[1] ?? '');
    assert.ok(Number(invoker.get('TimeoutStopSec')) > LIMIT_RANGES.timeout.max / 1000);
    assert.equal(invoker.get('KillMode'), 'mixed');
  });

  it('names only settings src/config.ts reads', () => {
    const names: string[] = [];
    for (const unit of units) {
      for (const match of readFileSync(unit, 'utf8').matchAll(/^Environment=(ISOLA_[A-Z0-9_]+)=/gm)) names.push(match[1] ?? '');
    }
    for (const match of readFileSync(join(DEPLOY, 'systemd/isola.env.example'), 'utf8').matchAll(/^(ISOLA_[A-Z0-9_]+)=/gm)) {
      names.push(match[1] ?? '');
    }
    assert.ok(names.includes('ISOLA_ROLE') && names.includes('ISOLA_DATABASE_URL'));
    assertKnownSettings(names, 'deploy/systemd');
  });
});
