// The layering rules of src/, checked on every module's imports (static, dynamic and type-only)
// and on where the environment is read. Test files may reach into what they test and are not
// checked.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Where `process.env` may be read: the configuration, and programs of their own. */
const ENV_READERS = new Map<string, string>([
  ['src/config.ts', 'the one place that reads flags and environment for the server'],
  ['src/cli/client.ts', "the CLI's own settings: ISOLA_APIHOST and ISOLA_AUTH"],
  ['src/cli/config-file.ts', "the CLI's own settings: its config file and ISOLA_APIHOST, ISOLA_AUTH, ISOLA_DATA_DIR"],
  ['src/cli/output.ts', "the terminal's width (COLUMNS), not a setting"],
  ['src/guest/agent.ts', 'a separate program, inside the sandbox'],
  ['src/guest/package-loader.ts', "the agent's, inside the sandbox: the function's own environment"],
]);

interface Module {
  /** Relative to the repository, with forward slashes. */
  path: string;
  /** Imported modules inside the repository, resolved to their .ts paths; packages as written. */
  imports: string[];
  /** Lines (1-based) where the environment is read. */
  envReads: number[];
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return /\.ts$/.test(entry.name) && !/\.(test|d)\.ts$/.test(entry.name) ? [path] : [];
  });
}

/** Parses one module's imports and its reads of the environment. */
export function parseModule(path: string, text: string): Module {
  const source = ts.createSourceFile(path, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const specifiers: string[] = [];
  const envReads: number[] = [];
  const line = (node: ts.Node) => source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1;
  const isProcess = (node: ts.Node) => ts.isIdentifier(node) && node.text === 'process';
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier) {
      if (ts.isStringLiteral(node.moduleSpecifier)) specifiers.push(node.moduleSpecifier.text);
      // `import { env } from 'node:process'`
      const clause = ts.isImportDeclaration(node) ? node.importClause?.namedBindings : undefined;
      if (
        ts.isStringLiteral(node.moduleSpecifier) &&
        /^(node:)?process$/.test(node.moduleSpecifier.text) &&
        clause &&
        ts.isNamedImports(clause) &&
        clause.elements.some((e) => (e.propertyName ?? e.name).text === 'env')
      ) {
        envReads.push(line(node));
      }
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const [argument] = node.arguments;
      if (argument && ts.isStringLiteralLike(argument)) specifiers.push(argument.text);
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      specifiers.push(node.argument.literal.text);
    } else if (ts.isPropertyAccessExpression(node) && isProcess(node.expression) && node.name.text === 'env') {
      envReads.push(line(node));
    } else if (
      ts.isElementAccessExpression(node) &&
      isProcess(node.expression) &&
      ts.isStringLiteralLike(node.argumentExpression) &&
      node.argumentExpression.text === 'env'
    ) {
      envReads.push(line(node));
    } else if (
      // `const { env } = process`
      ts.isVariableDeclaration(node) &&
      node.initializer &&
      isProcess(node.initializer) &&
      ts.isObjectBindingPattern(node.name) &&
      node.name.elements.some((e) => {
        const name = e.propertyName ?? e.name;
        return ts.isIdentifier(name) && name.text === 'env';
      })
    ) {
      envReads.push(line(node));
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  const imports = specifiers.map((specifier) =>
    specifier.startsWith('.')
      ? relative(ROOT, resolve(dirname(join(ROOT, path)), specifier))
          .split('\\')
          .join('/')
          .replace(/\.js$/, '.ts')
      : specifier,
  );
  return { path, imports, envReads };
}

function loadModules(): Module[] {
  return sourceFiles(join(ROOT, 'src')).map((file) => {
    const path = relative(ROOT, file).split('\\').join('/');
    return parseModule(path, readFileSync(file, 'utf8'));
  });
}

/** A concrete backend's modules: anything in a folder of src/sandbox/. */
const isConcreteBackend = (path: string) => /^src\/sandbox\/[^/]+\//.test(path);

/**
 * What src/cluster (placement across invokers, pure; and the messaging layer over NATS)
 * may import: itself, core, the scheduler's pure modules, the store's record types and the NATS
 * client. The wiring of the roles to the store and backends is the platform's.
 */
const CLUSTER_MAY_IMPORT = [
  /^@nats-io\//,
  /^src\/cluster\//,
  /^src\/core\//,
  /^src\/scheduler\/(instance|placement|policy|function-settings)\.ts$/,
  /^src\/store\/records\.ts$/,
];

/** Layers below src/cluster, which must not reach up into it. */
const BELOW_CLUSTER = /^src\/(core|scheduler|sandbox|store|guest)\//;

/** Each rule: the violations it finds, as `module -> what`. */
export const RULES = {
  apiDoesNotImportStore: (modules: readonly Module[]) =>
    modules.flatMap((m) =>
      m.path.startsWith('src/api/') ? m.imports.filter((i) => i.startsWith('src/store/')).map((i) => `${m.path} -> ${i}`) : [],
    ),
  onlySandboxImportsBackends: (modules: readonly Module[]) =>
    modules.flatMap((m) =>
      m.path.startsWith('src/sandbox/') ? [] : m.imports.filter(isConcreteBackend).map((i) => `${m.path} -> ${i}`),
    ),
  apiDoesNotImportCluster: (modules: readonly Module[]) =>
    modules.flatMap((m) =>
      m.path.startsWith('src/api/') ? m.imports.filter((i) => i.startsWith('src/cluster/')).map((i) => `${m.path} -> ${i}`) : [],
    ),
  clusterImportsOnlyPureLayers: (modules: readonly Module[]) =>
    modules.flatMap((m) =>
      m.path.startsWith('src/cluster/')
        ? m.imports.filter((i) => !CLUSTER_MAY_IMPORT.some((allowed) => allowed.test(i))).map((i) => `${m.path} -> ${i}`)
        : [],
    ),
  lowerLayersDoNotImportCluster: (modules: readonly Module[]) =>
    modules.flatMap((m) =>
      BELOW_CLUSTER.test(m.path) ? m.imports.filter((i) => i.startsWith('src/cluster/')).map((i) => `${m.path} -> ${i}`) : [],
    ),
  onlyClusterImportsNats: (modules: readonly Module[]) =>
    modules.flatMap((m) =>
      m.path.startsWith('src/cluster/') ? [] : m.imports.filter((i) => i.startsWith('@nats-io/')).map((i) => `${m.path} -> ${i}`),
    ),
  onlyConfigReadsEnvironment: (modules: readonly Module[]) =>
    modules.flatMap((m) => (ENV_READERS.has(m.path) ? [] : m.envReads.map((line) => `${m.path}:${line} reads process.env`))),
};

describe('import rules', () => {
  const modules = loadModules();

  it('finds the modules and their imports', () => {
    assert.ok(modules.length > 50, `${modules.length} modules`);
    const platform = modules.find((m) => m.path === 'src/platform/platform.ts');
    assert.ok(platform?.imports.includes('src/sandbox/backend.ts'), 'relative imports resolve to .ts paths');
  });

  it('src/api does not import src/store (doors read through the platform)', () => {
    assert.deepEqual(RULES.apiDoesNotImportStore(modules), []);
  });

  it('nothing outside src/sandbox imports a concrete backend', () => {
    assert.deepEqual(RULES.onlySandboxImportsBackends(modules), []);
  });

  it('src/api does not import src/cluster (doors reach placement through the platform)', () => {
    assert.deepEqual(RULES.apiDoesNotImportCluster(modules), []);
  });

  it('src/cluster imports only core, the scheduler pure modules, store types and the NATS client; nothing below it imports it; only it uses NATS', () => {
    assert.deepEqual(RULES.clusterImportsOnlyPureLayers(modules), []);
    assert.deepEqual(RULES.lowerLayersDoNotImportCluster(modules), []);
    assert.deepEqual(RULES.onlyClusterImportsNats(modules), []);
  });

  it('only src/config.ts (and programs of their own) read process.env', () => {
    assert.deepEqual(RULES.onlyConfigReadsEnvironment(modules), []);
  });

  it('catches each kind of violation', () => {
    const bad = [
      parseModule('src/api/door.ts', "import type { Store } from '../store/store.js';"),
      parseModule('src/platform/x.ts', "const m = await import('../sandbox/isolate/isolate-backend.js');"),
      parseModule('src/scheduler/x.ts', "export { X } from '../sandbox/microvm/vm.js';"),
      parseModule('src/sandbox/registry.ts', "import { X } from './wasm/wasm-backend.js';"),
      parseModule('src/store/x.ts', "const a = process.env.A;\nconst b = process['env'];\nconst { env } = process;"),
      parseModule('src/core/x.ts', "import { env } from 'node:process';"),
      parseModule('src/config.ts', 'const a = process.env.A;'),
      parseModule('src/core/y.ts', "const text = 'process.env.A';"),
      parseModule('src/api/cluster-door.ts', "import { placeCall } from '../cluster/placement.js';"),
      parseModule(
        'src/cluster/x.ts',
        "import { Placement } from '../scheduler/placement.js';\nimport type { NamespaceRow } from '../store/records.js';\nimport { Store } from '../store/store.js';\nimport { Scheduler } from '../scheduler/scheduler.js';\nimport { connect } from 'undici';",
      ),
      parseModule('src/scheduler/z.ts', "import type { InvokerSnapshot } from '../cluster/placement.js';"),
      parseModule('src/platform/z.ts', "import { placeCall } from '../cluster/placement.js';"),
      parseModule(
        'src/platform/cluster.ts',
        "import { Bus } from '../cluster/bus.js';\nimport { connect } from '@nats-io/transport-node';",
      ),
    ];
    assert.deepEqual(RULES.apiDoesNotImportStore(bad), ['src/api/door.ts -> src/store/store.ts']);
    assert.deepEqual(RULES.onlySandboxImportsBackends(bad), [
      'src/platform/x.ts -> src/sandbox/isolate/isolate-backend.ts',
      'src/scheduler/x.ts -> src/sandbox/microvm/vm.ts',
    ]);
    assert.deepEqual(RULES.apiDoesNotImportCluster(bad), ['src/api/cluster-door.ts -> src/cluster/placement.ts']);
    assert.deepEqual(RULES.clusterImportsOnlyPureLayers(bad), [
      'src/cluster/x.ts -> src/store/store.ts',
      'src/cluster/x.ts -> src/scheduler/scheduler.ts',
      'src/cluster/x.ts -> undici',
    ]);
    assert.deepEqual(RULES.lowerLayersDoNotImportCluster(bad), ['src/scheduler/z.ts -> src/cluster/placement.ts']);
    assert.deepEqual(RULES.onlyClusterImportsNats(bad), ['src/platform/cluster.ts -> @nats-io/transport-node']);
    assert.deepEqual(RULES.onlyConfigReadsEnvironment(bad), [
      'src/store/x.ts:1 reads process.env',
      'src/store/x.ts:2 reads process.env',
      'src/store/x.ts:3 reads process.env',
      'src/core/x.ts:1 reads process.env',
    ]);
  });
});
